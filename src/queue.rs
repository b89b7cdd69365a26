//! The queue: creates jobs, starts them within capacity, kills them, and records how they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::job::{now_micros, DesiredStatus, EventType, Job, JobQuery, JobType, Mode, Status};
use crate::runner::{RunObserver, RunOutcome, Runner};
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
    #[error("Job \"{id}\" is already finished ({status}); only jobs in one of killable states (created, waiting, processing) can be killed.")]
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
    wake: Notify,
    /// Jobs whose container this process is running, with the handle that terminates it.
    running: Mutex<HashMap<u64, CancellationToken>>,
}

/// How long the scheduler waits before retrying when the engine is unreachable.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

impl Queue {
    pub fn new(store: Arc<Store>, settings: Arc<Settings>, runner: Arc<Runner>) -> Arc<Queue> {
        Arc::new(Queue {
            store,
            settings,
            runner,
            wake: Notify::new(),
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
            created_time: now_micros(),
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
        })?;
        tracing::info!(job_id = job.id, component = %job.component, "job created");
        self.wake.notify_one();
        Ok(job)
    }

    pub fn job(&self, id: &str) -> Result<Job, QueueError> {
        let not_found = || QueueError::JobNotFound { id: id.to_string() };
        let id: u64 = id.parse().map_err(|_| not_found())?;
        self.store.job(id)?.ok_or_else(not_found)
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
    ) -> Result<Vec<crate::job::Event>, QueueError> {
        let job = self.job(job_id)?;
        Ok(self.store.events(job.id, since_id, offset, limit)?)
    }

    /// Asks for termination: sets `desiredStatus: terminating`; the scheduler does the rest.
    pub fn kill(&self, id: &str) -> Result<Job, QueueError> {
        let job = self.job(id)?;
        let updated = self.store.update_job(job.id, |job| {
            if job.status.is_finished() {
                return Err(QueueError::NotKillable {
                    id: job.id,
                    status: job.status,
                });
            }
            job.desired_status = DesiredStatus::Terminating;
            Ok(())
        });
        let job = match updated {
            Ok(job) => job,
            Err(UpdateError::Rejected(error)) => return Err(error),
            Err(UpdateError::Store(error)) => return Err(error.into()),
        };
        tracing::info!(job_id = job.id, "termination requested");
        self.wake.notify_one();
        Ok(job)
    }

    /// Settles what the previous process left: jobs it was running go back to `created` when
    /// their container never started, else end `error`; their containers are removed.
    pub async fn recover(&self) -> Result<(), QueueError> {
        for job in self.store.jobs_with_status(Status::Processing)? {
            let Some(container_id) = job.container_id.clone() else {
                self.update_status(job.id, |job| job.move_to(Status::Created, now_micros()))?;
                self.event(
                    &job,
                    EventType::Warn,
                    "The job was requeued: jobq stopped before its container started.",
                );
                continue;
            };
            self.runner.remove_container(&container_id).await;
            let message = "The container was lost: jobq stopped while the job was running.";
            self.update_status(job.id, |job| {
                job.result = json!({"message": message, "error": {"type": "application", "exceptionId": crate::runner::outcome::new_exception_id()}});
                job.move_to(Status::Error, now_micros())
            })?;
            self.event(&job, EventType::Error, message);
        }
        for job in self.store.jobs_with_status(Status::Terminating)? {
            if let Some(container_id) = &job.container_id {
                self.runner.remove_container(container_id).await;
            }
            self.update_status(job.id, |job| job.move_to(Status::Terminated, now_micros()))?;
        }
        Ok(())
    }

