//! The scheduler: kills, configuration locks, parallelism, capacity and delays.

use super::end::Ending;
use super::{Queue, QueueError, IDLE_WAKE, RETRY_INTERVAL};
use crate::blocking::blocking;
use crate::disk::{self, Bytes};
use crate::error::chain;
use crate::model::{
    now_micros, DesiredStatus, EventType, Job, JobType, Parallelism, RunId, Status,
};
use crate::store::Health;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A pass reads every `created` and `waiting` job, so its cost grows with the queue. Woken by
/// each creation of a burst, passes would run back to back and take a core from the creations:
/// after a pass the scheduler rests `REST_PER_BUSY` times as long as it was busy (wakes meanwhile
/// coalesce into one), so it takes at most a fifth of a core, and a short pass rests a negligible
/// time. Returns whether `shutdown` came.
async fn rest(busy: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(busy * REST_PER_BUSY) => false,
        () = shutdown.cancelled() => true,
    }
}

/// How many times as long as a pass was busy the scheduler rests after it.
const REST_PER_BUSY: u32 = 4;

/// Runs `work`, adding the time it takes to `busy`.
fn timed<T>(busy: &mut Duration, work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let outcome = work();
    *busy += started.elapsed();
    outcome
}

impl Queue {
    /// The scheduler loop: runs until `shutdown`, woken by creations, kills and finishes. The
    /// sweeper runs beside it on its own task, so a long sweep never delays a start.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let sweeper = tokio::spawn(Arc::clone(&self).run_sweeper(shutdown.clone()));
        let timer = tokio::spawn(Arc::clone(&self).run_schedules(shutdown.clone()));
        loop {
            let mut busy = Duration::ZERO;
            let pause = match self.schedule(&mut busy).await {
                Ok(pass) if pass.engine_down || pass.space_low => RETRY_INTERVAL,
                Ok(pass) => match pass.next_delayed_start {
                    Some(at) => Duration::from_micros((at - now_micros()).max(0) as u64),
                    None => IDLE_WAKE,
                },
                Err(error) => {
                    tracing::error!(error = %chain(&error), "scheduling failed; retrying");
                    RETRY_INTERVAL
                }
            };
            if rest(busy, &shutdown).await {
                break;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause.min(IDLE_WAKE)) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let _ = sweeper.await;
        let _ = timer.await;
    }

