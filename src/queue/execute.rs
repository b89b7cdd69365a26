//! Running a job: a pipeline of named phases over its rows and images, ending through `end`.

use super::end::Ending;
use super::event_writer::EventWriter;
use super::{Queue, QueueError, RETRY_INTERVAL};
use crate::blocking::blocking;
use crate::debug;
use crate::disk::{self, Bytes};
use crate::error::chain;
use crate::failpoint;
use crate::mapping::input::{self, Inputs};
use crate::mapping::output::{self, OutputMapping, Outputs};
use crate::model::{
    EventSource, EventType, Job, JobResult, MappedTables, Mode, ResultError, Status, UserError,
};
use crate::plan::{self, Plan};
use crate::runner::outcome::{self, Verdict};
use crate::runner::size::{container_size, Size};
use crate::runner::workspace::{self, Workspace};
use crate::runner::{Finished, ImageFailure, Recorded, Run, RunObserver, RunOutcome, Task};
use crate::secrets::{self, Redactor, Registration, Scope};
use crate::settings::Component;
use crate::storage::StorageError;
use crate::store::{StoreError, UpdateError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bytes a debug archive may take beyond its data's: entry headers and the central directory.
const ARCHIVE_OVERHEAD: u64 = 1 << 20;

impl Queue {
    /// Runs one job's containers (re-attaching to `container_id` first) and records how it ended.
    ///
    /// A store that refuses writes for a fault of the host (a full disk, a failed write) stops
    /// the run where it was; once the store takes writes again the job goes on from what is
    /// recorded, as after a restart: its container, which is never removed before its result
    /// is stored, is re-attached, or its recorded outcome ends it. The disk never decides a
    /// job's status.
    pub(super) async fn execute(
        self: Arc<Self>,
        mut job: Job,
        mut attach_to: Option<String>,
        cancel: CancellationToken,
    ) {
        let requeued = loop {
            let recorded = if job.outcome.is_some() {
                self.end_recorded(&job).await.map(|()| false)
            } else {
                match self.run_job(&job, attach_to.take(), &cancel).await {
                    Ok(()) => Ok(false),
                    Err(Stop::Requeue(reason)) => self.requeue(&job, &reason).map(|()| true),
                    Err(Stop::Fail(error)) => {
                        self.end(job.id, Ending::UserError(error)).map(|()| false)
                    }
                    Err(Stop::Application(message)) => {
                        tracing::error!(job_id = job.id, %message, "the job cannot get its image");
                        self.end(job.id, Ending::ApplicationError(message))
                            .map(|()| false)
                    }
                    Err(Stop::Store(error)) => Err(error),
                }
            };
            match recorded {
                Err(QueueError::Store(error)) if error.is_host_fault() => {
                    match self.after_host_fault(&job, &error) {
                        Some(current) => {
                            attach_to = current.container_id.clone();
                            job = current;
                        }
                        None => break false,
                    }
                }
                Err(error) => {
                    tracing::error!(job_id = job.id, error = %chain(&error), "cannot record the end of a job");
                    break false;
                }
                Ok(requeued) => break requeued,
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

    /// Waits until the store takes writes again after `error` stopped job `job`'s run; the job
    /// as recorded then, unless it is gone or finished.
    fn after_host_fault(&self, job: &Job, error: &StoreError) -> Option<Job> {
        tracing::warn!(job_id = job.id, error = %error, "the job waits until the store takes writes again");
        blocking(|| while !self.store.wait_writable(Duration::from_secs(60)) {});
        match blocking(|| self.store.job(job.id)) {
            Ok(Some(current)) if !current.status.is_finished() => {
                tracing::info!(
                    job_id = job.id,
                    "the store takes writes again; the job goes on"
                );
                Some(current)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::error!(job_id = job.id, error = %chain(&error), "cannot read a job after the store came back");
                None
            }
        }
    }

    /// One job's run, phase by phase:
    ///
    /// 1. **prepare**: resolve what it runs (stored configuration, rows, variables), decrypt
    ///    its secrets and register them to be hidden in everything it records; then **images**:
    ///    every image its rows run is in the engine (pulled when needed);
    /// 2. for each row not done yet (a resumed job goes on after `rows_done`):
    ///    1. **start row** (unless resuming inside it): a fresh folder with `in/state.json`,
    ///       then the input mapping, whose result is kept beside the folder;
    ///    2. for each image not done yet (processors before, the component, processors after):
    ///       1. **start image** (unless re-attaching): `out/` becomes `in/`, its `config.json`,
    ///          in debug mode the stage archive;
    ///       2. **run or re-attach** its container until it ends;
    ///       3. a successful image that is not the row's last: **finish image** (record it,
    ///          remove its container) and go on with the next image;
    ///    3. **finish row**: seal the folder's secrets, output mapping (each table once),
    ///       state after the last row, record the row, remove its container;
    /// 3. **end**: the job's final status, result and final event, its parent settled.
    ///
    /// A result is stored before its container is removed, and the container removed before
    /// the job ends, so a crash at any step loses neither. A platform failure before a
    /// container started is `Stop::Requeue`; a user error found outside a container
    /// `Stop::Fail`.
    async fn run_job(
        &self,
        job: &Job,
        mut attach_to: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let prepared = self.prepare(job, attach_to.is_none())?;
        let (component, plan) = (&*prepared.component, &prepared.plan);
        if attach_to.is_none() {
            self.ensure_images(job, component, plan, cancel).await?;
        }
        let total = plan.tasks.len();
        let mut job = job.clone();
        for (index, task) in plan.tasks.iter().enumerate().skip(job.rows_done as usize) {
            let images = self.images(&job, component, task).map_err(Stop::Fail)?;
            if job.images_done == 0 && attach_to.is_none() {
                self.start_row(&job, component, task, index, total)?;
            }
            for (image_index, image) in images.iter().enumerate().skip(job.images_done as usize) {
                let reattach = attach_to.take();
                if reattach.is_none() {
                    self.start_image(&job, task, image_index, image)?;
                }
                let ran = self
                    .run_image(&job, task, image_index, image, reattach, cancel)
                    .await?;
                if let Some(exit) = &ran.exit {
                    self.metrics.container_ended(exit);
                }
                if ran.verdict.status == Status::Success && image_index + 1 < images.len() {
                    job = self
                        .finish_image(&job, task, image_index, image, ran)
                        .await?;
                    continue;
                }
                let row = Row {
                    task,
                    index,
                    image_index,
                    last: index + 1 == total,
                };
                match self.finish_row(&job, component, plan, row, ran).await? {
                    RowEnd::Next(updated) => {
                        job = *updated;
                        break;
                    }
                    RowEnd::JobEnded => return Ok(()),
                }
            }
        }
        // No row was selected: nothing ran.
        self.update(job.id, |job| {
            job.result = JobResult {
                message: Some("No configurations executed.".to_string()),
                images: Some(Vec::new()),
                ..JobResult::default()
            };
            plan.describe(&mut job.result);
            job.outcome = Some(Status::Success);
        })?;
        self.end(job.id, Ending::Recorded)?;
        Ok(())
    }

    /// Phase 1: the job's component, its plan with decrypted secrets, and their registration.
    fn prepare<'a>(&'a self, job: &Job, fresh: bool) -> Result<Prepared<'a>, Stop> {
        let Some(component) = self
            .settings
            .job_component(&job.component, &job.config_data)
        else {
            let reason = format!("component \"{}\" is no longer registered", job.component);
            return Err(Stop::Requeue(reason));
        };
        let mut plan = self.plan(job).map_err(Stop::Fail)?;
        // Secrets are decrypted only into the running job's folder, and hidden in all it records.
        let reader = Scope::for_job(&job.component, &job.project_id, job.config.as_deref());
        let mut found = Vec::new();
        for task in &mut plan.tasks {
            self.secrets
                .decrypt_json(&mut task.configuration, &reader, &mut found)
                .and_then(|()| {
                    self.secrets
                        .decrypt_json(&mut task.state, &reader, &mut found)
                })
                .map_err(|error| Stop::Fail(UserError(chain(&error))))?;
        }
        // A component that gets the job's token (`forward_token`) may print it.
        if let Some(token) = self.settings.token_of(&job.token_id) {
            found.push(token.to_string());
        }
        let registration = secrets::register(&found);
        self.lock_redactors()
            .insert(job.id, Arc::new(Redactor::new(&found)));
        if fresh && job.rows_done == 0 && job.images_done == 0 {
            for row in &plan.skipped_rows {
                let message = format!("Skipping disabled configuration: {row}");
                self.event(job, EventType::Info, &message);
            }
        }
        Ok(Prepared {
            component,
            plan,
            _logs_hide_secrets: registration,
        })
    }

    /// Phase 1, images: every image the job's rows still to run need is in the engine, pulled
    /// when needed with its progress as job events. An unreachable registry fails the job
    /// unless `wait_for_registry` keeps it `created` (told once by an event). A kill ends the
    /// wait.
    async fn ensure_images(
        &self,
        job: &Job,
        component: &Component,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut seen = std::collections::HashSet::new();
        for task in plan.tasks.iter().skip(job.rows_done as usize) {
            let images = self.images(job, component, task).map_err(Stop::Fail)?;
            for image in images {
                if !seen.insert(image.reference.clone()) {
                    continue;
                }
                let told = |message: &str| self.event(job, EventType::Info, message);
                let ensuring = self.executor.ensure_image(
                    &image.reference,
                    image.component,
                    &self.settings,
                    &told,
                );
                // A kill does not wait for the pull (which goes on for other jobs): back to
                // `created`, where `requeue` ends the killed job `terminated`.
                let ensured = tokio::select! {
                    ensured = ensuring => ensured,
                    () = cancel.cancelled() => {
                        return Err(Stop::Requeue("killed while its images were made ready".into()))
                    }
                };
                match ensured {
                    Ok(()) => {}
                    Err(ImageFailure::Job(error)) => return Err(Stop::Fail(error)),
                    Err(ImageFailure::Engine(error)) => return Err(Stop::Requeue(chain(&error))),
                    Err(ImageFailure::Unreachable(message)) if self.settings.wait_for_registry => {
                        let first = self
                            .told_registry_unreachable
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .insert(job.id);
                        if first {
                            let waits = format!(
                                "{message}. The job stays created and tries again \
                                 (wait_for_registry)."
                            );
                            self.event(job, EventType::Warn, &waits);
                        }
                        return Err(Stop::Requeue(message));
                    }
                    Err(ImageFailure::Unreachable(message) | ImageFailure::Pull(message)) => {
                        return Err(Stop::Application(message))
                    }
                }
            }
        }
        self.told_registry_unreachable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&job.id);
        Ok(())
    }

    /// Phase 2.1: a fresh folder for the row, and its input mapping.
    fn start_row(
        &self,
        job: &Job,
        component: &Component,
        task: &Task,
        index: usize,
        total: usize,
    ) -> Result<(), Stop> {
        let message = format!(
            "Running component {} (row {} of {total})",
            component.id,
            index + 1
        );
        self.event(job, EventType::Info, &message);
        let workspace = blocking(|| workspace::prepare(&task.folder, &task.state))
            .map_err(|error| Stop::Requeue(format!("cannot prepare the job folder: {error}")))?;
        let inputs =
            blocking(|| input::map_inputs(&self.storage, &task.configuration, &workspace.data))
                .map_err(Stop::Fail)?;
        workspace::save_inputs(&task.folder, &inputs)
            .map_err(|error| Stop::Requeue(format!("cannot prepare the job folder: {error}")))
    }

    /// Phase 2.2.1: the folder as the next image must see it.
    fn start_image(
        &self,
        job: &Job,
        task: &Task,
        image_index: usize,
        image: &Image<'_>,
    ) -> Result<(), Stop> {
        blocking(|| -> std::io::Result<()> {
            if image_index > 0 {
                workspace::rotate(&task.folder, image_index)?;
            }
            workspace::write_config(&Workspace::of(&task.folder), &image.config)
        })
        .map_err(|error| Stop::Requeue(format!("cannot prepare the next image: {error}")))?;
        if job.mode == Mode::Debug {
            let container = self
                .executor
                .prepare(
                    job,
                    task,
                    &image.reference,
                    image.component,
                    image.size,
                    &self.settings,
                )
                .map_err(|error| {
                    Stop::Requeue(format!("cannot prepare the next image: {error}"))
                })?;
            let stage = Stage::Before {
                index: image_index,
                container,
            };
            self.archive_stage(job, task, image.component, stage)
                .map_err(Stop::Fail)?;
        }
        if image.processor {
            let message = format!("Running processor {}", image.component.id);
            self.event(job, EventType::Info, &message);
        }
        Ok(())
    }

    /// Phase 2.2.2: runs the image's container, or follows the one a previous process started.
    async fn run_image(
        &self,
        job: &Job,
        task: &Task,
        image_index: usize,
        image: &Image<'_>,
        reattach: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Finished, Stop> {
        let redactor = self.lock_redactors().get(&job.id).cloned();
        let observer = JobObserver {
            queue: self,
            job,
            stdout_base: AtomicU64::new(job.stdout_base),
            writer: EventWriter::start(Arc::clone(&self.store), job, redactor),
        };
        let run = Run {
            job,
            task,
            image_index,
            image: &image.reference,
            component: image.component,
            size: image.size,
            process_timeout: image.process_timeout,
            settings: &self.settings,
            observer: &observer,
        };
        let outcome = match reattach {
            Some(container_id) => {
                self.executor
                    .reattach(&run, &container_id, cancel.clone())
                    .await
            }
            None => self.executor.start(&run, cancel.clone()).await,
        };
        match outcome {
            RunOutcome::Finished(finished) => Ok(finished),
            RunOutcome::Requeue { reason } => Err(Stop::Requeue(reason)),
        }
    }

    /// Phase 2.2.3: a successful image before the row's last; the row goes on with the next.
    /// After the component's own image, its `out/state.json` is kept (encrypted) for the job
    /// to store: processors after it never see or change it.
    async fn finish_image(
        &self,
        job: &Job,
        task: &Task,
        image_index: usize,
        image: &Image<'_>,
        ran: Finished,
    ) -> Result<Job, Stop> {
        workspace::hide_config(&Workspace::of(&task.folder));
        if !image.processor {
            blocking(|| {
                let kept = workspace::keep_component_state(&task.folder)?;
                self.secrets.encrypt_file(&kept, &state_scope(job))
            })
            .map_err(|error| {
                Stop::Requeue(format!("cannot keep the component's state: {error}"))
            })?;
        }
        let job = self.update(job.id, |job| {
            add_image(&mut job.result, image_index, ran.images);
            job.images_done += 1;
            job.container_id = None;
        })?;
        if let Some(container_id) = ran.container_id {
            self.executor.remove(&container_id).await;
        }
        Ok(job)
    }

    /// Phase 2.3: the row's last image ended, or an image failed: the row ends here, and the
    /// job with it when it was the last row or it failed.
    async fn finish_row(
        &self,
        job: &Job,
        component: &Component,
        plan: &Plan,
        row: Row<'_>,
        ran: Finished,
    ) -> Result<RowEnd, Stop> {
        let Row {
            task,
            index,
            image_index,
            last,
        } = row;
        self.seal_folder(job, &Workspace::of(&task.folder));
        let mut verdict = ran.verdict;
        // A failed row keeps what its folder held too: the case a developer debugs.
        if job.mode == Mode::Debug && verdict.status != Status::Terminated {
            let failed = verdict.status != Status::Success;
            let archived = self.archive_stage(job, task, component, Stage::Output { failed });
            if let Err(error) = archived {
                if !failed {
                    verdict = outcome::user_verdict(error);
                }
            }
        }
        let load_id = format!("job/{}/row/{index}", job.id);
        let outputs = match self.map_outputs(job, component, task, &verdict, load_id) {
            Ok(outputs) => outputs,
            Err(error) => {
                verdict = outcome::user_verdict(error);
                Outputs::default()
            }
        };
        failpoint::hit(failpoint::OUTPUT_MAPPED);
        let ends = last || verdict.status != Status::Success;
        if ends && verdict.status == Status::Success {
            self.save_state(job, plan)?;
        }
        let inputs = workspace::load_inputs(&task.folder);
        let job = self.update(job.id, |job| {
            add_image(&mut job.result, image_index, ran.images);
            if let Some(usage) = ran.usage_data {
                job.usage_data = usage;
            }
            add_storage_results(&mut job.result, &mut job.metrics, &inputs, &outputs);
            job.rows_done += 1;
            job.images_done = 0;
            job.container_id = None;
            if ends {
                job.result.message = Some(self.redact(job.id, &verdict.message));
                if let Some(kind) = verdict.error {
                    job.result.error = Some(ResultError {
                        kind,
                        exception_id: ran.exception_id,
                    });
                }
                plan.describe(&mut job.result);
                job.outcome = Some(verdict.status);
            }
        })?;
        if let Some(container_id) = ran.container_id {
            self.executor.remove(&container_id).await;
        }
        if !ends {
            return Ok(RowEnd::Next(Box::new(job)));
        }
        self.end(job.id, Ending::Recorded)?;
        Ok(RowEnd::JobEnded)
    }

    /// The images of a task: `processors.before`, the component, `processors.after`, each with
    /// its registered component and its `config.json`.
    fn images<'a>(
        &'a self,
        job: &Job,
        component: &'a Component,
        task: &Task,
    ) -> Result<Vec<Image<'a>>, UserError> {
        let size_of = |component: &Component| {
            container_size(&self.settings, component, &job.backend)
                .map_err(|error| UserError(error.to_string()))
        };
        let processors = |side: &str| -> Result<Vec<Image<'a>>, UserError> {
            task.configuration["processors"][side]
                .as_array()
                .into_iter()
                .flatten()
                .map(|processor| {
                    let id = processor["definition"]["component"]
                        .as_str()
                        .unwrap_or_default();
                    let registered = self.settings.component(id).ok_or_else(|| {
                        UserError(format!(
                            "Processor component \"{id}\" is not registered in jobq's settings."
                        ))
                    })?;
                    let tag = processor["definition"]["tag"]
                        .as_str()
                        .unwrap_or(&registered.tag);
                    Ok(Image {
                        component: registered,
                        reference: registered.image_reference(tag),
                        config: workspace::processor_config(&processor["parameters"], registered),
                        processor: true,
                        size: size_of(registered)?,
                        process_timeout: registered.process_timeout,
                    })
                })
                .collect()
        };
        let mut images = processors("before")?;
        images.push(Image {
            component,
            reference: component.image_reference(&job.tag),
            config: workspace::config_json(job, component, task),
            processor: false,
            size: size_of(component)?,
            process_timeout: plan::process_timeout(&task.configuration, component),
        });
        images.extend(processors("after")?);
        Ok(images)
    }

    /// In debug mode: the data folder as it is now, zipped and stored as a Storage file tagged
    /// `debug`, the image's component, `jobId:<id>` and `rowId:<row>` (and `failed` for the
    /// output of a failed row); an archive before an image carries that image's container as
    /// its comment (JSON), for `jobq replay`. An archive that would not fit into `data_dir`
    /// fails the job (the user error says how much it needs); any other failure is a warning
    /// event, never the job's end.
    fn archive_stage(
        &self,
        job: &Job,
        task: &Task,
        component: &Component,
        stage: Stage,
    ) -> Result<(), UserError> {
        let (index, comment, failed_row) = match stage {
            Stage::Before { index, container } => (
                Some(index),
                serde_json::to_string(&container).unwrap_or_default(),
                false,
            ),
            Stage::Output { failed } => (None, String::new(), failed),
        };
        let name = debug::stage_name(index);
        let workspace = Workspace::of(&task.folder);
        let target = task.folder.join(&name);
        let stored = blocking(|| -> Result<(), StorageError> {
            // Deflate never grows data by more than a fraction of a percent plus the entries'
            // headers; the archive is written once beside the folder and once into Storage.
            let data = disk::size_of_tree(&workspace.data).unwrap_or(0);
            let archive = data + data / 100 + ARCHIVE_OVERHEAD;
            self.storage.make_room(
                || {
                    format!(
                        "the debug archive {name} of the data folder ({})",
                        Bytes(data)
                    )
                },
                archive.saturating_mul(2),
            )?;
            let failed = |error: String| StorageError::Archive {
                name: name.clone(),
                error,
            };
            debug::archive(&workspace.data, &target, &comment)
                .map_err(|error| failed(chain(&error)))?;
            let mut tags = vec![
                "debug".to_string(),
                component.id.clone(),
                format!("jobId:{}", job.id),
                format!("rowId:{}", task.row_id.as_deref().unwrap_or("")),
            ];
            if failed_row {
                tags.push("failed".to_string());
            }
            let archive =
                std::fs::File::open(&target).map_err(|error| failed(error.to_string()))?;
            let size = archive.metadata().map_or(0, |metadata| metadata.len());
            let stored = self.storage.upload_file(&name, &tags, archive, size);
            // The archive beside the folder goes whether it was stored or not.
            let _ = std::fs::remove_file(&target);
            stored.map(drop)
        });
        match stored {
            Ok(()) => Ok(()),
            Err(error @ StorageError::NoSpace { .. }) => Err(UserError(chain(&error))),
            Err(error) => {
                tracing::error!(job_id = job.id, error = %chain(&error), "cannot store a debug archive");
                let message = format!("The debug archive {name} could not be stored.");
                self.event(job, EventType::Warn, &message);
                Ok(())
            }
        }
    }

    /// Loads the task's `out/` into Storage after its container ended (run mode only; after a
    /// failure only `write_always` tables), each table at most once for `load_id`. An error is
    /// the user error the job fails with.
    fn map_outputs(
        &self,
        job: &Job,
        component: &Component,
        task: &Task,
        verdict: &Verdict,
        load_id: String,
    ) -> Result<Outputs, UserError> {
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
                .map(|config| {
                    let stage = component.default_bucket_stage.as_str();
                    output::default_bucket(stage, &component.id, config)
                }),
            failed: verdict.status != Status::Success,
            load_id,
        };
        let data = Workspace::of(&task.folder).data;
        let outputs = blocking(|| mapping.run(&data))?;
        if verdict.status == Status::Success {
            self.event(job, EventType::Info, "Output mapping done.");
        }
        Ok(outputs)
    }

    /// Resolves what the job runs, loading its stored configuration (and variables) as it is now.
    pub(super) fn plan(&self, job: &Job) -> Result<Plan, UserError> {
        let stored = self
            .stored_configuration_of(job)
            .map_err(|error| UserError(chain(&error)))?;
        let variables = self.variables_of(stored.as_ref(), &job.branch_id)?;
        plan::plan(
            job,
            &self.settings.job_dir(job.id),
            stored.as_ref(),
            variables.as_ref(),
        )
    }

    /// The variables configuration that `stored` names (`variables_id`), if any.
    pub(super) fn variables_of(
        &self,
        stored: Option<&crate::model::Configuration>,
        branch: &str,
    ) -> Result<Option<crate::model::Configuration>, UserError> {
        let Some(id) = stored.and_then(|s| s.configuration.get("variables_id")) else {
            return Ok(None);
        };
        let id = id
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| id.to_string());
        match self
            .store
            .configuration(branch, plan::VARIABLES_COMPONENT, &id)
        {
            Ok(Some(variables)) => Ok(Some(variables)),
            Ok(None) => Err(UserError(format!(
                "Variables configuration \"{id}\" not found."
            ))),
            Err(error) => Err(UserError(chain(&error))),
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
        let scope = state_scope(job);
        let states: Vec<(Option<String>, Value)> = plan
            .tasks
            .iter()
            .map(|task| {
                let path = workspace::component_state_path(&task.folder);
                let mut state = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_else(|| json!({}));
                self.secrets.encrypt_json(&mut state, &scope);
                (task.row_id.clone(), state)
            })
            .collect();
        let saved = blocking(|| {
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
}

/// The scope a job's component state is encrypted for (readable by every configuration of
/// the component in the project, as stored state is).
pub(super) fn state_scope(job: &Job) -> Scope {
    Scope::Project {
        component: job.component.clone(),
        project: job.project_id.clone(),
    }
}

/// Why a job's run stopped before its end was recorded.
enum Stop {
    /// A platform failure before a container started: the job goes back to `created`.
    Requeue(String),
    /// A user error found outside a container: the job ends with it.
    Fail(UserError),
    /// An application error found outside a container: the job ends with it.
    Application(String),
    /// The store could not record the run.
    Store(QueueError),
}

impl From<QueueError> for Stop {
    fn from(error: QueueError) -> Self {
        Stop::Store(error)
    }
}

/// What phase 1 resolved; the registration keeps the secrets hidden in the daemon's log.
struct Prepared<'a> {
    component: std::borrow::Cow<'a, Component>,
    plan: Plan,
    _logs_hide_secrets: Registration,
}

/// Which debug stage archive to make: before an image (with the container it runs in), or the
/// row's output (after its last image, or after the image that failed).
enum Stage {
    Before {
        index: usize,
        container: crate::runner::container::ContainerSpec,
    },
    Output {
        failed: bool,
    },
}

/// The row that ends: its task, its place among the job's rows, and the image it ended at.
struct Row<'a> {
    task: &'a Task,
    index: usize,
    image_index: usize,
    last: bool,
}

