//! `jobq bench-fill` (hidden): stores realistic finished jobs through the real `Store`, fast, for
//! the store-scale benchmark (`benches/store_scale.rs`, BENCHMARKS.md).
//!
//! The jobs are deterministic (a seeded RNG): 50 components with 4 configurations each (and a
//! tenth run from `configData` only), a tenth on dev branches, a tenth of the roots container
//! jobs with 2 to 4 children, statuses mostly `success` (some `error`, `warning`, `terminated`,
//! `cancelled`) reached through the state machine, durations from seconds to an hour, created
//! times spread over the 60 days before now, and `events_per_job` events each. A write
//! transaction stores `BATCH` jobs (whole trees), another their events.

use std::time::Instant;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::model::{
    now_micros, Behavior, DesiredStatus, EventSource, EventType, Job, JobResult, JobType, Mode,
    NewEvent, RunId, Status,
};
use crate::settings::Settings;
use crate::store::Store;

/// Jobs stored per write transaction.
const BATCH: usize = 10_000;
/// How far back the created times go.
const SPAN_MICROS: i64 = 60 * 86_400 * 1_000_000;
pub const COMPONENTS: usize = 50;
pub const CONFIGS_PER_COMPONENT: usize = 4;

/// Stores `count` finished jobs (whole trees, so perhaps a few more) with `events_per_job`
/// events each in the store of `settings`; prints what it did.
pub fn fill(settings: &Settings, count: u64, events_per_job: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    let store = Store::open_with_cache(&settings.database_path(), settings.cache_size_bytes)?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(store.last_job_id()? ^ count);
    let step = (SPAN_MICROS / count.max(1) as i64).max(1);
    let first_created = now_micros() - SPAN_MICROS;
    let mut stored = 0u64;
    while stored < count {
        let sizes = tree_sizes(&mut rng, BATCH.min((count - stored) as usize));
        let total: usize = sizes.iter().sum();
        let seed = rng.random::<u64>();
        let base = first_created + stored as i64 * step;
        let jobs = store.create_jobs(total, |ids| {
            make_batch(settings, &sizes, ids, seed, base, step)
        })?;
        let messages: Vec<String> = (0..events_per_job)
            .map(|n| format!("line {n}: processed a slice of the table"))
            .collect();
        let events: Vec<NewEvent<'_>> = jobs
            .iter()
            .flat_map(|job| {
                messages.iter().map(move |message| NewEvent {
                    job_id: job.id,
                    event_type: EventType::Info,
                    source: EventSource::Stdout,
                    message,
                    run_id: job.run_id.as_str(),
                    component: &job.component,
                    created: job.start_time.unwrap_or(job.created_time),
                })
            })
            .collect();
        store.add_events(&events, true)?;
        stored += total as u64;
    }
    println!(
        "stored {stored} jobs with {events_per_job} events each in {:.1} s; last job id {}",
        started.elapsed().as_secs_f64(),
        store.last_job_id()?
    );
    Ok(())
}