    /// Every `sweep_interval` until `shutdown`: expired jobs, then leftover containers and
    /// expired folders (the deleted jobs' too).
    async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        // The first sweep also looks for files of jobs deleted before a crash.
        let mut first = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.sweep_interval) => {}
                () = shutdown.cancelled() => return,
            }
            self.sweep_expired_jobs(&shutdown, first).await;
            first = false;
            if shutdown.is_cancelled() {
                return;
            }
            self.sweep().await;
        }
    }

    /// One pass: applies kills, then starts, oldest first, every job that may start now. The
    /// engine is asked once, first, and only when a slot is free for a waiting job; the pass
    /// itself reads and writes the store, so it runs as blocking work. `busy` adds the time
    /// spent reading and writing (not waiting for the engine).
    async fn schedule(self: &Arc<Self>, busy: &mut Duration) -> Result<Pass, QueueError> {
        if self.store.health() != Health::Writable {
            // Nothing can be recorded; the store's own log line says why, once.
            return Ok(Pass {
                space_low: true,
                ..Pass::default()
            });
        }
        let wants_engine = timed(busy, || blocking(|| self.may_start_some_job()))?;
        let engine_up = wants_engine && self.engine_answers().await;
        let low_space = if wants_engine {
            blocking(|| self.low_space())
        } else {
            None
        };
        timed(busy, || {
            blocking(|| self.pass(engine_up, wants_engine && !engine_up, low_space))
        })
    }

    /// Why no job may start for lack of space: `data_dir` has less free than `min_free_space`.
    pub(super) fn low_space(&self) -> Option<String> {
        let minimum = self.settings.min_free_space;
        if minimum == 0 {
            return None;
        }
        if disk::free_bytes(&self.settings.data_dir).ok()? >= minimum {
            return None;
        }
        let space = disk::space(&self.settings.data_dir).ok()?;
        (space.free < minimum).then(|| {
            format!(
                "The job waits for free space: data_dir has {} free on {}, less than \
                 min_free_space ({}). It starts once space is freed.",
                Bytes(space.free),
                space.mount.display(),
                Bytes(minimum)
            )
        })
    }

    /// Whether a slot is free and some job is `created` or `waiting`.
    fn may_start_some_job(&self) -> Result<bool, QueueError> {
        if self.running_count() >= self.settings.max_concurrent_jobs {
            return Ok(false);
        }
        for status in [Status::Created, Status::Waiting] {
            if !self.store.jobs_with_status(status)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn pass(
        self: &Arc<Self>,
        engine_up: bool,
        engine_down: bool,
        low_space: Option<String>,
    ) -> Result<Pass, QueueError> {
        self.send_notifications();
        let now = now_micros();
        let mut pass = Pass {
            engine_down,
            space_low: low_space.is_some(),
            next_delayed_start: None,
        };
        if low_space.is_none() {
            self.lock_told_low_space().clear();
        }
        // Created and waiting jobs are read once: the kills first, then the candidates (a job
        // killed here is skipped there by its desired status).
        let mut candidates = Vec::new();
        for status in [Status::Created, Status::Waiting, Status::Processing] {
            for job in self.store.jobs_with_status(status)? {
                if job.desired_status == DesiredStatus::Terminating {
                    self.terminate(&job)?;
                }
                if status != Status::Processing {
                    candidates.push(job);
                }
            }
        }

        let mut held: HashSet<LockKey> = HashSet::new();
        // Processing children per parent run, for the parallelism of container jobs.
        let mut active_children: HashMap<RunId, usize> = HashMap::new();
        for status in [Status::Processing, Status::Terminating] {
            for job in self.store.jobs_with_status(status)? {
                held.extend(lock_key(&job));
                if let Some(parent) = &job.parent_run_id {
                    *active_children.entry(parent.clone()).or_default() += 1;
                }
            }
        }
        let mut free = self
            .settings
            .max_concurrent_jobs
            .saturating_sub(self.running_count());
        candidates.sort_by_key(|job| job.id);
        for job in candidates {
            if job.desired_status == DesiredStatus::Terminating {
                continue;
            }
            if let Some(at) = job.delayed_start_time.filter(|at| *at > now) {
                pass.next_delayed_start =
                    Some(pass.next_delayed_start.map_or(at, |next| next.min(at)));
                continue;
            }
            if job.job_type == JobType::PhaseContainer {
                // Virtual, and held by the phases it depends on, not by a configuration lock.
                self.step_phase(&job)?;
                continue;
            }
            let key = lock_key(&job);
            // A configuration lock and a container's parallelism are reasons inside the
            // project: the job waits.
            let wait_reason = if key.as_ref().is_some_and(|key| held.contains(key)) {
                Some("Waiting for an earlier job of the same configuration to finish.")
            } else if self.parallelism_full(&job, &active_children)? {
                Some("Waiting for a free slot of the configuration's parallelism.")
            } else {
                None
            };
            if let Some(reason) = wait_reason {
                if job.status == Status::Created
                    && self.move_if(job.id, job.status, Status::Waiting)?.is_some()
                {
                    self.event(&job, EventType::Info, reason);
                }
                continue;
            }
            if job.job_type.is_virtual() {
                // Virtual: no container, no capacity; it finishes when its children do. An
                // orchestration creates its phases as it starts.
                let started = match job.job_type {
                    JobType::OrchestrationContainer => self.start_orchestration(&job)?,
                    _ => self
                        .move_if(job.id, job.status, Status::Processing)?
                        .is_some(),
                };
                if started {
                    held.extend(key);
                }
                continue;
            }
            // Capacity, the engine and space are platform reasons: the job stays (or goes back
            // to) created.
            if let Some(reason) = &low_space {
                if self.lock_told_low_space().insert(job.id) {
                    self.event(&job, EventType::Warn, reason);
                }
            }
            let startable = free > 0 && engine_up && low_space.is_none();
            if !startable {
                if job.status == Status::Waiting {
                    self.move_if(job.id, job.status, Status::Created)?;
                }
                continue;
            }
            let Some(job) = self.move_if(job.id, job.status, Status::Processing)? else {
                continue;
            };
            let wait = job.start_time.map_or(0, |start| start - job.created_time) as f64 / 1e6;
            tracing::info!(
                job_id = job.id,
                component = %job.component,
                config = job.config.as_deref().unwrap_or(""),
                tag = %job.tag,
                wait_seconds = wait,
                "job started"
            );
            self.metrics.job_started(&job.component, wait);
            free -= 1;
            if let Some(parent) = &job.parent_run_id {
                *active_children.entry(parent.clone()).or_default() += 1;
            }
            if let Some(key) = key {
                held.insert(key);
            }
            let cancel = CancellationToken::new();
            self.lock_running().insert(job.id, cancel.clone());
            tokio::spawn(Arc::clone(self).execute(job, None, cancel));
        }
        Ok(pass)
    }

    /// Whether `job` is a child of a container job whose parallelism is used up.
    fn parallelism_full(
        &self,
        job: &Job,
        active_children: &HashMap<RunId, usize>,
    ) -> Result<bool, QueueError> {
        let Some(parent_run_id) = &job.parent_run_id else {
            return Ok(false);
        };
        let Some(parent) = self.store.job_by_run_id(parent_run_id.as_str())? else {
            return Ok(false);
        };
        if parent.job_type != JobType::Container {
            return Ok(false);
        }
        let limit = match parent.parallelism {
            Some(Parallelism::Infinity) | None => return Ok(false),
            Some(Parallelism::Limit(limit)) => usize::from(limit).max(1),
        };
        Ok(active_children.get(parent_run_id).copied().unwrap_or(0) >= limit)
    }

    pub(super) async fn engine_answers(&self) -> bool {
        let up = match self.executor.ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "jobs stay created until the engine answers");
                false
            }
        };
        self.metrics.engine_answered(up);
        if up {
            *self.engine_answered.lock().expect("the engine answer time") = Some(Instant::now());
        }
        up
    }

    /// Applies a kill: jobs that have not started are cancelled; running ones go `terminating`
    /// and end `terminated` once nothing of them runs.
    pub(super) fn terminate(&self, job: &Job) -> Result<(), QueueError> {
        match job.status {
            Status::Created | Status::Waiting => self.end(job.id, Ending::Cancelled),
            Status::Processing if job.job_type.is_virtual() => {
                self.move_if(job.id, job.status, Status::Terminating)?;
                // Its children were asked to terminate with it; it ends when they have.
                self.settle_container(&job.run_id)
            }
            Status::Processing => {
                if self
                    .move_if(job.id, job.status, Status::Terminating)?
                    .is_none()
                {
                    return Ok(());
                }
                self.event(job, EventType::Warn, "Job termination requested.");
                if let Some(cancel) = self.lock_running().get(&job.id) {
                    cancel.cancel();
                    return Ok(());
                }
                // No run of this process holds it: nothing runs, so it is terminated.
                self.end(job.id, Ending::Terminated)
            }
            _ => Ok(()),
        }
    }
}

/// Jobs of one component + configuration + branch (+ row set) run one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LockKey {
    component: String,
    config: String,
    branch: String,
    rows: Vec<String>,
}

/// Jobs run from `configData` alone take no lock, nor do phases (their orchestration holds it).
fn lock_key(job: &Job) -> Option<LockKey> {
    if job.job_type == JobType::PhaseContainer {
        return None;
    }
    let config = job.config.clone()?;
    let mut rows = job.config_row_ids.clone();
    rows.sort();
    Some(LockKey {
        component: job.component.clone(),
        config,
        branch: job.branch_id.clone(),
        rows,
    })
}

/// What one scheduling pass leaves for the next.
#[derive(Default)]
struct Pass {
    /// Some job waits for the engine to answer.
    engine_down: bool,
    /// Jobs wait for free space (or for the store to take writes again).
    space_low: bool,
    /// The earliest delayed start still ahead.
    next_delayed_start: Option<i64>,
}
