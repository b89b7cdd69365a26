//! Flows (`keboola.orchestrator`): an orchestration job starts by creating its phase jobs, a
//! phase job starts (once the phases it depends on succeeded) by creating its task jobs, each in
//! the one transaction that moves the parent to `processing`; phases and orchestrations end as
//! their children did.

use super::end::{ended_result, failed_children, Ending};
use super::{NewJob, Queue, QueueError};
use crate::blocking::blocking;
use crate::model::{
    now_micros, orchestration_outcome, phase_outcome, phase_start, DesiredStatus, EventType, Job,
    JobResult, JobType, Mode, Orchestration, Parallelism, PhaseStart, Status, Task, UserError,
    MAX_NESTING,
};
use crate::store::UpdateError;
use serde_json::{json, Value};

/// What an orchestration job imposes on its tasks' jobs: its branch, and its `parallelism` and
/// `backend` when it has them (never its `tag`).
pub(super) struct Overrides {
    pub branch_id: String,
    pub parallelism: Option<Parallelism>,
    pub backend: Value,
}

impl Overrides {
    pub(super) fn of(orchestration: &Job) -> Overrides {
        Overrides {
            branch_id: orchestration.branch_id.clone(),
            parallelism: orchestration.parallelism,
            backend: orchestration.backend.clone(),
        }
    }

    /// The create request of `task`'s job, a child of run `parent` (none when only validated).
    pub(super) fn request(&self, task: &Task, parent: Option<&str>) -> Result<NewJob, QueueError> {
        let job = task.task_job().map_err(|error| QueueError::Invalid {
            field: "configData",
            message: error.to_string(),
        })?;
        let has_backend = self.backend.as_object().is_some_and(|b| !b.is_empty());
        Ok(NewJob {
            component: job.component,
            // Old configurations hold modes such as "j2jRun": they run.
            mode: Some(
                job.mode
                    .as_deref()
                    .and_then(Mode::parse)
                    .unwrap_or(Mode::Run),
            ),
            config: job.config,
            config_data: job.config_data,
            config_row_ids: job.config_row_ids,
            branch_id: Some(self.branch_id.clone()),
            tag: job.tag,
            variable_values_id: job.variable_values_id,
            variable_values_data: job.variable_values_data,
            backend: has_backend.then(|| self.backend.clone()),
            parallelism: self.parallelism.map(|p| p.to_string()),
            parent_run_id: parent.map(str::to_string),
            ..NewJob::default()
        })
    }
}

/// A task of an orchestration job's run, and the job it got (none when it made no job).
pub struct MatchedTask {
    pub task_id: String,
    pub job: Option<Job>,
}

/// A task that cannot become a job: the message names it.
pub(super) fn task_error(task: &Task, error: QueueError) -> QueueError {
    QueueError::Invalid {
        field: "configData",
        message: format!("Task \"{}\" ({}) cannot run: {error}", task.name, task.id),
    }
}

/// How many orchestrations deep `job` runs: 1 for a root orchestration, 2 for one run as a task.
pub(super) fn depth_of(orchestration: &Job) -> usize {
    1 + usize::from(orchestration.orchestration_job_id.is_some())
}

impl Queue {
    /// Checks an orchestration configuration at `depth` before any job of it exists: it parses,
    /// and every enabled task of it (of `only`, when given) would make a valid job (registered
    /// component, existing and enabled configuration, known rows, orchestrations nested
    /// `MAX_NESTING` deep at most). The orchestration comes back reduced to `only`.
    pub(super) fn check_orchestration(
        &self,
        definition: &Value,
        overrides: &Overrides,
        depth: usize,
        only: &[String],
    ) -> Result<Orchestration, QueueError> {
        let orchestration = Orchestration::parse(definition)
            .and_then(|orchestration| orchestration.only(only))
            .map_err(|error| QueueError::Invalid {
                field: "configData",
                message: error.to_string(),
            })?;
        let enabled = orchestration.tasks.iter().filter(|t| t.enabled);
        self.check_tasks(enabled, overrides, depth)?;
        Ok(orchestration)
    }

