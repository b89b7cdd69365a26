//! The queue: creates jobs, schedules them (capacity, configuration locks, delays), kills job
//! trees, records how runs end, and settles what a previous process left behind.

mod create;
mod end;
mod event_writer;
mod execute;
mod flow_runs;
mod flows;
mod recovery;
mod scheduler;
mod schedules;

use crate::blocking::blocking;
use crate::error::chain;
use crate::model::TransitionForbidden;
use crate::model::{
    now_micros, DesiredStatus, Event, EventSource, EventType, Job, JobQuery, Mode, NewEvent, Status,
};
use crate::runner::Executor;
use crate::secrets::{Redactor, Secrets};
use crate::settings::Settings;
use crate::storage::Storage;
use crate::store::{Creations, GroupBy, Store, StoreError, UpdateError};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

use crate::metrics::{Metrics, Snapshot};
use tokio_util::sync::CancellationToken;

pub use flows::MatchedTask;

/// A create request after the HTTP layer parsed its body and headers.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub component: String,
    pub mode: Option<Mode>,
    pub config: Option<String>,
    pub config_data: Value,
    pub config_row_ids: Vec<String>,
    pub branch_id: Option<String>,
    pub tag: Option<String>,
    pub variable_values_id: Option<String>,
    pub variable_values_data: Option<Value>,
    pub backend: Option<Value>,
    pub parallelism: Option<String>,
    /// `{"onError": "stop" | "warning" | "fail"}`: how a container job takes a failed child.
    pub behavior: Option<Value>,
    /// Seconds to hold the job in `created`.
    pub delay: Option<u64>,
    /// The earliest start, ISO 8601 (or relative, like `+5 minutes`).
    pub delayed_start_time: Option<String>,
    /// `X-KBC-RunId`: the new job becomes a child of that run.
    pub parent_run_id: Option<String>,
    /// An orchestration job rerunning tasks of this earlier one.
    pub previous_job_id: Option<String>,
    /// The tasks an orchestration job runs (a rerun); none: all.
    pub only_orchestration_task_ids: Option<Vec<String>>,
}

/// Why a queue operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The request names something invalid; `field` says which part.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("Job \"{id}\" not found.")]
    JobNotFound { id: String },
    #[error("Schedule \"{id}\" not found; GET /schedules lists the activated schedules.")]
    ScheduleNotFound { id: String },
    #[error(
        "Configuration \"{config}\" of component \"{component}\" not found in branch \"{branch}\"."
    )]
    ConfigurationNotFound {
        component: String,
        config: String,
        branch: String,
    },
    #[error("Job \"{id}\" is already finished ({status}); only jobs in one of killable states (created, waiting, processing, terminating) can be killed.")]
    NotKillable { id: u64, status: Status },
    /// A status change the state machine refuses: a defect of jobq, never of the request.
    #[error("jobq tried a status change its state machine forbids ({0}); please report it")]
    Forbidden(TransitionForbidden),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The job queue shared by the HTTP handlers and the scheduler.
pub struct Queue {
    store: Arc<Store>,
    /// The group commit of new jobs (`create`).
    creations: Creations,
    storage: Arc<Storage>,
    secrets: Arc<Secrets>,
    /// Per running job: its decrypted secrets, hidden in everything it records.
    redactors: Mutex<HashMap<u64, Arc<Redactor>>>,
    settings: Arc<Settings>,
    /// Where jobs' containers run.
    executor: Arc<dyn Executor>,
    /// Wakes the scheduler: a job was created, killed or finished.
    wake: Notify,
    /// Ticks on every job change; long polls wait on it.
    changes: watch::Sender<u64>,
    /// Jobs whose container this process runs, with the handle that terminates it.
    running: Mutex<HashMap<u64, CancellationToken>>,
    /// Jobs told (by an event) that they wait for free space, until space returns.
    told_low_space: Mutex<HashSet<u64>>,
    metrics: Metrics,
    /// Set once `recover` has settled what the last process left.
    recovered: AtomicBool,
    /// When the engine last answered a ping.
    engine_answered: Mutex<Option<Instant>>,
    /// Wakes the schedule timer: a schedule was activated.
    schedules_changed: Notify,
    /// Flow jobs whose current phase's notifications wait to be sent, with those tasks.
    notifying: Mutex<HashMap<u64, Vec<crate::model::FlowTask>>>,
    /// Flow jobs whose notifications are being sent.
    sending: Mutex<HashSet<u64>>,
    /// How flows' notifications are sent (set by the daemon; without it they fail).
    channels: std::sync::OnceLock<Arc<crate::channels::Channels>>,
    /// Jobs told (by an event) that they wait for an unreachable image registry.
    told_registry_unreachable: Mutex<HashSet<u64>>,
}

