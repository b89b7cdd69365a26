//! Runs a job's component image through the Docker engine (the only module that knows bollard).

pub mod action;
pub mod confine;
pub mod container;
pub mod executor;
pub mod image;
pub mod outcome;
pub mod output;
pub mod probe;
pub mod pull;
pub mod size;
pub mod swarm;
pub mod tls;
pub mod workspace;

use crate::blocking::blocking;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::error::chain;
use crate::failpoint;
use crate::model::{EventSource, EventType, Job, Status, UserError};
use crate::settings::{Component, ImageSource, Settings, SwarmTls};
use container::ContainerSpec;
pub use executor::Executor;
use outcome::{Exit, ExitContext, Verdict};
use output::{HeadTail, LineBound, LineSplitter};
use size::Size;
pub use workspace::Task;

/// Labels every jobq container carries, so that leftovers can be found.
/// The instance label tells the containers of different jobq stores on one engine apart.
pub const LABEL_INSTANCE: &str = "jobq.instance";
pub const LABEL_JOB_ID: &str = "jobq.job-id";
pub const LABEL_RUN_ID: &str = "jobq.run-id";
pub const LABEL_ROW_ID: &str = "jobq.row-id";
/// The image's place among its task's images (`0`, `1`, ...), as in the debug archive
/// `stage_<n>.zip` made before it.
pub const LABEL_STAGE: &str = "jobq.stage";
/// Labels a synchronous action's container (never a job's), with the action's own id.
pub const LABEL_ACTION: &str = "jobq.action";
/// Labels the networks jobq creates.
pub const LABEL_NETWORK: &str = "jobq.network";

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot connect to the Docker engine at {host}; start dockerd or set `docker_host`")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("the Docker engine at {host} is unreachable; start dockerd or fix `docker_host`")]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("the Docker engine refused a request")]
    Engine(#[from] bollard::errors::Error),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error("the swarm manager at {host} does not answer over TLS; check that its engine listens there with --tlsverify, that `swarm.ca_file` signed its certificate, and that it trusts the CA of `swarm.cert_file`")]
    ManagerTls {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("cannot use `{setting}` {} ({problem}); it must be a PEM file of {expected}", path.display())]
    TlsFile {
        setting: &'static str,
        path: std::path::PathBuf,
        expected: &'static str,
        problem: String,
    },
    #[error("cannot create the network \"{name}\" of no-internet components; check the engine's address pools (`docker network ls`)")]
    Network {
        name: String,
        source: bollard::errors::Error,
    },
}

/// Why an image a job needs is not in the engine.
#[derive(Debug)]
pub enum ImageFailure {
    /// The job cannot run as it is (a local image missing, a network jobq lacks): a user error.
    Job(UserError),
    /// The pull failed: an application error naming the image and the registry's answer.
    Pull(String),
    /// The registry could not be reached: the job fails (`Pull`) unless `wait_for_registry`
    /// keeps it `created`.
    Unreachable(String),
    /// The engine could not be asked: the job stays `created`.
    Engine(RunnerError),
}

/// Receives what happens during a run; the queue persists it.
pub trait RunObserver: Send + Sync {
    /// Called after the container is created and before it starts. An error aborts the run.
    fn container_created(&self, container_id: &str) -> Result<(), String>;
    /// An event for the job's log. Events are stored in batches, in the order of these calls;
    /// `flush` waits until they are.
    fn event(&self, event_type: EventType, source: EventSource, message: &str);
    /// Whether `event` has room now, not to wait soon for the events before it to be stored;
    /// when it has not, waits at most `patience` for room.
    fn has_room(&self, patience: Duration) -> bool;
    /// Waits until every event given so far is stored.
    fn flush(&self);
    /// Stores `events` after every event given so far, in one transaction that also closes
    /// the log of `container_id` (see `Recorded::closed`), and waits until they are stored.
    fn close_log(&self, container_id: &str, events: Vec<(EventType, EventSource, String)>);
    /// What the store holds of the job's output when `container_id`'s log is read (again).
    /// Events given but not flushed are not counted.
    fn recorded(&self, container_id: &str) -> Recorded;
}

/// What the store holds of a job's component output when a container's log is read, maybe
/// again after a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Stdout lines of this container stored already, the first ones of its log: a log read
    /// again skips them.
    pub lines: usize,
    /// Stdout events of the whole job (all its containers), counted against
    /// `max_events_per_job`.
    pub job_lines: usize,
    /// The container's log is closed: it was read to its end after it printed past
    /// `max_events_per_job`, and its warning and last lines are stored. Its events are final.
    pub closed: bool,
}

/// One container to run: for which job and task, with which component, under which settings,
/// reporting where.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub job: &'a Job,
    pub task: &'a Task,
    /// The image's place among the task's images (processors before, the component, after).
    pub image_index: usize,
    /// The image to run, `repository:tag` (a processor's tag is its own, not the job's).
    pub image: &'a str,
    pub component: &'a Component,
    /// The container's memory and CPUs (the job's container type).
    pub size: Size,
    /// When the container is killed: the configuration's `runtime.process_timeout` for the
    /// component, a processor's own.
    pub process_timeout: Duration,
    pub settings: &'a Settings,
    pub observer: &'a dyn RunObserver,
}

/// The job event saying that the engine went away while the job's container ran.
pub const ENGINE_LOST_MESSAGE: &str = "The Docker engine was unreachable for a while; lines the component printed meanwhile may be missing.";

/// How long to wait before asking an unreachable engine again.
const ENGINE_RETRY: Duration = Duration::from_secs(1);

/// How one wait for a container ended.
enum Waited {
    Ended(Exit),
    /// The engine went away; the container's fate is unknown until it is back.
    EngineLost(bollard::errors::Error),
}

enum ImageProblem {
    Missing,
    Engine(RunnerError),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The container ran (or could not, for a reason of the job's own).
    Finished(Finished),
    /// The platform failed before the container started; the job goes back to `created`.
    Requeue { reason: String },
}

/// What a finished container left: its verdict, its entry of `result.images`, the exception
/// id its error is logged under, `usageData`, and the container to remove once the result is
/// stored (kept until then, so a crash cannot lose the result).
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub verdict: Verdict,
    /// How its container ended; `None` when it had none (it failed before one started).
    pub exit: Option<Exit>,
    pub images: Value,
    pub exception_id: String,
    pub usage_data: Option<Value>,
    pub container_id: Option<String>,
}