/// The sizes of the trees of one batch (1: a plain job; more: a container job and its
/// children), `at_most` jobs together.
fn tree_sizes(rng: &mut StdRng, at_most: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = at_most;
    while left > 0 {
        let size = if rng.random_ratio(1, 10) {
            rng.random_range(3..=5)
        } else {
            1
        };
        let size = size.min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

/// The jobs of one batch: trees of `sizes`, ids in order.
fn make_batch(
    settings: &Settings,
    sizes: &[usize],
    ids: &[u64],
    seed: u64,
    base: i64,
    step: i64,
) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut jobs = Vec::with_capacity(ids.len());
    let mut at = 0;
    for &size in sizes {
        let tree = &ids[at..at + size];
        let created = base + at as i64 * step;
        let root = finished_job(settings, &mut rng, tree[0], None, created);
        let children: Vec<Job> = tree[1..]
            .iter()
            .map(|&id| {
                let mut child =
                    finished_job(settings, &mut rng, id, Some(&root), created + step / 2);
                child.config_row_ids = vec![format!("row-{}", id % 7)];
                child
            })
            .collect();
        let mut root = root;
        if size > 1 {
            root.job_type = JobType::Container;
        }
        jobs.push(root);
        jobs.extend(children);
        at += size;
    }
    jobs
}

/// A job created at `created` and run to a finished status through the state machine; a child
/// of `parent` runs its parent's configuration.
fn finished_job(
    settings: &Settings,
    rng: &mut StdRng,
    id: u64,
    parent: Option<&Job>,
    created: i64,
) -> Job {
    let component = rng.random_range(0..COMPONENTS);
    let (component, config, branch_id) = match parent {
        Some(parent) => (
            parent.component.clone(),
            parent.config.clone(),
            parent.branch_id.clone(),
        ),
        None => (
            format!("keboola.ex-bench-{component:02}"),
            (!rng.random_ratio(1, 10))
                .then(|| format!("{}", 1000 + rng.random_range(0..CONFIGS_PER_COMPONENT))),
            if rng.random_ratio(1, 10) {
                format!("{}", 101 + rng.random_range(0..5))
            } else {
                settings.project.default_branch_id.clone()
            },
        ),
    };
    let token = &settings.tokens[0];
    let mut job = Job {
        id,
        run_id: match parent {
            Some(parent) => parent.run_id.child(id),
            None => RunId::root(id),
        },
        parent_run_id: parent.map(|parent| parent.run_id.clone()),
        project_id: settings.project.id.clone(),
        project_name: settings.project.name.clone(),
        token_id: token.id.clone(),
        token_description: token.description.clone(),
        status: Status::Created,
        desired_status: DesiredStatus::Processing,
        mode: Mode::Run,
        component,
        config,
        config_data: json!({"parameters": {
            "table": format!("in.c-main.orders_{}", id % 13),
            "incremental": id.is_multiple_of(2),
            "#password": "KBC::ProjectSecure::eJwBXAGj/bench/secret/ciphertext/of/a/password==",
        }}),
        config_row_ids: Vec::new(),
        tag: "1.4.2".to_string(),
        branch_id,
        created_time: created,
        start_time: None,
        end_time: None,
        result: JobResult::default(),
        usage_data: json!({}),
        variable_values_id: None,
        variable_values_data: json!({"values": []}),
        backend: json!({}),
        metrics: json!({}),
        behavior: Behavior::default(),
        parallelism: None,
        job_type: JobType::Standard,
        container_id: None,
        outcome: None,
        rows_done: 0,
        images_done: 0,
        stdout_base: 0,
        delayed_start_time: None,
        revision: 0,
        orchestration_job_id: None,
        orchestration_task_id: None,
        orchestration_phase_id: None,
        previous_job_id: None,
        only_orchestration_task_ids: Vec::new(),
    };
    let roll = rng.random_range(0..100);
    let start = created + rng.random_range(0..30_000_000);
    // Seconds to an hour, mostly short.
    let seconds: i64 = 5 + (rng.random::<f64>().powi(3) * 3_600.0) as i64;
    let end = start + seconds * 1_000_000;
    let moves: &[(Status, i64)] = match roll {
        0..85 => &[(Status::Processing, start), (Status::Success, end)],
        85..93 => &[(Status::Processing, start), (Status::Error, end)],
        93..96 => &[(Status::Processing, start), (Status::Warning, end)],
        96..98 => &[
            (Status::Processing, start),
            (Status::Terminating, end),
            (Status::Terminated, end + 2_000_000),
        ],
        _ => &[(Status::Cancelled, start)],
    };
    for &(status, at) in moves {
        job.move_to(status, at)
            .expect("the bench jobs follow the state machine");
    }
    job.result.message = Some(match job.status {
        Status::Error => "The component failed: table not found.".to_string(),
        _ => "Component processing finished.".to_string(),
    });
    job
}