    /// Checks, for a flow at `depth`, that each of `tasks` would make a valid job (registered
    /// component, existing and enabled configuration, known rows, flows nested `MAX_NESTING`
    /// deep at most). Only the validation matters: the jobs are made when their phase starts.
    pub(super) fn check_tasks<'a>(
        &self,
        tasks: impl IntoIterator<Item = &'a Task>,
        overrides: &Overrides,
        depth: usize,
    ) -> Result<(), QueueError> {
        if depth > MAX_NESTING {
            return Err(QueueError::Invalid {
                field: "configData",
                message: format!(
                    "Orchestrations may run orchestrations {MAX_NESTING} levels deep at most; \
                     run the inner orchestration on its own."
                ),
            });
        }
        for task in tasks {
            let request = overrides.request(task, None)?;
            let (_count, _make) = self
                .new_jobs(request, "", "", depth + 1)
                .map_err(|error| task_error(task, error))?;
        }
        Ok(())
    }

    /// Starts an orchestration job (`from` its status): in one transaction it goes `processing`
    /// and gets one phase job per phase, unless it was killed or started meanwhile. An
    /// orchestration whose configuration became invalid ends with that user error. Returns
    /// whether it started.
    pub(super) fn start_orchestration(&self, job: &Job) -> Result<bool, QueueError> {
        if job.component == crate::model::FLOW {
            return self.start_flow(job);
        }
        let checked = self.definition_of(job).and_then(|definition| {
            let only = &job.only_orchestration_task_ids;
            self.check_orchestration(&definition, &Overrides::of(job), depth_of(job), only)
        });
        let orchestration = match checked {
            Ok(orchestration) => orchestration,
            Err(error) => {
                self.end(job.id, Ending::UserError(UserError(error.to_string())))?;
                return Ok(false);
            }
        };
        let count = orchestration.phases.len();
        let make = |parent: &Job, ids: &[u64]| {
            let now = now_micros();
            let phases = ids.iter().zip(&orchestration.phases);
            phases
                .map(|(&id, phase)| {
                    let tasks: Vec<Value> = orchestration
                        .tasks_of(&phase.id)
                        .map(Task::to_value)
                        .collect();
                    Job {
                        job_type: JobType::PhaseContainer,
                        config_data: json!({
                            "tasks": tasks,
                            "phaseId": phase.id,
                            "phaseName": phase.name,
                            "dependsOn": phase.depends_on,
                            "orchestrationJobId": parent.id.to_string(),
                        }),
                        orchestration_job_id: Some(parent.id),
                        parallelism: None,
                        backend: json!({}),
                        ..child_of(parent, id, now)
                    }
                })
                .collect()
        };
        let Some((started, phases)) = self.start_creating(job, count, make)? else {
            return Ok(false);
        };
        let names: Vec<String> = orchestration
            .phases
            .iter()
            .zip(&phases)
            .map(|(phase, job)| format!("\"{}\" (job {})", phase.name, job.id))
            .collect();
        self.event(
            &started,
            EventType::Info,
            &format!("Orchestration started with phases {}.", names.join(", ")),
        );
        if phases.is_empty() {
            self.settle_container(&started.run_id)?;
        }
        Ok(true)
    }

    /// Decides what phase job `phase` (created or waiting) does now: waits for the phases it
    /// depends on, never runs (one of them failed), or starts, creating one job per enabled task
    /// in the transaction that moves it to `processing`.
    pub(super) fn step_phase(&self, phase: &Job) -> Result<(), QueueError> {
        let Some(parent) = &phase.parent_run_id else {
            return Ok(());
        };
        let siblings = self.store.children(parent.as_str())?;
        let depends_on = phase_ids(&phase.config_data["dependsOn"]);
        let status_of = |id: &str| {
            siblings
                .iter()
                .find(|s| s.config_data["phaseId"].as_str() == Some(id))
                .map(|s| s.status)
        };
        match phase_start(&depends_on, status_of) {
            PhaseStart::Wait(pending) => {
                if phase.status == Status::Created
                    && self
                        .move_if(phase.id, phase.status, Status::Waiting)?
                        .is_some()
                {
                    let pending: Vec<String> = pending.iter().map(|p| format!("\"{p}\"")).collect();
                    let message = format!(
                        "Waiting for phase {} to finish successfully.",
                        pending.join(", ")
                    );
                    self.event(phase, EventType::Info, &message);
                }
                Ok(())
            }
            PhaseStart::Never {
                phase: failed,
                status,
            } => {
                let message = format!(
                    "Phase \"{}\" does not run: phase \"{failed}\", which it depends on, ended {status}.",
                    phase_id(phase)
                );
                self.event(phase, EventType::Warn, &message);
                self.flow_event(phase, EventType::Warn, &message);
                self.end(phase.id, Ending::Cancelled)
            }
            PhaseStart::Start => self.start_phase(phase),
        }
    }

    fn start_phase(&self, phase: &Job) -> Result<(), QueueError> {
        let Some(orchestration) = self.orchestration_of(phase)? else {
            return Ok(());
        };
        let tasks = match phase_tasks(phase) {
            Ok(tasks) => tasks,
            Err(error) => return self.end(phase.id, Ending::UserError(UserError(error))),
        };
        let overrides = Overrides::of(&orchestration);
        let mut makers = Vec::new();
        for task in tasks.iter().filter(|t| t.enabled) {
            let made = overrides
                .request(task, Some(phase.run_id.as_str()))
                .and_then(|request| {
                    self.new_jobs(
                        request,
                        &orchestration.token_id,
                        &orchestration.token_description,
                        depth_of(&orchestration) + 1,
                    )
                });
            match made {
                Ok((count, make)) => {
                    makers.push((task.id.as_str(), task.phase.as_str(), count, make))
                }
                Err(error) => {
                    let error = UserError(task_error(task, error).to_string());
                    return self.end(phase.id, Ending::UserError(error));
                }
            }
        }
        let count = makers.iter().map(|(_, _, count, _)| count).sum();
        let make = |_: &Job, ids: &[u64]| task_jobs_of(&makers, orchestration.id, ids);
        let Some((started, jobs)) = self.start_creating(phase, count, make)? else {
            return Ok(());
        };
        let created: Vec<String> = jobs
            .iter()
            .filter_map(|job| {
                let task = tasks
                    .iter()
                    .find(|t| Some(&t.id) == job.orchestration_task_id.as_ref())?;
                Some(format!("\"{}\" (job {})", task.name, job.id))
            })
            .collect();
        let message = match created.is_empty() {
            true => format!(
                "Phase \"{}\" started with no enabled task.",
                phase_id(phase)
            ),
            false => format!(
                "Phase \"{}\" started tasks {}.",
                phase_id(phase),
                created.join(", ")
            ),
        };
        self.event(&started, EventType::Info, &message);
        self.flow_event(&started, EventType::Info, &message);
        if jobs.is_empty() {
            self.settle_container(&started.run_id)?;
        }
        Ok(())
    }

    /// Moves `job` from its status to `processing` and creates `count` children made by `make`,
    /// in one transaction; `None` when it was killed or moved meanwhile (compare-and-set).
    fn start_creating(
        &self,
        job: &Job,
        count: usize,
        make: impl FnOnce(&Job, &[u64]) -> Vec<Job>,
    ) -> Result<Option<(Job, Vec<Job>)>, QueueError> {
        let from = job.status;
        let started = blocking(|| {
            self.store.update_job_creating(
                job.id,
                |job| {
                    if job.status != from || job.desired_status != DesiredStatus::Processing {
                        return Err(None);
                    }
                    job.move_to(Status::Processing, now_micros()).map_err(Some)
                },
                count,
                make,
            )
        });
        match started {
            Ok(started) => {
                crate::failpoint::hit(crate::failpoint::CHILDREN_CREATED);
                self.changed();
                Ok(Some(started))
            }
            Err(UpdateError::Rejected(None)) => Ok(None),
            Err(UpdateError::Rejected(Some(forbidden))) => Err(QueueError::Forbidden(forbidden)),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// The orchestration job `job` is a phase or task of.
    fn orchestration_of(&self, job: &Job) -> Result<Option<Job>, QueueError> {
        match job.orchestration_job_id {
            Some(id) => Ok(self.store.job(id)?),
            None => Ok(None),
        }
    }

    /// Writes `message` as an event of the orchestration job `job` belongs to.
    fn flow_event(&self, job: &Job, event_type: EventType, message: &str) {
        match self.orchestration_of(job) {
            Ok(Some(orchestration)) => self.event(&orchestration, event_type, message),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(job_id = job.id, error = %crate::error::chain(&error), "cannot find the orchestration of a job");
            }
        }
    }

    /// After a phase or task job ended: an event on its orchestration job.
    pub(super) fn flow_part_ended(&self, job: &Job) {
        let part = match (&job.orchestration_task_id, job.job_type) {
            (Some(task), _) => format!("Task \"{task}\" (job {})", job.id),
            (None, JobType::PhaseContainer) => {
                format!("Phase \"{}\" (job {})", phase_id(job), job.id)
            }
            _ => return,
        };
        let event_type = match job.status {
            Status::Success => EventType::Info,
            Status::Warning | Status::Cancelled | Status::Terminated => EventType::Warn,
            _ => EventType::Error,
        };
        self.flow_event(job, event_type, &format!("{part} ended {}.", job.status));
    }

    /// The status and result of a finished phase or orchestration job, from its `children`
    /// (all finished).
    pub(super) fn flow_outcome(
        &self,
        job: &Job,
        children: &[Job],
    ) -> Result<(Status, JobResult), QueueError> {
        if job.job_type == JobType::PhaseContainer {
            let tasks = phase_tasks(job).unwrap_or_default();
            let continues = |child: &Job| {
                tasks.iter().any(|t| {
                    Some(&t.id) == child.orchestration_task_id.as_ref() && t.continue_on_failure
                })
            };
            let status = phase_outcome(children.iter().map(|c| (c.status, continues(c))));
            let failed = failed_children(children);
            let message = match failed.is_empty() {
                true => "All tasks finished successfully.".to_string(),
                false => format!("Tasks did not succeed: {failed}."),
            };
            return Ok((status, ended_result(message, status)));
        }
        let status = orchestration_outcome(children.iter().map(|c| c.status));
        let names = self.phase_names(job);
        let mut tasks = Vec::new();
        let mut phases = Vec::new();
        for phase in children {
            let id = phase_id(phase);
            let phase_tasks = phase_tasks(phase).unwrap_or_default();
            for task_job in self.store.children(phase.run_id.as_str())? {
                let Some(task_id) = &task_job.orchestration_task_id else {
                    continue;
                };
                let name = phase_tasks
                    .iter()
                    .find(|t| &t.id == task_id)
                    .map(|t| t.name.clone());
                tasks.push(json!({
                    "id": task_id,
                    "name": name.unwrap_or_else(|| task_id.clone()),
                    "phase": id,
                    "jobId": task_job.id.to_string(),
                    "component": task_job.component,
                    "config": task_job.config,
                    "status": task_job.status.as_str(),
                    "startTime": task_job.start_time.map(crate::model::format_time),
                    "duration": task_job.duration_seconds(),
                }));
            }
            let name = names
                .as_ref()
                .and_then(|o| o.phase(&id))
                .map(|p| p.name.clone());
            phases.push(json!({
                "id": id,
                "name": name.unwrap_or_else(|| id.clone()),
                "jobId": phase.id.to_string(),
                "status": phase.status.as_str(),
                "startTime": phase.start_time.map(crate::model::format_time),
                "duration": phase.duration_seconds(),
            }));
        }
        let failed = failed_children(children);
        let message = match status {
            Status::Success => "All phases finished successfully.".to_string(),
            _ => format!("Phases did not succeed: {failed}."),
        };
        let mut result = ended_result(message, status);
        insert_document(&mut result, tasks, phases);
        Ok((status, result))
    }

    /// `GET /orchestration-rerun-plan/{jobId}`: the orchestration job and every task its phases
    /// held (in phase order, then configuration order), each with the job it got.
    pub fn rerun_plan(&self, id: &str) -> Result<(Job, Vec<MatchedTask>), QueueError> {
        let job = self.job(id)?;
        if job.job_type != JobType::OrchestrationContainer
            || job.component != crate::model::ORCHESTRATOR
        {
            return Err(QueueError::Invalid {
                field: "jobId",
                message: format!(
                    "Job \"{id}\" is a {} job, not an orchestration; ask for the rerun plan of a {} job.",
                    job.job_type.as_str(),
                    crate::model::ORCHESTRATOR
                ),
            });
        }
        let mut matched = Vec::new();
        for phase in self.store.children(job.run_id.as_str())? {
            let task_jobs = self.store.children(phase.run_id.as_str())?;
            for task in phase_tasks(&phase).unwrap_or_default() {
                let task_job = task_jobs
                    .iter()
                    .find(|j| j.orchestration_task_id.as_ref() == Some(&task.id));
                matched.push(MatchedTask {
                    job: task_job.cloned(),
                    task_id: task.id,
                });
            }
        }
        Ok((job, matched))
    }

    /// The orchestration's configuration as it is now, for the names of its phases.
    fn phase_names(&self, job: &Job) -> Option<Orchestration> {
        let definition = self.definition_of(job).ok()?;
        Orchestration::parse(&definition).ok()
    }

    /// What orchestration job `job` runs: its stored configuration as it is now, else its
    /// `configData`.
    pub(super) fn definition_of(&self, job: &Job) -> Result<Value, QueueError> {
        let stored = self.stored_configuration_of(job)?;
        Ok(stored.map_or_else(|| job.config_data.clone(), |s| s.configuration))
    }
}