/// What a finished row leaves to do.
enum RowEnd {
    /// More rows follow; the job as recorded.
    Next(Box<Job>),
    /// The job ended (its last row, or a failure).
    JobEnded,
}

/// One image of a task: its component, the image reference it runs (the job's tag for the
/// component; a processor's `definition.tag`, else its registered tag), and its `config.json`.
struct Image<'a> {
    component: &'a Component,
    reference: String,
    config: Value,
    processor: bool,
    /// Its container's memory and CPUs: the job's container type.
    size: Size,
    process_timeout: Duration,
}

/// Adds an image's entry to `result.images`: a new inner list for a row's first image.
fn add_image(result: &mut JobResult, image_index: usize, image: Value) {
    let rows = result.images.get_or_insert_with(Vec::new);
    let entries = image.as_array().cloned().unwrap_or_default();
    match rows.last_mut() {
        Some(row) if image_index > 0 => row.extend(entries),
        _ => rows.push(entries),
    }
}

/// Adds one task's mapped tables to `result.input/output.tables` and their sizes to
/// `metrics.storage`.
fn add_storage_results(
    result: &mut JobResult,
    metrics: &mut Value,
    inputs: &Inputs,
    outputs: &Outputs,
) {
    for (side, tables) in [
        (&mut result.input, &inputs.tables),
        (&mut result.output, &outputs.tables),
    ] {
        let side = side.get_or_insert_with(MappedTables::default);
        side.tables.extend(tables.iter().cloned());
    }
    for (key, bytes) in [
        ("inputTablesBytesSum", inputs.bytes),
        ("outputTablesBytesSum", outputs.bytes),
    ] {
        let sum = metrics["storage"][key].as_u64().unwrap_or(0) + bytes;
        metrics["storage"][key] = json!(sum);
    }
}