/// A connection to the Docker engine, made and negotiated on first use.
pub struct Runner {
    host: String,
    /// The TLS files of a `tcp://` Swarm manager.
    tls: Option<SwarmTls>,
    instance_id: String,
    negotiated: Mutex<Option<Docker>>,
    /// Who containers run as; found on the first run.
    identity: std::sync::OnceLock<workspace::Identity>,
    pulls: pull::Pulls,
}

impl Runner {
    /// Prepares a client for `docker_host` (else `DOCKER_HOST`, else the local socket); connects
    /// lazily, so an engine that is down (its socket missing, too) only keeps jobs `created`.
    /// Fails only for a host jobq can never use. `instance_id` names and labels this store's
    /// containers.
    pub fn new(docker_host: Option<&str>, instance_id: &str) -> Result<Runner, RunnerError> {
        let host = docker_host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        Runner::connecting(host, None, instance_id)
    }

    /// A client of the engine of a Swarm manager at `host`, with mutual TLS when `tls` is
    /// given (its files checked by `tls::check`).
    pub fn manager(
        host: &str,
        tls: Option<&SwarmTls>,
        instance_id: &str,
    ) -> Result<Runner, RunnerError> {
        Runner::connecting(host.to_string(), tls.cloned(), instance_id)
    }

    fn connecting(
        host: String,
        tls: Option<SwarmTls>,
        instance_id: &str,
    ) -> Result<Runner, RunnerError> {
        match connect(&host, tls.as_ref()) {
            Ok(_) | Err(bollard::errors::Error::SocketNotFoundError(_)) => {}
            Err(source) => return Err(RunnerError::Connect { host, source }),
        }
        Ok(Runner {
            host,
            tls,
            instance_id: instance_id.to_string(),
            negotiated: Mutex::new(None),
            identity: std::sync::OnceLock::new(),
            pulls: pull::Pulls::default(),
        })
    }

