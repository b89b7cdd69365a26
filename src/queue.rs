//! The queue: creates jobs, schedules them (capacity, configuration locks, delays), kills job
//! trees, records how runs end, and settles what a previous process left behind.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::job::{
    now_micros, parse_time, DesiredStatus, Event, EventSource, EventType, Job, JobQuery, JobType,
    Mode, NewEvent, Status,
};
use crate::runner::{Run, RunObserver, RunOutcome, Runner};
use crate::settings::{Settings, Token};
use crate::state::TransitionForbidden;
use crate::store::{Store, StoreError, UpdateError};

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
    /// Seconds to hold the job in `created`.
    pub delay: Option<u64>,
    /// The earliest start, ISO 8601 (or relative, like `+5 minutes`).
    pub delayed_start_time: Option<String>,
    /// `X-KBC-RunId`: the new job becomes a child of that run.
    pub parent_run_id: Option<String>,
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
    #[error("Job \"{id}\" is already finished ({status}); only jobs in one of killable states (created, waiting, processing, terminating) can be killed.")]
    NotKillable { id: u64, status: Status },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UpdateError<TransitionForbidden>> for QueueError {
    fn from(error: UpdateError<TransitionForbidden>) -> Self {
        match error {
            UpdateError::Store(error) => QueueError::Store(error),
            UpdateError::Rejected(forbidden) => QueueError::Store(StoreError::Corrupt {
                record: "job status",
                detail: forbidden.to_string(),
            }),
        }
    }
}

/// The job queue shared by the HTTP handlers and the scheduler.
pub struct Queue {
    store: Arc<Store>,
    settings: Arc<Settings>,
    runner: Arc<Runner>,
    /// Wakes the scheduler: a job was created, killed or finished.
    wake: Notify,
    /// Ticks on every job change; long polls wait on it.
    changes: watch::Sender<u64>,
    /// Jobs whose container this process runs, with the handle that terminates it.
    running: Mutex<HashMap<u64, CancellationToken>>,
}

/// How long the scheduler waits before retrying when the engine is unreachable.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How often leftover containers and expired job folders are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Jobs of one component + configuration + branch (+ row set) run one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LockKey {
    component: String,
    config: String,
    branch: String,
    rows: Vec<String>,
}

