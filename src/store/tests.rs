//! Unit tests of the job store against real redb files in temporary directories.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::TransitionForbidden;
use crate::model::{EventType, Mode, RunId, SortKey, TimeRange};

/// An event of `job_id` as the runner records a stdout line.
fn new_event<'a>(
    job_id: u64,
    event_type: EventType,
    message: &'a str,
    run_id: &'a str,
    component: &'a str,
    created: i64,
) -> NewEvent<'a> {
    NewEvent {
        job_id,
        event_type,
        source: EventSource::Stdout,
        message,
        run_id,
        component,
        created,
    }
}

/// A root job of `component`/`config`, created at `created`; the store sets the id.
fn job(component: &str, config: Option<&str>, created: i64) -> impl FnOnce(u64) -> Job {
    let component = component.to_string();
    let config = config.map(str::to_string);
    move |id| Job {
        id,
        run_id: RunId::root(id),
        component,
        config,
        config_data: json!({"parameters": {"rows": [1, 2, {"x": null}], "name": "ünï"}}),
        config_row_ids: vec!["row1".to_string()],
        branch_id: "default".to_string(),
        created_time: created,
        usage_data: json!([]),
        backend: json!({"type": null}),
        ..Job::example()
    }
}

/// A child of `parent` (a job), created at `created`.
fn child(parent: &Job, component: &str, created: i64) -> impl FnOnce(u64) -> Job {
    let parent_run_id = parent.run_id.clone();
    let make = job(component, None, created);
    move |id| Job {
        run_id: parent_run_id.child(id),
        parent_run_id: Some(parent_run_id),
        ..make(id)
    }
}

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("jobq.redb")).expect("open store");
    (dir, store)
}

fn ids(jobs: &[Job]) -> Vec<u64> {
    jobs.iter().map(|job| job.id).collect()
}

fn move_to(store: &Store, id: u64, status: Status) -> Job {
    store
        .update_job(id, |job| job.move_to(status, 1_000))
        .expect("update")
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<Arc<Store>>();
    assert_send_sync::<StoreError>();
}

#[test]
fn create_and_get_round_trip() {
    let (_dir, store) = open_temp();
    let created = store
        .create_job(job("keboola.ex-db", Some("12"), 100))
        .expect("create");
    assert_eq!(created.id, 1);
    assert_eq!(created.run_id, "1");
    let read = store.job(1).expect("read").expect("present");
    assert_eq!(read, created);
    assert_eq!(
        read.config_data,
        json!({"parameters": {"rows": [1, 2, {"x": null}], "name": "ünï"}})
    );
    assert_eq!(store.job(2).expect("read"), None);
    store.assert_internally_consistent();
}

#[test]
fn create_job_forces_the_allocated_id() {
    let (_dir, store) = open_temp();
    let made = store
        .create_job(|id| Job {
            id: 99,
            ..job("c", None, 1)(id)
        })
        .expect("create");
    assert_eq!(made.id, 1);
    assert!(store.job(99).expect("read").is_none());
    store.assert_internally_consistent();
}

#[test]
fn ids_keep_increasing_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    {
        let store = Store::open(&path).expect("open");
        assert_eq!(store.create_job(job("c", None, 1)).expect("create").id, 1);
        assert_eq!(store.create_job(job("c", None, 2)).expect("create").id, 2);
        let event = store
            .add_event(new_event(2, EventType::Info, "hello", "2", "c", 3))
            .expect("event");
        assert_eq!(event.id, 1);
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.job(2).expect("read").expect("kept").id, 2);
    assert_eq!(store.create_job(job("c", None, 3)).expect("create").id, 3);
    let event = store
        .add_event(new_event(1, EventType::Info, "again", "1", "c", 4))
        .expect("event");
    assert_eq!(event.id, 2);
    store.assert_internally_consistent();
}

#[test]
fn opening_an_open_file_is_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    let first = Store::open(&path).expect("open");
    let error = Store::open(&path).expect_err("second open must fail");
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("stop the other jobq or choose another data_dir"),
        "{message}"
    );
    drop(first);
    Store::open(&path).expect("open after the first closed");
}

#[test]
fn opening_a_missing_directory_says_what_to_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = Store::open(&dir.path().join("missing").join("jobq.redb")).expect_err("no dir");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("data_dir exists"), "{error}");
}