/// A child job of `parent` with `id`, made from it: same owner, component, configuration and
/// branch, created now and not started.
fn child_of(parent: &Job, id: u64, now: i64) -> Job {
    Job {
        id,
        run_id: parent.run_id.child(id),
        parent_run_id: Some(parent.run_id.clone()),
        status: Status::Created,
        desired_status: DesiredStatus::Processing,
        created_time: now,
        start_time: None,
        end_time: None,
        result: JobResult::default(),
        container_id: None,
        outcome: None,
        rows_done: 0,
        images_done: 0,
        stdout_base: 0,
        delayed_start_time: None,
        revision: 0,
        orchestration_task_id: None,
        orchestration_phase_id: None,
        previous_job_id: None,
        only_orchestration_task_ids: Vec::new(),
        ..parent.clone()
    }
}

/// Marks `job` as the job of task `task` (of phase `phase`) of orchestration job
/// `orchestration`: the first job of a task's tree (a container's rows are its children, not
/// tasks).
fn child_of_task(job: &mut Job, orchestration: u64, task: &str, phase: &str) {
    job.orchestration_job_id = Some(orchestration);
    job.orchestration_task_id = Some(task.to_string());
    job.orchestration_phase_id = Some(phase.to_string());
}

/// Puts a flow result document's `tasks` and `phases` into `result`.
pub(super) fn insert_document(result: &mut JobResult, tasks: Vec<Value>, phases: Vec<Value>) {
    result
        .other
        .insert("tasks".to_string(), Value::Array(tasks));
    result
        .other
        .insert("phases".to_string(), Value::Array(phases));
}