    /// The engine's client, after negotiating the API version (the engine here speaks 1.41).
    pub async fn docker(&self) -> Result<Docker, RunnerError> {
        if let Some(docker) = self.lock().clone() {
            return Ok(docker);
        }
        let docker = connect(&self.host, self.tls.as_ref())
            .map_err(|source| self.unreachable(source))?
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
    pub async fn run(&self, run: &Run<'_>, cancel: CancellationToken) -> RunOutcome {
        let Run {
            job,
            task,
            component,
            observer,
            ..
        } = *run;
        let image = run.image;
        let docker = match self.docker().await {
            Ok(docker) => docker,
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: chain(&error),
                }
            }
        };
        let images = match self.image_result(&docker, image, component).await {
            Ok(images) => images,
            Err(ImageProblem::Missing) => return user_error(missing_image(image, component)),
            Err(ImageProblem::Engine(error)) => {
                return RunOutcome::Requeue {
                    reason: chain(&error),
                }
            }
        };
        let spec = match self.handed_over(run) {
            Ok(spec) => spec,
            Err(reason) => return RunOutcome::Requeue { reason },
        };
        let labels = unit_labels(run);
        if let Err(error) = self.ensure_network(&docker, &spec.network).await {
            return RunOutcome::Requeue {
                reason: chain(&error),
            };
        }
        let body = self.container_body(&spec, &task.folder, &labels);
        let name = self.container_name(job, task, run.image_index);
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
        failpoint::hit(failpoint::CONTAINER_CREATED);
        // Attached before the start, the output is read from its first byte as it is printed.
        let options = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = match docker.attach_container(&container_id, Some(options)).await {
            Ok(attached) => Some(attached.output),
            Err(error) => {
                tracing::warn!(job_id = job.id, %error, "cannot attach to the container; reading its log instead");
                None
            }
        };
        if let Err(error) = docker.start_container(&container_id, None).await {
            self.remove(&docker, &container_id).await;
            return user_error(format!(
                "Cannot start the container of image \"{image}\": {error}"
            ));
        }
        failpoint::hit(failpoint::CONTAINER_STARTED);
        let started = crate::model::now_micros();
        self.follow(run, &container_id, &images, started, cancel, attached)
            .await
    }

    /// Who containers run as, and who must own the folders they mount (see
    /// `workspace::container_identity`); the daemon's own user never changes, so it is probed
    /// once, on the first run.
    pub fn identity(&self, settings: &Settings) -> std::io::Result<workspace::Identity> {
        if let Some(identity) = self.identity.get() {
            return Ok(identity.clone());
        }
        let identity = workspace::container_identity(settings)?;
        Ok(self.identity.get_or_init(|| identity).clone())
    }

    /// The container of `run` (as `Executor::prepare` makes it), its job folder handed to the
    /// container's user first; when that fails, the reason to put the run back in the queue.
    fn handed_over(&self, run: &Run<'_>) -> Result<ContainerSpec, String> {
        let Run {
            job,
            task,
            component,
            settings,
            ..
        } = *run;
        let prepared = blocking(|| {
            let identity = self.identity(settings)?;
            workspace::hand_over(&task.folder, identity.owner)?;
            self.prepare(job, task, run.image, component, run.size, settings)
        });
        prepared
            .map_err(|error| format!("cannot hand the job folder to the container's user: {error}"))
    }

    /// Makes sure the engine has the network `name` (`no_internet_network`; `bridge` and `none`
    /// always exist): created when absent as an internal network of jobq's own, which the
    /// engine gives no route out of its subnet (see docs/runner.md, "Network").
    pub async fn ensure_network(&self, docker: &Docker, name: &str) -> Result<(), RunnerError> {
        if name == "bridge" || name == "none" {
            return Ok(());
        }
        match docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(self.unreachable(error)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            internal: Some(true),
            labels: Some(HashMap::from([(
                LABEL_NETWORK.to_string(),
                "no-internet".to_string(),
            )])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = name, "created the no-internet network");
                Ok(())
            }
            // Created meanwhile by another job (or another jobq on the engine).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(error) => Err(RunnerError::Network {
                name: name.to_string(),
                source: error,
            }),
        }
    }

    /// The engine's description of a container for `spec`, with `folder`'s `data/` at `/data`
    /// and `tmp/` at `/tmp`, this store's instance label and `labels`: the same hardening for
    /// every container jobq starts.
    fn container_body(
        &self,
        spec: &ContainerSpec,
        folder: &std::path::Path,
        labels: &[(&str, String)],
    ) -> ContainerCreateBody {
        let folders = workspace::Workspace::of(folder);
        let mut binds = vec![format!("{}:/data", absolute(&folders.data))];
        if spec.confinement.tmp_size.is_none() {
            binds.push(format!("{}:/tmp", absolute(&folders.tmp)));
        }
        let mut host_config = HostConfig {
            binds: Some(binds),
            memory: Some(spec.memory_bytes),
            memory_swap: Some(spec.memory_bytes),
            network_mode: Some(spec.network.clone()),
            // An init process as PID 1 forwards SIGTERM, so components without a handler stop
            // at a kill instead of waiting out the grace period.
            init: Some(true),
            log_config: Some(job_log_config()),
            ..Default::default()
        };
        confine::apply(spec, &mut host_config);
        let mut all_labels =
            HashMap::from([(LABEL_INSTANCE.to_string(), self.instance_id.clone())]);
        all_labels.extend(
            labels
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone())),
        );
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            user: spec.container_user().map(str::to_string),
            labels: Some(all_labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Takes over the container a previous jobq process started for `run`'s job: starts it if
    /// it never started, resumes its log after the lines already recorded, and records its end.
    /// The job never runs twice. While the engine is unreachable, this waits for it.
    pub async fn attach(
        &self,
        run: &Run<'_>,
        container_id: &str,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let image = run.image;
        loop {
            let (docker, _) = self.wait_for_engine(run.job.id).await;
            let state = match docker.inspect_container(container_id, None).await {
                Ok(inspect) => inspect.state,
                Err(error) if is_not_found(&error) => return lost(),
                Err(error) => {
                    tracing::warn!(container_id, %error, "cannot inspect a container to re-attach; retrying");
                    tokio::time::sleep(ENGINE_RETRY).await;
                    continue;
                }
            };
            let started_at = state
                .as_ref()
                .and_then(|s| s.started_at.as_deref())
                .filter(|started| !started.starts_with("0001-"))
                .and_then(|started| chrono::DateTime::parse_from_rfc3339(started).ok())
                .map(|started| started.timestamp_micros());
            if started_at.is_none() {
                if let Err(error) = docker.start_container(container_id, None).await {
                    self.remove(&docker, container_id).await;
                    return user_error(format!(
                        "Cannot start the container of image \"{image}\": {error}"
                    ));
                }
            }
            let images = match self.image_result(&docker, image, run.component).await {
                Ok(images) => images,
                Err(_) => json!([{"id": image, "digests": []}]),
            };
            let started = started_at.unwrap_or_else(crate::model::now_micros);
            return self
                .follow(run, container_id, &images, started, cancel, None)
                .await;
        }
    }

    /// Streams the running container's output into events until it ends, riding out engine
    /// restarts, then classifies the end. The container stays: the queue removes it once the
    /// result is stored.
    /// `started` (Unix microseconds) is when the container started: its timeout counts from there.
    /// `attached` is its output, attached before the start (none: its log is read).
    async fn follow(
        &self,
        run: &Run<'_>,
        container_id: &str,
        images: &Value,
        started: i64,
        cancel: CancellationToken,
        mut attached: Option<LogStream>,
    ) -> RunOutcome {
        let Run {
            job,
            component,
            settings,
            observer,
            ..
        } = *run;
        let elapsed = Duration::from_micros((crate::model::now_micros() - started).max(0) as u64);
        let deadline = tokio::time::Instant::now() + run.process_timeout.saturating_sub(elapsed);
        let (exit, mut log) = loop {
            let (docker, was_lost) = self.wait_for_engine(job.id).await;
            if was_lost {
                observer.event(EventType::Warn, EventSource::Jobq, ENGINE_LOST_MESSAGE);
            }
            // Every line read before is stored, so the count says where this read resumes.
            observer.flush();
            let mut log = LogReader::new(observer, observer.recorded(container_id), settings);
            let (waited, ()) = tokio::join!(
                self.wait(
                    &docker,
                    container_id,
                    deadline,
                    settings.kill_grace,
                    component.confinement.pids_limit,
                    &cancel
                ),
                log.read(&docker, container_id, attached.take()),
            );
            match waited {
                Waited::Ended(exit) => break (exit, log),
                Waited::EngineLost(error) => {
                    tracing::debug!(job_id = job.id, %error, "the wait for a container broke off");
                    tokio::time::sleep(ENGINE_RETRY).await;
                }
            }
        };
        // The follow ends when the container does; what it may have missed (a stream that broke
        // off) is read now, and every event is stored before the result is.
        let (stdout, stderr) = loop {
            let (docker, _) = self.wait_for_engine(job.id).await;
            match log.read_rest(&docker, LogOf::Container(container_id)).await {
                Ok(()) => break log.finish(container_id),
                Err(error) if is_not_found(&error) => {
                    tracing::warn!(job_id = job.id, %error, "the container vanished before the end of its log was read");
                    break log.finish(container_id);
                }
                Err(error) => {
                    tracing::warn!(job_id = job.id, %error, "cannot read the end of a container's log; retrying");
                    tokio::time::sleep(ENGINE_RETRY).await;
                }
            }
        };
        failpoint::hit(failpoint::CONTAINER_ENDED);
        conclude(run, container_id, images, exit, (stdout, stderr))
    }

    /// Waits for the container to end, enforcing `deadline` and the process limit `pids_limit`
    /// (a container that reaches it is killed: a fork bomb) and honouring `cancel`.
    async fn wait(
        &self,
        docker: &Docker,
        container_id: &str,
        deadline: tokio::time::Instant,
        grace: Duration,
        pids_limit: i64,
        cancel: &CancellationToken,
    ) -> Waited {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waited = docker.wait_container(container_id, Some(options));
        // A non-zero exit arrives as an error item; the exit code is read from inspect below.
        let ended = async {
            match waited.next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
                Some(Err(error)) if is_not_found(&error) => Ok(()),
                Some(Err(error)) => Err(error),
            }
        };
        tokio::pin!(ended);
        let (forced, ended) = tokio::select! {
            result = &mut ended => (None, result),
            () = tokio::time::sleep_until(deadline) => {
                let kill = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
                let _ = docker.kill_container(container_id, Some(kill)).await;
                (Some(Exit::TimedOut), ended.await)
            }
            () = confine::process_limit_reached(docker, container_id, pids_limit) => {
                let kill = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
                let _ = docker.kill_container(container_id, Some(kill)).await;
                (Some(Exit::ProcessLimit), ended.await)
            }
            () = cancel.cancelled() => {
                let stop = StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
                let _ = docker.stop_container(container_id, Some(stop)).await;
                (Some(Exit::Terminated), ended.await)
            }
        };
        if let Err(error) = ended {
            return Waited::EngineLost(error);
        }
        let state = match docker.inspect_container(container_id, None).await {
            Ok(inspect) => inspect.state,
            Err(error) if is_not_found(&error) => {
                return Waited::Ended(forced.unwrap_or(Exit::Lost))
            }
            Err(error) => return Waited::EngineLost(error),
        };
        let running = state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if running {
            // The wait broke off while the container still runs (an engine hiccup): wait again.
            return Waited::EngineLost(bollard::errors::Error::RequestTimeoutError);
        }
        let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
        let code = state.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
        Waited::Ended(match forced {
            Some(exit) => exit,
            None if oom => Exit::OutOfMemory,
            None => Exit::Code(code),
        })
    }

    /// The engine's client once it answers; retries every `ENGINE_RETRY` until then. An outage
    /// is logged once for the job when it starts and once when it ends, not at every retry.
    /// Says whether it had to wait.
    async fn wait_for_engine(&self, job_id: u64) -> (Docker, bool) {
        let mut lost = false;
        loop {
            let answered = match self.ping().await {
                Ok(()) => self.docker().await,
                Err(error) => Err(error),
            };
            match answered {
                Ok(docker) => {
                    if lost {
                        tracing::info!(
                            job_id,
                            "the Docker engine answers again; following the job"
                        );
                    }
                    return (docker, lost);
                }
                Err(error) if !lost => {
                    tracing::warn!(job_id, error = %chain(&error), "the Docker engine is unreachable; waiting for it");
                    lost = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(ENGINE_RETRY).await;
        }
    }

    /// `result.images` for one image: its name and repo digests (its id when it has none). An
    /// image of a registry is named as the platform prints it, without the first segment of
    /// its path (`quay.io/keboola/x:1` -> `keboola/x:1`); a local one as it is.
    async fn image_result(
        &self,
        docker: &Docker,
        image: &str,
        component: &Component,
    ) -> Result<Value, ImageProblem> {
        let shown = |name: &str| match component.source {
            ImageSource::Local => name.to_string(),
            ImageSource::Registry { .. } => pull::printable(name).to_string(),
        };
        match docker.inspect_image(image).await {
            Ok(inspect) => Ok(json!([{
                "id": shown(image),
                "digests": inspect
                    .repo_digests
                    .filter(|digests| !digests.is_empty())
                    .map(|digests| digests.iter().map(|d| shown(d)).collect())
                    .unwrap_or_else(|| inspect.id.into_iter().collect::<Vec<_>>()),
            }])),
            Err(error) if is_not_found(&error) => Err(ImageProblem::Missing),
            Err(error) => Err(ImageProblem::Engine(self.unreachable(error))),
        }
    }

    /// Makes sure `image` (`repository:tag`) of `component` is in the engine before a job runs
    /// it: a local image must be there; an image of a registry is pulled when it is absent, or
    /// when the component pins a `digest` the local image lacks. Pulls of one image are shared
    /// by the jobs that need it; `told` hears the pull's start, a few progress steps and its
    /// end. Credentials come from the settings and go only to the engine.
    pub async fn ensure_image(
        &self,
        image: &str,
        component: &Component,
        settings: &Settings,
        told: &(dyn Fn(&str) + Sync),
    ) -> Result<(), ImageFailure> {
        let docker = self.docker().await.map_err(ImageFailure::Engine)?;
        let local = match docker.inspect_image(image).await {
            Ok(inspect) => Some(inspect.repo_digests.unwrap_or_default()),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(ImageFailure::Engine(self.unreachable(error))),
        };
        let (host, digest) = match &component.source {
            ImageSource::Local if local.is_some() => return Ok(()),
            ImageSource::Local => {
                return Err(ImageFailure::Job(UserError(missing_image(
                    image, component,
                ))))
            }
            ImageSource::Registry { host, digest } => (host, digest.as_deref()),
        };
        match (&local, digest) {
            (Some(_), None) => return Ok(()),
            (Some(digests), Some(digest)) if pull::has_digest(digests, digest) => return Ok(()),
            (Some(_), Some(digest)) => told(&format!(
                "Digest \"{digest}\" for image \"{image}\" not found locally; pulling it."
            )),
            (None, _) => {}
        }
        let credentials = match pull::credentials(component, settings) {
            Ok(credentials) => credentials,
            Err(error) => {
                return Err(ImageFailure::Pull(format!(
                    "Cannot pull image \"{image}\": {}",
                    chain(&error)
                )))
            }
        };
        told(&format!("Pulling image \"{image}\" from {host}."));
        let progress = |percent: u8| told(&format!("Pulling image \"{image}\" ... {percent}%"));
        match self
            .pulls
            .pull(&docker, image, credentials, &progress)
            .await
        {
            Ok(()) => {}
            Err(pull::PullError::Unreachable(answer)) => {
                return Err(ImageFailure::Unreachable(format!(
                    "Cannot pull image \"{image}\": the registry {host} is unreachable: {answer}"
                )))
            }
            Err(pull::PullError::Failed(answer)) => {
                return Err(ImageFailure::Pull(format!(
                    "Cannot pull image \"{image}\": {answer}"
                )))
            }
        }
        let digests = match docker.inspect_image(image).await {
            Ok(inspect) => inspect.repo_digests.unwrap_or_default(),
            Err(error) => return Err(ImageFailure::Engine(self.unreachable(error))),
        };
        if let Some(digest) = digest.filter(|digest| !pull::has_digest(&digests, digest)) {
            return Err(ImageFailure::Pull(format!(
                "Image \"{image}\" pulled from {host} does not have the digest \"{digest}\" the \
                 component pins (it has {}); push that image under the tag or fix the digest.",
                digests.join(", ")
            )));
        }
        told(&format!(
            "Pulled image \"{image}\" (digests: {}).",
            digests.join(", ")
        ));
        Ok(())
    }

    /// The default images (`image:tag`) of `components` that the engine lacks.
    pub async fn missing_images<'a>(
        &self,
        components: &'a [Component],
    ) -> Result<Vec<(&'a Component, String)>, RunnerError> {
        let docker = self.docker().await?;
        let mut missing = Vec::new();
        for component in components {
            let image = component.image_reference(&component.tag);
            match docker.inspect_image(&image).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => missing.push((component, image)),
                Err(error) => return Err(self.unreachable(error)),
            }
        }
        Ok(missing)
    }

    /// Removes a container, whatever its state; a failure is logged, not fatal.
    pub async fn remove_container(&self, container_id: &str) {
        match self.docker().await {
            Ok(docker) => self.remove(&docker, container_id).await,
            Err(error) => {
                tracing::warn!(container_id, error = %chain(&error), "cannot remove a container")
            }
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

    /// `jobq-<instance>-<run id>[-row-<row>]`: unique per container and store, readable in
    /// `docker ps`.
    pub fn container_name(&self, job: &Job, task: &Task, image_index: usize) -> String {
        let mut name = format!("jobq-{}-{}", self.instance_id, job.run_id);
        if let Some(row) = &task.row_id {
            let row: String = row
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            name.push_str(&format!("-row-{row}"));
        }
        if image_index > 0 {
            name.push_str(&format!("-image-{image_index}"));
        }
        name
    }

    fn unreachable(&self, source: bollard::errors::Error) -> RunnerError {
        let host = self.host.clone();
        match self.tls {
            None => RunnerError::Unreachable { host, source },
            Some(_) => RunnerError::ManagerTls { host, source },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Docker>> {
        self.negotiated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The log configuration of every job container: `json-file` that does not rotate while the
/// job runs, whatever the host's `daemon.json` says, so no line is gone before jobq reads it
/// (the container, and its log with it, is removed once the job's result is stored).
///
/// Observed on Docker 20.10.24 (API 1.41) whose `daemon.json` says `"log-driver": "json-file",
/// "log-opts": {"max-size": "10m", "max-file": "3"}`: when a container's driver is the default
/// driver, the engine adds every default log-opt the container leaves unset to its config
/// (`docker inspect` shows `max-file: 3` added to a container that set only `max-size`), so
/// each option that could drop lines is set here. `max-size` has no "unlimited" value: `-1`,
/// `0` and `""` pass the create but fail the start (`failed to initialize logging driver:
/// invalid size: '-1'`, `max-size must be a positive number`), and leaving it out brings back
/// the default's `10m`; so it is 1 PB, more than any disk holds. `max-file` 1 keeps one file;
/// `compress` must then be false (a host's `compress: true` fails the start: `compress cannot be
/// true when max-file is less than 2`); `mode: blocking`, since a host-wide `non-blocking`
/// drops lines whenever its buffer is full.
fn job_log_config() -> HostConfigLogConfig {
    let options = [
        ("max-size", "1p"),
        ("max-file", "1"),
        ("compress", "false"),
        ("mode", "blocking"),
    ];
    HostConfigLogConfig {
        typ: Some("json-file".to_string()),
        config: Some(
            options
                .into_iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        ),
    }
}

/// How long an attached reader waits for the job's event writer to catch up before it leaves
/// the attached output for the log: the container's output is held back meanwhile, and the
/// engine cuts what is still in flight two seconds after the container exits.
const ATTACHED_PATIENCE: Duration = Duration::from_secs(1);

/// How many entries at the end of a container's log are compared with what was read, to tell
/// that nothing is left to read.
const LOG_CHECK_ENTRIES: usize = 16;

/// Whose log a `LogReader` reads: a container's, or a swarm task's (through the manager).
#[derive(Debug, Clone, Copy)]
enum LogOf<'a> {
    Container(&'a str),
    Task(&'a str),
}

impl LogOf<'_> {
    fn stream(self, docker: &Docker, options: bollard::query_parameters::LogsOptions) -> LogStream {
        match self {
            LogOf::Container(id) => Box::pin(docker.logs(id, Some(options))),
            LogOf::Task(id) => Box::pin(docker.task_logs(id, Some(options))),
        }
    }
}

/// A container's output as the engine streams it.
type LogStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Reads one container's output into the job's events, within the job's bound: stdout lines
/// after the `recorded` ones become `info` events; both streams are kept (head and tail) for
/// the error message. One reader reads once through the output, from the container's start:
/// attached to the container (its output as it is printed, cheap) while the job's events keep
/// up with it (the container waits for them, `ATTACHED_PATIENCE` at most at a time), else from
/// the engine's log, which is complete (see `job_log_config`) and read again from its start,
/// skipping the lines already handled.
struct LogReader<'a> {
    observer: &'a dyn RunObserver,
    max_events_per_job: usize,
    lines: LineSplitter,
    stdout: HeadTail,
    stderr: HeadTail,
    /// Non-blank stdout lines read in this pass; the first `skip` were handled before (stored,
    /// or counted by the bound) and are passed over.
    seen: usize,
    skip: usize,
    /// `None` when the log is closed: nothing of it is stored again.
    bound: Option<LineBound>,
    /// Reading the attached output, which must never wait long for the event writer: the engine
    /// holds the container's output (and its log) back for a slow attached reader, and cuts
    /// what is still in flight two seconds after the container exits.
    attached: bool,
    /// The attached reader fell behind the output and stopped; the log is read instead.
    left: bool,
}

impl<'a> LogReader<'a> {
    fn new(observer: &'a dyn RunObserver, recorded: Recorded, settings: &Settings) -> Self {
        let room = settings
            .max_events_per_job
            .saturating_sub(recorded.job_lines);
        LogReader {
            observer,
            max_events_per_job: settings.max_events_per_job,
            lines: LineSplitter::default(),
            stdout: HeadTail::default(),
            stderr: HeadTail::default(),
            seen: 0,
            skip: recorded.lines,
            bound: (!recorded.closed).then(|| LineBound::new(room)),
            attached: false,
            left: false,
        }
    }

    /// Reads the output until the container ends: from `attached` when given, as long as the
    /// events keep up; else (or then) by following the engine's log.
    async fn read(&mut self, docker: &Docker, container_id: &str, attached: Option<LogStream>) {
        if let Some(stream) = attached {
            if self.read_attached(stream).await {
                return;
            }
            self.restart();
        }
        self.follow(docker, LogOf::Container(container_id)).await;
    }

    /// Reads the attached output to its end (true), or until it breaks off or the event writer
    /// falls behind (false); dropping the stream detaches, so the container goes on at its
    /// own speed.
    async fn read_attached(&mut self, mut stream: LogStream) -> bool {
        self.attached = true;
        let mut ended = true;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => self.take(chunk),
                Err(error) => {
                    tracing::warn!(%error, "the container's attached output broke off; reading its log");
                    ended = false;
                }
            }
            if self.left || !ended {
                break;
            }
        }
        if self.left {
            tracing::info!("the job's events fell behind the container's output; reading its log");
        }
        self.attached = false;
        ended && !self.left
    }

    /// Follows the engine's log from its start until the container ends (the engine ends the
    /// stream then) or the stream breaks off.
    async fn follow(&mut self, docker: &Docker, of: LogOf<'_>) {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = of.stream(docker, options);
        while let Some(item) = stream.next().await {
            match item {
                Ok(entry) => self.take(entry),
                Err(error) => {
                    tracing::warn!(?of, %error, "the log stream broke off");
                    return;
                }
            }
        }
    }

    /// After the container ended: makes sure the whole log was read. The log's last entries
    /// are compared with the end of what was read, stream by stream; when they differ, the
    /// whole log is read again, passing over the lines already handled. (The engine's `since`
    /// counts whole seconds, so it cannot say "after this entry".)
    async fn read_rest(
        &mut self,
        docker: &Docker,
        of: LogOf<'_>,
    ) -> Result<(), bollard::errors::Error> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&LOG_CHECK_ENTRIES.to_string())
            .build();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut end = of.stream(docker, options);
        while let Some(entry) = end.next().await {
            match entry? {
                LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::Console { .. } | LogOutput::StdIn { .. } => {}
            }
        }
        if self.stdout.ends_with(&stdout) && self.stderr.ends_with(&stderr) {
            return Ok(());
        }
        tracing::info!(
            ?of,
            "the end of the log was not read yet; reading the log again"
        );
        self.restart();
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = of.stream(docker, options);
        while let Some(entry) = stream.next().await {
            self.take(entry?);
        }
        Ok(())
    }

    /// Starts the pass over: the lines handled so far are passed over, and the buffers are
    /// filled again from the output's start.
    fn restart(&mut self) {
        self.skip = self.skip.max(self.seen);
        self.seen = 0;
        self.lines = LineSplitter::default();
        self.stdout = HeadTail::default();
        self.stderr = HeadTail::default();
        self.left = false;
    }

    fn take(&mut self, chunk: LogOutput) {
        match chunk {
            LogOutput::StdOut { message } => {
                self.stdout.push(&message);
                for line in self.lines.push(&message) {
                    self.line(line);
                }
            }
            LogOutput::StdErr { message } => self.stderr.push(&message),
            // A container without a terminal has framed output only: an unframed chunk is the
            // engine's own word in the stream (a swarm's task log says so when it breaks off,
            // "Error grabbing logs: ..."), never the component's line.
            LogOutput::Console { message } => {
                let said = String::from_utf8_lossy(&message);
                tracing::warn!(said = %said.trim(), "the engine reported an error in a log stream");
            }
            LogOutput::StdIn { .. } => {}
        }
    }

    fn line(&mut self, line: String) {
        if self.left || line.trim().is_empty() {
            return;
        }
        if self.seen < self.skip {
            self.seen += 1;
            return;
        }
        if self.attached && !self.observer.has_room(ATTACHED_PATIENCE) {
            // This line and the rest are read again from the log.
            self.left = true;
            return;
        }
        self.seen += 1;
        if let Some(bound) = &mut self.bound {
            if let Some(text) = bound.admit(output::event_text(&line)) {
                self.observer
                    .event(EventType::Info, EventSource::Stdout, &text);
            }
        }
    }

    /// The log's end: its unfinished last line, and the lines the bound held back (when lines
    /// were dropped: a warning, then the last lines, stored closing the log). Every event is
    /// stored when this returns. The kept stdout and stderr, for the error message.
    fn finish(mut self, container_id: &str) -> (HeadTail, HeadTail) {
        if let Some(line) = self.lines.finish() {
            self.line(line);
        }
        if let Some(bound) = self.bound.take() {
            let held = bound.finish();
            let lines = held
                .lines
                .into_iter()
                .map(|line| (EventType::Info, EventSource::Stdout, line));
            if held.dropped == 0 {
                // Every line is stored, in order: counting them still says where a log resumes.
                lines.for_each(|(kind, source, line)| self.observer.event(kind, source, &line));
            } else {
                let warning =
                    output::dropped_message(held.dropped, self.max_events_per_job, lines.len());
                let events = std::iter::once((EventType::Warn, EventSource::Jobq, warning))
                    .chain(lines)
                    .collect();
                self.observer.close_log(container_id, events);
            }
        }
        self.observer.flush();
        (self.stdout, self.stderr)
    }
}