#[test]
fn update_moves_the_job_between_status_indexes() {
    let (_dir, store) = open_temp();
    for created in 1..=3 {
        store.create_job(job("c", None, created)).expect("create");
    }
    assert_eq!(
        ids(&store.jobs_with_status(Status::Created).expect("list")),
        [1, 2, 3]
    );

    let moved = move_to(&store, 2, Status::Waiting);
    assert_eq!(moved.status, Status::Waiting);
    assert_eq!(store.job(2).expect("read"), Some(moved));
    assert_eq!(
        ids(&store.jobs_with_status(Status::Created).expect("list")),
        [1, 3]
    );
    assert_eq!(
        ids(&store.jobs_with_status(Status::Waiting).expect("list")),
        [2]
    );
    store.assert_internally_consistent();

    let processing = move_to(&store, 2, Status::Processing);
    assert_eq!(processing.start_time, Some(1_000));
    move_to(&store, 1, Status::Processing);
    assert!(store
        .jobs_with_status(Status::Waiting)
        .expect("list")
        .is_empty());
    assert_eq!(
        ids(&store.jobs_with_status(Status::Processing).expect("list")),
        [1, 2]
    );
    let done = move_to(&store, 2, Status::Success);
    assert_eq!(done.end_time, Some(1_000));
    assert_eq!(
        ids(&store.jobs_with_status(Status::Success).expect("list")),
        [2]
    );
    store.assert_internally_consistent();
}

#[test]
fn update_follows_other_indexed_fields() {
    let (_dir, store) = open_temp();
    store.create_job(job("a", Some("1"), 10)).expect("create");
    store
        .update_job(1, |job| {
            job.component = "b".to_string();
            job.config = None;
            job.branch_id = "7".to_string();
            job.parent_run_id = Some(RunId::root(5));
            job.run_id = RunId::root(5).child(1);
            job.created_time = 20;
            Ok::<(), ()>(())
        })
        .expect("update");
    store.assert_internally_consistent();
    assert_eq!(ids(&store.children("5").expect("children")), [1]);
    assert!(store.children("").expect("roots").is_empty());
    assert_eq!(
        store.job_by_run_id("5.1").expect("by run").map(|j| j.id),
        Some(1)
    );
    assert_eq!(store.job_by_run_id("1").expect("by run"), None);
}

#[test]
fn a_rejected_update_writes_nothing() {
    let (_dir, store) = open_temp();
    let before = store.create_job(job("c", None, 1)).expect("create");
    let error = store
        .update_job(1, |job| {
            job.tag = "changed".to_string();
            job.move_to(Status::Success, 5)
        })
        .expect_err("created -> success is forbidden");
    assert!(
        matches!(
            error,
            UpdateError::Rejected(TransitionForbidden {
                from: Status::Created,
                to: Status::Success
            })
        ),
        "{error:?}"
    );
    assert_eq!(store.job(1).expect("read"), Some(before));
    assert_eq!(
        ids(&store.jobs_with_status(Status::Created).expect("list")),
        [1]
    );
    store.assert_internally_consistent();
}

#[test]
fn updating_a_missing_job_is_not_found() {
    let (_dir, store) = open_temp();
    let error = store
        .update_job(4, |_| Ok::<(), String>(()))
        .expect_err("no job 4");
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.to_string(), "job 4 does not exist");
}

#[test]
fn children_and_run_ids() {
    let (_dir, store) = open_temp();
    let parent = store
        .create_job(job("orchestrator", Some("1"), 1))
        .expect("create");
    let first = store.create_job(child(&parent, "a", 2)).expect("child");
    let second = store.create_job(child(&parent, "b", 3)).expect("child");
    let grandchild = store.create_job(child(&first, "c", 4)).expect("grandchild");
    assert_eq!(first.run_id, "1.2");
    assert_eq!(grandchild.run_id, "1.2.4");
    assert_eq!(ids(&store.children("1").expect("children")), [2, 3]);
    assert_eq!(ids(&store.children("1.2").expect("children")), [4]);
    assert!(store.children("1.3").expect("children").is_empty());
    assert_eq!(store.job_by_run_id("1.3").expect("by run"), Some(second));
    assert_eq!(
        store.job_by_run_id("1.2.4").expect("by run"),
        Some(grandchild)
    );
    assert_eq!(store.job_by_run_id("9").expect("by run"), None);
    store.assert_internally_consistent();
}

