//! The index walk (`walk`, `grouped`) against a naive listing of every job, over a store of
//! random jobs (seeded), and the duration sum through every change and the layout migration.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::super::*;
use crate::model::{RunId, SortKey, TimeRange};

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("jobq.redb")).expect("open store");
    (dir, store)
}

const COMPONENTS: [&str; 4] = ["a", "b", "c", "d"];
const CONFIGS: [Option<&str>; 4] = [None, Some("1"), Some("2"), Some("3")];
const BRANCHES: [&str; 3] = ["1", "2", "3"];
const TOKENS: [&str; 2] = ["t1", "t2"];

/// A job of random fields, a child of one of `roots` a fifth of the time, created at a random
/// time (not in id order), moved through the state machine to a random status.
fn random_job(rng: &mut StdRng, id: u64, roots: &[RunId]) -> Job {
    let parent = match roots.is_empty() || rng.random_ratio(4, 5) {
        true => None,
        false => roots.choose(rng).cloned(),
    };
    let created = rng.random_range(0..5_000);
    let mut job = Job {
        id,
        run_id: parent
            .as_ref()
            .map_or_else(|| RunId::root(id), |parent| parent.child(id)),
        parent_run_id: parent,
        component: COMPONENTS.choose(rng).unwrap().to_string(),
        config: CONFIGS.choose(rng).unwrap().map(str::to_string),
        branch_id: BRANCHES.choose(rng).unwrap().to_string(),
        token_id: TOKENS.choose(rng).unwrap().to_string(),
        created_time: created,
        ..Job::example()
    };
    let paths: [&[Status]; 6] = [
        &[],
        &[Status::Waiting],
        &[Status::Processing],
        &[Status::Processing, Status::Success],
        &[Status::Processing, Status::Error],
        &[Status::Cancelled],
    ];
    let mut at = created;
    for &status in *paths.choose(rng).unwrap() {
        at += rng.random_range(0..5_000_000);
        job.move_to(status, at).expect("an allowed move");
    }
    job
}

/// A store of `count` random jobs; a tenth of them moved on afterwards (index entries and the
/// duration sum replaced).
fn random_store(rng: &mut StdRng, count: usize) -> (tempfile::TempDir, Store) {
    let (dir, store) = open_temp();
    let mut roots = Vec::new();
    for _ in 0..count / 100 {
        let seed = rng.random::<u64>();
        let known = roots.clone();
        let jobs = store
            .create_jobs(100, |ids| {
                let mut rng = StdRng::seed_from_u64(seed);
                ids.iter()
                    .map(|&id| random_job(&mut rng, id, &known))
                    .collect()
            })
            .expect("created");
        roots.extend(
            jobs.iter()
                .filter(|job| job.parent_run_id.is_none())
                .map(|job| job.run_id.clone()),
        );
    }
    for _ in 0..count / 10 {
        let id = rng.random_range(1..=count as u64);
        let next = *[Status::Processing, Status::Success, Status::Terminating]
            .choose(rng)
            .unwrap();
        let _ = store.update_job(id, |job| job.move_to(next, 9_000_000));
    }
    store.assert_internally_consistent();
    (dir, store)
}

fn all_jobs(store: &Store) -> Vec<Job> {
    let txn = store.db.for_read().unwrap().begin_read().expect("read");
    let table = txn.open_table(JOBS).expect("jobs");
    let mut jobs = Vec::new();
    for entry in table.range::<u64>(..).expect("range") {
        jobs.push(codec::decode_job(entry.expect("entry").1.value()).expect("decode"));
    }
    jobs
}

/// Up to `most` values of `pool`, perhaps none.
fn some<T: Clone>(rng: &mut StdRng, pool: &[T], most: usize) -> Vec<T> {
    let count = rng.random_range(0..=most);
    (0..count)
        .map(|_| pool.choose(rng).unwrap().clone())
        .collect()
}

fn random_query(rng: &mut StdRng, jobs: &[Job]) -> JobQuery {
    let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let mut components = strings(&COMPONENTS);
    components.push("missing".to_string());
    let configs: Vec<String> = CONFIGS
        .iter()
        .map(|c| c.unwrap_or("").to_string())
        .collect();
    let mut query = JobQuery {
        statuses: some(rng, &Status::ALL, 2),
        descending: rng.random(),
        limit: rng.random_range(1..=60),
        offset: *[0, 0, 3, 50, 400, 1_500].choose(rng).unwrap(),
        ..JobQuery::default()
    };
    if rng.random_ratio(1, 2) {
        query.component_ids = some(rng, &components, 2);
    }
    if rng.random_ratio(1, 3) {
        query.config_ids = some(rng, &configs, 2);
    }
    if rng.random_ratio(1, 3) {
        query.branch_ids = some(rng, &strings(&BRANCHES), 2);
    }
    if rng.random_ratio(1, 4) {
        let parents: Vec<String> = jobs
            .iter()
            .map(|job| job.parent_run_id_str().to_string())
            .collect();
        query.parent_run_id = parents.choose(rng).cloned();
    }
    if rng.random_ratio(1, 10) {
        let run_ids: Vec<String> = jobs.iter().map(|job| job.run_id.to_string()).collect();
        query.run_ids = some(rng, &run_ids, 3);
    }
    if rng.random_ratio(1, 10) {
        query.ids = (0..rng.random_range(1..5))
            .map(|_| rng.random_range(0..=jobs.len() as u64 + 5))
            .collect();
    }
    if rng.random_ratio(1, 3) {
        let from = rng.random_ratio(2, 3).then(|| rng.random_range(0..5_000));
        let to = rng.random_ratio(2, 3).then(|| rng.random_range(0..5_000));
        query.created_time = TimeRange { from, to };
    }
    if rng.random_ratio(1, 8) {
        query.token_ids = some(rng, &strings(&TOKENS), 1);
    }
    if rng.random_ratio(1, 8) {
        query.sort_by = SortKey::NAMES.choose(rng).unwrap().1;
    }
    query
}

