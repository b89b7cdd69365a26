//! How jobs end: `end` is the one path to a finished status (result, final event, sealed
//! folder, log line, parent settled), and `requeue` the one path back to `created`.

use super::{Queue, QueueError};
use crate::blocking::blocking;
use crate::model::{ended_event, event_payload, Delivery, Subscription};
use crate::model::{now_micros, DesiredStatus, EventType, Job, JobType, OnError, RunId, Status};
use crate::model::{ErrorKind, JobResult, ResultError, UserError};
use crate::runner::outcome;
use crate::runner::workspace::Workspace;
use crate::store::UpdateError;

/// Why a job ends.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ending {
    /// Its run recorded an outcome (`job.outcome`, with `result`) and its container is gone.
    Recorded,
    /// A user error found outside a container; its message becomes `result.message`.
    UserError(UserError),
    /// An application error found outside a container (an image that cannot be pulled); its
    /// message becomes `result.message`.
    ApplicationError(String),
    /// Killed before it started.
    Cancelled,
    /// Killed while nothing of it runs.
    Terminated,
}

/// Another path finished or changed the job first: this one leaves it alone.
struct LostRace;

impl Queue {
    /// Ends job `id` as `ending` says. Its folder is sealed first (no decrypted secret stays on
    /// disk), then its final status, result, final event and the notification deliveries of
    /// the event it raises are written in one transaction, then its parent container job is
    /// settled. A job that another path finished first is left as
    /// it is: that is a lost race, not an error.
    pub(super) fn end(&self, id: u64, ending: Ending) -> Result<(), QueueError> {
        let mut configuration_name = None;
        if let Some(job) = self.store.job(id)? {
            self.seal_job_folder(&job);
            configuration_name = self.store.configuration_name(&job).ok().flatten();
        }
        let public_url = &self.settings.public_url;
        let outbox = |job: &Job, subscriptions: &[Subscription]| -> Vec<Delivery> {
            let Some(event) = ended_event(job) else {
                return Vec::new();
            };
            let payload = event_payload(&event, job, public_url, configuration_name.as_deref());
            let now = now_micros();
            subscriptions
                .iter()
                .filter(|s| s.wants(&event, &payload, now))
                .map(|s| Delivery::new(s, &event, &payload, now))
                .collect()
        };
        let ended = blocking(|| {
            self.store
                .update_job_with_event(id, |job| finish(job, &ending), outbox)
        });
        let job = match ended {
            Ok(job) => job,
            Err(UpdateError::Rejected(LostRace)) => {
                tracing::debug!(job_id = id, ?ending, "the job ended by another path first");
                return Ok(());
            }
            Err(UpdateError::Store(error)) => return Err(error.into()),
        };
        crate::failpoint::hit(crate::failpoint::JOB_ENDED);
        self.changed();
        tracing::info!(
            job_id = job.id,
            component = %job.component,
            config = job.config.as_deref().unwrap_or(""),
            status = %job.status,
            duration_seconds = job.duration_seconds().unwrap_or(0),
            "job finished"
        );
        self.metrics.job_finished(&job);
        self.flow_part_ended(&job);
        if let Some(parent) = &job.parent_run_id {
            self.settle_container(parent)?;
        }
        Ok(())
    }

    /// A platform failure before a container started: the job goes back to `created` (or, if
    /// it was killed meanwhile, ends `terminated`).
    pub(super) fn requeue(&self, job: &Job, reason: &str) -> Result<(), QueueError> {
        tracing::warn!(job_id = job.id, %reason, "platform failure; the job goes back to created");
        let current = self.update(job.id, |job| {
            job.container_id = None;
        })?;
        if current.status == Status::Terminating {
            return self.end(job.id, Ending::Terminated);
        }
        self.move_if(job.id, current.status, Status::Created)
            .map(drop)
    }

    /// Finishes a container job (of any virtual type) once it runs and all its children have
    /// finished: `terminated` if it was killed, else as `container_outcome` or `flow_outcome` say.
    pub(super) fn settle_container(&self, run_id: &RunId) -> Result<(), QueueError> {
        let Some(container) = self.store.job_by_run_id(run_id.as_str())? else {
            return Ok(());
        };
        let running = matches!(container.status, Status::Processing | Status::Terminating);
        if !container.job_type.is_virtual() || !running {
            return Ok(());
        }
        if container.component == crate::model::FLOW {
            // A flow goes on as its record says when a task job ends.
            return self.step_flow(container.id);
        }
        let children = self.store.children(run_id.as_str())?;
        if !children.iter().all(|child| child.status.is_finished()) {
            return Ok(());
        }
        if container.desired_status == DesiredStatus::Terminating {
            // Killed, with its children ended before the scheduler applied the kill to it.
            self.move_if(container.id, Status::Processing, Status::Terminating)?;
        }
        let (outcome, result) = match container.job_type {
            JobType::Container => container_outcome(&container, &children),
            _ => self.flow_outcome(&container, &children)?,
        };
        self.update(container.id, |job| {
            job.result = result;
            job.outcome = Some(outcome);
        })?;
        self.end(container.id, Ending::Recorded)
    }
}

