//! Running a job: its rows and images, mapping, state, debug snapshots, and its end.

use super::{Queue, QueueError, RETRY_INTERVAL};
use crate::debug;
use crate::mapping::input::{self, Inputs};
use crate::mapping::output::{self, OutputMapping, Outputs};
use crate::model::{now_micros, EventSource, EventType, Job, JobType, Mode, Status};
use crate::plan::{self, Plan};
use crate::runner::outcome::{self, Verdict};
use crate::runner::workspace::{self, Workspace};
use crate::runner::{Run, RunObserver, RunOutcome, Task};
use crate::secrets::{self, Redactor, Scope};
use crate::settings::Component;
use crate::store::UpdateError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Queue {
    /// Runs one job's containers (re-attaching to `container_id` first) and records how it ended.
    pub(super) async fn execute(
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
    pub(super) fn fail(&self, job: &Job, message: String) -> Result<(), QueueError> {
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
    pub(super) fn plan(&self, job: &Job) -> Result<Plan, String> {
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
    pub(super) fn settle_container(&self, run_id: &str) -> Result<(), QueueError> {
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
    pub(super) fn finalize(&self, job: &Job) -> Result<(), QueueError> {
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
