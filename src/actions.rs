//! Synchronous actions (`POST /actions`): a registered component's image run at once with
//! `action` in its `config.json`, its stdout (one JSON document) the answer. No job, no input or
//! output mapping, no processors, no state; `#` values decrypted as for a job and hidden in every
//! error and log line; at most `max_concurrent_actions` at once, outside the job slots.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::error::chain;
use crate::runner::action::{ActionOutput, ActionRun, ActionRunError, MAX_ACTION_STDOUT};
use crate::runner::container::ContainerSpec;
use crate::runner::outcome::{self, ErrorKind, Exit, ExitContext};
use crate::runner::size::{container_size, Size};
use crate::runner::{workspace, Runner};
use crate::secrets::{self, Redactor, Scope, Secrets, SecretsError};
use crate::settings::{Component, Settings};

/// One `POST /actions` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    pub component_id: String,
    pub action: String,
    /// The whole configuration (`parameters`, `storage`, `authorization`, ...): never loaded
    /// from a stored configuration.
    pub config_data: Value,
    /// `None`, empty or `default`: the default branch.
    pub branch_id: Option<String>,
    /// The image tag; `None`: the component's.
    pub tag: Option<String>,
}

/// Why an action gave no answer. Each message is what the caller sees (application errors
/// excepted: their cause goes to the log under an exceptionId).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("Component \"{0}\" not found; give the componentId of one of the [[components]] in the settings.")]
    ComponentNotFound(String),
    #[error("Action \"{action}\" not defined for component \"{component}\".")]
    NotDefined { component: String, action: String },
    #[error(
        "Action \"run\" is not a synchronous action; run the component as a job (POST /jobs)."
    )]
    Run,
    #[error("{limit} synchronous actions are running already (`max_concurrent_actions`); try again in a moment.")]
    Busy { limit: usize },
    #[error("jobq is stopping; try the action again once it is back.")]
    Stopping,
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("No response from component.")]
    NoResponse,
    #[error("Decoding JSON response from component failed: {0}")]
    InvalidJson(String),
    #[error("The component's response is larger than {MAX_ACTION_STDOUT} bytes.")]
    TooLarge,
    /// Exit 1, the time limit, out of memory: the component's (or jobq's) message.
    #[error("{0}")]
    User(String),
    /// Another exit: `cause` (with the component's stderr) is logged, never answered.
    #[error("{cause}")]
    Application { cause: String },
    #[error(transparent)]
    Image(ActionRunError),
    #[error(
        "cannot prepare the folder of the action in data_dir; check its free space and permissions"
    )]
    Folder(#[source] std::io::Error),
}

/// The actions of one daemon: their limit, and the stop that ends the running ones.
pub struct Actions {
    settings: Arc<Settings>,
    secrets: Arc<Secrets>,
    runner: Arc<Runner>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Actions {
    /// `stop`: when cancelled, running actions are stopped (and their containers removed) and
    /// new ones refused.
    pub fn new(
        settings: Arc<Settings>,
        secrets: Arc<Secrets>,
        runner: Arc<Runner>,
        stop: CancellationToken,
    ) -> Arc<Actions> {
        Arc::new(Actions {
            permits: Arc::new(Semaphore::new(settings.max_concurrent_actions)),
            settings,
            secrets,
            runner,
            stop,
        })
    }

    /// The synchronous actions of `component_id` (`GET /actions`).
    pub fn list(&self, component_id: &str) -> Result<Vec<String>, ActionError> {
        Ok(self.component(component_id)?.synchronous_actions.clone())
    }

    /// Runs `request`'s action; its answer is the component's stdout, one JSON document, as the
    /// component printed it (`{}` stays `{}`, `[]` stays `[]`). The action runs on a task of its
    /// own: a caller that goes away does not leave its container behind.
    pub async fn run(self: &Arc<Self>, request: ActionRequest) -> Result<Vec<u8>, ActionError> {
        let component = self.component(&request.component_id)?.clone();
        if request.action == "run" {
            return Err(ActionError::Run);
        }
        if !component.synchronous_actions.contains(&request.action) {
            return Err(ActionError::NotDefined {
                component: component.id,
                action: request.action,
            });
        }
        if self.stop.is_cancelled() {
            return Err(ActionError::Stopping);
        }
        let permit =
            Arc::clone(&self.permits)
                .try_acquire_owned()
                .map_err(|_| ActionError::Busy {
                    limit: self.settings.max_concurrent_actions,
                })?;
        let actions = Arc::clone(self);
        let task = tokio::spawn(async move {
            let answer = actions.run_component(&component, request).await;
            drop(permit);
            answer
        });
        task.await.unwrap_or_else(|error| {
            Err(ActionError::Application {
                cause: format!("the action's task failed: {error}"),
            })
        })
    }

    /// Stops the running actions and waits until each has removed its container and folder.
    pub async fn stop_all(&self) {
        self.stop.cancel();
        let limit = self.settings.max_concurrent_actions as u32;
        let _all = self.permits.acquire_many(limit).await;
    }

    /// Removes what actions of a previous process left (containers, folders): at start-up.
    pub async fn remove_leftovers(&self) {
        let folder = self.settings.data_dir.join(ACTIONS_DIR);
        if let Err(error) = blocking(|| remove_folder(&folder)) {
            tracing::warn!(%error, path = %folder.display(), "cannot remove the folders of earlier actions");
        }
        match self.runner.remove_action_containers().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the containers of earlier actions"),
            Err(error) => {
                tracing::debug!(error = %chain(&error), "cannot look for containers of earlier actions")
            }
        }
    }

