//! The queue: creates jobs, schedules them (capacity, configuration locks, delays), kills job
//! trees, records how runs end, and settles what a previous process left behind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Configuration;
use crate::debug;
use crate::job::{
    now_micros, parse_time, DesiredStatus, Event, EventSource, EventType, Job, JobQuery, JobType,
    Mode, NewEvent, Status,
};
use crate::mapping::input::{self, Inputs};
use crate::mapping::output::{self, OutputMapping, Outputs};
use crate::plan::{self, Plan};
use crate::runner::outcome::Verdict;
use crate::runner::workspace::{self, Workspace};
use crate::runner::{outcome, Run, RunObserver, RunOutcome, Runner, Task};
use crate::secrets::{self, Redactor, Scope, Secrets};
use crate::settings::Component;
use crate::settings::{Settings, Token};
use crate::state::TransitionForbidden;
use crate::storage::Storage;
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
    /// `{"onError": "stop" | "warning" | "fail"}`: how a container job takes a failed child.
    pub behavior: Option<Value>,
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
    storage: Arc<Storage>,
    secrets: Arc<Secrets>,
    /// Per running job: its decrypted secrets, hidden in everything it records.
    redactors: Mutex<HashMap<u64, Arc<Redactor>>>,
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
    pub fn new(
        store: Arc<Store>,
        storage: Arc<Storage>,
        secrets: Arc<Secrets>,
        settings: Arc<Settings>,
        runner: Arc<Runner>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            store,
            storage,
            secrets,
            redactors: Mutex::new(HashMap::new()),
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
        let behavior = match request.behavior.as_ref().map(|b| b.get("onError")) {
            None | Some(None) | Some(Some(Value::Null)) => json!({"onError": null}),
            Some(Some(Value::String(on_error)))
                if ["stop", "warning", "fail"].contains(&on_error.as_str()) =>
            {
                json!({"onError": on_error})
            }
            Some(Some(other)) => {
                return Err(invalid(
                    "behavior",
                    format!(
                        "Field \"behavior.onError\" must be stop, warning or fail; {other} given."
                    ),
                ))
            }
        };
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
        let branch_id = request
            .branch_id
            .clone()
            .unwrap_or_else(|| self.settings.project.default_branch_id.clone());
        let stored = self.stored_configuration(
            request.config.as_deref(),
            &request.config_data,
            &request.component,
            &branch_id,
        )?;
        let mode = request.mode.unwrap_or(Mode::Run);
        let mut rows = Vec::new();
        if let Some(stored) = &stored {
            if stored.is_disabled && mode != Mode::ForceRun {
                return Err(invalid(
                    "config",
                    format!(
                        "Configuration \"{}\" of component \"{}\" is disabled.",
                        stored.id, stored.component
                    ),
                ));
            }
            plan::check_processors(stored).map_err(|message| invalid("configData", message))?;
            let (selected, _) = plan::select_rows(stored, &request.config_row_ids)
                .map_err(|message| invalid("configRowIds", message))?;
            rows = selected.into_iter().map(|row| row.id.clone()).collect();
        }
        // Resolution order of spec/queue.md: the job, then configData, then the stored configuration.
        let runtime_of = |configuration: &Value, key: &str| -> Option<String> {
            let value = configuration.get("runtime")?.get(key)?;
            value
                .as_str()
                .map(str::to_string)
                .or_else(|| value.as_u64().map(|n| n.to_string()))
        };
        let stored_configuration = stored.as_ref().map(|s| &s.configuration);
        let tag = request
            .tag
            .clone()
            .or_else(|| runtime_of(&request.config_data, "tag"))
            .or_else(|| {
                stored_configuration
                    .and_then(|c| runtime_of(c, "tag").or_else(|| runtime_of(c, "image_tag")))
            })
            .unwrap_or_else(|| component.tag.clone());
        let parallelism = request
            .parallelism
            .clone()
            .or_else(|| runtime_of(&request.config_data, "parallelism"))
            .or_else(|| stored_configuration.and_then(|c| runtime_of(c, "parallelism")));
        if let Some(parallelism) = &parallelism {
            let valid =
                parallelism == "infinity" || parallelism.parse::<u32>().is_ok_and(|n| n <= 100);
            if !valid {
                return Err(invalid(
                    "parallelism",
                    format!("Field \"parallelism\" must be \"0\"..\"100\" or \"infinity\", \"{parallelism}\" given."),
                ));
            }
        }
        // Backend: stored configuration, then configData, then the job; non-null values win.
        let mut backend = json!({});
        for layer in [
            stored_configuration
                .and_then(|c| c.get("runtime"))
                .and_then(|r| r.get("backend")),
            request
                .config_data
                .get("runtime")
                .and_then(|r| r.get("backend")),
            request.backend.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            for (key, value) in layer.as_object().into_iter().flatten() {
                if !value.is_null() {
                    backend[key] = value.clone();
                }
            }
        }
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
        // Parallelism over two or more rows: a container job with one child per row.
        let parallel = parallelism.as_deref().is_some_and(|p| p != "0") && rows.len() >= 2;
        // Secrets are stored (and answered) only as ciphertexts.
        let mut config_data = request.config_data.clone();
        let scope = Scope::Project {
            component: request.component.clone(),
            project: self.settings.project.id.clone(),
        };
        self.secrets.encrypt_json(&mut config_data, &scope);
        let settings = &self.settings;
        let make = |id: u64,
                    parent_run_id: &str,
                    job_type: JobType,
                    row_ids: Vec<String>,
                    parallelism: Option<String>| Job {
            id,
            run_id: if parent_run_id.is_empty() {
                id.to_string()
            } else {
                format!("{parent_run_id}.{id}")
            },
            parent_run_id: parent_run_id.to_string(),
            project_id: settings.project.id.clone(),
            project_name: settings.project.name.clone(),
            token_id: token.id.clone(),
            token_description: token.description.clone(),
            status: Status::Created,
            desired_status: DesiredStatus::Processing,
            mode,
            component: request.component.clone(),
            config: request.config.clone(),
            config_data: config_data.clone(),
            config_row_ids: row_ids,
            tag: tag.clone(),
            branch_id: branch_id.clone(),
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
            backend: backend.clone(),
            metrics: json!({}),
            behavior: behavior.clone(),
            parallelism,
            job_type,
            container_id: None,
            outcome: None,
            rows_done: 0,
            stages_done: 0,
            stdout_base: 0,
            delayed_start_time,
            revision: 0,
        };
        let job = if parallel {
            let mut jobs = self.store.create_jobs(rows.len() + 1, |ids| {
                let container = make(
                    ids[0],
                    &parent_run_id,
                    JobType::Container,
                    request.config_row_ids.clone(),
                    parallelism.clone(),
                );
                let children = ids[1..].iter().zip(&rows).map(|(&id, row)| {
                    make(
                        id,
                        &container.run_id,
                        JobType::Standard,
                        vec![row.clone()],
                        None,
                    )
                });
                std::iter::once(container.clone()).chain(children).collect()
            })?;
            jobs.remove(0)
        } else {
            self.store.create_job(|id| {
                make(
                    id,
                    &parent_run_id,
                    JobType::Standard,
                    request.config_row_ids.clone(),
                    parallelism.clone(),
                )
            })?
        };
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
                if job.job_type == JobType::Container {
                    // Virtual: it finishes when its children do.
                    self.settle_container(&job.run_id)?;
                    continue;
                }
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
        // Processing children per parent run, for the parallelism of container jobs.
        let mut active_children: HashMap<String, usize> = HashMap::new();
        for status in [Status::Processing, Status::Terminating] {
            for job in self.store.jobs_with_status(status)? {
                held.extend(lock_key(&job));
                if !job.parent_run_id.is_empty() {
                    *active_children
                        .entry(job.parent_run_id.clone())
                        .or_default() += 1;
                }
            }
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
                if job.status == Status::Created {
                    self.update(job.id, |job| job.move_to(Status::Waiting, now_micros()))?;
                    self.event(&job, EventType::Info, reason);
                }
                continue;
            }
            if job.job_type == JobType::Container {
                // Virtual: no container, no capacity; it finishes when its children do.
                self.update(job.id, |job| job.move_to(Status::Processing, now_micros()))?;
                held.extend(key);
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
            if !job.parent_run_id.is_empty() {
                *active_children
                    .entry(job.parent_run_id.clone())
                    .or_default() += 1;
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
        active_children: &HashMap<String, usize>,
    ) -> Result<bool, QueueError> {
        if job.parent_run_id.is_empty() {
            return Ok(false);
        }
        let Some(parent) = self.store.job_by_run_id(&job.parent_run_id)? else {
            return Ok(false);
        };
        if parent.job_type != JobType::Container {
            return Ok(false);
        }
        let limit = match parent.parallelism.as_deref() {
            Some("infinity") | None => return Ok(false),
            Some(limit) => limit.parse::<usize>().unwrap_or(usize::MAX).max(1),
        };
        Ok(active_children
            .get(&job.parent_run_id)
            .copied()
            .unwrap_or(0)
            >= limit)
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
            Status::Processing if job.job_type == JobType::Container => {
                self.update(job.id, |job| job.move_to(Status::Terminating, now_micros()))?;
                // Its children were asked to terminate with it; it ends when they have.
                self.settle_container(&job.run_id)?;
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

    /// Runs one job's containers (re-attaching to `container_id` first) and records how it ended.
    async fn execute(
        self: Arc<Self>,
        job: Job,
        container_id: Option<String>,
        cancel: CancellationToken,
    ) {
        let requeued = match self.run_job(&job, container_id, &cancel).await {
            Ok(requeued) => requeued,
            Err(error) => {
                tracing::error!(job_id = job.id, %error, "cannot record the end of a job");
                false
            }
        };
        self.lock_redactors().remove(&job.id);
        if requeued {
            // Retried after a pause rather than in a tight loop.
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        self.lock_running().remove(&job.id);
        self.wake.notify_one();
    }

    /// Runs the job's remaining tasks (rows) one after another, and in each its images
    /// (processors before, the component, processors after), recording each image's end. A
    /// finished container's result is stored first, then the container is removed, then the job
    /// takes its final status: a crash at any step loses neither a result nor a container, and a
    /// finished job has no container left. Returns whether the job went back to `created`.
    async fn run_job(
        &self,
        job: &Job,
        mut attach_to: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<bool, QueueError> {
        let Some(component) = self.settings.component(&job.component) else {
            let reason = format!("component \"{}\" is no longer registered", job.component);
            return self.requeue(job, &reason).map(|()| true);
        };
        let mut plan = match self.plan(job) {
            Ok(plan) => plan,
            Err(message) => return self.fail(job, message).map(|()| false),
        };
        // Secrets are decrypted only into the running job's folder, and hidden in all it records.
        let reader = Scope::for_job(&job.component, &job.project_id, job.config.as_deref());
        let mut found = Vec::new();
        for task in &mut plan.tasks {
            let decrypted = self
                .secrets
                .decrypt_json(&mut task.configuration, &reader, &mut found)
                .and_then(|()| {
                    self.secrets
                        .decrypt_json(&mut task.state, &reader, &mut found)
                });
            if let Err(error) = decrypted {
                return self.fail(job, error.to_string()).map(|()| false);
            }
        }
        let _logs_hide_them = secrets::register(&found);
        self.lock_redactors()
            .insert(job.id, Arc::new(Redactor::new(&found)));
        if job.rows_done == 0 && job.stages_done == 0 && attach_to.is_none() {
            for row in &plan.skipped_rows {
                self.event(
                    job,
                    EventType::Info,
                    &format!("Skipping disabled configuration: {row}"),
                );
            }
        }
        let total = plan.tasks.len();
        let mut job = job.clone();
        for (index, task) in plan.tasks.iter().enumerate().skip(job.rows_done as usize) {
            let images = match self.images(&job, component, task) {
                Ok(images) => images,
                Err(message) => return self.fail(&job, message).map(|()| false),
            };
            let workspace = Workspace::of(&task.folder);
            let mut inputs = Inputs::default();
            if job.stages_done == 0 && attach_to.is_none() {
                let message = format!(
                    "Running component {} (row {} of {total})",
                    component.id,
                    index + 1
                );
                self.event(&job, EventType::Info, &message);
                let prepared = tokio::task::block_in_place(|| {
                    workspace::prepare(&task.folder, &task.state).map_err(|error| error.to_string())
                });
                if let Err(reason) = prepared {
                    return self
                        .requeue(&job, &format!("cannot prepare the job folder: {reason}"))
                        .map(|()| true);
                }
                inputs = match tokio::task::block_in_place(|| {
                    input::map_inputs(&self.storage, &task.configuration, &workspace.data)
                }) {
                    Ok(inputs) => inputs,
                    Err(message) => return self.fail(&job, message).map(|()| false),
                };
            }
            for (stage, image) in images.iter().enumerate().skip(job.stages_done as usize) {
                let reattach = attach_to.take();
                if reattach.is_none() {
                    let staged = tokio::task::block_in_place(|| -> Result<(), String> {
                        if stage > 0 {
                            workspace::rotate(&task.folder, stage)
                                .map_err(|error| error.to_string())?;
                        }
                        workspace::write_config(&workspace, &image.config)
                            .map_err(|error| error.to_string())
                    });
                    if let Err(reason) = staged {
                        return self
                            .requeue(&job, &format!("cannot prepare the next image: {reason}"))
                            .map(|()| true);
                    }
                    if job.mode == Mode::Debug {
                        self.snapshot(&job, task, image.component, Some(stage))?;
                    }
                    if image.processor {
                        self.event(
                            &job,
                            EventType::Info,
                            &format!("Running processor {}", image.component.id),
                        );
                    }
                }
                let observer = JobObserver {
                    queue: self,
                    job: &job,
                    stdout_base: AtomicU64::new(job.stdout_base),
                };
                let run = Run {
                    job: &job,
                    task,
                    stage,
                    component: image.component,
                    settings: &self.settings,
                    observer: &observer,
                };
                let outcome = match reattach {
                    Some(container_id) => {
                        self.runner
                            .attach(&run, &container_id, cancel.clone())
                            .await
                    }
                    None => self.runner.run(&run, cancel.clone()).await,
                };
                let (image_verdict, image_result, exception_id, usage_data, container_id) =
                    match outcome {
                        RunOutcome::Finished {
                            verdict,
                            images,
                            exception_id,
                            usage_data,
                            container_id,
                        } => (verdict, images, exception_id, usage_data, container_id),
                        RunOutcome::Requeue { reason } => {
                            return self.requeue(&job, &reason).map(|()| true)
                        }
                    };
                let mut verdict = image_verdict;
                let image_done = verdict.status == Status::Success && stage + 1 < images.len();
                if image_done {
                    // Only this image is done: the row goes on with the next one.
                    job = self.update(job.id, |job| {
                        add_image(&mut job.result, stage, image_result);
                        job.stages_done += 1;
                        job.container_id = None;
                        Ok(())
                    })?;
                    if let Some(container_id) = container_id {
                        self.runner.remove_container(&container_id).await;
                    }
                    continue;
                }
                // The row's last image, or a failed one: the row ends here.
                if verdict.status == Status::Success && job.mode == Mode::Debug {
                    self.snapshot(&job, task, component, None)?;
                }
                let outputs = match self.map_outputs(&job, component, task, &verdict) {
                    Ok(outputs) => outputs,
                    Err(message) => {
                        verdict = outcome::user_verdict(message);
                        Outputs::default()
                    }
                };
                let ends = index + 1 == total || verdict.status != Status::Success;
                if ends && verdict.status == Status::Success {
                    self.save_state(&job, &plan)?;
                }
                job = self.update(job.id, |job| {
                    add_image(&mut job.result, stage, image_result);
                    if let Some(usage) = usage_data {
                        job.usage_data = usage;
                    }
                    add_storage_results(&mut job.result, &mut job.metrics, &inputs, &outputs);
                    job.rows_done += 1;
                    job.stages_done = 0;
                    job.container_id = None;
                    if ends {
                        job.result["message"] = json!(self.redact(job.id, &verdict.message));
                        if let Some(kind) = verdict.error {
                            job.result["error"] =
                                json!({"type": kind.as_str(), "exceptionId": exception_id});
                        }
                        plan.describe(&mut job.result);
                        job.outcome = Some(verdict.status);
                    }
                    Ok(())
                })?;
                if let Some(container_id) = container_id {
                    self.runner.remove_container(&container_id).await;
                }
                if ends {
                    return self.finalize(&job).map(|()| false);
                }
                break;
            }
        }
        // No row was selected: nothing ran.
        let finished = self.update(job.id, |job| {
            job.result = json!({"message": "No configurations executed.", "images": []});
            plan.describe(&mut job.result);
            job.outcome = Some(Status::Success);
            Ok(())
        })?;
        self.finalize(&finished).map(|()| false)
    }

    /// Ends a job with a user error found before (or between) its containers.
    fn fail(&self, job: &Job, message: String) -> Result<(), QueueError> {
        let failed = self.update(job.id, |job| {
            if !job.result["images"].is_array() {
                job.result["images"] = json!([]);
            }
            job.result["message"] = json!(message);
            job.result["error"] =
                json!({"type": "user", "exceptionId": outcome::new_exception_id()});
            job.outcome = Some(Status::Error);
            Ok(())
        })?;
        self.finalize(&failed)
    }

    /// The images of a task: `processors.before`, the component, `processors.after`, each with
    /// its registered component and its `config.json`.
    fn images<'a>(
        &'a self,
        job: &Job,
        component: &'a Component,
        task: &Task,
    ) -> Result<Vec<Image<'a>>, String> {
        let processors = |side: &str| -> Result<Vec<Image<'a>>, String> {
            task.configuration["processors"][side]
                .as_array()
                .into_iter()
                .flatten()
                .map(|processor| {
                    let id = processor["definition"]["component"]
                        .as_str()
                        .unwrap_or_default();
                    let registered = self.settings.component(id).ok_or_else(|| {
                        format!(
                            "Processor component \"{id}\" is not registered in jobq's settings."
                        )
                    })?;
                    Ok(Image {
                        component: registered,
                        config: workspace::processor_config(&processor["parameters"], registered),
                        processor: true,
                    })
                })
                .collect()
        };
        let mut images = processors("before")?;
        images.push(Image {
            component,
            config: workspace::config_json(job, component, task),
            processor: false,
        });
        images.extend(processors("after")?);
        Ok(images)
    }

    /// In debug mode: the data folder as it is now, zipped and stored as a Storage file tagged
    /// `debug`, the image's component, `jobId:<id>` and `rowId:<row>`.
    fn snapshot(
        &self,
        job: &Job,
        task: &Task,
        component: &Component,
        stage: Option<usize>,
    ) -> Result<(), QueueError> {
        let name = debug::stage_name(stage);
        let workspace = Workspace::of(&task.folder);
        let target = task.folder.join(&name);
        let stored = tokio::task::block_in_place(|| -> Result<(), String> {
            debug::archive(&workspace.data, &target).map_err(|error| error.to_string())?;
            let tags = [
                "debug".to_string(),
                component.id.clone(),
                format!("jobId:{}", job.id),
                format!("rowId:{}", task.row_id.as_deref().unwrap_or("")),
            ];
            let archive = std::fs::File::open(&target).map_err(|error| error.to_string())?;
            self.storage
                .upload_file(&name, &tags, archive)
                .map_err(|error| error.to_string())?;
            std::fs::remove_file(&target).map_err(|error| error.to_string())
        });
        match stored {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(job_id = job.id, %error, "cannot store a debug archive");
                self.event(
                    job,
                    EventType::Warn,
                    &format!("The debug archive {name} could not be stored."),
                );
                Ok(())
            }
        }
    }

    /// Loads the task's `out/` into Storage after its container ended (run mode only; after a
    /// failure only `write_always` tables). An error is the user error the job fails with.
    fn map_outputs(
        &self,
        job: &Job,
        component: &Component,
        task: &Task,
        verdict: &Verdict,
    ) -> Result<Outputs, String> {
        if job.mode == Mode::Debug || verdict.status == Status::Terminated {
            return Ok(Outputs::default());
        }
        let mapping = OutputMapping {
            storage: &self.storage,
            configuration: &task.configuration,
            default_bucket: job
                .config
                .as_deref()
                .filter(|_| component.default_bucket)
                .map(|config| output::default_bucket(&component.id, config)),
            failed: verdict.status != Status::Success,
        };
        let data = Workspace::of(&task.folder).data;
        let outputs = tokio::task::block_in_place(|| mapping.run(&data))?;
        if verdict.status == Status::Success {
            self.event(job, EventType::Info, "Output mapping done.");
        }
        Ok(outputs)
    }

    /// A platform failure before a container started: the job goes back to `created`.
    fn requeue(&self, job: &Job, reason: &str) -> Result<(), QueueError> {
        tracing::warn!(job_id = job.id, %reason, "platform failure; the job goes back to created");
        self.update(job.id, |job| {
            job.container_id = None;
            match job.status {
                // Killed meanwhile: nothing more runs, so it ends.
                Status::Terminating => job.move_to(Status::Terminated, now_micros()),
                _ => job.move_to(Status::Created, now_micros()),
            }
        })?;
        Ok(())
    }

    /// Resolves what the job runs, loading its stored configuration (and variables) as it is now.
    fn plan(&self, job: &Job) -> Result<Plan, String> {
        let stored = match self.stored_configuration(
            job.config.as_deref(),
            &job.config_data,
            &job.component,
            &job.branch_id,
        ) {
            Ok(stored) => stored,
            Err(error) => return Err(error.to_string()),
        };
        let variables = match stored
            .as_ref()
            .and_then(|s| s.configuration.get("variables_id"))
        {
            Some(id) => {
                let id = id
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| id.to_string());
                match self
                    .store
                    .configuration(&job.branch_id, plan::VARIABLES_COMPONENT, &id)
                {
                    Ok(Some(variables)) => Some(variables),
                    Ok(None) => return Err(format!("Variables configuration \"{id}\" not found.")),
                    Err(error) => return Err(error.to_string()),
                }
            }
            None => None,
        };
        plan::plan(
            job,
            &self.settings.job_dir(job.id),
            stored.as_ref(),
            variables.as_ref(),
        )
    }

    /// The stored configuration a job of `config` runs, when it runs one (no `configData`).
    fn stored_configuration(
        &self,
        config: Option<&str>,
        config_data: &Value,
        component: &str,
        branch: &str,
    ) -> Result<Option<Configuration>, QueueError> {
        let Some(config) = config.filter(|_| plan::runs_stored(config, config_data)) else {
            return Ok(None);
        };
        match self.store.configuration(branch, component, config)? {
            Some(stored) => Ok(Some(stored)),
            None => Err(QueueError::ConfigurationNotFound {
                component: component.to_string(),
                config: config.to_string(),
                branch: branch.to_string(),
            }),
        }
    }

    /// After a successful run of a stored configuration in run mode, each task's
    /// `out/state.json` (missing: cleared) becomes the stored state, all in one transaction.
    fn save_state(&self, job: &Job, plan: &Plan) -> Result<(), QueueError> {
        let Some(config) = job.config.as_deref() else {
            return Ok(());
        };
        if job.mode == Mode::Debug || plan.config_version.is_none() {
            return Ok(());
        }
        let scope = Scope::Project {
            component: job.component.clone(),
            project: job.project_id.clone(),
        };
        let states: Vec<(Option<String>, Value)> = plan
            .tasks
            .iter()
            .map(|task| {
                let path = task.folder.join("data/out/state.json");
                let mut state = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_else(|| json!({}));
                self.secrets.encrypt_json(&mut state, &scope);
                (task.row_id.clone(), state)
            })
            .collect();
        let saved = tokio::task::block_in_place(|| {
            self.store
                .update_state(&job.branch_id, &job.component, config, |configuration| {
                    for (row, state) in &states {
                        let target = match row {
                            Some(row) => match configuration.row_mut(row) {
                                Some(row) => &mut row.state,
                                None => continue,
                            },
                            None => &mut configuration.state,
                        };
                        if !target.is_object() {
                            *target = json!({});
                        }
                        target["component"] = state.clone();
                    }
                    Ok::<(), std::convert::Infallible>(())
                })
        });
        match saved {
            Ok(_) => Ok(()),
            // Deleted meanwhile: there is nothing to keep the state in.
            Err(error) if error.is_not_found() => Ok(()),
            Err(UpdateError::Store(error)) => Err(error.into()),
            Err(UpdateError::Rejected(never)) => match never {},
        }
    }

    /// Finishes a `container` job once all its children have finished: `error` if any failed
    /// (`warning` with `behavior.onError: "warning"`), `terminated` if it was killed, else `success`.
    fn settle_container(&self, run_id: &str) -> Result<(), QueueError> {
        let Some(container) = self.store.job_by_run_id(run_id)? else {
            return Ok(());
        };
        if container.job_type != JobType::Container || container.status.is_finished() {
            return Ok(());
        }
        let children = self.store.children(run_id)?;
        if !children.iter().all(|child| child.status.is_finished()) {
            return Ok(());
        }
        let failed = children.iter().any(|child| child.status != Status::Success);
        let outcome = match (failed, container.behavior["onError"].as_str()) {
            (false, _) => Status::Success,
            (true, Some("warning")) => Status::Warning,
            (true, _) => Status::Error,
        };
        let message = match outcome {
            Status::Success => "All rows finished.".to_string(),
            _ => {
                let failed: Vec<String> = children
                    .iter()
                    .filter(|child| child.status != Status::Success)
                    .map(|child| format!("{} ({})", child.id, child.status))
                    .collect();
                format!("Some child jobs did not succeed: {}.", failed.join(", "))
            }
        };
        let recorded = self.update(container.id, |job| {
            job.result = json!({"message": message});
            if outcome == Status::Error {
                job.result["error"] =
                    json!({"type": "user", "exceptionId": outcome::new_exception_id()});
            }
            job.outcome = Some(outcome);
            Ok(())
        })?;
        self.finalize(&recorded)
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
        if !finished.parent_run_id.is_empty() {
            self.settle_container(&finished.parent_run_id)?;
        }
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
        let message = self.redact(job.id, message);
        let event = NewEvent {
            job_id: job.id,
            event_type,
            source,
            message: &message,
            run_id: &job.run_id,
            component: &job.component,
            created: now_micros(),
        };
        if let Err(error) = tokio::task::block_in_place(|| self.store.add_event(event)) {
            tracing::error!(job_id = job.id, %error, "cannot store an event");
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

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One image of a task: its component, and the `config.json` it reads.
struct Image<'a> {
    component: &'a Component,
    config: Value,
    processor: bool,
}

/// Adds an image's entry to `result.images`: a new inner list for a row's first image.
fn add_image(result: &mut Value, stage: usize, image: Value) {
    if !result["images"].is_array() {
        result["images"] = json!([]);
    }
    let Some(rows) = result["images"].as_array_mut() else {
        return;
    };
    let entries = image.as_array().cloned().unwrap_or_default();
    match rows.last_mut().and_then(Value::as_array_mut) {
        Some(row) if stage > 0 => row.extend(entries),
        _ => rows.push(Value::Array(entries)),
    }
}

/// Adds one task's mapped tables to `result.input/output.tables` and their sizes to
/// `metrics.storage`.
fn add_storage_results(
    result: &mut Value,
    metrics: &mut Value,
    inputs: &Inputs,
    outputs: &Outputs,
) {
    for (side, tables) in [("input", &inputs.tables), ("output", &outputs.tables)] {
        if !result[side]["tables"].is_array() {
            result[side] = json!({"tables": []});
        }
        if let Some(list) = result[side]["tables"].as_array_mut() {
            list.extend(tables.iter().cloned());
        }
    }
    for (key, bytes) in [
        ("inputTablesBytesSum", inputs.bytes),
        ("outputTablesBytesSum", outputs.bytes),
    ] {
        let sum = metrics["storage"][key].as_u64().unwrap_or(0) + bytes;
        metrics["storage"][key] = json!(sum);
    }
}

/// Persists what a run reports for one job.
struct JobObserver<'a> {
    queue: &'a Queue,
    job: &'a Job,
    /// Stdout events recorded before the current container started.
    stdout_base: AtomicU64,
}

impl RunObserver for JobObserver<'_> {
    fn container_created(&self, container_id: &str) -> Result<(), String> {
        let recorded = self.recorded_stdout_events() as u64;
        self.stdout_base.store(recorded, Ordering::SeqCst);
        self.queue
            .update(self.job.id, |job| {
                job.container_id = Some(container_id.to_string());
                job.stdout_base = recorded;
                Ok(())
            })
            .map(drop)
            .map_err(|error| error.to_string())
    }

    fn event(&self, event_type: EventType, source: EventSource, message: &str) {
        self.queue.record(self.job, event_type, source, message);
    }

    fn stdout_lines_recorded(&self) -> usize {
        self.recorded_stdout_events()
            .saturating_sub(self.stdout_base.load(Ordering::SeqCst) as usize)
    }
}

impl JobObserver<'_> {
    fn recorded_stdout_events(&self) -> usize {
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