/// Jobs 1..=8:
/// 1 a/1 created, 2 a/1 waiting, 3 a/2 processing, 4 b/1 created (branch 9),
/// 5 child of 1 (a, no config), 6 a/- success, 7 b/- created, 8 child of 5 (b, no config).
fn searchable_store() -> (tempfile::TempDir, Store) {
    let (dir, store) = open_temp();
    let root = store.create_job(job("a", Some("1"), 100)).expect("1");
    store.create_job(job("a", Some("1"), 200)).expect("2");
    store.create_job(job("a", Some("2"), 300)).expect("3");
    store
        .create_job(|id| Job {
            branch_id: "9".to_string(),
            ..job("b", Some("1"), 400)(id)
        })
        .expect("4");
    let fifth = store.create_job(child(&root, "a", 500)).expect("5");
    store.create_job(job("a", None, 600)).expect("6");
    store.create_job(job("b", None, 700)).expect("7");
    store.create_job(child(&fifth, "b", 800)).expect("8");
    move_to(&store, 2, Status::Waiting);
    move_to(&store, 3, Status::Processing);
    move_to(&store, 6, Status::Processing);
    move_to(&store, 6, Status::Success);
    store.assert_internally_consistent();
    (dir, store)
}

fn search(store: &Store, query: JobQuery) -> Vec<u64> {
    ids(&store.search(&query).expect("search"))
}

#[test]
fn search_by_status() {
    let (_dir, store) = searchable_store();
    let query = |statuses: Vec<Status>| JobQuery {
        statuses,
        ..JobQuery::default()
    };
    assert_eq!(
        search(&store, query(vec![Status::Created])),
        [8, 7, 5, 4, 1]
    );
    assert_eq!(
        search(&store, query(vec![Status::Waiting, Status::Success])),
        [6, 2]
    );
    assert!(search(&store, query(vec![Status::Error])).is_empty());
    // Another filter narrows the status selection.
    assert_eq!(
        search(
            &store,
            JobQuery {
                component_ids: vec!["b".to_string()],
                ..query(vec![Status::Created, Status::Created])
            }
        ),
        [8, 7, 4]
    );
}

#[test]
fn search_by_component_config_and_branch() {
    let (_dir, store) = searchable_store();
    let query = |components: &[&str], configs: &[&str], branches: &[&str]| JobQuery {
        component_ids: components.iter().map(|s| s.to_string()).collect(),
        config_ids: configs.iter().map(|s| s.to_string()).collect(),
        branch_ids: branches.iter().map(|s| s.to_string()).collect(),
        ..JobQuery::default()
    };
    assert_eq!(search(&store, query(&["a"], &["1"], &[])), [2, 1]);
    assert_eq!(search(&store, query(&["a"], &[], &[])), [6, 5, 3, 2, 1]);
    assert_eq!(search(&store, query(&["a", "b"], &["1"], &[])), [4, 2, 1]);
    assert_eq!(search(&store, query(&["b"], &["1"], &["9"])), [4]);
    assert!(search(&store, query(&["b"], &["1"], &["default"])).is_empty());
    // Jobs without a config have config id "".
    assert_eq!(search(&store, query(&["a", "b"], &[""], &[])), [8, 7, 6, 5]);
    assert!(search(&store, query(&["missing"], &[], &[])).is_empty());
    // Without a component the config filter still applies, over all jobs.
    assert_eq!(search(&store, query(&[], &["2"], &[])), [3]);
}

#[test]
fn search_by_parent_run_id() {
    let (_dir, store) = searchable_store();
    let query = |parent: &str| JobQuery {
        parent_run_id: Some(parent.to_string()),
        ..JobQuery::default()
    };
    assert_eq!(search(&store, query("")), [7, 6, 4, 3, 2, 1]);
    assert_eq!(search(&store, query("1")), [5]);
    assert_eq!(search(&store, query("1.5")), [8]);
    assert!(search(&store, query("2")).is_empty());
}

#[test]
fn search_by_ids_run_ids_and_created_time() {
    let (_dir, store) = searchable_store();
    let by_ids = JobQuery {
        ids: vec![3, 42, 1, 3],
        ..JobQuery::default()
    };
    assert_eq!(search(&store, by_ids), [3, 1]);
    let by_run_ids = JobQuery {
        run_ids: vec!["1.5".to_string(), "1.5.8".to_string(), "nope".to_string()],
        ..JobQuery::default()
    };
    assert_eq!(search(&store, by_run_ids), [8, 5]);
    let created = |from, to| JobQuery {
        created_time: TimeRange { from, to },
        descending: false,
        ..JobQuery::default()
    };
    assert_eq!(search(&store, created(Some(200), Some(400))), [2, 3, 4]);
    assert_eq!(search(&store, created(Some(650), None)), [7, 8]);
    assert_eq!(search(&store, created(None, Some(100))), [1]);
    assert!(search(&store, created(Some(400), Some(200))).is_empty());
}

