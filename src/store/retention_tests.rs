//! Unit tests of retention against real redb files: batches keep every index right, trees go
//! whole or not at all, events and load ids go with their job.

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::*;
use crate::model::RunId;
use crate::model::{EventSource, EventType, JobType, NewEvent, Status};

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("jobq.redb")).expect("open store");
    (dir, store)
}

const CUTOFF: i64 = 1_000_000;
const BIG: Budget = Budget {
    jobs: usize::MAX,
    events: usize::MAX,
};

/// A root job in `status`, created at `created`, ended at `end` when finished.
fn root(status: Status, created: i64, end: i64) -> impl FnOnce(u64) -> Job {
    move |id| Job {
        id,
        run_id: RunId::root(id),
        status,
        created_time: created,
        end_time: status.is_finished().then_some(end),
        ..Job::example()
    }
}

/// A job under the run `parent` (a container job's child, or a job run with `X-KBC-RunId`).
fn child(parent: &Job, status: Status, created: i64, end: i64) -> impl FnOnce(u64) -> Job {
    let parent_run_id = parent.run_id.clone();
    move |id| Job {
        run_id: parent_run_id.child(id),
        parent_run_id: Some(parent_run_id),
        ..root(status, created, end)(id)
    }
}

fn add_events(store: &Store, job: &Job, count: usize) {
    for n in 0..count {
        store
            .add_event(NewEvent {
                job_id: job.id,
                event_type: EventType::Info,
                source: EventSource::Stdout,
                message: &format!("line {n}"),
                run_id: job.run_id.as_str(),
                component: &job.component,
                created: job.created_time,
            })
            .expect("event");
    }
}