/// How a `container` job ends from its rows' jobs: `error` if any did not succeed (`warning` with
/// `behavior.onError: "warning"`), else `success`.
fn container_outcome(container: &Job, children: &[Job]) -> (Status, JobResult) {
    let failed = failed_children(children);
    let outcome = match (failed.is_empty(), container.behavior.on_error) {
        (true, _) => Status::Success,
        (false, Some(OnError::Warning)) => Status::Warning,
        (false, _) => Status::Error,
    };
    let message = match outcome {
        Status::Success => "All rows finished.".to_string(),
        _ => format!("Some child jobs did not succeed: {failed}."),
    };
    (outcome, ended_result(message, outcome))
}

/// `"12 (error), 14 (terminated)"`: the children that did not succeed.
pub(super) fn failed_children(children: &[Job]) -> String {
    let failed: Vec<String> = children
        .iter()
        .filter(|child| child.status != Status::Success)
        .map(|child| format!("{} ({})", child.id, child.status))
        .collect();
    failed.join(", ")
}

/// The result of a container job that ended `status`: its message, and a user error unless it
/// succeeded or warned.
pub(super) fn ended_result(message: String, status: Status) -> JobResult {
    JobResult {
        message: Some(message),
        error: (status == Status::Error).then(|| error_of(ErrorKind::User)),
        ..JobResult::default()
    }
}

impl Queue {
    /// Hides the decrypted secrets a job's folders may still hold (see `seal_folder`).
    pub(super) fn seal_job_folder(&self, job: &Job) {
        let job_dir = self.settings.job_dir(job.id);
        let mut folders = vec![job_dir.clone()];
        if let Ok(rows) = std::fs::read_dir(job_dir.join("rows")) {
            folders.extend(rows.flatten().map(|row| row.path()));
        }
        for folder in folders {
            self.seal_folder(job, &Workspace::of(&folder));
        }
    }

    /// After a row's container ended: `config.json` and `in/state.json` keep `[hidden]` for
    /// every `#` value, `out/state.json` (the state the job may still store) ciphertexts.
    pub(super) fn seal_folder(&self, job: &Job, workspace: &Workspace) {
        let scope = super::execute::state_scope(job);
        let sealed = blocking(|| self.secrets.seal_folder(&workspace.data, &scope));
        if let Err(error) = sealed {
            tracing::error!(job_id = job.id, %error, "cannot hide the secrets of a finished job's folder");
        }
    }
}

/// The final change of a job that ends as `ending`, through the state machine, and its final
/// event; `LostRace` when the job is already finished (or has no outcome to end with).
fn finish(job: &mut Job, ending: &Ending) -> Result<Option<(EventType, String)>, LostRace> {
    if job.status.is_finished() {
        return Err(LostRace);
    }
    // A killed job ends terminated even if its container had already exited.
    let killed_or = |status: Status, job: &Job| {
        if job.status == Status::Terminating {
            Status::Terminated
        } else {
            status
        }
    };
    let to = match ending {
        Ending::Recorded => killed_or(job.outcome.ok_or(LostRace)?, job),
        Ending::UserError(UserError(message)) | Ending::ApplicationError(message) => {
            let kind = match ending {
                Ending::ApplicationError(_) => ErrorKind::Application,
                _ => ErrorKind::User,
            };
            job.result.images.get_or_insert_with(Vec::new);
            job.result.message = Some(message.clone());
            job.result.error = Some(error_of(kind));
            job.outcome = Some(Status::Error);
            killed_or(Status::Error, job)
        }
        Ending::Cancelled => Status::Cancelled,
        Ending::Terminated => {
            if job.status != Status::Terminating {
                job.move_to(Status::Terminating, now_micros())
                    .map_err(|_| LostRace)?;
            }
            Status::Terminated
        }
    };
    job.move_to(to, now_micros()).map_err(|_| LostRace)?;
    let event = match (job.status, &job.result.error) {
        (Status::Error, Some(error)) => Some((
            EventType::Error,
            format!(
                "Job \"{}\" ended with {} error: \"{}\"",
                job.id,
                error.kind.as_str(),
                job.result.message.as_deref().unwrap_or_default()
            ),
        )),
        (Status::Cancelled, _) => Some((
            EventType::Warn,
            "Job was cancelled before it started.".to_string(),
        )),
        _ => None,
    };
    Ok(event)
}

/// `result.error` of a user error found outside a container, under a new exception id.
fn error_of(kind: ErrorKind) -> ResultError {
    ResultError {
        kind,
        exception_id: outcome::new_exception_id(),
    }
}
