//! Creating jobs: validation, resolution of tag, parallelism and backend, job trees.

use super::flows::Overrides;
use super::{NewJob, Queue, QueueError};
use crate::blocking::blocking;
use crate::model::Configuration;
use crate::model::{
    now_micros, parse_time, Behavior, DesiredStatus, Job, JobResult, JobType, Mode, OnError,
    Parallelism, RunId, Status, FLOW, ORCHESTRATOR,
};
use crate::plan;
use crate::runner::size::{container_size, container_type};
use crate::secrets::Scope;
use crate::settings::{ad_hoc_image, Token};

/// The `tag` of an orchestration job: jobq runs it itself, from no image.
const ORCHESTRATOR_TAG: &str = "latest";
use serde_json::{json, Value};

impl Queue {
    /// Validates and stores a new job in `created`, then wakes the scheduler. The job (with its
    /// tree) is committed durably, in a transaction shared with the creations of the moment
    /// (`store::Creations`), before this returns.
    pub async fn create(&self, request: NewJob, token: &Token) -> Result<Job, QueueError> {
        let (count, make) = blocking(|| self.new_jobs(request, &token.id, &token.description, 1))?;
        let mut jobs = self.creations.create_jobs(count, make).await?;
        if jobs.is_empty() {
            return Err(QueueError::Store(crate::store::StoreError::Creation {
                detail: "no job was made".to_string(),
            }));
        }
        let job = jobs.swap_remove(0);
        tracing::info!(job_id = job.id, component = %job.component, "job created");
        self.changed();
        Ok(job)
    }