    fn component(&self, id: &str) -> Result<&Component, ActionError> {
        self.settings
            .component(id)
            .ok_or_else(|| ActionError::ComponentNotFound(id.to_string()))
    }

    /// Decrypts the configuration, prepares the action's folder, runs the container and turns
    /// its end into the answer; the folder (with the decrypted secrets) goes in any case.
    async fn run_component(
        &self,
        component: &Component,
        request: ActionRequest,
    ) -> Result<Vec<u8>, ActionError> {
        let settings = &self.settings;
        let mut configuration = request.config_data;
        let reader = Scope::for_job(&component.id, &settings.project.id, None);
        let mut found = Vec::new();
        self.secrets
            .decrypt_json(&mut configuration, &reader, &mut found)?;
        let redactor = Redactor::new(&found);
        let _logs_hide_secrets = secrets::register(&found);
        let id = format!("{:016x}", rand::random::<u64>());
        let folder = settings.data_dir.join(ACTIONS_DIR).join(&id);
        let image = component.image_reference(request.tag.as_deref().unwrap_or(&component.tag));
        // An action runs in a container of the default type, as on the platform.
        let size = container_size(settings, component, &json!({}))
            .map_err(|error| ActionError::User(error.to_string()))?;
        let branch_id = match request.branch_id.as_deref() {
            None | Some("") | Some("default") => settings.project.default_branch_id.clone(),
            Some(branch) => branch.to_string(),
        };
        let prepared = blocking(|| {
            let workspace = workspace::prepare(&folder, &json!({}))?;
            let config = workspace::component_config(
                &configuration,
                &settings.project.id,
                component,
                &request.action,
            );
            workspace::write_config(&workspace, &config)?;
            let identity = self.runner.identity(settings)?;
            workspace::hand_over(&folder, identity.owner)?;
            let context = workspace::RunContext {
                run_id: id.clone(),
                project_id: &settings.project.id,
                config_id: workspace::parameters_hash(&configuration),
                config_version: String::new(),
                component_id: &component.id,
                branch_id: &branch_id,
                run_mode: "run",
                row_id: None,
            };
            let env = workspace::kbc_environment(&context, settings);
            Ok(ContainerSpec::new(
                &image,
                component,
                size,
                &identity.user,
                env,
                settings,
            ))
        });
        let ran = match prepared {
            Ok(spec) => {
                let run = ActionRun {
                    id: &id,
                    spec: &spec,
                    folder: &folder,
                    time_limit: settings.action_time_limit,
                    grace: settings.kill_grace,
                };
                self.runner
                    .run_action(&run, &self.stop)
                    .await
                    .map_err(ActionError::Image)
            }
            Err(error) => Err(ActionError::Folder(error)),
        };
        if let Err(error) = blocking(|| remove_folder(&folder)) {
            tracing::error!(%error, path = %folder.display(), "cannot remove the folder of an action; it holds its decrypted secrets");
        }
        let output = ran?;
        answer(output, &image, component, size, settings, &redactor)
    }
}

/// Where actions' folders live under `data_dir` (each removed when its action ends).
const ACTIONS_DIR: &str = "actions";

fn remove_folder(folder: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(folder) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The answer to an action that ran: its stdout when it exited 0 with one JSON document, else
/// the error its end means (classified as a job's container would be: docs/runner.md).
fn answer(
    output: ActionOutput,
    image: &str,
    component: &Component,
    size: Size,
    settings: &Settings,
    redactor: &Redactor,
) -> Result<Vec<u8>, ActionError> {
    if output.exit == Exit::Terminated {
        return Err(ActionError::Stopping);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let memory_limit = crate::runner::format_memory(size.memory_bytes);
    let verdict = outcome::classify(
        output.exit,
        &ExitContext {
            image,
            memory_limit: &memory_limit,
            timeout_seconds: settings.action_time_limit.as_secs(),
            pids_limit: component.confinement.pids_limit,
            stdout: &stdout,
            stderr: &output.stderr,
        },
    );
    match verdict.error {
        Some(ErrorKind::User) => return Err(ActionError::User(redactor.redact(&verdict.message))),
        Some(ErrorKind::Application) => {
            return Err(ActionError::Application {
                cause: redactor.redact(&format!(
                    "the action's container of image {image} ended with {:?}; stderr: {}",
                    output.exit,
                    output.stderr.trim()
                )),
            })
        }
        None => {}
    }
    if output.stdout_cut {
        return Err(ActionError::TooLarge);
    }
    let text = stdout.trim();
    if text.is_empty() {
        return Err(ActionError::NoResponse);
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|error| ActionError::InvalidJson(error.to_string()))?;
    Ok(text.as_bytes().to_vec())
}