fn add_loads(store: &Store, load_ids: &[String]) {
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut loads = txn.open_table(STORAGE_LOADS).expect("loads");
        for load_id in load_ids {
            loads.insert(load_id.as_str(), "in.c-b.t").expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn load_ids(store: &Store) -> Vec<String> {
    let txn = store.db.for_read().unwrap().begin_read().expect("read");
    let table = txn.open_table(STORAGE_LOADS).expect("loads");
    table
        .iter()
        .expect("iter")
        .map(|entry| entry.expect("entry").0.value().to_string())
        .collect()
}

fn event_count(store: &Store) -> u64 {
    let txn = store.db.for_read().unwrap().begin_read().expect("read");
    txn.open_table(EVENTS).expect("events").len().expect("len")
}

/// Every candidate of a full scan, deleted in transactions of `budget`, as a sweep does;
/// the store is checked after each transaction. Answers the ids deleted, in order.
fn sweep(store: &Store, cutoff: i64, budget: Budget) -> Vec<u64> {
    sweep_in_pages(store, cutoff, budget, 1_000)
}

/// `sweep` with pages of `page` candidates.
fn sweep_in_pages(store: &Store, cutoff: i64, budget: Budget, page: usize) -> Vec<u64> {
    let mut deleted = Vec::new();
    let mut after = None;
    let mut sweep = Sweep::new(cutoff, budget);
    loop {
        let page = store.expired_jobs(cutoff, after, page).expect("scan");
        let mut candidates = page.ids.as_slice();
        while !candidates.is_empty() {
            let deletion = store
                .delete_expired(&mut sweep, candidates, true)
                .expect("delete");
            assert!(
                deletion.consumed > 0 || deletion.events > 0,
                "no progress: {deletion:?}"
            );
            assert!(
                deletion.jobs.len() < budget.jobs.saturating_add(10),
                "over budget: {deletion:?}"
            );
            candidates = &candidates[deletion.consumed..];
            deleted.extend(deletion.jobs);
            store.assert_internally_consistent();
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return deleted,
        }
    }
}

#[test]
fn batches_delete_expired_jobs_with_their_events_and_load_ids_and_keep_indexes_right() {
    let (_dir, store) = open_temp();
    let mut expired = Vec::new();
    let mut kept = Vec::new();
    let mut loads = Vec::new();
    for n in 0..300i64 {
        // Created times repeat: several jobs share an entry of the created index.
        let created = n / 3;
        let (status, end) = match n % 6 {
            0 => (Status::Created, 0),
            1 => (Status::Processing, 0),
            2 => (Status::Success, CUTOFF + 1),
            3 => (Status::Error, CUTOFF - 1),
            4 => (Status::Cancelled, 10),
            _ => (Status::Warning, CUTOFF - 5),
        };
        let job = store
            .create_job(root(status, created, end))
            .expect("create");
        add_events(&store, &job, (n % 3) as usize);
        loads.push(format!("job/{}/row/0", job.id));
        loads.push(format!("job/{}/row/1/out.csv", job.id));
        if n % 6 >= 3 {
            expired.push(job.id);
        } else {
            kept.push(job.id);
        }
    }
    add_loads(&store, &loads);
    let events_before = event_count(&store);
    let kept_events: u64 = kept
        .iter()
        .map(|&id| store.events(id, None, 0, 100).expect("events").len() as u64)
        .sum();
    assert!(kept_events > 0 && kept_events < events_before);

    let budget = Budget {
        jobs: 20,
        events: usize::MAX,
    };
    let deleted = sweep_in_pages(&store, CUTOFF, budget, 7);
    assert_eq!(deleted, expired, "the expired jobs, oldest first");
    for &id in &expired {
        assert_eq!(store.job(id).expect("read"), None);
        assert!(store.events(id, None, 0, 10).expect("events").is_empty());
    }
    for &id in &kept {
        assert!(store.job(id).expect("read").is_some(), "job {id} kept");
    }
    assert_eq!(event_count(&store), kept_events);
    let mut wanted: Vec<String> = kept
        .iter()
        .flat_map(|id| [format!("job/{id}/row/0"), format!("job/{id}/row/1/out.csv")])
        .collect();
    wanted.sort();
    assert_eq!(load_ids(&store), wanted);
    // Nothing left to delete; ids are never handed out again.
    assert!(sweep(&store, CUTOFF, budget).is_empty());
    assert_eq!(store.last_job_id().expect("sequence"), 300);
    let next = store
        .create_job(root(Status::Created, 5, 0))
        .expect("create");
    assert_eq!(next.id, 301);
    store.assert_internally_consistent();
}

#[test]
fn load_ids_of_other_jobs_with_a_longer_id_stay() {
    let (_dir, store) = open_temp();
    for _ in 0..12 {
        store
            .create_job(root(Status::Success, 1, CUTOFF + 1))
            .expect("create");
    }
    store
        .update_job(1, |job| {
            job.end_time = Some(1);
            Ok::<(), ()>(())
        })
        .expect("update");
    let loads = [
        "job/1/row/0",
        "job/10/row/0",
        "job/11/row/0",
        "job/1",
        "job/2/row/0",
    ];
    add_loads(&store, &loads.map(String::from));
    assert_eq!(sweep(&store, CUTOFF, BIG), [1]);
    assert_eq!(
        load_ids(&store),
        ["job/1", "job/10/row/0", "job/11/row/0", "job/2/row/0"]
    );
}

#[test]
fn a_tree_goes_only_when_every_job_of_it_is_finished_and_expired() {
    let (_dir, store) = open_temp();
    // A container job that finished long ago, with a child still processing.
    let container = store
        .create_job(|id| Job {
            job_type: JobType::Container,
            ..root(Status::Success, 1, 10)(id)
        })
        .expect("container");
    let done = store
        .create_job(child(&container, Status::Success, 2, 10))
        .expect("child");
    let running = store
        .create_job(child(&container, Status::Processing, 3, 0))
        .expect("child");
    // A finished job with a job run under it (X-KBC-RunId) that is still created, two levels
    // down, and one that ended after the cutoff.
    let parent = store
        .create_job(root(Status::Success, 4, 10))
        .expect("parent");
    let middle = store
        .create_job(child(&parent, Status::Error, 5, 10))
        .expect("middle");
    let waiting = store
        .create_job(child(&middle, Status::Created, 6, 0))
        .expect("grandchild");
    let recent = store
        .create_job(root(Status::Success, 7, 10))
        .expect("recent parent");
    let recent_child = store
        .create_job(child(&recent, Status::Success, 8, CUTOFF + 1))
        .expect("recent child");
    for job in [&container, &done, &running, &parent, &middle, &waiting] {
        add_events(&store, job, 2);
    }
    let all = [
        container.id,
        done.id,
        running.id,
        parent.id,
        middle.id,
        waiting.id,
        recent.id,
        recent_child.id,
    ];

    assert!(sweep(&store, CUTOFF, BIG).is_empty());
    let deletion = store
        .delete_expired(
            &mut Sweep::new(CUTOFF, BIG),
            &[done.id, container.id, middle.id, recent.id],
            true,
        )
        .expect("delete");
    assert_eq!(
        deletion,
        Deletion {
            consumed: 4,
            kept: 4,
            ..Deletion::default()
        }
    );
    for id in all {
        assert!(
            store.job(id).expect("read").is_some(),
            "job {id} deleted early"
        );
    }
    assert_eq!(store.events(done.id, None, 0, 10).expect("events").len(), 2);
    store.assert_internally_consistent();

    // The running child ends: its tree goes whole, from any of its jobs.
    store
        .update_job(running.id, |job| job.move_to(Status::Success, 20))
        .expect("end");
    let deletion = store
        .delete_expired(&mut Sweep::new(CUTOFF, BIG), &[done.id], true)
        .expect("delete");
    let mut tree = deletion.jobs.clone();
    tree.sort_unstable();
    assert_eq!(tree, [container.id, done.id, running.id]);
    assert_eq!(deletion.events, 6);
    // The others wait for their last job.
    store
        .update_job(waiting.id, |job| job.move_to(Status::Cancelled, 30))
        .expect("cancel");
    let mut deleted = sweep(&store, CUTOFF, BIG);
    deleted.sort_unstable();
    assert_eq!(deleted, [parent.id, middle.id, waiting.id]);
    assert!(store.job(recent.id).expect("read").is_some());
    assert!(store.job(recent_child.id).expect("read").is_some());
    // Later, the recent tree expires too.
    let mut deleted = sweep(&store, CUTOFF + 2, BIG);
    deleted.sort_unstable();
    assert_eq!(deleted, [recent.id, recent_child.id]);
    assert_eq!(event_count(&store), 0);
    store.assert_internally_consistent();
}

#[test]
fn a_sweep_walks_a_kept_tree_once_and_looks_at_a_bounded_number_of_candidates() {
    let (_dir, store) = open_temp();
    let container = store
        .create_job(|id| Job {
            job_type: JobType::Container,
            ..root(Status::Success, 1, 10)(id)
        })
        .expect("container");
    for created in 2..32 {
        store
            .create_job(child(&container, Status::Success, created, 10))
            .expect("child");
    }
    store
        .create_job(child(&container, Status::Processing, 40, 0))
        .expect("running child");
    let page = store.expired_jobs(CUTOFF, None, 100).expect("scan");
    assert_eq!(page.ids.len(), 31);
    let budget = Budget {
        jobs: 2,
        events: 100,
    };
    let mut sweep = Sweep::new(CUTOFF, budget);
    let mut candidates = page.ids.as_slice();
    let mut transactions = 0;
    while !candidates.is_empty() {
        let deletion = store
            .delete_expired(&mut sweep, candidates, true)
            .expect("delete");
        assert!(deletion.jobs.is_empty());
        assert_eq!(deletion.kept, deletion.consumed);
        assert!(deletion.consumed <= 10, "{deletion:?}");
        candidates = &candidates[deletion.consumed..];
        transactions += 1;
    }
    assert_eq!(transactions, 4);
    // The container job is the one remembered: every child's walk up stops there.
    assert_eq!(sweep.kept, HashSet::from([container.id]));
    assert_eq!(
        store.jobs_with_status(Status::Success).expect("list").len(),
        31
    );
}

#[test]
fn a_job_whose_parent_run_is_gone_goes_alone() {
    let (_dir, store) = open_temp();
    let parent = store.create_job(root(Status::Success, 1, 10)).expect("1");
    let first = store
        .create_job(child(&parent, Status::Success, 2, 10))
        .expect("2");
    // Its parent's tree went while it was being created.
    let orphan = store
        .create_job(|id| Job {
            run_id: format!("99.{id}").into(),
            parent_run_id: Some("99".to_string().into()),
            ..root(Status::Success, 3, 10)(id)
        })
        .expect("3");
    let mut deleted = sweep(&store, CUTOFF, BIG);
    deleted.sort_unstable();
    assert_eq!(deleted, [parent.id, first.id, orphan.id]);
    store.assert_internally_consistent();
}

#[test]
fn events_beyond_the_budget_go_first_and_the_job_with_the_last_of_them() {
    let (_dir, store) = open_temp();
    let big = store.create_job(root(Status::Success, 1, 10)).expect("1");
    let small = store.create_job(root(Status::Success, 2, 10)).expect("2");
    add_events(&store, &big, 25);
    add_events(&store, &small, 3);
    let budget = Budget {
        jobs: 500,
        events: 10,
    };
    let candidates = [big.id, small.id];

    let first = store
        .delete_expired(&mut Sweep::new(CUTOFF, budget), &candidates, true)
        .expect("delete");
    assert_eq!((first.consumed, first.events), (0, 10));
    assert!(first.jobs.is_empty());
    // The job stays with its newest events.
    let left = store.events(big.id, None, 0, 100).expect("events");
    assert_eq!(left.len(), 15);
    assert_eq!(left.last().expect("oldest").message, "line 10");
    store.assert_internally_consistent();

    let second = store
        .delete_expired(&mut Sweep::new(CUTOFF, budget), &candidates, true)
        .expect("delete");
    assert_eq!((second.consumed, second.events), (0, 10));
    // 5 events left: the job goes with them, and the next job's 3 events fit too.
    let third = store
        .delete_expired(&mut Sweep::new(CUTOFF, budget), &candidates, true)
        .expect("delete");
    assert_eq!(third.jobs, [big.id, small.id]);
    assert_eq!((third.consumed, third.events), (2, 8));
    assert_eq!(event_count(&store), 0);
    store.assert_internally_consistent();
}

#[test]
fn the_job_budget_ends_a_transaction_between_trees() {
    let (_dir, store) = open_temp();
    for created in 0..5 {
        store
            .create_job(root(Status::Success, created, 10))
            .expect("create");
    }
    let page = store.expired_jobs(CUTOFF, None, 100).expect("scan");
    assert_eq!(page.ids, [1, 2, 3, 4, 5]);
    assert_eq!(page.next, None);
    let budget = Budget {
        jobs: 2,
        events: 100,
    };
    let deletion = store
        .delete_expired(&mut Sweep::new(CUTOFF, budget), &page.ids, true)
        .expect("delete");
    assert_eq!((deletion.consumed, deletion.jobs), (2, vec![1, 2]));
    let deletion = store
        .delete_expired(&mut Sweep::new(CUTOFF, budget), &page.ids[2..], true)
        .expect("delete");
    assert_eq!((deletion.consumed, deletion.jobs), (2, vec![3, 4]));
    store.assert_internally_consistent();
}

#[test]
fn the_scan_pages_through_the_created_index_after_its_cursor() {
    let (_dir, store) = open_temp();
    // Ids 1..=9; created 0, 0, 0, 1, 1, 1, 2, 2, 2; every third one still running.
    for n in 0..9 {
        let status = if n % 3 == 1 {
            Status::Processing
        } else {
            Status::Success
        };
        store.create_job(root(status, n / 3, 10)).expect("create");
    }
    // A job created after the cutoff is never looked at.
    store
        .create_job(root(Status::Success, CUTOFF, CUTOFF))
        .expect("create");
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.expired_jobs(CUTOFF, after, 2).expect("scan");
        pages.push(page.ids);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, [vec![1, 3], vec![4, 6], vec![7, 9]]);
    assert!(store.expired_jobs(0, None, 2).expect("scan").ids.is_empty());
}

/// `count` finished jobs with `events` events each, created in one transaction.
fn finished_jobs(store: &Store, count: usize, events: usize) {
    store
        .fill(count, count, events, |id| Job {
            config_data: serde_json::json!({"parameters": {"padding": "x".repeat(500)}}),
            ..root(Status::Success, 1, 10)(id)
        })
        .expect("fill");
}

fn file_size(dir: &tempfile::TempDir) -> u64 {
    std::fs::metadata(dir.path().join("jobq.redb"))
        .expect("file")
        .len()
}

#[test]
fn the_file_stops_growing_under_steady_create_and_expire_cycles() {
    let (dir, store) = open_temp();
    let budget = Budget {
        jobs: 100,
        events: 500,
    };
    let mut sizes = Vec::new();
    for _ in 0..20 {
        finished_jobs(&store, 200, 5);
        let page = store.expired_jobs(CUTOFF, None, 1_000).expect("scan");
        let mut candidates = page.ids.as_slice();
        let mut deleted = 0;
        let mut sweep = Sweep::new(CUTOFF, budget);
        // As the sweep does: fsynced only at the end.
        while !candidates.is_empty() {
            let deletion = store
                .delete_expired(&mut sweep, candidates, false)
                .expect("delete");
            candidates = &candidates[deletion.consumed..];
            deleted += deletion.jobs.len();
        }
        store
            .delete_expired(&mut sweep, &[], true)
            .expect("persist");
        assert_eq!(deleted, 200);
        sizes.push(file_size(&dir));
    }
    // redb's allocator moves the end of the file by some pages either way (here between 0.5
    // and 0.8 MB); kept, the jobs would grow it from 0.4 to 6.3 MB.
    let first = sizes[..5].iter().max().copied().unwrap_or(0);
    let last = sizes[15..].iter().max().copied().unwrap_or(0);
    assert!(
        last <= first + first / 4,
        "the file grew from {first} to {last} bytes: {sizes:?}"
    );
    store.assert_internally_consistent();
}

#[test]
fn a_mostly_free_file_is_compacted_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    let store = Store::open(&path).expect("open");
    finished_jobs(&store, 2_000, 10);
    let kept = store
        .create_job(root(Status::Processing, 2, 0))
        .expect("create");
    assert_eq!(sweep(&store, CUTOFF, BIG).len(), 2_000);
    drop(store);
    let full = file_size(&dir);

    let mut db = Database::create(&path).expect("open");
    let found = compact_if_mostly_free(&mut db, &path).expect("measured");
    let compacted = found.compacted.expect("compacted");
    assert_eq!(found.file, full);
    assert!(found.free.expect("measured") > full / 2, "{found:?}");
    assert!(compacted < full / 2, "{found:?}");
    assert_eq!(file_size(&dir), compacted);
    // Compacted, it needs no more.
    let again = compact_if_mostly_free(&mut db, &path).expect("measured");
    assert_eq!(again.compacted, None, "{again:?}");
    drop(db);

    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.job(kept.id).expect("read"), Some(kept));
    store.assert_internally_consistent();
}