/// A run's end, whatever ran it: the exit classified (docs/runner.md), the stderr of a success
/// and an application error's message as events, every event stored, `usageData` read. The
/// unit stays for the queue to remove once the result is stored (unless it is lost).
fn conclude(
    run: &Run<'_>,
    unit_id: &str,
    images: &Value,
    exit: Exit,
    (stdout, stderr): (HeadTail, HeadTail),
) -> RunOutcome {
    let Run {
        job,
        task,
        component,
        settings,
        observer,
        ..
    } = *run;
    let image = run.image;
    let memory_limit = format_memory(run.size.memory_bytes);
    let mut verdict = outcome::classify(
        exit,
        &ExitContext {
            image,
            memory_limit: &memory_limit,
            timeout_seconds: run.process_timeout.as_secs(),
            pids_limit: component.confinement.pids_limit,
            stdout: &stdout.text(),
            stderr: &stderr.text(),
        },
    );
    let exception_id = outcome::new_exception_id();
    if settings.dev_mode {
        outcome::show_stderr(&mut verdict, &stderr.text());
    }
    if verdict.status == Status::Success {
        let stderr = stderr.text();
        if !stderr.trim().is_empty() {
            observer.event(
                EventType::Error,
                EventSource::Stderr,
                &output::event_text(stderr.trim_end()),
            );
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
        observer.event(EventType::Error, EventSource::Jobq, &verdict.message);
    }
    observer.flush();
    let folders = workspace::Workspace::of(&task.folder);
    let usage_data = blocking(|| workspace::usage_data(&folders));
    RunOutcome::Finished(Finished {
        verdict,
        exit: Some(exit),
        images: images.clone(),
        exception_id,
        usage_data,
        container_id: (exit != Exit::Lost).then(|| unit_id.to_string()),
    })
}

/// `256m`-style text of a byte count, as the settings wrote it.
pub fn format_memory(bytes: i64) -> String {
    match bytes {
        b if b % 1_000_000_000 == 0 => format!("{}g", b / 1_000_000_000),
        b if b % 1_000_000 == 0 => format!("{}m", b / 1_000_000),
        b if b % 1_000 == 0 => format!("{}k", b / 1_000),
        b => b.to_string(),
    }
}

/// The user error of a job whose local image is not in the engine.
fn missing_image(image: &str, component: &Component) -> String {
    format!(
        "Image \"{image}\" of component \"{}\" is not present in the local Docker engine; build or load it first.",
        component.id
    )
}

fn lost() -> RunOutcome {
    without_container(outcome::classify_lost())
}

fn user_error(message: String) -> RunOutcome {
    without_container(outcome::user_verdict(UserError(message)))
}

/// The end of a run that left no container to remove.
fn without_container(verdict: Verdict) -> RunOutcome {
    RunOutcome::Finished(Finished {
        verdict,
        exit: None,
        images: json!([]),
        exception_id: outcome::new_exception_id(),
        usage_data: None,
        container_id: None,
    })
}

/// The labels of `run`'s unit (a container, a service) besides its store's: its job, run, row
/// and stage.
fn unit_labels(run: &Run<'_>) -> [(&'static str, String); 4] {
    [
        (LABEL_JOB_ID, run.job.id.to_string()),
        (LABEL_RUN_ID, run.job.run_id.to_string()),
        (LABEL_ROW_ID, run.task.row_id.clone().unwrap_or_default()),
        (LABEL_STAGE, run.image_index.to_string()),
    ]
}

