//! A synchronous action's container: created with the same hardening as a job's, its output read
//! whole, killed at the time limit (counted from its start), and always removed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::container::ContainerSpec;
use super::outcome::Exit;
use super::{is_not_found, Runner, RunnerError, Waited, LABEL_ACTION, LABEL_INSTANCE};

/// One action's container to run.
pub struct ActionRun<'a> {
    /// The action's own id: names and labels its container.
    pub id: &'a str,
    pub spec: &'a ContainerSpec,
    /// Holds `data/` (mounted at `/data`) and `tmp/` (at `/tmp`).
    pub folder: &'a Path,
    pub time_limit: Duration,
    /// Time between SIGTERM and SIGKILL when the daemon stops during the action.
    pub grace: Duration,
}

/// How the action's container ended and what it printed (stdout up to `MAX_ACTION_STDOUT`
/// bytes, stderr up to `MAX_ACTION_STDERR`).
#[derive(Debug)]
pub struct ActionOutput {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    /// Stdout went past `MAX_ACTION_STDOUT`; what is kept is cut there.
    pub stdout_cut: bool,
    pub stderr: String,
}

/// The largest answer an action may print.
pub const MAX_ACTION_STDOUT: usize = 16 << 20;
/// The head of stderr kept for the error message and the log.
const MAX_ACTION_STDERR: usize = 64 << 10;

/// Why an action's container could not run.
#[derive(Debug, thiserror::Error)]
pub enum ActionRunError {
    #[error(
        "Image \"{image}\" is not present in the local Docker engine; build or load it first."
    )]
    MissingImage { image: String },
    #[error(transparent)]
    Engine(#[from] RunnerError),
}

impl Runner {
    /// Runs `run`'s container to its end (or its time limit, or `cancel`) and removes it,
    /// whatever happened.
    pub async fn run_action(
        &self,
        run: &ActionRun<'_>,
        cancel: &CancellationToken,
    ) -> Result<ActionOutput, ActionRunError> {
        let docker = self.docker().await?;
        match docker.inspect_image(&run.spec.image).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {
                return Err(ActionRunError::MissingImage {
                    image: run.spec.image.clone(),
                })
            }
            Err(error) => return Err(self.unreachable(error).into()),
        }
        self.ensure_network(&docker, &run.spec.network).await?;
        let body = self.container_body(run.spec, run.folder, &[(LABEL_ACTION, run.id.to_string())]);
        let name = format!("jobq-{}-action-{}", self.instance_id, run.id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let container_id = docker
            .create_container(Some(options), body)
            .await
            .map_err(RunnerError::Engine)?
            .id;
        let ran = self.run_created_action(&container_id, run, cancel).await;
        self.remove(&docker, &container_id).await;
        ran
    }

    async fn run_created_action(
        &self,
        container_id: &str,
        run: &ActionRun<'_>,
        cancel: &CancellationToken,
    ) -> Result<ActionOutput, ActionRunError> {
        let docker = self.docker().await?;
        let options = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let mut attached = docker
            .attach_container(container_id, Some(options))
            .await
            .map_err(RunnerError::Engine)?
            .output;
        docker
            .start_container(container_id, None)
            .await
            .map_err(RunnerError::Engine)?;
        let deadline = tokio::time::Instant::now() + run.time_limit;
        let mut output = ActionOutput {
            exit: Exit::Lost,
            stdout: Vec::new(),
            stdout_cut: false,
            stderr: String::new(),
        };
        let read = async {
            while let Some(Ok(chunk)) = attached.next().await {
                match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        let room = MAX_ACTION_STDOUT.saturating_sub(output.stdout.len());
                        output.stdout_cut |= message.len() > room;
                        output
                            .stdout
                            .extend_from_slice(&message[..message.len().min(room)]);
                    }
                    LogOutput::StdErr { message } => {
                        let room = MAX_ACTION_STDERR.saturating_sub(output.stderr.len());
                        let text = String::from_utf8_lossy(&message[..message.len().min(room)]);
                        output.stderr.push_str(&text);
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
        };
        let (waited, ()) = tokio::join!(
            self.wait(
                &docker,
                container_id,
                deadline,
                run.grace,
                run.spec.confinement.pids_limit,
                cancel
            ),
            read
        );
        output.exit = match waited {
            Waited::Ended(exit) => exit,
            Waited::EngineLost(error) => return Err(self.unreachable(error).into()),
        };
        Ok(output)
    }

    /// Removes the action containers of this store that a previous process left (it stopped
    /// before it could); run at start-up, when no action runs.
    pub async fn remove_action_containers(&self) -> Result<usize, RunnerError> {
        let docker = self.docker().await?;
        let instance = format!("{LABEL_INSTANCE}={}", self.instance_id);
        let filters = HashMap::from([("label".to_string(), vec![instance, LABEL_ACTION.into()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker.list_containers(Some(options)).await?;
        let mut removed = 0;
        for id in containers.into_iter().filter_map(|container| container.id) {
            self.remove(&docker, &id).await;
            removed += 1;
        }
        Ok(removed)
    }
}
