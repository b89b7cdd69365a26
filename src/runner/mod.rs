//! Runs a job's component image through the Docker engine (the only module that knows bollard).

pub mod image;
pub mod outcome;
pub mod output;
pub mod workspace;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::job::{EventType, Job, Status};
use crate::settings::{Component, Settings};
use outcome::{Exit, ExitContext, Verdict};
use output::{HeadTail, LineSplitter};

/// Labels every jobq container carries, so that leftovers can be found.
/// The instance label tells the containers of different jobq stores on one engine apart.
pub const LABEL_INSTANCE: &str = "jobq.instance";
pub const LABEL_JOB_ID: &str = "jobq.job-id";
pub const LABEL_RUN_ID: &str = "jobq.run-id";
pub const LABEL_ROW_ID: &str = "jobq.row-id";

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot connect to the Docker engine at {host}: {source}; start dockerd or set `docker_host`")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error(
        "the Docker engine at {host} is unreachable: {source}; start dockerd or fix `docker_host`"
    )]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("the Docker engine refused a request: {0}")]
    Engine(#[from] bollard::errors::Error),
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// Receives what happens during a run; the queue persists it.
pub trait RunObserver: Send + Sync {
    /// Called after the container is created and before it starts. An error aborts the run.
    fn container_created(&self, container_id: &str) -> Result<(), String>;
    /// An event for the job's log.
    fn event(&self, event_type: EventType, message: &str);
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The container ran: its verdict, the job's `result` and `usageData`.
    Finished {
        verdict: Verdict,
        result: Value,
        usage_data: Option<Value>,
    },
    /// The platform failed before the container started; the job goes back to `created`.
    Requeue { reason: String },
}

/// A connection to the Docker engine, negotiated on first use.
pub struct Runner {
    host: String,
    instance_id: String,
    client: Docker,
    negotiated: Mutex<Option<Docker>>,
}

impl Runner {
    /// Prepares a client for `docker_host` (else `DOCKER_HOST`, else the local socket); connects
    /// lazily. `instance_id` names and labels this store's containers.
    pub fn new(docker_host: Option<&str>, instance_id: &str) -> Result<Runner, RunnerError> {
        let host = docker_host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let client = Docker::connect_with_host(&host).map_err(|source| RunnerError::Connect {
            host: host.clone(),
            source,
        })?;
        Ok(Runner {
            host,
            instance_id: instance_id.to_string(),
            client,
            negotiated: Mutex::new(None),
        })
    }

    /// The engine's client, after negotiating the API version (the engine here speaks 1.41).
    pub async fn docker(&self) -> Result<Docker, RunnerError> {
        if let Some(docker) = self.lock().clone() {
            return Ok(docker);
        }
        let docker = self
            .client
            .clone()
            .negotiate_version()
            .await
            .map_err(|source| self.unreachable(source))?;
        *self.lock() = Some(docker.clone());
        Ok(docker)
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> Result<(), RunnerError> {
        let docker = self.docker().await?;
        docker
            .ping()
            .await
            .map_err(|source| self.unreachable(source))?;
        Ok(())
    }

    /// Runs `job` with `component`'s image to the end; `cancel` requests termination.
    pub async fn run(
        &self,
        job: &Job,
        component: &Component,
        settings: &Settings,
        observer: &dyn RunObserver,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let image = component.image_reference(&job.tag);
        let docker = match self.docker().await {
            Ok(docker) => docker,
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: error.to_string(),
                }
            }
        };
        let images = match docker.inspect_image(&image).await {
            Ok(inspect) => json!([[{
                "id": image,
                "digests": inspect
                    .repo_digests
                    .filter(|digests| !digests.is_empty())
                    .unwrap_or_else(|| inspect.id.into_iter().collect()),
            }]]),
            Err(error) if is_not_found(&error) => {
                return user_error(
                    format!(
                        "Image \"{image}\" of component \"{}\" is not present in the local Docker engine; build or load it first.",
                        component.id
                    ),
                );
            }
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: self.unreachable(error).to_string(),
                }
            }
        };

        let prepared = tokio::task::block_in_place(|| {
            let (user, owner) = workspace::container_identity(settings)?;
            let config = workspace::config_json(job, component);
            let folders = workspace::prepare(&settings.job_dir(job.id), &config, owner)?;
            Ok::<_, std::io::Error>((user, folders))
        });
        let (user, folders) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: format!(
                        "cannot prepare the job folder in {}: {error}",
                        settings.data_dir.display()
                    ),
                }
            }
        };

        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(workspace::environment(job, component, settings)),
            user: Some(user),
            labels: Some(HashMap::from([
                (LABEL_INSTANCE.to_string(), self.instance_id.clone()),
                (LABEL_JOB_ID.to_string(), job.id.to_string()),
                (LABEL_RUN_ID.to_string(), job.run_id.clone()),
                (LABEL_ROW_ID.to_string(), String::new()),
            ])),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:/data", absolute(&folders.data)),
                    format!("{}:/tmp", absolute(&folders.tmp)),
                ]),
                memory: Some(component.memory_bytes),
                memory_swap: Some(component.memory_bytes),
                network_mode: Some(component.network.docker_mode().to_string()),
                // An init process as PID 1 forwards SIGTERM, so components without a handler stop
                // at a kill instead of waiting out the grace period.
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = self.container_name(job);
        // A container of the same name is a leftover of an attempt that never started.
        let _ = docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await;
        let container_id = match created {
            Ok(created) => created.id,
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: format!("cannot create the container: {error}"),
                }
            }
        };
        if let Err(reason) = observer.container_created(&container_id) {
            self.remove(&docker, &container_id).await;
            return RunOutcome::Requeue { reason };
        }
        if let Err(error) = docker.start_container(&container_id, None).await {
            self.remove(&docker, &container_id).await;
            return user_error(format!(
                "Cannot start the container of image \"{image}\": {error}"
            ));
        }

        let (exit, (stdout, stderr)) = tokio::join!(
            self.wait(
                &docker,
                &container_id,
                component.process_timeout,
                settings.kill_grace,
                &cancel
            ),
            collect_logs(&docker, &container_id, observer),
        );
        self.remove(&docker, &container_id).await;

        let memory_limit = format_memory(component.memory_bytes);
        let verdict = outcome::classify(
            exit,
            &ExitContext {
                image: &image,
                memory_limit: &memory_limit,
                timeout_seconds: component.process_timeout.as_secs(),
                stdout: &stdout.text(),
                stderr: &stderr.text(),
            },
        );
        let exception_id = outcome::new_exception_id();
        if verdict.status == Status::Success {
            let stderr = stderr.text();
            if !stderr.trim().is_empty() {
                observer.event(EventType::Error, &output::event_text(stderr.trim_end()));
            }
        }
        if verdict.error == Some(outcome::ErrorKind::Application) {
            tracing::error!(
                job_id = job.id,
                exception_id = %exception_id,
                ?exit,
                stderr = %stderr.text(),
                "component failed with an application error"
            );
            observer.event(EventType::Error, outcome::APPLICATION_ERROR_MESSAGE);
        }
        let usage_data = tokio::task::block_in_place(|| workspace::usage_data(&folders));
        RunOutcome::Finished {
            result: outcome::result_json(&verdict, images, &exception_id),
            verdict,
            usage_data,
        }
    }

    /// Waits for the container to end, enforcing the timeout and honouring `cancel`.
    async fn wait(
        &self,
        docker: &Docker,
        container_id: &str,
        timeout: Duration,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Exit {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waited = docker.wait_container(container_id, Some(options));
        // A non-zero exit arrives as an error item; the exit code is read from inspect below.
        let ended = async { while waited.next().await.is_some() {} };
        tokio::pin!(ended);
        let forced = tokio::select! {
            () = &mut ended => None,
            () = tokio::time::sleep(timeout) => {
                let kill = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
                let _ = docker.kill_container(container_id, Some(kill)).await;
                Some(Exit::TimedOut)
            }
            () = cancel.cancelled() => {
                let stop = StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
                let _ = docker.stop_container(container_id, Some(stop)).await;
                Some(Exit::Terminated)
            }
        };
        if forced.is_some() {
            ended.await;
        }
        let state = docker
            .inspect_container(container_id, None)
            .await
            .ok()
            .and_then(|inspect| inspect.state);
        let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
        let code = state.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
        match forced {
            Some(exit) => exit,
            None if oom => Exit::OutOfMemory,
            None => Exit::Code(code),
        }
    }

    /// Removes a container, whatever its state; a failure is logged, not fatal.
    pub async fn remove_container(&self, container_id: &str) {
        match self.docker().await {
            Ok(docker) => self.remove(&docker, container_id).await,
            Err(error) => tracing::warn!(container_id, %error, "cannot remove a container"),
        }
    }

    async fn remove(&self, docker: &Docker, container_id: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(error) = docker.remove_container(container_id, Some(options)).await {
            tracing::warn!(container_id, %error, "cannot remove a finished container");
        }
    }

    /// Builds the fixture component's image as `reference` unless it is already current.
    pub async fn ensure_fixture_image(&self, reference: &str) -> Result<(), RunnerError> {
        let docker = self.docker().await?;
        Ok(image::ensure_fixture_image(&docker, reference).await?)
    }

    /// Every container of this store (by its instance label), as (container id, job id).
    pub async fn labelled_containers(&self) -> Result<Vec<(String, String)>, RunnerError> {
        let docker = self.docker().await?;
        let instance = format!("{LABEL_INSTANCE}={}", self.instance_id);
        let filters = HashMap::from([("label".to_string(), vec![instance])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let job_id = container.labels?.get(LABEL_JOB_ID)?.clone();
                Some((container.id?, job_id))
            })
            .collect())
    }

    /// `jobq-<instance>-<run id>`: unique per job and store, readable in `docker ps`.
    pub fn container_name(&self, job: &Job) -> String {
        format!("jobq-{}-{}", self.instance_id, job.run_id)
    }

    fn unreachable(&self, source: bollard::errors::Error) -> RunnerError {
        RunnerError::Unreachable {
            host: self.host.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Docker>> {
        self.negotiated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Streams the container's output until it ends: stdout lines become `info` events as they come;
/// both streams are kept (head and tail) for the error message.
async fn collect_logs(
    docker: &Docker,
    container_id: &str,
    observer: &dyn RunObserver,
) -> (HeadTail, HeadTail) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(container_id, Some(options));
    let mut lines = LineSplitter::default();
    let (mut stdout, mut stderr) = (HeadTail::default(), HeadTail::default());
    let emit = |line: String| {
        if !line.trim().is_empty() {
            observer.event(EventType::Info, &output::event_text(&line));
        }
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                stdout.push(&message);
                lines.push(&message).into_iter().for_each(emit);
            }
            Ok(LogOutput::StdErr { message }) => stderr.push(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                tracing::warn!(container_id, %error, "the container's log stream broke off");
                break;
            }
        }
    }
    lines.finish().into_iter().for_each(emit);
    (stdout, stderr)
}

/// `256m`-style text of a byte count, as the settings wrote it.
fn format_memory(bytes: i64) -> String {
    match bytes {
        b if b % 1_000_000_000 == 0 => format!("{}g", b / 1_000_000_000),
        b if b % 1_000_000 == 0 => format!("{}m", b / 1_000_000),
        b if b % 1_000 == 0 => format!("{}k", b / 1_000),
        b => b.to_string(),
    }
}

fn user_error(message: String) -> RunOutcome {
    let verdict = Verdict {
        status: Status::Error,
        message,
        error: Some(outcome::ErrorKind::User),
    };
    RunOutcome::Finished {
        result: outcome::result_json(&verdict, json!([]), &outcome::new_exception_id()),
        verdict,
        usage_data: None,
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