/// A client of the engine at `host`: over mutual TLS with `tls`, else as the address says.
fn connect(host: &str, tls: Option<&SwarmTls>) -> Result<Docker, bollard::errors::Error> {
    match tls {
        Some(tls) => tls::connect(host, tls),
        None => Docker::connect_with_host(host),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a reader gives it; `event` would wait once `wait_after` events are given.
    struct Recorder {
        events: Mutex<Vec<(EventType, EventSource, String)>>,
        closed: Mutex<Option<String>>,
        wait_after: usize,
    }

    impl Recorder {
        fn new(wait_after: usize) -> Recorder {
            Recorder {
                events: Mutex::new(Vec::new()),
                closed: Mutex::new(None),
                wait_after,
            }
        }

        fn messages(&self) -> Vec<String> {
            let events = self.events.lock().unwrap();
            events
                .iter()
                .map(|(_, _, message)| message.clone())
                .collect()
        }
    }

    impl RunObserver for Recorder {
        fn container_created(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn event(&self, event_type: EventType, source: EventSource, message: &str) {
            let mut events = self.events.lock().unwrap();
            events.push((event_type, source, message.to_string()));
        }
        fn has_room(&self, _: Duration) -> bool {
            self.events.lock().unwrap().len() < self.wait_after
        }
        fn flush(&self) {}
        fn close_log(&self, container_id: &str, events: Vec<(EventType, EventSource, String)>) {
            self.events.lock().unwrap().extend(events);
            *self.closed.lock().unwrap() = Some(container_id.to_string());
        }
        fn recorded(&self, _: &str) -> Recorded {
            Recorded::default()
        }
    }

    fn settings(max_events_per_job: usize) -> Settings {
        let text = format!(
            "max_events_per_job = {max_events_per_job}\n[[tokens]]\nid = \"1\"\ntoken = \"t\"\n"
        );
        Settings::parse(&text).unwrap()
    }

    fn stdout(text: &str) -> LogOutput {
        LogOutput::StdOut {
            message: bytes::Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    fn stderr(text: &str) -> LogOutput {
        LogOutput::StdErr {
            message: bytes::Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    fn stream(chunks: Vec<Result<LogOutput, bollard::errors::Error>>) -> LogStream {
        Box::pin(futures_util::stream::iter(chunks))
    }

    /// The engine's log of the output below: one entry per line.
    fn log_entries() -> Vec<LogOutput> {
        vec![
            stdout("line 1\n"),
            stdout("line 2\n"),
            stdout("\n"),
            stdout("line 3\n"),
            stderr("oops\n"),
            stdout("line 4\n"),
            stdout("line 5\n"),
            stdout("line 6"),
        ]
    }

    /// The same output as the attached stream delivers it: chunks that cut lines anywhere.
    fn attached_chunks() -> Vec<Result<LogOutput, bollard::errors::Error>> {
        vec![
            Ok(stdout("line 1\nli")),
            Ok(stdout("ne 2\n\nline 3\n")),
            Ok(stderr("oops\n")),
            Ok(stdout("line 4\nline 5\nline 6")),
        ]
    }

    fn lines(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    }

    #[tokio::test]
    async fn attached_output_read_to_its_end_stores_every_line_once() {
        let observer = Recorder::new(usize::MAX);
        let settings = settings(100);
        let mut log = LogReader::new(&observer, Recorded::default(), &settings);
        assert!(log.read_attached(stream(attached_chunks())).await);
        let (out, err) = log.finish("c1");
        assert_eq!(observer.messages(), lines(1..=6));
        assert_eq!(
            out.text(),
            "line 1\nline 2\n\nline 3\nline 4\nline 5\nline 6"
        );
        assert_eq!(err.text(), "oops\n");
        assert!(out.ends_with(b"line 5\nline 6") && err.ends_with(b"oops\n"));
    }

    #[test]
    fn an_error_the_engine_writes_into_a_log_stream_is_no_line_of_the_component() {
        // A swarm's task log broken off by the manager's absence: a frame of stream 3, which
        // bollard hands over unframed, header and all.
        let said = LogOutput::Console {
            message: bytes::Bytes::from_static(
                b"\x03\0\0\0\0\0\0GError grabbing logs: rpc error: code = Unknown desc = context canceled\n",
            ),
        };
        let observer = Recorder::new(usize::MAX);
        let settings = settings(100);
        let mut log = LogReader::new(&observer, Recorded::default(), &settings);
        log.take(stdout("line 1\n"));
        log.take(said);
        // Followed again from the start, the first line is passed over, the second is new.
        log.restart();
        log_entries().into_iter().for_each(|entry| log.take(entry));
        let (out, _) = log.finish("c1");
        assert_eq!(observer.messages(), lines(1..=6));
        assert_eq!(
            out.text(),
            "line 1\nline 2\n\nline 3\nline 4\nline 5\nline 6"
        );
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_goes_on_from_the_log_without_repeating_a_line() {
        // The writer is behind after three events: the fourth line is read from the log.
        let observer = Recorder::new(3);
        let settings = settings(100);
        let mut log = LogReader::new(&observer, Recorded::default(), &settings);
        assert!(!log.read_attached(stream(attached_chunks())).await);
        assert_eq!(observer.messages(), lines(1..=3));
        log.restart();
        log_entries().into_iter().for_each(|entry| log.take(entry));
        let (out, err) = log.finish("c1");
        assert_eq!(observer.messages(), lines(1..=6));
        assert_eq!(
            out.text(),
            "line 1\nline 2\n\nline 3\nline 4\nline 5\nline 6"
        );
        assert_eq!(err.text(), "oops\n");
    }

    #[tokio::test]
    async fn an_attached_stream_that_breaks_off_is_not_taken_for_the_whole_output() {
        let observer = Recorder::new(usize::MAX);
        let settings = settings(100);
        let mut log = LogReader::new(&observer, Recorded::default(), &settings);
        let broken = vec![
            Ok(stdout("line 1\nline 2\nline ")),
            Err(bollard::errors::Error::RequestTimeoutError),
            Ok(stdout("never read\n")),
        ];
        assert!(!log.read_attached(stream(broken)).await);
        log.restart();
        // A second pass that also breaks off passes over what the first handled.
        log.take(stdout("line 1\n"));
        log.restart();
        log_entries().into_iter().for_each(|entry| log.take(entry));
        log.finish("c1");
        assert_eq!(observer.messages(), lines(1..=6));
    }

    #[tokio::test]
    async fn a_resumed_read_passes_over_the_stored_lines_and_the_bound_holds_the_last() {
        let observer = Recorder::new(usize::MAX);
        // Two lines stored by an earlier process; the job may store three in all.
        let recorded = Recorded {
            lines: 2,
            job_lines: 2,
            closed: false,
        };
        let settings = settings(3);
        let mut log = LogReader::new(&observer, recorded, &settings);
        log_entries().into_iter().for_each(|entry| log.take(entry));
        log.finish("c1");
        // Line 3 fits; 4 to 6 are past the bound and all fit in the last lines: none dropped.
        assert_eq!(observer.messages(), lines(3..=6));
        assert_eq!(*observer.closed.lock().unwrap(), None);
    }

    #[tokio::test]
    async fn lines_dropped_past_the_bound_are_summed_up_closing_the_log() {
        let observer = Recorder::new(usize::MAX);
        let settings = settings(2);
        let mut log = LogReader::new(&observer, Recorded::default(), &settings);
        for i in 1..=output::TAIL_LINES + 10 {
            log.take(stdout(&format!("line {i}\n")));
        }
        log.finish("c1");
        let messages = observer.messages();
        assert_eq!(messages.len(), 2 + 1 + output::TAIL_LINES);
        assert_eq!(messages[..2], lines(1..=2));
        assert_eq!(
            messages[2],
            output::dropped_message(8, 2, output::TAIL_LINES)
        );
        assert_eq!(messages[3], "line 11");
        assert_eq!(*observer.closed.lock().unwrap(), Some("c1".to_string()));

        // A closed log stores nothing when it is read again.
        let again = Recorder::new(usize::MAX);
        let closed = Recorded {
            lines: 2 + output::TAIL_LINES,
            job_lines: 2 + output::TAIL_LINES,
            closed: true,
        };
        let mut log = LogReader::new(&again, closed, &settings);
        for i in 1..=output::TAIL_LINES + 10 {
            log.take(stdout(&format!("line {i}\n")));
        }
        let (out, _) = log.finish("c1");
        assert!(again.messages().is_empty());
        assert!(out.ends_with(format!("line {}\n", output::TAIL_LINES + 10).as_bytes()));
    }
}
