//! Conditional flows (`keboola.flow`): a flow job steps through its phases as `model::step`
//! decides; each step's record (`result.flow`) is written in one transaction with the task jobs
//! it creates (direct children of the flow job), compare-and-set on the job's revision, so a
//! task job is created once across crashes and never after a kill. Notifications are sent by
//! a task of their own and recorded after they were sent.

use super::end::Ending;
use super::flows::{depth_of, insert_document, task_error, task_jobs_of, Overrides};
use super::{Queue, QueueError};
use crate::blocking::blocking;
use crate::channels::{Message, SendError};
use crate::model::{
    document, format_time, notified, now_micros, step, Channel, DesiredStatus, EventType, Flow,
    FlowRun, FlowTask, Job, JobResult, Stage, Status, Step, TaskJobFacts, TaskKind, TaskNote,
    UserError, NO_SMTP,
};
use crate::store::UpdateError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The key of `result` that holds a flow run's record.
const RECORD: &str = "flow";

/// How many steps one call takes at most (each records progress; a loop stops at the
/// `MAX_PHASE_RUNS` of its record long before).
const MAX_STEPS: usize = 1_000;

impl Queue {
    /// Checks a `keboola.flow` configuration before any job of it exists: it parses (phases,
    /// transitions, conditions, tasks) and each enabled job task would make a valid job.
    pub(super) fn check_flow(
        &self,
        definition: &Value,
        overrides: &Overrides,
        depth: usize,
    ) -> Result<Flow, QueueError> {
        let flow = Flow::parse(definition).map_err(|error| QueueError::Invalid {
            field: "configData",
            message: error.to_string(),
        })?;
        let tasks = flow.job_tasks().filter_map(|task| match &task.kind {
            TaskKind::Job { task, .. } => Some(task),
            _ => None,
        });
        self.check_tasks(tasks, overrides, depth)?;
        Ok(flow)
    }