#[test]
fn search_sorts_and_pages() {
    let (_dir, store) = searchable_store();
    // Everything, newest id first, default page.
    assert_eq!(
        search(&store, JobQuery::default()),
        [8, 7, 6, 5, 4, 3, 2, 1]
    );
    // Paging by id stops early but returns the right window.
    let page = |offset, limit, descending| JobQuery {
        offset,
        limit,
        descending,
        ..JobQuery::default()
    };
    assert_eq!(search(&store, page(2, 3, true)), [6, 5, 4]);
    assert_eq!(search(&store, page(2, 3, false)), [3, 4, 5]);
    assert_eq!(search(&store, page(7, 3, false)), [8]);
    assert!(search(&store, page(8, 3, false)).is_empty());
    assert!(search(&store, page(0, 0, false)).is_empty());
    // Other keys sort all matches, ties by id.
    let by_component = JobQuery {
        sort_by: SortKey::ComponentId,
        descending: false,
        limit: 4,
        offset: 1,
        ..JobQuery::default()
    };
    assert_eq!(search(&store, by_component), [2, 3, 5, 6]);
    let by_created_desc = JobQuery {
        sort_by: SortKey::CreatedTime,
        statuses: vec![Status::Created],
        limit: 2,
        ..JobQuery::default()
    };
    assert_eq!(search(&store, by_created_desc), [8, 7]);
    // A non-indexed filter over the full scan.
    let by_mode = JobQuery {
        modes: vec![Mode::Debug],
        ..JobQuery::default()
    };
    assert!(search(&store, by_mode).is_empty());
    store.assert_internally_consistent();
}

#[test]
fn events_come_newest_first_and_page() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("job 1");
    store.create_job(job("c", None, 2)).expect("job 2");
    // Event ids: job 1 gets 1, 3, 5, 7; job 2 gets 2, 4, 6.
    for n in 0..7u64 {
        let job_id = n % 2 + 1;
        let kind = if n == 6 {
            EventType::Error
        } else {
            EventType::Info
        };
        let event = store
            .add_event(new_event(
                job_id,
                kind,
                &format!("message {n}"),
                "run",
                "c",
                n as i64,
            ))
            .expect("add");
        assert_eq!(event.id, n + 1);
        assert_eq!(event.job_id, job_id);
    }
    let event_ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();

    let all = store.events(1, None, 0, 100).expect("events");
    assert_eq!(all[0].message, "message 6");
    assert_eq!(all[0].event_type, EventType::Error);
    assert_eq!(event_ids(all), [7, 5, 3, 1]);
    assert_eq!(
        event_ids(store.events(2, None, 0, 100).expect("e")),
        [6, 4, 2]
    );
    assert_eq!(event_ids(store.events(1, None, 1, 2).expect("e")), [5, 3]);
    assert_eq!(event_ids(store.events(1, None, 3, 2).expect("e")), [1]);
    assert!(store.events(1, None, 4, 2).expect("e").is_empty());
    assert_eq!(
        event_ids(store.events(1, Some(3), 0, 100).expect("e")),
        [7, 5]
    );
    assert_eq!(event_ids(store.events(1, Some(3), 1, 100).expect("e")), [5]);
    assert!(store.events(1, Some(7), 0, 100).expect("e").is_empty());
    assert!(store
        .events(1, Some(u64::MAX), 0, 100)
        .expect("e")
        .is_empty());
    assert!(store.events(3, None, 0, 100).expect("e").is_empty());
    store.assert_internally_consistent();
}

#[test]
fn events_need_an_existing_job() {
    let (_dir, store) = open_temp();
    let error = store
        .add_event(new_event(5, EventType::Info, "lost", "5", "c", 0))
        .expect_err("no job 5");
    assert!(
        matches!(error, StoreError::JobNotFound { id: 5 }),
        "{error:?}"
    );
    store.create_job(job("c", None, 1)).expect("create");
    // The failed add used no event id.
    let event = store
        .add_event(new_event(1, EventType::Info, "found", "1", "c", 0))
        .expect("add");
    assert_eq!(event.id, 1);
}