/// The jobs of tasks `makers` (task id, phase id, how many jobs its tree has, the maker of its
/// tree) from their `ids`, in order; the first job of each tree is the task's job of
/// orchestration job `orchestration`.
pub(super) fn task_jobs_of<M: Fn(&[u64]) -> Vec<Job>>(
    makers: &[(&str, &str, usize, M)],
    orchestration: u64,
    ids: &[u64],
) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut rest = ids;
    for (task, phase, count, make) in makers {
        let (own, after) = rest.split_at(*count);
        rest = after;
        let mut tree = make(own);
        child_of_task(&mut tree[0], orchestration, task, phase);
        jobs.extend(tree);
    }
    jobs
}

/// A phase job's phase id (`configData.phaseId`).
fn phase_id(phase: &Job) -> String {
    phase.config_data["phaseId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn phase_ids(list: &Value) -> Vec<String> {
    let ids = list.as_array().into_iter().flatten();
    ids.filter_map(|id| id.as_str().map(str::to_string))
        .collect()
}

/// The tasks a phase job holds (`configData.tasks`), as its orchestration stored them.
fn phase_tasks(phase: &Job) -> Result<Vec<Task>, String> {
    let definition = json!({
        "phases": [{"id": phase_id(phase)}],
        "tasks": phase.config_data["tasks"],
    });
    Orchestration::parse(&definition)
        .map(|o| o.tasks)
        .map_err(|error| error.to_string())
}