/// What `Queue::overview` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub slots_used: usize,
    pub slots_max: usize,
    pub engine_up: bool,
    /// Each component without its default image, and that image.
    pub missing_images: Option<Vec<(String, String)>>,
}

/// A page of `Queue::follow_events`.
pub struct Followed {
    /// Oldest first.
    pub events: Vec<Event>,
    /// The job's final status when it had finished before these were read and they are its
    /// last.
    pub ended: Option<Status>,
}

/// How long an engine answer counts as recent for readiness.
const ENGINE_FRESH: Duration = Duration::from_secs(10);

/// How often a follower of a job looks for new events when nothing else wakes it.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// How long the scheduler waits before retrying when the engine is unreachable.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// The longest the scheduler sleeps without being woken.
const IDLE_WAKE: Duration = Duration::from_secs(60);

impl Queue {
    pub fn new(
        store: Arc<Store>,
        storage: Arc<Storage>,
        secrets: Arc<Secrets>,
        settings: Arc<Settings>,
        executor: Arc<dyn Executor>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            creations: Creations::start(Arc::clone(&store)),
            store,
            storage,
            secrets,
            redactors: Mutex::new(HashMap::new()),
            settings,
            executor,
            wake: Notify::new(),
            changes: watch::Sender::new(0),
            running: Mutex::new(HashMap::new()),
            told_low_space: Mutex::new(HashSet::new()),
            metrics: Metrics::new(),
            recovered: AtomicBool::new(false),
            engine_answered: Mutex::new(None),
            schedules_changed: Notify::new(),
            notifying: Mutex::new(HashMap::new()),
            sending: Mutex::new(HashSet::new()),
            channels: std::sync::OnceLock::new(),
            told_registry_unreachable: Mutex::new(HashSet::new()),
        })
    }

    /// The metrics of this daemon, its gauges read now, as OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        let (store_write_failures, store_writes_refused) = self.store.write_fault_counts();
        let jobs = [
            Status::Created,
            Status::Waiting,
            Status::Processing,
            Status::Terminating,
        ]
        .into_iter()
        .filter_map(|status| Some((status, self.store.count_with_status(status).ok()?)))
        .collect();
        self.metrics.encode(&Snapshot {
            jobs,
            slots_used: self.running_count() as u64,
            slots_max: self.settings.max_concurrent_jobs as u64,
            store_writable: self.store.health().reason().is_none(),
            store_write_failures,
            store_writes_refused,
            events_written: self.store.events_written(),
            data_dir_free_bytes: crate::disk::free_bytes(&self.settings.data_dir).ok(),
        })
    }

    /// Sets how the queue sends flows' notifications (once; later calls are ignored).
    pub fn set_channels(&self, channels: Arc<crate::channels::Channels>) {
        let _ = self.channels.set(channels);
    }

    /// Where the HTTP server records its requests.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Why jobs cannot run now, or `None` when they can: the store refuses writes, recovery of
    /// the jobs the last process left has not finished, `data_dir` has less than
    /// `min_free_space`, or the engine has not answered for `ENGINE_FRESH` (then it is asked
    /// now, for at most 2 s).
    pub async fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.store.health().reason() {
            return Some(reason);
        }
        if !self.recovered.load(Ordering::Relaxed) {
            return Some("Jobs left running by the last start are still being recovered.".into());
        }
        if let Some(reason) = blocking(|| self.low_space()) {
            return Some(reason);
        }
        let fresh = self
            .engine_answered
            .lock()
            .expect("the engine answer time")
            .is_some_and(|at| at.elapsed() < ENGINE_FRESH);
        if !fresh && !self.engine_answers().await {
            return Some("The Docker engine does not answer; jobs stay created.".into());
        }
        None
    }

    /// The operator's overview: slots used and their maximum, whether the engine answers now,
    /// and the registered components whose default image the engine lacks (`None` when the
    /// engine does not answer).
    pub async fn overview(&self) -> Overview {
        let engine_up = self.engine_answers().await;
        let missing_images = match engine_up {
            false => None,
            true => match self
                .executor
                .missing_images(&self.settings.components)
                .await
            {
                Ok(missing) => Some(
                    missing
                        .into_iter()
                        .map(|(component, image)| (component.id.clone(), image))
                        .collect(),
                ),
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "cannot list the missing images");
                    None
                }
            },
        };
        Overview {
            slots_used: self.running_count(),
            slots_max: self.settings.max_concurrent_jobs,
            engine_up,
            missing_images,
        }
    }

    pub fn job(&self, id: &str) -> Result<Job, QueueError> {
        let not_found = || QueueError::JobNotFound { id: id.to_string() };
        let id: u64 = id.parse().map_err(|_| not_found())?;
        self.store.job(id)?.ok_or_else(not_found)
    }

    /// The job once its revision is above `index`, or as it is after `wait` (a long poll).
    pub async fn job_after(&self, id: &str, index: u64, wait: Duration) -> Result<Job, QueueError> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let job = blocking(|| self.job(id))?;
            if job.revision > index {
                return Ok(job);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(job),
            }
        }
    }

    pub fn search(&self, query: &JobQuery) -> Result<Vec<Job>, QueueError> {
        Ok(self.store.search(query)?)
    }

    /// The seconds all stored jobs spent processing (`durationSeconds` summed).
    pub fn duration_sum(&self) -> Result<u64, QueueError> {
        Ok(self.store.duration_sum()?)
    }

    /// `Store::search_groups`: the jobs `query` selects (in id order) in groups by `by`.
    pub fn search_groups(
        &self,
        query: &JobQuery,
        by: GroupBy,
        per_group: usize,
        groups: usize,
    ) -> Result<Vec<Vec<Job>>, QueueError> {
        Ok(self.store.search_groups(query, by, per_group, groups)?)
    }

    /// Every job `query` selects, in its order, ignoring its paging.
    pub fn search_all(&self, query: &JobQuery) -> Result<Vec<Job>, QueueError> {
        let all = JobQuery {
            offset: 0,
            limit: usize::MAX,
            ..query.clone()
        };
        Ok(self.store.search(&all)?)
    }

    /// The events of the job `run` names (its run id, like `10.12`, else its id), newest first;
    /// with `tree`, its descendants' too, merged by event id. `since_id`, `offset` and `limit`
    /// apply to the merged list.
    pub fn events(
        &self,
        run: &str,
        tree: bool,
        since_id: Option<u64>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Event>, QueueError> {
        let job = match self.store.job_by_run_id(run)? {
            Some(job) => job,
            None => self.job(run)?,
        };
        let ids = match tree {
            true => self.tree(&job)?,
            false => vec![job.id],
        };
        // One job: the store skips `offset` events without decoding them.
        if let [id] = ids[..] {
            return Ok(self.store.events(id, since_id, offset, limit)?);
        }
        // The newest `offset + limit` of the merged list are among each job's newest as many.
        let wanted = offset.saturating_add(limit);
        let mut events = Vec::new();
        for id in ids {
            events.extend(self.store.events(id, since_id, 0, wanted)?);
        }
        events.sort_by_key(|event| std::cmp::Reverse(event.id));
        Ok(events.into_iter().skip(offset).take(limit).collect())
    }

    /// A follower's next events of the job `id` (with `tree`, of its descendants too), oldest
    /// first, after event `after`: at most `limit`, as soon as there is one, else after `wait`
    /// (then none). `ended` is the job's status when it had finished before the events were
    /// read, so that none is left to come once they are sent.
    pub async fn follow_events(
        &self,
        id: &str,
        tree: bool,
        after: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Result<Followed, QueueError> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (events, ended) = blocking(|| {
                let job = self.job(id)?;
                let ids = match tree {
                    true => self.tree(&job)?,
                    false => vec![job.id],
                };
                // One more than a page of each job tells whether more are left.
                let mut events = Vec::new();
                for id in ids {
                    events.extend(self.store.events_after(id, after, limit + 1)?);
                }
                events.sort_by_key(|event| event.id);
                let more = events.len() > limit;
                events.truncate(limit);
                let ended = (job.status.is_finished() && !more).then_some(job.status);
                Ok::<_, QueueError>((events, ended))
            })?;
            if !events.is_empty() || ended.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(Followed { events, ended });
            }
            // Events are written without a job change: look again soon, sooner on a change.
            let _ = tokio::time::timeout(FOLLOW_POLL, changes.changed()).await;
        }
    }

    /// Asks for termination of the job and of all its descendants, in one transaction: sets
    /// `desiredStatus: terminating` on each unfinished one; the scheduler does the rest.
    pub fn kill(&self, id: &str) -> Result<Job, QueueError> {
        let job = self.job(id)?;
        let ids = self.tree(&job)?;
        let root = job.id;
        let killed = self.kill_jobs(&ids, root)?;
        // A flow part that started between the tree's reading and the kill created children
        // the kill missed; a killed part starts nothing more, so one more look finds them all.
        let missed: Vec<u64> = self
            .tree(&job)?
            .into_iter()
            .filter(|id| !ids.contains(id))
            .collect();
        if !missed.is_empty() {
            self.kill_jobs(&missed, root)?;
        }
        tracing::info!(
            job_id = killed.id,
            descendants = ids.len() + missed.len() - 1,
            "termination requested"
        );
        self.changed();
        Ok(killed)
    }

    /// Sets `desiredStatus: terminating` on each unfinished job of `ids` in one transaction; the
    /// first job comes back. `root` finished already is `NotKillable`.
    fn kill_jobs(&self, ids: &[u64], root: u64) -> Result<Job, QueueError> {
        let updated = self.store.update_jobs(ids, |job| {
            if job.status.is_finished() {
                if job.id == root {
                    return Err(QueueError::NotKillable {
                        id: job.id,
                        status: job.status,
                    });
                }
                return Ok(());
            }
            job.desired_status = DesiredStatus::Terminating;
            Ok(())
        });
        match updated {
            Ok(mut jobs) => Ok(jobs.remove(0)),
            Err(UpdateError::Rejected(error)) => Err(error),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// The ids of `job` and of all its descendants, `job` first.
    fn tree(&self, job: &Job) -> Result<Vec<u64>, QueueError> {
        let mut ids = vec![job.id];
        let mut parents = vec![job.run_id.clone()];
        while let Some(parent) = parents.pop() {
            for child in self.store.children(parent.as_str())? {
                ids.push(child.id);
                parents.push(child.run_id);
            }
        }
        Ok(ids)
    }

    /// Writes a change to one job (never its status: see `move_if` and `end`) and tells the
    /// long polls.
    fn update(&self, id: u64, change: impl FnOnce(&mut Job)) -> Result<Job, QueueError> {
        let updated = blocking(|| {
            self.store.update_job(id, |job| {
                change(job);
                Ok::<(), std::convert::Infallible>(())
            })
        });
        let job = match updated {
            Ok(job) => job,
            Err(UpdateError::Store(error)) => return Err(error.into()),
            Err(UpdateError::Rejected(never)) => match never {},
        };
        self.changed();
        Ok(job)
    }

    /// Moves job `id` from `from` to `to` through the state machine if it is still in `from`,
    /// re-checked inside the write transaction (compare-and-set). `None` when another path
    /// changed its status first: a lost race, which the caller skips quietly.
    fn move_if(&self, id: u64, from: Status, to: Status) -> Result<Option<Job>, QueueError> {
        let moved = blocking(|| {
            self.store.update_job(id, |job| {
                if job.status != from {
                    return Err(None);
                }
                job.move_to(to, now_micros()).map_err(Some)
            })
        });
        match moved {
            Ok(job) => {
                self.changed();
                Ok(Some(job))
            }
            Err(UpdateError::Rejected(None)) => {
                tracing::debug!(job_id = id, %from, %to, "the job's status changed first; skipped");
                Ok(None)
            }
            Err(UpdateError::Rejected(Some(forbidden))) => Err(QueueError::Forbidden(forbidden)),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// Tells the scheduler and the long polls that some job changed.
    fn changed(&self) {
        self.changes
            .send_modify(|tick| *tick = tick.wrapping_add(1));
        self.wake.notify_one();
    }

    fn event(&self, job: &Job, event_type: EventType, message: &str) {
        self.record(job, event_type, EventSource::Jobq, message);
    }

    fn record(&self, job: &Job, event_type: EventType, source: EventSource, message: &str) {
        let message = self.redact(job.id, message);
        let event = NewEvent {
            job_id: job.id,
            event_type,
            source,
            message: &message,
            run_id: job.run_id.as_str(),
            component: &job.component,
            created: now_micros(),
        };
        if let Err(error) = blocking(|| self.store.add_event(event)) {
            tracing::error!(job_id = job.id, error = %chain(&error), "cannot store an event");
        }
    }

    /// `text` with the running job's secrets hidden.
    fn redact(&self, job_id: u64, text: &str) -> String {
        match self.lock_redactors().get(&job_id) {
            Some(redactor) => redactor.redact(text),
            None => text.to_string(),
        }
    }

    fn lock_redactors(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Redactor>>> {
        self.redactors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    fn lock_told_low_space(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.told_low_space
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_notifying(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<crate::model::FlowTask>>> {
        self.notifying
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_sending(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.sending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod retention_bench;
#[cfg(test)]
mod tests;