    /// The scheduler loop: runs until `shutdown`, woken by creations, kills and finishes.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let retry = match self.schedule().await {
                Ok(retry) => retry,
                Err(error) => {
                    tracing::error!(%error, "scheduling failed; retrying");
                    true
                }
            };
            let pause = if retry {
                RETRY_INTERVAL
            } else {
                Duration::from_secs(60)
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass: applies kills, then starts the oldest `created` jobs that fit.
    /// Returns whether some job waits for the engine (so the loop retries soon).
    async fn schedule(self: &Arc<Self>) -> Result<bool, QueueError> {
        for status in [Status::Created, Status::Waiting, Status::Processing] {
            for job in self.store.jobs_with_status(status)? {
                if job.desired_status == DesiredStatus::Terminating {
                    self.terminate(&job)?;
                }
            }
        }
        let free = self
            .settings
            .max_concurrent_jobs
            .saturating_sub(self.running_count());
        if free == 0 {
            return Ok(false);
        }
        let created = self.store.jobs_with_status(Status::Created)?;
        if created.is_empty() {
            return Ok(false);
        }
        if let Err(error) = self.runner.ping().await {
            tracing::warn!(%error, waiting_jobs = created.len(), "jobs stay created until the engine answers");
            return Ok(true);
        }
        for job in created.into_iter().take(free) {
            let job =
                self.update_status(job.id, |job| job.move_to(Status::Processing, now_micros()))?;
            let cancel = CancellationToken::new();
            self.lock_running().insert(job.id, cancel.clone());
            tokio::spawn(Arc::clone(self).execute(job, cancel));
        }
        Ok(false)
    }

    /// Applies a kill: jobs that have not started are cancelled; running ones go `terminating`.
    fn terminate(&self, job: &Job) -> Result<(), QueueError> {
        match job.status {
            Status::Created | Status::Waiting => {
                self.update_status(job.id, |job| job.move_to(Status::Cancelled, now_micros()))?;
                self.event(job, EventType::Warn, "Job was cancelled before it started.");
            }
            Status::Processing => {
                self.update_status(job.id, |job| job.move_to(Status::Terminating, now_micros()))?;
                self.event(job, EventType::Warn, "Job termination requested.");
                match self.lock_running().get(&job.id) {
                    Some(cancel) => cancel.cancel(),
                    // No run of this process holds it: nothing runs, so it is terminated.
                    None => {
                        self.update_status(job.id, |job| {
                            job.move_to(Status::Terminated, now_micros())
                        })?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs one job's container and records how it ended.
    async fn execute(self: Arc<Self>, job: Job, cancel: CancellationToken) {
        let outcome = match self.settings.component(&job.component) {
            Some(component) => {
                self.event(
                    &job,
                    EventType::Info,
                    &format!("Running component {} (row 1 of 1)", component.id),
                );
                let observer = JobObserver {
                    queue: &self,
                    job: &job,
                };
                self.runner
                    .run(&job, component, &self.settings, &observer, cancel)
                    .await
            }
            None => RunOutcome::Requeue {
                reason: format!("component \"{}\" is no longer registered", job.component),
            },
        };
        let requeued = matches!(outcome, RunOutcome::Requeue { .. });
        if let Err(error) = self.finish(&job, outcome) {
            tracing::error!(job_id = job.id, %error, "cannot record the end of a job");
        }
        if requeued {
            // Retried after a pause rather than in a tight loop.
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        self.lock_running().remove(&job.id);
        self.wake.notify_one();
    }

    fn finish(&self, job: &Job, outcome: RunOutcome) -> Result<(), QueueError> {
        match outcome {
            RunOutcome::Requeue { reason } => {
                tracing::warn!(job_id = job.id, %reason, "platform failure; the job goes back to created");
                self.update_status(job.id, |job| {
                    job.container_id = None;
                    job.move_to(Status::Created, now_micros())
                })?;
                Ok(())
            }
            RunOutcome::Finished {
                verdict,
                result,
                usage_data,
            } => {
                let finished = self.update_status(job.id, |job| {
                    job.result = result;
                    if let Some(usage) = usage_data {
                        job.usage_data = usage;
                    }
                    // A killed job ends terminated even if its container had already exited.
                    let to = if job.status == Status::Terminating {
                        Status::Terminated
                    } else {
                        verdict.status
                    };
                    job.move_to(to, now_micros())
                })?;
                if let Some(kind) = verdict.error {
                    if finished.status == Status::Error {
                        let message = format!(
                            "Job \"{}\" ended with {} error: \"{}\"",
                            job.id,
                            kind.as_str(),
                            verdict.message
                        );
                        self.event(job, EventType::Error, &message);
                    }
                }
                tracing::info!(job_id = job.id, status = %finished.status, "job finished");
                Ok(())
            }
        }
    }

    fn update_status(
        &self,
        id: u64,
        change: impl FnOnce(&mut Job) -> Result<(), TransitionForbidden>,
    ) -> Result<Job, QueueError> {
        Ok(tokio::task::block_in_place(|| {
            self.store.update_job(id, change)
        })?)
    }

    fn event(&self, job: &Job, event_type: EventType, message: &str) {
        let written = tokio::task::block_in_place(|| {
            self.store.add_event(
                job.id,
                event_type,
                message,
                &job.run_id,
                &job.component,
                now_micros(),
            )
        });
        if let Err(error) = written {
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
        tokio::task::block_in_place(|| {
            self.queue.store.update_job(self.job.id, |job| {
                job.container_id = Some(container_id.to_string());
                Ok::<(), TransitionForbidden>(())
            })
        })
        .map(drop)
        .map_err(|error| error.to_string())
    }

    fn event(&self, event_type: EventType, message: &str) {
        self.queue.event(self.job, event_type, message);
    }
}