    /// Starts a flow job: it goes `processing` with an empty record holding the configuration
    /// it runs (checked again: it may have changed since the job was created), then steps.
    pub(super) fn start_flow(&self, job: &Job) -> Result<bool, QueueError> {
        let checked = self.definition_of(job).and_then(|definition| {
            self.check_flow(&definition, &Overrides::of(job), depth_of(job))
                .map(|_| definition)
        });
        let definition = match checked {
            Ok(definition) => definition,
            Err(error) => {
                self.end(job.id, Ending::UserError(UserError(error.to_string())))?;
                return Ok(false);
            }
        };
        let from = job.status;
        let started = blocking(|| {
            self.store.update_job(job.id, |job| {
                if job.status != from || job.desired_status != DesiredStatus::Processing {
                    return Err(None);
                }
                job.result.other.insert(
                    RECORD.to_string(),
                    json!({"configuration": definition, "phaseRuns": [], "variables": {}}),
                );
                job.move_to(Status::Processing, now_micros()).map_err(Some)
            })
        });
        match started {
            Ok(started) => {
                self.changed();
                self.event(&started, EventType::Info, "Flow started.");
                self.step_flow(job.id)?;
                Ok(true)
            }
            Err(UpdateError::Rejected(None)) => Ok(false),
            Err(UpdateError::Rejected(Some(forbidden))) => Err(QueueError::Forbidden(forbidden)),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// Takes the steps flow job `id` may take now, recording each; ends it when its record
    /// says it ended (or it was killed) and all its task jobs have.
    pub(super) fn step_flow(&self, id: u64) -> Result<(), QueueError> {
        for _ in 0..MAX_STEPS {
            let Some(job) = self.store.job(id)? else {
                return Ok(());
            };
            if !matches!(job.status, Status::Processing | Status::Terminating) {
                return Ok(());
            }
            let children = self.store.children(job.run_id.as_str())?;
            let finished = children.iter().all(|c| c.status.is_finished());
            let (flow, run) = match record_of(&job) {
                Ok(found) => found,
                Err(message) => {
                    if finished {
                        self.end(id, Ending::UserError(UserError(message)))?;
                    }
                    return Ok(());
                }
            };
            let jobs = task_jobs(&children);
            let killed = job.desired_status == DesiredStatus::Terminating
                || job.status == Status::Terminating;
            if killed || run.status.is_some() {
                if finished {
                    return self.end_flow(&Seen {
                        job: &job,
                        flow: &flow,
                        run: &run,
                        jobs: &jobs,
                    });
                }
                return self.refresh_document(&Seen {
                    job: &job,
                    flow: &flow,
                    run: &run,
                    jobs: &jobs,
                });
            }
            match step(&flow, &run, &jobs, now_micros()) {
                Step::Wait => {
                    return self.refresh_document(&Seen {
                        job: &job,
                        flow: &flow,
                        run: &run,
                        jobs: &jobs,
                    })
                }
                Step::Notify(tasks) => {
                    self.lock_notifying().insert(id, tasks);
                    self.wake.notify_one();
                    return Ok(());
                }
                Step::Record(progress) => {
                    let Some(created) =
                        self.record_progress(&job, &flow, progress.run, &progress.create)?
                    else {
                        continue;
                    };
                    for (event_type, message) in &progress.events {
                        self.event(&job, *event_type, message);
                    }
                    for (task, child) in &created {
                        self.event(
                            &job,
                            EventType::Info,
                            &format!("Task \"{}\" started as job {}.", task.name, child.id),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `run` (and the result document) on flow job `job` and creates the jobs of
    /// `create`, in one transaction, if the job did not change since it was read; `None` if it
    /// did (the caller steps again from what is stored).
    fn record_progress(
        &self,
        job: &Job,
        flow: &Flow,
        run: FlowRun,
        create: &[(FlowTask, Option<u64>)],
    ) -> Result<Option<Vec<(FlowTask, Job)>>, QueueError> {
        let overrides = Overrides::of(job);
        let variables: Vec<(String, String)> = run
            .variables
            .iter()
            .map(|(name, value)| {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string);
                (name.clone(), text)
            })
            .collect();
        let mut makers = Vec::new();
        for (flow_task, delay) in create {
            let TaskKind::Job {
                task,
                variable_overrides,
                ..
            } = &flow_task.kind
            else {
                continue;
            };
            let taken: Vec<(String, String)> = variables
                .iter()
                .filter(|(name, _)| {
                    variable_overrides
                        .as_ref()
                        .is_none_or(|only| only.contains(name))
                })
                .cloned()
                .collect();
            let made =
                overrides
                    .request(task, Some(job.run_id.as_str()))
                    .and_then(|mut request| {
                        request.delay = *delay;
                        self.apply_flow_variables(&mut request, &taken)?;
                        self.new_jobs(
                            request,
                            &job.token_id,
                            &job.token_description,
                            depth_of(job) + 1,
                        )
                    });
            match made {
                Ok((count, make)) => {
                    makers.push((flow_task.id.as_str(), flow_task.phase.as_str(), count, make))
                }
                Err(error) => {
                    // The configuration changed under the run: the flow fails with it.
                    let mut run = run.clone();
                    run.status = Some(Status::Error);
                    run.message = Some(task_error(task, error).to_string());
                    return self.record_progress(job, flow, run, &[]);
                }
            }
        }
        let count = makers.iter().map(|(_, _, count, _)| count).sum();
        let jobs = task_jobs(&self.store.children(job.run_id.as_str())?);
        let (tasks, phases) = document(flow, &run, &jobs, format_time);
        let record = record_value(&run, job);
        let seen = job.revision;
        let flow_id = job.id;
        let outcome = blocking(|| {
            self.store.update_job_creating(
                flow_id,
                |job| {
                    if job.revision != seen
                        || job.status != Status::Processing
                        || job.desired_status != DesiredStatus::Processing
                    {
                        return Err(());
                    }
                    job.result.other.insert(RECORD.to_string(), record);
                    insert_document(&mut job.result, tasks, phases);
                    Ok(())
                },
                count,
                |_: &Job, ids: &[u64]| task_jobs_of(&makers, flow_id, ids),
            )
        });
        match outcome {
            Ok((_, children)) => {
                if !children.is_empty() {
                    crate::failpoint::hit(crate::failpoint::CHILDREN_CREATED);
                } else {
                    crate::failpoint::hit(crate::failpoint::FLOW_RECORDED);
                }
                self.changed();
                let created = children
                    .into_iter()
                    .filter_map(|child| {
                        let task = create
                            .iter()
                            .find(|(t, _)| Some(&t.id) == child.orchestration_task_id.as_ref())?;
                        Some((task.0.clone(), child))
                    })
                    .collect();
                Ok(Some(created))
            }
            Err(UpdateError::Rejected(())) => Ok(None),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// Gives a task's job the flow variables its variables configuration defines (the spec's
    /// rule: flow variables override the component's variables of the same name only).
    fn apply_flow_variables(
        &self,
        request: &mut super::NewJob,
        flow: &[(String, String)],
    ) -> Result<(), QueueError> {
        if flow.is_empty() {
            return Ok(());
        }
        let (branch, stored) = self.stored_configuration_of_request(request)?;
        let invalid = |error: UserError| QueueError::Invalid {
            field: "variableValuesData",
            message: error.to_string(),
        };
        let Some(variables) = self
            .variables_of(stored.as_ref(), &branch)
            .map_err(invalid)?
        else {
            return Ok(());
        };
        let given = request
            .variable_values_data
            .clone()
            .unwrap_or_else(|| json!({"values": []}));
        let values = crate::plan::with_flow_variables(
            &given,
            request.variable_values_id.as_deref(),
            stored.as_ref(),
            &variables,
            flow,
        )
        .map_err(invalid)?;
        if let Some(values) = values {
            request.variable_values_data = Some(values);
            request.variable_values_id = None;
        }
        Ok(())
    }

    /// Rewrites the result document of a running flow when its task jobs changed it.
    fn refresh_document(&self, seen: &Seen<'_>) -> Result<(), QueueError> {
        let job = seen.job;
        let (tasks, phases) = seen.document();
        let mut refreshed = job.result.clone();
        insert_document(&mut refreshed, tasks, phases);
        if refreshed == job.result {
            return Ok(());
        }
        let seen = job.revision;
        let updated = blocking(|| {
            self.store.update_job(job.id, |job| {
                if job.revision != seen {
                    return Err(());
                }
                job.result = refreshed;
                Ok(())
            })
        });
        match updated {
            Ok(_) | Err(UpdateError::Rejected(())) => {
                self.changed();
                Ok(())
            }
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }

    /// Ends flow job `job` as its record says (a killed one ends `terminated`), with the result
    /// document.
    fn end_flow(&self, seen: &Seen<'_>) -> Result<(), QueueError> {
        let (job, run) = (seen.job, seen.run);
        if job.desired_status == DesiredStatus::Terminating {
            self.move_if(job.id, Status::Processing, Status::Terminating)?;
        }
        let status = run.status.unwrap_or(Status::Terminated);
        let (tasks, phases) = seen.document();
        let message = run
            .message
            .clone()
            .unwrap_or_else(|| "The flow was killed.".to_string());
        let mut result: JobResult = super::end::ended_result(message, status);
        insert_document(&mut result, tasks, phases);
        result
            .other
            .insert(RECORD.to_string(), record_value(run, job));
        self.update(job.id, |job| {
            job.result = result;
            job.outcome = Some(status);
        })?;
        self.end(job.id, Ending::Recorded)
    }

    /// Spawns the senders of the notifications steps asked for (the scheduler calls this with
    /// the queue it owns).
    pub(super) fn send_notifications(self: &Arc<Self>) {
        let pending: Vec<(u64, Vec<FlowTask>)> = self.lock_notifying().drain().collect();
        for (id, tasks) in pending {
            if !self.lock_sending().insert(id) {
                continue;
            }
            let queue = Arc::clone(self);
            tokio::spawn(async move {
                let notes = queue.notify(id, &tasks).await;
                let recorded = blocking(|| queue.record_notified(id, notes));
                queue.lock_sending().remove(&id);
                let stepped = recorded.and_then(|()| blocking(|| queue.step_flow(id)));
                if let Err(error) = stepped {
                    tracing::error!(job_id = id, error = %crate::error::chain(&error), "cannot record a flow's notifications; the next start sends them again");
                }
            });
        }
    }

    /// Sends the notifications of `tasks` for flow job `id` through the channels: webhooks get a
    /// JSON POST, email addresses the title and message (only recorded without `[smtp]`). A
    /// failed one is a warning, never a failure of the flow.
    async fn notify(&self, id: u64, tasks: &[FlowTask]) -> Vec<TaskNote> {
        let Ok(Some(job)) = self.store.job(id) else {
            return Vec::new();
        };
        // Sent already (a step asked again while they were being recorded): not again.
        let current = record_of(&job)
            .ok()
            .and_then(|(_, run)| run.phase_runs.last().cloned())
            .filter(|current| current.stage == Stage::Notify);
        let Some(current) = current else {
            return Vec::new();
        };
        let phase = current.id;
        let mut notes = Vec::new();
        for task in tasks {
            let TaskKind::Notification {
                title,
                message,
                recipients,
            } = &task.kind
            else {
                continue;
            };
            let body = json!({
                "title": title,
                "message": message,
                "job": {"id": job.id.to_string(), "component": job.component, "config": job.config, "url": null},
                "project": {"id": job.project_id, "name": job.project_name},
                "flow": {"phase": phase, "task": task.id},
            });
            let text = format!(
                "{}\n\nFlow job {} ({}, configuration {}), phase \"{phase}\", task \"{}\".\n",
                message.as_deref().unwrap_or(title),
                job.id,
                job.component,
                job.config.as_deref().unwrap_or("-"),
                task.name
            );
            let mut failed = Vec::new();
            let mut sent = Vec::new();
            for recipient in recipients {
                let to = &recipient.address;
                let message = Message {
                    body: &body,
                    subject: title,
                    text: &text,
                };
                let answer = match self.channels.get() {
                    Some(channels) => channels.send(recipient, message).await,
                    None => Err(SendError::Failed("this jobq has no sender".to_string())),
                };
                let protocol = match recipient.channel {
                    Channel::Webhook => "HTTP",
                    Channel::Email => "SMTP",
                };
                match answer {
                    Ok(code) if (200..300).contains(&code) => {
                        let text = format!("Notification \"{title}\" of task \"{}\" sent to {to} ({protocol} {code}).", task.name);
                        self.event(&job, EventType::Info, &text);
                        sent.push(to.clone());
                    }
                    Ok(code) => failed.push(format!("{to} answered {protocol} {code}")),
                    Err(SendError::Failed(error)) => failed.push(format!("{to}: {error}")),
                    Err(SendError::NoSmtp) => {
                        let text = format!(
                            "Notification \"{title}\" of task \"{}\" for {to} recorded, {NO_SMTP}.",
                            task.name
                        );
                        self.event(&job, EventType::Info, &text);
                        sent.push(to.clone());
                    }
                }
            }
            let (status, message) = match failed.is_empty() {
                true => (Status::Success, format!("Sent to {}.", sent.join(", "))),
                false => {
                    let text = format!(
                        "Notification \"{title}\" of task \"{}\" failed: {}. The flow goes on.",
                        task.name,
                        failed.join("; ")
                    );
                    self.event(&job, EventType::Warn, &text);
                    (Status::Warning, text)
                }
            };
            notes.push(TaskNote {
                task: task.id.clone(),
                status,
                message,
            });
        }
        notes
    }

    /// Records that the current phase run of flow job `id` sent its notifications.
    fn record_notified(&self, id: u64, notes: Vec<TaskNote>) -> Result<(), QueueError> {
        let updated = self.store.update_job(id, |job| {
            if job.status != Status::Processing {
                return Err(());
            }
            let (_, run) = record_of(job).map_err(|_| ())?;
            let record = record_value(&notified(&run, notes), job);
            job.result.other.insert(RECORD.to_string(), record);
            Ok(())
        });
        match updated {
            Ok(_) => {
                crate::failpoint::hit(crate::failpoint::FLOW_RECORDED);
                self.changed();
                Ok(())
            }
            Err(UpdateError::Rejected(())) => Ok(()),
            Err(UpdateError::Store(error)) => Err(error.into()),
        }
    }
}

/// What one step read: the flow job, its configuration, its record and its task jobs.
#[derive(Clone, Copy)]
struct Seen<'a> {
    job: &'a Job,
    flow: &'a Flow,
    run: &'a FlowRun,
    jobs: &'a BTreeMap<String, Vec<TaskJobFacts>>,
}

impl Seen<'_> {
    /// The flow result document (`tasks`, `phases`) of what was read.
    fn document(&self) -> (Vec<Value>, Vec<Value>) {
        document(self.flow, self.run, self.jobs, format_time)
    }
}

/// The configuration a flow job runs and its record, from `result.flow`.
fn record_of(job: &Job) -> Result<(Flow, FlowRun), String> {
    let record = job
        .result
        .other
        .get(RECORD)
        .ok_or_else(|| "The flow job has no record of its run.".to_string())?;
    let flow = Flow::parse(&record["configuration"]).map_err(|error| error.to_string())?;
    let run: FlowRun = serde_json::from_value(record.clone())
        .map_err(|error| format!("The record of the flow's run cannot be read: {error}"))?;
    Ok((flow, run))
}

/// `run` as `result.flow` of flow job `job`, with the configuration the run started with.
fn record_value(run: &FlowRun, job: &Job) -> Value {
    let mut record = serde_json::to_value(run).unwrap_or_default();
    record["configuration"] = job.result.other[RECORD]["configuration"].clone();
    record
}

/// The task jobs among a flow job's `children`, per task, in creation (id) order.
fn task_jobs(children: &[Job]) -> BTreeMap<String, Vec<TaskJobFacts>> {
    let mut jobs: BTreeMap<String, Vec<TaskJobFacts>> = BTreeMap::new();
    for child in children {
        let Some(task) = &child.orchestration_task_id else {
            continue;
        };
        jobs.entry(task.clone()).or_default().push(TaskJobFacts {
            id: child.id,
            status: child.status,
            error_kind: child
                .result
                .error
                .as_ref()
                .map(|error| error.kind.as_str().to_string()),
            message: child.result.message.clone(),
            component: child.component.clone(),
            config: child.config.clone(),
            start_time: child.start_time.map(format_time),
            end_time: child.end_time.map(format_time),
            duration: child.duration_seconds(),
            result: serde_json::to_value(&child.result).unwrap_or_default(),
        });
    }
    for list in jobs.values_mut() {
        list.sort_by_key(|job| job.id);
    }
    jobs
}