    /// Validates and resolves a create request of the token `token_id` into the number of jobs
    /// it creates (its tree) and the function that makes them from their ids, the first being
    /// the job to answer. `depth` counts the orchestrations the job runs in, itself included
    /// when it is one.
    #[allow(clippy::type_complexity)] // an `impl Fn` return type cannot be named by an alias
    pub(super) fn new_jobs(
        &self,
        request: NewJob,
        token_id: &str,
        token_description: &str,
        depth: usize,
    ) -> Result<(usize, impl Fn(&[u64]) -> Vec<Job> + Send + 'static), QueueError> {
        let invalid = |field: &'static str, message: String| QueueError::Invalid { field, message };
        if request.component.is_empty() {
            return Err(invalid(
                "component",
                "The \"component\" field is required.".into(),
            ));
        }
        let orchestrator = request.component == ORCHESTRATOR;
        let flow = request.component == FLOW;
        // jobq runs orchestrations and flows itself: no image, so no tag of the settings.
        let component_tag = match self
            .settings
            .job_component(&request.component, &request.config_data)
        {
            Some(component) => component.tag.clone(),
            None if orchestrator || flow => ORCHESTRATOR_TAG.to_string(),
            None if ad_hoc_image(&request.config_data).is_some() => {
                return Err(invalid(
                    "configData",
                    format!(
                        "Component \"{}\" is not registered, and unregistered images \
                         (configData.runtime.image) run only when the settings say \
                         `dev_mode = true`.",
                        request.component
                    ),
                ))
            }
            None => {
                return Err(invalid(
                    "component",
                    format!(
                        "Component \"{}\" is not registered in jobq's settings.",
                        request.component
                    ),
                ))
            }
        };
        if request.variable_values_id.is_some() && request.variable_values_data.is_some() {
            return Err(invalid(
                "variableValuesId",
                "Provide either \"variableValuesId\" or \"variableValuesData\", but not both."
                    .into(),
            ));
        }
        let on_error = match request.behavior.as_ref().and_then(|b| b.get("onError")) {
            None | Some(Value::Null) => None,
            Some(given) => Some(given.as_str().and_then(OnError::parse).ok_or_else(|| {
                invalid(
                    "behavior",
                    format!(
                        "Field \"behavior.onError\" must be stop, warning or fail; {given} given."
                    ),
                )
            })?),
        };
        let behavior = Behavior { on_error };
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
        let (branch_id, stored) = self.stored_configuration_of_request(&request)?;
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
            plan::check_processors(stored)
                .map_err(|error| invalid("configData", error.to_string()))?;
            let (selected, _) = plan::select_rows(stored, &request.config_row_ids)
                .map_err(|error| invalid("configRowIds", error.to_string()))?;
            rows = selected.into_iter().map(|row| row.id.clone()).collect();
        }
        // Resolution order of docs/queue.md (Creating a job): the job, then configData, then the stored configuration.
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
            .unwrap_or(component_tag);
        let parallelism = request
            .parallelism
            .clone()
            .or_else(|| runtime_of(&request.config_data, "parallelism"))
            .or_else(|| stored_configuration.and_then(|c| runtime_of(c, "parallelism")))
            .map(|text| text.parse::<Parallelism>())
            .transpose()
            .map_err(|error| invalid("parallelism", error.to_string()))?;
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
        // The container type must be known, and fit this host's limits with the component's memory.
        let sized = match self
            .settings
            .job_component(&request.component, &request.config_data)
        {
            Some(component) => container_size(&self.settings, &component, &backend).map(drop),
            None => container_type(&self.settings, &backend).map(drop),
        };
        sized.map_err(|error| invalid("backend", error.to_string()))?;
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
                Some(RunId::from(parent.clone()))
            }
            _ => None,
        };
        let only = request
            .only_orchestration_task_ids
            .clone()
            .unwrap_or_default();
        if !orchestrator && (request.previous_job_id.is_some() || !only.is_empty()) {
            return Err(invalid(
                "onlyOrchestrationTaskIds",
                format!("Fields \"onlyOrchestrationTaskIds\" and \"previousJobId\" rerun tasks of {ORCHESTRATOR} jobs only; leave them out.")
            ));
        }
        if request
            .only_orchestration_task_ids
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return Err(invalid(
                "onlyOrchestrationTaskIds",
                "Field \"onlyOrchestrationTaskIds\" must list at least one task id.".into(),
            ));
        }
        if let Some(previous) = &request.previous_job_id {
            let known = previous
                .parse()
                .ok()
                .map(|id| self.store.job(id))
                .transpose()?;
            if known.flatten().is_none() {
                return Err(invalid(
                    "previousJobId",
                    format!("Job \"{previous}\" of \"previousJobId\" does not exist; give the id of an earlier orchestration job."),
                ));
            }
        }
        let root_type = if orchestrator || flow {
            let definition = stored
                .as_ref()
                .map_or(&request.config_data, |s| &s.configuration);
            let overrides = Overrides {
                branch_id: branch_id.clone(),
                parallelism,
                backend: backend.clone(),
            };
            if flow {
                self.check_flow(definition, &overrides, depth)?;
            } else {
                self.check_orchestration(definition, &overrides, depth, &only)?;
            }
            JobType::OrchestrationContainer
        } else {
            JobType::Standard
        };
        // Parallelism over two or more rows: a container job with one child per row.
        let parallel = parallelism.is_some_and(|p| p != Parallelism::Limit(0)) && rows.len() >= 2;
        // Secrets are stored (and answered) only as ciphertexts.
        let mut config_data = request.config_data.clone();
        let scope = Scope::Project {
            component: request.component.clone(),
            project: self.settings.project.id.clone(),
        };
        self.secrets.encrypt_json(&mut config_data, &scope);
        let settings = &self.settings;
        // Every job of the tree is this one with its own id, run ids, type, rows and parallelism.
        let template = Job {
            id: 0,
            run_id: RunId::root(0),
            parent_run_id: None,
            project_id: settings.project.id.clone(),
            project_name: settings.project.name.clone(),
            token_id: token_id.to_string(),
            token_description: token_description.to_string(),
            status: Status::Created,
            desired_status: DesiredStatus::Processing,
            mode,
            component: request.component.clone(),
            config: request.config.clone(),
            config_data,
            config_row_ids: Vec::new(),
            tag,
            branch_id,
            created_time: now,
            start_time: None,
            end_time: None,
            result: JobResult::default(),
            usage_data: json!({}),
            variable_values_id: request.variable_values_id.clone(),
            variable_values_data: request
                .variable_values_data
                .clone()
                .unwrap_or_else(|| json!({"values": []})),
            backend,
            metrics: json!({}),
            behavior,
            parallelism: None,
            job_type: JobType::Standard,
            container_id: None,
            outcome: None,
            rows_done: 0,
            images_done: 0,
            stdout_base: 0,
            delayed_start_time,
            revision: 0,
            orchestration_job_id: None,
            orchestration_task_id: None,
            orchestration_phase_id: None,
            previous_job_id: request.previous_job_id.clone(),
            only_orchestration_task_ids: only,
        };
        let make = move |id: u64,
                         parent_run_id: Option<&RunId>,
                         job_type: JobType,
                         row_ids: Vec<String>,
                         parallelism: Option<Parallelism>| Job {
            id,
            run_id: parent_run_id.map_or_else(|| RunId::root(id), |parent| parent.child(id)),
            parent_run_id: parent_run_id.cloned(),
            config_row_ids: row_ids,
            parallelism,
            job_type,
            ..template.clone()
        };
        let row_ids = request.config_row_ids;
        let count = if parallel { rows.len() + 1 } else { 1 };
        let make_tree = move |ids: &[u64]| -> Vec<Job> {
            if !parallel {
                return vec![make(
                    ids[0],
                    parent_run_id.as_ref(),
                    root_type,
                    row_ids.clone(),
                    parallelism,
                )];
            }
            let container = make(
                ids[0],
                parent_run_id.as_ref(),
                JobType::Container,
                row_ids.clone(),
                parallelism,
            );
            let children = ids[1..].iter().zip(&rows).map(|(&id, row)| {
                make(
                    id,
                    Some(&container.run_id),
                    JobType::Standard,
                    vec![row.clone()],
                    None,
                )
            });
            let children: Vec<Job> = children.collect();
            std::iter::once(container).chain(children).collect()
        };
        Ok((count, make_tree))
    }

    /// The stored configuration `job` runs, as it is now, when it runs one.
    pub(super) fn stored_configuration_of(
        &self,
        job: &Job,
    ) -> Result<Option<Configuration>, QueueError> {
        self.stored_configuration(
            job.config.as_deref(),
            &job.config_data,
            &job.component,
            &job.branch_id,
        )
    }

    /// The branch a create request runs in, and the stored configuration it runs, if any.
    pub(super) fn stored_configuration_of_request(
        &self,
        request: &NewJob,
    ) -> Result<(String, Option<Configuration>), QueueError> {
        let branch = request
            .branch_id
            .clone()
            .unwrap_or_else(|| self.settings.project.default_branch_id.clone());
        let stored = self.stored_configuration(
            request.config.as_deref(),
            &request.config_data,
            &request.component,
            &branch,
        )?;
        Ok((branch, stored))
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
}