/// Jobs run from `configData` alone take no lock.
fn lock_key(job: &Job) -> Option<LockKey> {
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
struct Pass {
    /// Some job waits for the engine to answer.
    engine_down: bool,
    /// The earliest delayed start still ahead.
    next_delayed_start: Option<i64>,
}

impl Queue {
    pub fn new(store: Arc<Store>, settings: Arc<Settings>, runner: Arc<Runner>) -> Arc<Queue> {
        Arc::new(Queue {
            store,
            settings,
            runner,
            wake: Notify::new(),
            changes: watch::Sender::new(0),
            running: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Validates and stores a new job in `created`, then wakes the scheduler.
    pub fn create(&self, request: NewJob, token: &Token) -> Result<Job, QueueError> {
        let invalid = |field: &'static str, message: String| QueueError::Invalid { field, message };
        if request.component.is_empty() {
            return Err(invalid(
                "component",
                "The \"component\" field is required.".into(),
            ));
        }
        let component = self.settings.component(&request.component).ok_or_else(|| {
            invalid(
                "component",
                format!(
                    "Component \"{}\" is not registered in jobq's settings.",
                    request.component
                ),
            )
        })?;
        if request.variable_values_id.is_some() && request.variable_values_data.is_some() {
            return Err(invalid(
                "variableValuesId",
                "Provide either \"variableValuesId\" or \"variableValuesData\", but not both."
                    .into(),
            ));
        }
        let now = now_micros();
        let delayed_start_time = match (request.delay, &request.delayed_start_time) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "delay",
                    "Provide either \"delay\" or \"delayedStartTime\", but not both.".into(),
                ))
            }
            (Some(seconds), None) => Some(now + seconds as i64 * 1_000_000),
            (None, Some(text)) => Some(parse_time(text).ok_or_else(|| {
                invalid(
                    "delayedStartTime",
                    format!(
                        "Field \"delayedStartTime\" must be an ISO 8601 time, \"{text}\" given."
                    ),
                )
            })?),
            (None, None) => None,
        };
        let runtime = request.config_data.get("runtime");
        let tag = request
            .tag
            .clone()
            .or_else(|| {
                runtime
                    .and_then(|r| r.get("tag"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| component.tag.clone());
        let parallelism = request.parallelism.clone().or_else(|| {
            runtime.and_then(|r| r.get("parallelism")).and_then(|p| {
                p.as_str()
                    .map(str::to_string)
                    .or_else(|| p.as_u64().map(|n| n.to_string()))
            })
        });
        let parent_run_id = match &request.parent_run_id {
            Some(parent) if !parent.is_empty() => {
                if self.store.job_by_run_id(parent)?.is_none() {
                    return Err(invalid(
                        "X-KBC-RunId",
                        format!(
                            "Parent run \"{parent}\" of the X-KBC-RunId header does not exist."
                        ),
                    ));
                }
                parent.clone()
            }
            _ => String::new(),
        };
        let settings = &self.settings;
        let job = self.store.create_job(|id| Job {
            id,
            run_id: if parent_run_id.is_empty() {
                id.to_string()
            } else {
                format!("{parent_run_id}.{id}")
            },
            parent_run_id: parent_run_id.clone(),
            project_id: settings.project.id.clone(),
            project_name: settings.project.name.clone(),
            token_id: token.id.clone(),
            token_description: token.description.clone(),
            status: Status::Created,
            desired_status: DesiredStatus::Processing,
            mode: request.mode.unwrap_or(Mode::Run),
            component: request.component.clone(),
            config: request.config.clone(),
            config_data: request.config_data.clone(),
            config_row_ids: request.config_row_ids.clone(),
            tag,
            branch_id: request
                .branch_id
                .clone()
                .unwrap_or_else(|| settings.project.default_branch_id.clone()),
            created_time: now,
            start_time: None,
            end_time: None,
            result: json!({}),
            usage_data: json!({}),
            variable_values_id: request.variable_values_id.clone(),
            variable_values_data: request
                .variable_values_data
                .clone()
                .unwrap_or_else(|| json!({"values": []})),
            backend: request.backend.clone().unwrap_or_else(|| json!({})),
            metrics: json!({}),
            behavior: json!({"onError": null}),
            parallelism,
            job_type: JobType::Standard,
            container_id: None,
            outcome: None,
            delayed_start_time,
            revision: 0,
        })?;
        tracing::info!(job_id = job.id, component = %job.component, "job created");
        self.changed();
        Ok(job)
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
            let job = self.job(id)?;
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

    pub fn events(
        &self,
        job_id: &str,
        since_id: Option<u64>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Event>, QueueError> {
        let job = self.job(job_id)?;
        Ok(self.store.events(job.id, since_id, offset, limit)?)
    }

    /// Asks for termination of the job and of all its descendants, in one transaction: sets
    /// `desiredStatus: terminating` on each unfinished one; the scheduler does the rest.
    pub fn kill(&self, id: &str) -> Result<Job, QueueError> {
        let job = self.job(id)?;
        let mut ids = vec![job.id];
        let mut parents = vec![job.run_id.clone()];
        while let Some(parent) = parents.pop() {
            for child in self.store.children(&parent)? {
                ids.push(child.id);
                parents.push(child.run_id);
            }
        }
        let root = job.id;
        let updated = self.store.update_jobs(&ids, |job| {
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
        let job = match updated {
            Ok(mut jobs) => jobs.remove(0),
            Err(UpdateError::Rejected(error)) => return Err(error),
            Err(UpdateError::Store(error)) => return Err(error.into()),
        };
        tracing::info!(
            job_id = job.id,
            descendants = ids.len() - 1,
            "termination requested"
        );
        self.changed();
        Ok(job)
    }

    /// Settles what the previous process left, before anything new starts: a `processing` job
    /// without a container goes back to `created`; one with a container is re-attached (its
    /// container keeps running); `terminating` jobs finish their termination. Containers of this
    /// store that belong to no such job are removed.
    pub async fn recover(self: &Arc<Self>) -> Result<(), QueueError> {
        for status in [Status::Processing, Status::Terminating] {
            for job in self.store.jobs_with_status(status)? {
                if job.outcome.is_some() {
                    // It ended before the crash: only the cleanup was left.
                    if let Some(container_id) = &job.container_id {
                        self.runner.remove_container(container_id).await;
                    }
                    self.finalize(&job)?;
                    continue;
                }
                match job.container_id.clone() {
                    None if status == Status::Processing => {
                        self.update(job.id, |job| job.move_to(Status::Created, now_micros()))?;
                        self.event(
                            &job,
                            EventType::Warn,
                            "The job was requeued: jobq stopped before its container started.",
                        );
                    }
                    None => {
                        self.update(job.id, |job| job.move_to(Status::Terminated, now_micros()))?;
                    }
                    Some(container_id) => {
                        tracing::info!(job_id = job.id, %container_id, "re-attaching to a running job");
                        let cancel = CancellationToken::new();
                        if status == Status::Terminating {
                            cancel.cancel();
                        }
                        self.lock_running().insert(job.id, cancel.clone());
                        tokio::spawn(Arc::clone(self).execute(job, Some(container_id), cancel));
                    }
                }
            }
        }
        self.sweep().await;
        Ok(())
    }

    /// The scheduler loop: runs until `shutdown`, woken by creations, kills and finishes.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_sweep = tokio::time::Instant::now() + SWEEP_INTERVAL;
        loop {
            let pause = match self.schedule().await {
                Ok(pass) if pass.engine_down => RETRY_INTERVAL,
                Ok(pass) => match pass.next_delayed_start {
                    Some(at) => Duration::from_micros((at - now_micros()).max(0) as u64),
                    None => SWEEP_INTERVAL,
                },
                Err(error) => {
                    tracing::error!(%error, "scheduling failed; retrying");
                    RETRY_INTERVAL
                }
            };
            if tokio::time::Instant::now() >= next_sweep {
                self.sweep().await;
                next_sweep = tokio::time::Instant::now() + SWEEP_INTERVAL;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause.min(SWEEP_INTERVAL)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass: applies kills, then starts, oldest first, every job that may start now.
    async fn schedule(self: &Arc<Self>) -> Result<Pass, QueueError> {
        let now = now_micros();
        let mut pass = Pass {
            engine_down: false,
            next_delayed_start: None,
        };
        for status in [Status::Created, Status::Waiting, Status::Processing] {
            for job in self.store.jobs_with_status(status)? {
                if job.desired_status == DesiredStatus::Terminating {
                    self.terminate(&job)?;
                }
            }
        }

        let mut held: HashSet<LockKey> = HashSet::new();
        for status in [Status::Processing, Status::Terminating] {
            held.extend(
                self.store
                    .jobs_with_status(status)?
                    .iter()
                    .filter_map(lock_key),
            );
        }
        let mut free = self
            .settings
            .max_concurrent_jobs
            .saturating_sub(self.running_count());
        let mut candidates = self.store.jobs_with_status(Status::Created)?;
        candidates.extend(self.store.jobs_with_status(Status::Waiting)?);
        candidates.sort_by_key(|job| job.id);
        let mut engine_up: Option<bool> = None;
        for job in candidates {
            if job.desired_status == DesiredStatus::Terminating {
                continue;
            }
            if let Some(at) = job.delayed_start_time.filter(|at| *at > now) {
                pass.next_delayed_start =
                    Some(pass.next_delayed_start.map_or(at, |next| next.min(at)));
                continue;
            }
            let key = lock_key(&job);
            // A configuration lock is a reason inside the project: the job waits.
            if key.as_ref().is_some_and(|key| held.contains(key)) {
                if job.status == Status::Created {
                    self.update(job.id, |job| job.move_to(Status::Waiting, now_micros()))?;
                    self.event(
                        &job,
                        EventType::Info,
                        "Waiting for an earlier job of the same configuration to finish.",
                    );
                }
                continue;
            }
            // Capacity and the engine are platform reasons: the job stays (or goes back to) created.
            let engine_up = match engine_up {
                Some(up) => up,
                None => {
                    let up = free > 0 && self.engine_answers().await;
                    engine_up = Some(up || free == 0);
                    pass.engine_down |= free > 0 && !up;
                    up || free == 0
                }
            };
            if free == 0 || !engine_up {
                if job.status == Status::Waiting {
                    self.update(job.id, |job| job.move_to(Status::Created, now_micros()))?;
                }
                continue;
            }
            let job = self.update(job.id, |job| job.move_to(Status::Processing, now_micros()))?;
            free -= 1;
            if let Some(key) = key {
                held.insert(key);
            }
            let cancel = CancellationToken::new();
            self.lock_running().insert(job.id, cancel.clone());
            tokio::spawn(Arc::clone(self).execute(job, None, cancel));
        }
        Ok(pass)
    }

    async fn engine_answers(&self) -> bool {
        match self.runner.ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "jobs stay created until the engine answers");
                false
            }
        }
    }

    /// Applies a kill: jobs that have not started are cancelled; running ones go `terminating`.
    fn terminate(&self, job: &Job) -> Result<(), QueueError> {
        match job.status {
            Status::Created | Status::Waiting => {
                self.update(job.id, |job| job.move_to(Status::Cancelled, now_micros()))?;
                self.event(job, EventType::Warn, "Job was cancelled before it started.");
            }
            Status::Processing => {
                self.update(job.id, |job| job.move_to(Status::Terminating, now_micros()))?;
                self.event(job, EventType::Warn, "Job termination requested.");
                match self.lock_running().get(&job.id) {
                    Some(cancel) => cancel.cancel(),
                    // No run of this process holds it: nothing runs, so it is terminated.
                    None => {
                        self.update(job.id, |job| job.move_to(Status::Terminated, now_micros()))?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs one job's container (or re-attaches to `container_id`) and records how it ended.
    async fn execute(
        self: Arc<Self>,
        job: Job,
        container_id: Option<String>,
        cancel: CancellationToken,
    ) {
        let outcome = match self.settings.component(&job.component) {
            Some(component) => {
                let observer = JobObserver {
                    queue: &self,
                    job: &job,
                };
                let run = Run {
                    job: &job,
                    component,
                    settings: &self.settings,
                    observer: &observer,
                };
                match &container_id {
                    Some(container_id) => self.runner.attach(&run, container_id, cancel).await,
                    None => {
                        self.event(
                            &job,
                            EventType::Info,
                            &format!("Running component {} (row 1 of 1)", component.id),
                        );
                        self.runner.run(&run, cancel).await
                    }
                }
            }
            None => RunOutcome::Requeue {
                reason: format!("component \"{}\" is no longer registered", job.component),
            },
        };
        let requeued = matches!(outcome, RunOutcome::Requeue { .. });
        if let Err(error) = self.finish(&job, outcome).await {
            tracing::error!(job_id = job.id, %error, "cannot record the end of a job");
        }
        if requeued {
            // Retried after a pause rather than in a tight loop.
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        self.lock_running().remove(&job.id);
        self.wake.notify_one();
    }

    /// Records how a run ended. A finished container's result is stored first, then the
    /// container is removed, then the job takes its final status: a crash at any step loses
    /// neither the result nor the container, and a finished job has no container left.
    async fn finish(&self, job: &Job, outcome: RunOutcome) -> Result<(), QueueError> {
        match outcome {
            RunOutcome::Requeue { reason } => {
                tracing::warn!(job_id = job.id, %reason, "platform failure; the job goes back to created");
                self.update(job.id, |job| {
                    job.container_id = None;
                    match job.status {
                        // Killed meanwhile: nothing ran, so it ends without running.
                        Status::Terminating => job.move_to(Status::Terminated, now_micros()),
                        _ => job.move_to(Status::Created, now_micros()),
                    }
                })?;
                Ok(())
            }
            RunOutcome::Finished {
                verdict,
                result,
                usage_data,
                container_id,
            } => {
                let recorded = self.update(job.id, |job| {
                    job.result = result;
                    if let Some(usage) = usage_data {
                        job.usage_data = usage;
                    }
                    job.outcome = Some(verdict.status);
                    Ok(())
                })?;
                if let Some(container_id) = container_id {
                    self.runner.remove_container(&container_id).await;
                }
                self.finalize(&recorded)
            }
        }
    }

    /// Moves a job whose outcome is recorded to its final status, with the final error event.
    fn finalize(&self, job: &Job) -> Result<(), QueueError> {
        let Some(outcome) = job.outcome else {
            return Ok(());
        };
        let finished = self.update(job.id, |job| {
            // A killed job ends terminated even if its container had already exited.
            let to = if job.status == Status::Terminating {
                Status::Terminated
            } else {
                outcome
            };
            job.move_to(to, now_micros())
        })?;
        let kind = finished.result["error"]["type"].as_str();
        if let (Status::Error, Some(kind)) = (finished.status, kind) {
            let message = format!(
                "Job \"{}\" ended with {kind} error: \"{}\"",
                job.id,
                finished.result["message"].as_str().unwrap_or_default()
            );
            self.event(job, EventType::Error, &message);
        }
        tracing::info!(job_id = job.id, status = %finished.status, "job finished");
        Ok(())
    }

    /// Removes containers of this store that no running job owns, and folders of jobs
    /// finished longer ago than `job_folder_retention`.
    async fn sweep(&self) {
        let containers = match self.runner.labelled_containers().await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::debug!(%error, "cannot list containers to sweep");
                Vec::new()
            }
        };
        for (container_id, job_id) in containers {
            let owned = match job_id.parse::<u64>() {
                Ok(id) => {
                    self.lock_running().contains_key(&id)
                        || matches!(self.store.job(id), Ok(Some(job)) if job.container_id.as_deref() == Some(container_id.as_str()) && !job.status.is_finished())
                }
                Err(_) => false,
            };
            if !owned {
                tracing::info!(%container_id, %job_id, "removing a container no running job owns");
                self.runner.remove_container(&container_id).await;
            }
        }
        let cutoff = now_micros() - self.settings.job_folder_retention.as_micros() as i64;
        let jobs_dir = self.settings.data_dir.join("jobs");
        let Ok(entries) = std::fs::read_dir(&jobs_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            let expired = match self.store.job(id) {
                Ok(Some(job)) => {
                    job.status.is_finished() && job.end_time.is_some_and(|end| end < cutoff)
                }
                Ok(None) => true,
                Err(_) => false,
            };
            if expired {
                if let Err(error) =
                    tokio::task::block_in_place(|| std::fs::remove_dir_all(entry.path()))
                {
                    tracing::warn!(job_id = id, %error, "cannot remove an expired job folder");
                }
            }
        }
    }

    /// Writes a change to one job and tells the long polls.
    fn update(
        &self,
        id: u64,
        change: impl FnOnce(&mut Job) -> Result<(), TransitionForbidden>,
    ) -> Result<Job, QueueError> {
        let job = tokio::task::block_in_place(|| self.store.update_job(id, change))?;
        self.changed();
        Ok(job)
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
        let event = NewEvent {
            job_id: job.id,
            event_type,
            source,
            message,
            run_id: &job.run_id,
            component: &job.component,
            created: now_micros(),
        };
        if let Err(error) = tokio::task::block_in_place(|| self.store.add_event(event)) {
            tracing::error!(job_id = job.id, %error, "cannot store an event");
        }
    }

    fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Persists what a run reports for one job.
struct JobObserver<'a> {
    queue: &'a Queue,
    job: &'a Job,
}

impl RunObserver for JobObserver<'_> {
    fn container_created(&self, container_id: &str) -> Result<(), String> {
        self.queue
            .update(self.job.id, |job| {
                job.container_id = Some(container_id.to_string());
                Ok(())
            })
            .map(drop)
            .map_err(|error| error.to_string())
    }

    fn event(&self, event_type: EventType, source: EventSource, message: &str) {
        self.queue.record(self.job, event_type, source, message);
    }

    fn stdout_lines_recorded(&self) -> usize {
        tokio::task::block_in_place(|| {
            self.queue
                .store
                .count_events(self.job.id, EventSource::Stdout)
        })
        .unwrap_or_else(|error| {
            tracing::error!(job_id = self.job.id, %error, "cannot count recorded log lines");
            0
        })
    }
}