/// Persists what a run reports for one job: its events through the job's `EventWriter`, in
/// batches.
struct JobObserver<'a> {
    queue: &'a Queue,
    job: &'a Job,
    /// Stdout events recorded before the current container started.
    stdout_base: AtomicU64,
    writer: EventWriter,
}

impl RunObserver for JobObserver<'_> {
    fn container_created(&self, container_id: &str) -> Result<(), String> {
        self.writer.flush();
        let recorded = self.recorded_stdout_events() as u64;
        self.stdout_base.store(recorded, Ordering::SeqCst);
        self.queue
            .update(self.job.id, |job| {
                job.container_id = Some(container_id.to_string());
                job.stdout_base = recorded;
            })
            .map(drop)
            .map_err(|error| chain(&error))
    }

    fn event(&self, event_type: EventType, source: EventSource, message: &str) {
        self.writer.event(event_type, source, message);
    }

    fn has_room(&self, patience: Duration) -> bool {
        self.writer.has_room(patience)
    }

    fn flush(&self) {
        self.writer.flush();
    }

    fn close_log(&self, container_id: &str, events: Vec<(EventType, EventSource, String)>) {
        self.writer.close_log(container_id, events);
    }

    fn recorded(&self, container_id: &str) -> Recorded {
        let job_lines = self.recorded_stdout_events();
        let closed = blocking(|| self.queue.store.log_closed(self.job.id, container_id))
            .unwrap_or_else(|error| {
                tracing::error!(job_id = self.job.id, %error, "cannot read whether a log is closed");
                false
            });
        Recorded {
            lines: job_lines.saturating_sub(self.stdout_base.load(Ordering::SeqCst) as usize),
            job_lines,
            closed,
        }
    }
}

impl JobObserver<'_> {
    fn recorded_stdout_events(&self) -> usize {
        blocking(|| {
            self.queue
                .store
                .count_events(self.job.id, EventSource::Stdout)
        })
        .unwrap_or_else(|error| {
            tracing::error!(job_id = self.job.id, error = %chain(&error), "cannot count recorded log lines");
            0
        })
    }
}