#[test]
fn a_large_file_is_measured_only_after_many_deletions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    let store = Store::open(&path).expect("open");
    finished_jobs(&store, 1_000, 10);
    let page = store.expired_jobs(CUTOFF, None, 2_000).expect("scan");
    // A tenth of the jobs (1,100 of 11,000 records) is not worth measuring...
    store
        .delete_expired(&mut Sweep::new(CUTOFF, BIG), &page.ids[..100], true)
        .expect("delete");
    drop(store);
    let mut db = Database::create(&path).expect("open");
    let found = compact_if_mostly_free_over(&mut db, &path, 0).expect("looked");
    assert_eq!((found.free, found.compacted), (None, None), "{found:?}");
    drop(db);
    // ...all of them is, and the count starts again after the measurement.
    let store = Store::open(&path).expect("open");
    store
        .delete_expired(&mut Sweep::new(CUTOFF, BIG), &page.ids[100..], true)
        .expect("delete");
    drop(store);
    let mut db = Database::create(&path).expect("open");
    let found = compact_if_mostly_free_over(&mut db, &path, 0).expect("looked");
    assert!(
        found.free.is_some() && found.compacted.is_some(),
        "{found:?}"
    );
    let again = compact_if_mostly_free_over(&mut db, &path, 0).expect("looked");
    assert_eq!((again.free, again.compacted), (None, None), "{again:?}");
}