#[test]
fn a_record_from_a_newer_jobq_is_refused() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut jobs = txn.open_table(JOBS).expect("jobs");
        let mut record = jobs.get(1).expect("get").expect("present").value().to_vec();
        record[0] = codec::JOB_VERSION + 1;
        jobs.insert(1, record.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
    let error = store.job(1).expect_err("newer record");
    assert!(
        matches!(error, StoreError::UnknownVersion { version, .. } if version == u64::from(codec::JOB_VERSION) + 1),
        "{error:?}"
    );
    assert!(error.to_string().contains("too old"), "{error}");
}

#[test]
fn a_newer_table_layout_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    {
        let store = Store::open(&path).expect("open");
        let txn = store.db.for_read().unwrap().begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = Store::open(&path).expect_err("newer layout");
    assert!(
        matches!(
            error,
            StoreError::UnknownVersion {
                record: "table layout",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn concurrent_creates_get_distinct_ids() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..10)
                    .map(|n| {
                        store
                            .create_job(job("c", Some(&t.to_string()), n))
                            .expect("create")
                            .id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<_>>());
    store.assert_internally_consistent();
}

#[test]
fn search_walks_the_intersection_of_the_indexes_it_names() {
    let (_dir, store) = searchable_store();
    let txn = store.db.for_read().unwrap().begin_read().expect("read");
    let walked = |query: JobQuery| {
        let index = txn
            .open_multimap_table(JOBS_BY_CONFIG)
            .expect("config index");
        let keys = walk::config_keys(&index, &query).unwrap_or_else(|_| panic!("keys"));
        let filters_config = !query.component_ids.is_empty() || !query.branch_ids.is_empty();
        let stream = walk::stream(&txn, &query, filters_config.then_some(keys))
            .unwrap_or_else(|_| panic!("stream"));
        let ids: Vec<u64> = stream.ids.map(|id| id.unwrap_or(0)).collect();
        (ids, stream.exact)
    };
    // Five created jobs and one job of b/1/9: their intersection, nothing else to check.
    let narrow = JobQuery {
        statuses: vec![Status::Created],
        component_ids: vec!["b".to_string()],
        config_ids: vec!["1".to_string()],
        branch_ids: vec!["9".to_string()],
        ..JobQuery::default()
    };
    assert_eq!(walked(narrow), (vec![4], true));
    // The query's ids, newest first, checked on each job (they need not exist).
    let by_ids = JobQuery {
        ids: vec![9, 2],
        parent_run_id: Some(String::new()),
        ..JobQuery::default()
    };
    assert_eq!(walked(by_ids), (vec![9, 2], false));
    let waiting = JobQuery {
        statuses: vec![Status::Waiting, Status::Created],
        component_ids: vec!["a".to_string()],
        descending: false,
        ..JobQuery::default()
    };
    assert_eq!(walked(waiting), (vec![1, 2, 5], true));
    // No filter: every job; a token filter has no index, so each job is checked.
    assert_eq!(walked(JobQuery::default()), ((1..=8).rev().collect(), true));
    let by_token = JobQuery {
        token_ids: vec!["10".to_string()],
        ..JobQuery::default()
    };
    assert_eq!(walked(by_token), ((1..=8).rev().collect(), false));
}

#[test]
#[should_panic(expected = "status index entry of job 1 is stale")]
fn the_consistency_check_catches_a_stale_index_entry() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut index = txn.open_multimap_table(JOBS_BY_STATUS).expect("index");
        index.remove(Status::Created.code(), 1).expect("remove");
        index.insert(Status::Error.code(), 1).expect("insert");
    }
    txn.commit().expect("commit");
    store.assert_internally_consistent();
}

#[test]
#[should_panic(expected = "run id index does not hold every job once")]
fn the_consistency_check_catches_a_missing_index_entry() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut index = txn.open_multimap_table(JOBS_BY_RUN_ID).expect("index");
        index.remove("1", 1).expect("remove");
    }
    txn.commit().expect("commit");
    store.assert_internally_consistent();
}