fn ids(jobs: &[Job]) -> Vec<u64> {
    jobs.iter().map(|job| job.id).collect()
}

#[test]
fn the_index_walk_lists_what_a_naive_filter_sort_and_page_lists() {
    let mut rng = StdRng::seed_from_u64(10);
    let (_dir, store) = random_store(&mut rng, 3_000);
    let jobs = all_jobs(&store);
    for round in 0..1_500 {
        let query = random_query(&mut rng, &jobs);
        let matching: Vec<Job> = jobs.iter().filter(|j| query.matches(j)).cloned().collect();
        let naive = query.sort_and_page(matching);
        let walked = store.search(&query).expect("search");
        assert_eq!(ids(&walked), ids(&naive), "round {round}: {query:?}");
    }
}

#[test]
fn grouped_listings_match_a_naive_grouping() {
    let mut rng = StdRng::seed_from_u64(11);
    let (_dir, store) = random_store(&mut rng, 2_000);
    let jobs = all_jobs(&store);
    for round in 0..400 {
        let query = JobQuery {
            sort_by: SortKey::Id,
            ..random_query(&mut rng, &jobs)
        };
        let by = loop {
            let by = GroupBy {
                component: rng.random(),
                config: rng.random(),
                branch: rng.random(),
            };
            if by != GroupBy::default() {
                break by;
            }
        };
        let (per_group, limit) = (rng.random_range(1..=4), rng.random_range(1..=30));
        let all = JobQuery {
            offset: 0,
            limit: usize::MAX,
            ..query.clone()
        };
        let listed = all.sort_and_page(jobs.iter().filter(|j| query.matches(j)).cloned().collect());
        let mut naive: Vec<(_, Vec<u64>)> = Vec::new();
        for job in listed {
            let key = (
                by.component.then(|| job.component.clone()),
                by.config.then(|| job.config.clone()),
                by.branch.then(|| job.branch_id.clone()),
            );
            match naive.iter().position(|(group, _)| *group == key) {
                Some(at) if naive[at].1.len() < per_group => naive[at].1.push(job.id),
                Some(_) => {}
                None if naive.len() < limit => naive.push((key, vec![job.id])),
                None => {}
            }
        }
        let naive: Vec<Vec<u64>> = naive.into_iter().map(|(_, ids)| ids).collect();
        let grouped = store
            .search_groups(&query, by, per_group, limit)
            .expect("groups");
        let grouped: Vec<Vec<u64>> = grouped.iter().map(|jobs| ids(jobs)).collect();
        assert_eq!(grouped, naive, "round {round}: {by:?} {query:?}");
    }
}

fn naive_duration_sum(store: &Store) -> u64 {
    let sum: i64 = all_jobs(store)
        .iter()
        .filter_map(Job::duration_seconds)
        .sum();
    sum as u64
}

#[test]
fn the_duration_sum_follows_creation_updates_and_retention() {
    let mut rng = StdRng::seed_from_u64(12);
    let (_dir, store) = random_store(&mut rng, 500);
    assert!(store.duration_sum().expect("sum") > 0);
    assert_eq!(
        store.duration_sum().expect("sum"),
        naive_duration_sum(&store)
    );

    let job = store
        .create_job(|id| Job {
            id,
            ..Job::example()
        })
        .expect("job");
    let before = store.duration_sum().expect("sum");
    store
        .update_job(job.id, |job| job.move_to(Status::Processing, 1_000_000))
        .expect("processing");
    assert_eq!(store.duration_sum().expect("sum"), before);
    store
        .update_job(job.id, |job| job.move_to(Status::Success, 8_500_000))
        .expect("success");
    assert_eq!(store.duration_sum().expect("sum"), before + 7);
    store.assert_internally_consistent();

    // Retention deletes every finished job (all ended before the cutoff) and their seconds.
    let cutoff = i64::MAX;
    let mut sweep = Sweep::new(
        cutoff,
        Budget {
            jobs: 10_000,
            events: 10_000,
        },
    );
    let expired = store.expired_jobs(cutoff, None, 10_000).expect("expired");
    let deletion = store
        .delete_expired(&mut sweep, &expired.ids, true)
        .expect("deleted");
    assert!(!deletion.jobs.is_empty());
    assert_eq!(
        store.duration_sum().expect("sum"),
        naive_duration_sum(&store)
    );
    store.assert_internally_consistent();
}

#[test]
fn a_store_of_layout_1_gets_its_duration_sum_at_open() {
    let mut rng = StdRng::seed_from_u64(13);
    let (dir, store) = random_store(&mut rng, 300);
    let sum = store.duration_sum().expect("sum");
    assert!(sum > 0);
    // Back to what layout 1 kept: no sum.
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert(META_SCHEMA_VERSION, 1).expect("version");
        meta.remove(META_DURATION_SUM).expect("sum gone");
    }
    txn.commit().expect("commit");
    drop(store);

    let store = Store::open(&dir.path().join("jobq.redb")).expect("reopen");
    assert_eq!(store.duration_sum().expect("sum"), sum);
    let txn = store.db.for_read().unwrap().begin_read().expect("read");
    let meta = txn.open_table(META).expect("meta");
    let version = meta
        .get(META_SCHEMA_VERSION)
        .expect("get")
        .map(|v| v.value());
    assert_eq!(version, Some(SCHEMA_VERSION));
    store.assert_internally_consistent();
}