#[test]
fn a_batch_of_events_gets_consecutive_ids_in_its_order() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    store.create_job(job("c", None, 2)).expect("create");
    store
        .add_event(new_event(1, EventType::Info, "before", "1", "c", 1))
        .expect("one event");
    let messages: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    let batch: Vec<NewEvent> = messages
        .iter()
        .map(|message| new_event(1, EventType::Info, message, "1", "c", 2))
        .chain([new_event(2, EventType::Warn, "other job", "2", "c", 2)])
        .collect();
    assert_eq!(store.add_events(&batch, true).expect("a batch"), 2..8);
    assert_eq!(store.add_events(&[], true).expect("an empty batch"), 0..0);
    let after = store
        .add_event(new_event(1, EventType::Info, "after", "1", "c", 3))
        .expect("one event");
    assert_eq!(after.id, 8);

    let mut events = store.events(1, None, 0, 100).expect("events");
    events.reverse();
    let read: Vec<(u64, &str)> = events.iter().map(|e| (e.id, e.message.as_str())).collect();
    assert_eq!(
        read,
        [
            (1, "before"),
            (2, "line 0"),
            (3, "line 1"),
            (4, "line 2"),
            (5, "line 3"),
            (6, "line 4"),
            (8, "after")
        ]
    );
    assert_eq!(
        store.count_events(1, EventSource::Stdout).expect("count"),
        7
    );
    assert_eq!(store.events(2, None, 0, 10).expect("events")[0].id, 7);
    store.assert_internally_consistent();
}

#[test]
fn events_not_durable_are_lost_in_a_crash_and_their_ids_never_handed_out_again() {
    let (dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    let durable = [new_event(1, EventType::Info, "durable", "1", "c", 1)];
    assert_eq!(store.add_events(&durable, true).expect("durable"), 1..2);
    let lost = [new_event(1, EventType::Info, "lost", "1", "c", 2)];
    assert_eq!(store.add_events(&lost, false).expect("not durable"), 2..3);
    assert_eq!(store.events(1, None, 0, 10).expect("events").len(), 2);

    // A copy of the open file is what a crash leaves.
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(dir.path().join("jobq.redb"), &crashed).expect("copy");
    let reopened = Store::open(&crashed).expect("repaired");
    let events = reopened.events(1, None, 0, 10).expect("events");
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["durable"]);
    let next = reopened
        .add_event(new_event(1, EventType::Info, "next", "1", "c", 3))
        .expect("one event");
    assert_eq!(next.id, 2 + EVENT_IDS_SKIPPED_AFTER_A_CRASH);
    reopened.assert_internally_consistent();

    // A clean stop skips nothing.
    drop(reopened);
    let reopened = Store::open(&crashed).expect("reopened");
    let after = reopened
        .add_event(new_event(1, EventType::Info, "after", "1", "c", 4))
        .expect("one event");
    assert_eq!(after.id, next.id + 1);
}

#[test]
fn a_batch_naming_a_missing_job_writes_nothing() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    let batch = [
        new_event(1, EventType::Info, "kept?", "1", "c", 1),
        new_event(9, EventType::Info, "no such job", "9", "c", 1),
    ];
    let error = store
        .add_events(&batch, true)
        .expect_err("job 9 does not exist");
    assert!(
        matches!(error, StoreError::JobNotFound { id: 9 }),
        "{error}"
    );
    assert!(store.events(1, None, 0, 10).expect("events").is_empty());
    let next = store
        .add_event(new_event(1, EventType::Info, "first", "1", "c", 2))
        .expect("one event");
    assert_eq!(next.id, 1, "the failed batch used no ids");
}

#[test]
fn closing_a_log_is_written_with_its_events() {
    let (_dir, store) = open_temp();
    store.create_job(job("c", None, 1)).expect("create");
    assert!(!store.log_closed(1, "container-a").expect("read"));
    let tail = [
        new_event(1, EventType::Warn, "lines dropped", "1", "c", 1),
        new_event(1, EventType::Info, "last line", "1", "c", 1),
    ];
    assert_eq!(
        store
            .add_events_closing_log(&tail, 1, "container-a")
            .expect("closed"),
        1..3
    );
    assert!(store.log_closed(1, "container-a").expect("read"));
    assert!(!store.log_closed(1, "container-b").expect("read"));
    assert!(!store.log_closed(2, "container-a").expect("read"));

    // A failing batch closes nothing.
    let missing = [new_event(7, EventType::Info, "x", "7", "c", 1)];
    assert!(store
        .add_events_closing_log(&missing, 7, "container-c")
        .is_err());
    assert!(!store.log_closed(7, "container-c").expect("read"));
    store.assert_internally_consistent();
}
