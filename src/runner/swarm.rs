//! The swarm executor: each image of a job runs as a Docker Swarm service in `replicated-job`
//! mode with one task, created through the swarm's manager (whose engine `manager` reaches).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    Limit, Mount, MountType, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob, Task,
    TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use bollard::Docker;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::container::ContainerSpec;
use super::executor::{Executor, Pending};
use super::outcome::{ErrorKind, Exit, Verdict};
use super::size::Size;
use super::{
    absolute, conclude, is_not_found, probe, pull, unit_labels, user_error, without_container,
    workspace, ImageFailure, LogOf, LogReader, Run, RunOutcome, Runner, RunnerError,
    Task as JobTask, LABEL_INSTANCE, LABEL_JOB_ID,
};
use crate::error::chain;
use crate::failpoint;
use crate::model::{Job, Status};
use crate::settings::{self, Component, Settings};

/// How often a task's state is asked.
const POLL: Duration = Duration::from_millis(500);

/// The executor of `executor = "swarm"`.
pub struct Swarm {
    /// The manager's engine (its client, the identity containers run as, names).
    manager: Runner,
    instance_id: String,
    node_lost_timeout: Duration,
    probe_image: String,
}

/// Where a task is.
enum Watched {
    Running(String),
    /// The task ended (with its id when it had one: its log is read).
    Ended(Exit, Option<String>),
    /// The run ended without an exit the classification knows (a rejected task, a lost node).
    Failed(Verdict),
}

impl Swarm {
    pub fn new(swarm: &settings::Swarm, instance_id: &str) -> Result<Swarm, RunnerError> {
        Ok(Swarm {
            manager: Runner::manager(&swarm.manager, swarm.tls.as_ref(), instance_id)?,
            instance_id: instance_id.to_string(),
            node_lost_timeout: swarm.node_lost_timeout,
            probe_image: swarm.probe_image.clone(),
        })
    }

    async fn run(&self, run: &Run<'_>, cancel: CancellationToken) -> RunOutcome {
        let docker = match self.manager.docker().await {
            Ok(docker) => docker,
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: chain(&error),
                }
            }
        };
        let name = self
            .manager
            .container_name(run.job, run.task, run.image_index);
        // The name is the service's id for the queue: stored before the service exists.
        if let Err(reason) = run.observer.container_created(&name) {
            return RunOutcome::Requeue { reason };
        }
        failpoint::hit(failpoint::CONTAINER_CREATED);
        if let Err(outcome) = self.create(&docker, run, &name).await {
            return outcome;
        }
        failpoint::hit(failpoint::CONTAINER_STARTED);
        self.follow(&docker, run, &name, crate::model::now_micros(), cancel)
            .await
    }

    async fn reattach(&self, run: &Run<'_>, name: &str, cancel: CancellationToken) -> RunOutcome {
        let (docker, _) = self.manager.wait_for_engine(run.job.id).await;
        // The timeout counts from the service's creation, as it did for the process that
        // created it (not from this re-attach).
        let created = match docker
            .inspect_service(
                name,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
        {
            Ok(service) => service
                .created_at
                .and_then(|created| chrono::DateTime::parse_from_rfc3339(&created).ok())
                .map_or_else(crate::model::now_micros, |created| {
                    created.timestamp_micros()
                }),
            // Stored but never created: nothing ran, so it is created now.
            Err(error) if is_not_found(&error) => {
                if let Err(outcome) = self.create(&docker, run, name).await {
                    return outcome;
                }
                crate::model::now_micros()
            }
            Err(error) => {
                return RunOutcome::Requeue {
                    reason: format!("cannot inspect the service {name}: {error}"),
                }
            }
        };
        self.follow(&docker, run, name, created, cancel).await
    }

    /// Creates the service of `run`: its job folder's `data/` bind-mounted at `/data` (the
    /// same path on every node), the container's user, environment, memory and CPUs, labels,
    /// one task that is never restarted, and the image registry's credentials.
    async fn create(&self, docker: &Docker, run: &Run<'_>, name: &str) -> Result<(), RunOutcome> {
        let Run {
            task,
            component,
            settings,
            ..
        } = *run;
        let spec =
            (self.manager.handed_over(run)).map_err(|reason| RunOutcome::Requeue { reason })?;
        let labels: HashMap<String, String> = unit_labels(run)
            .into_iter()
            .map(|(label, value)| (label.to_string(), value))
            .chain([(LABEL_INSTANCE.to_string(), self.instance_id.clone())])
            .collect();
        // The registry's credentials go with the service (`X-Registry-Auth`): the node that
        // runs its task pulls the image with them.
        let credentials = pull::credentials(component, settings).map_err(|error| {
            user_error(format!(
                "Cannot pull image \"{}\": {}",
                run.image,
                chain(&error)
            ))
        })?;
        let service = service_spec(
            name,
            &spec,
            &task.folder,
            labels,
            &component.placement,
            settings.kill_grace,
        );
        docker
            .create_service(service, credentials)
            .await
            .map(|_| ())
            .map_err(|error| RunOutcome::Requeue {
                reason: format!("cannot create the service {name}: {error}"),
            })
    }

    /// Waits for the task to run, follows its log while it runs, and classifies its end.
    /// `created` (Unix microseconds) is when the service was created: its timeout counts from
    /// there.
    async fn follow(
        &self,
        docker: &Docker,
        run: &Run<'_>,
        name: &str,
        created: i64,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let elapsed = Duration::from_micros((crate::model::now_micros() - created).max(0) as u64);
        let deadline = tokio::time::Instant::now() + run.process_timeout.saturating_sub(elapsed);
        let images = json!([{"id": run.image, "digests": []}]);
        let observer = run.observer;
        run.observer.flush();
        let mut log = LogReader::new(observer, observer.recorded(name), run.settings);
        let task_id = match self.watch(docker, name, None, deadline, &cancel).await {
            Watched::Running(task_id) => task_id,
            Watched::Ended(exit, task_id) => {
                return self
                    .end(docker, run, name, &images, exit, log, task_id.as_deref())
                    .await
            }
            Watched::Failed(verdict) => return without_container(verdict),
        };
        // A task's followed log does not end when the task does: the watch ends the follow. A
        // follow that breaks off (the manager away) starts again once the manager answers,
        // from the log's start, passing over the lines already read.
        let follow = async {
            loop {
                log.follow(docker, LogOf::Task(&task_id)).await;
                tokio::time::sleep(POLL).await;
                while docker.ping().await.is_err() {
                    tokio::time::sleep(POLL).await;
                }
                log.restart();
            }
        };
        let watched = tokio::select! {
            watched = self.watch(docker, name, Some(&task_id), deadline, &cancel) => watched,
            never = follow => never,
        };
        match watched {
            Watched::Ended(exit, _) => {
                self.end(docker, run, name, &images, exit, log, Some(&task_id))
                    .await
            }
            Watched::Failed(verdict) => {
                let _ = log.finish(name);
                without_container(verdict)
            }
            Watched::Running(_) => unreachable!("a watch of a running task returns its end"),
        }
    }

    /// The end: the rest of the task's log read, the exit classified.
    #[allow(clippy::too_many_arguments)]
    async fn end(
        &self,
        docker: &Docker,
        run: &Run<'_>,
        name: &str,
        images: &serde_json::Value,
        exit: Exit,
        mut log: LogReader<'_>,
        task_id: Option<&str>,
    ) -> RunOutcome {
        if let Some(task_id) = task_id {
            if let Err(error) = log.read_rest(docker, LogOf::Task(task_id)).await {
                tracing::warn!(job_id = run.job.id, %error, "cannot read the end of a task's log");
            }
        }
        let kept = log.finish(name);
        failpoint::hit(failpoint::CONTAINER_ENDED);
        conclude(run, name, images, exit, kept)
    }

    /// Polls the service's task until it runs (`running` is `None`) or ends; kills it at the
    /// deadline or at `cancel`; a rejected task or a node lost longer than
    /// `node_lost_timeout` ends the service with an error naming the node.
    async fn watch(
        &self,
        docker: &Docker,
        name: &str,
        running: Option<&str>,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Watched {
        let mut lost_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(deadline) => {
                    remove_service(docker, name).await;
                    return Watched::Ended(Exit::TimedOut, None);
                }
                () = cancel.cancelled() => {
                    remove_service(docker, name).await;
                    return Watched::Ended(Exit::Terminated, None);
                }
            }
            let task = match self.task(docker, name).await {
                Ok(Some(task)) => task,
                Ok(None) => continue,
                Err(error) if is_not_found(&error) => return Watched::Ended(Exit::Lost, None),
                Err(error) => {
                    tracing::debug!(%error, service = name, "cannot ask for the service's task");
                    continue;
                }
            };
            let status = task.status.clone().unwrap_or_default();
            match status.state {
                Some(TaskState::REJECTED) => {
                    remove_service(docker, name).await;
                    let (node, _) = node_of(docker, &task).await;
                    let reason = status.err.unwrap_or_default();
                    return Watched::Failed(super::outcome::user_verdict(crate::model::UserError(
                        format!("The swarm node {node} rejected the task of the service {name}: {reason}"),
                    )));
                }
                Some(TaskState::COMPLETE | TaskState::FAILED) => {
                    let code = status
                        .container_status
                        .and_then(|container| container.exit_code)
                        .unwrap_or(-1);
                    // The kernel's OOM killer is the only SIGKILL jobq did not send.
                    let exit = match code {
                        137 => Exit::OutOfMemory,
                        code => Exit::Code(code),
                    };
                    return Watched::Ended(exit, task.id);
                }
                Some(TaskState::SHUTDOWN | TaskState::ORPHANED | TaskState::REMOVE) => {
                    return Watched::Ended(Exit::Lost, None)
                }
                Some(TaskState::RUNNING) => {
                    if running.is_none() {
                        return Watched::Running(task.id.unwrap_or_default());
                    }
                    let (node, down) = node_of(docker, &task).await;
                    if down {
                        let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= self.node_lost_timeout {
                            remove_service(docker, name).await;
                            return Watched::Failed(Verdict {
                                status: Status::Error,
                                message: format!(
                                    "The swarm node {node} running the job was lost (down for \
                                     {:?}); the job's container may have run only in part.",
                                    self.node_lost_timeout
                                ),
                                error: Some(ErrorKind::Application),
                            });
                        }
                    } else {
                        lost_since = None;
                    }
                }
                _ => {}
            }
        }
    }

    /// The service's newest task (`None` while it has none); a not-found error when the
    /// service is gone.
    async fn task(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Option<Task>, bollard::errors::Error> {
        let filters = HashMap::from([("service".to_string(), vec![name.to_string()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut tasks = docker.list_tasks(Some(options)).await?;
        if tasks.is_empty() {
            // No task yet, or no service any more: only the service tells which.
            docker
                .inspect_service(
                    name,
                    None::<bollard::query_parameters::InspectServiceOptions>,
                )
                .await?;
        }
        tasks.sort_by_key(|task| task.created_at.clone());
        Ok(tasks.pop())
    }
}

/// Removes the service `name`, whatever its state (gone already is fine); a failure is logged.
pub(super) async fn remove_service(docker: &Docker, name: &str) {
    match docker.delete_service(name).await {
        Ok(()) => {}
        Err(error) if is_not_found(&error) => {}
        Err(error) => tracing::warn!(service = name, %error, "cannot remove a service"),
    }
}

/// The host name of `task`'s node (its id when the manager does not say), and whether the
/// manager sees that node `Down`; one question to the manager.
async fn node_of(docker: &Docker, task: &Task) -> (String, bool) {
    let Some(node_id) = &task.node_id else {
        return ("(none)".into(), false);
    };
    match docker.inspect_node(node_id).await {
        Ok(node) => {
            let down = node.status.and_then(|status| status.state)
                == Some(bollard::models::NodeState::DOWN);
            let name = node
                .description
                .and_then(|description| description.hostname);
            (name.unwrap_or_else(|| node_id.clone()), down)
        }
        Err(_) => (node_id.clone(), false),
    }
}

/// The service of one image: a replicated job of one task, never restarted.
fn service_spec(
    name: &str,
    spec: &ContainerSpec,
    folder: &std::path::Path,
    labels: HashMap<String, String>,
    placement: &[String],
    grace: Duration,
) -> ServiceSpec {
    let folders = workspace::Workspace::of(folder);
    let bind = |source: &std::path::Path, target: &str| Mount {
        target: Some(target.to_string()),
        source: Some(absolute(source)),
        typ: Some(MountType::BIND),
        ..Default::default()
    };
    let confinement = &spec.confinement;
    let (capability_drop, capability_add) = super::confine::capabilities(confinement);
    let mut mounts = vec![bind(&folders.data, "/data")];
    mounts.push(match confinement.tmp_size {
        None => bind(&folders.tmp, "/tmp"),
        Some(bytes) => Mount {
            target: Some("/tmp".to_string()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(bollard::models::MountTmpfsOptions {
                size_bytes: Some(bytes),
                ..Default::default()
            }),
            ..Default::default()
        },
    });
    ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(spec.image.clone()),
                labels: Some(labels),
                // The node's name, so a component (and a test) can tell where it ran.
                hostname: Some("{{.Node.Hostname}}".to_string()),
                env: Some(spec.env.clone()),
                user: spec.container_user().map(str::to_string),
                mounts: Some(mounts),
                init: Some(true),
                stop_grace_period: Some(grace.as_nanos() as i64),
                capability_drop,
                capability_add,
                read_only: Some(confinement.read_only_rootfs),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(spec.memory_bytes),
                    nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
                    pids: Some(confinement.pids_limit),
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(1),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(placement.to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Executor for Swarm {
    fn ping(&self) -> Pending<'_, Result<(), RunnerError>> {
        Box::pin(self.manager.ping())
    }

    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        component: &'a Component,
        settings: &'a Settings,
        told: &'a (dyn Fn(&str) + Sync),
    ) -> Pending<'a, Result<(), ImageFailure>> {
        Box::pin(self.manager.ensure_image(image, component, settings, told))
    }

    fn missing_images<'a>(
        &'a self,
        components: &'a [Component],
    ) -> Pending<'a, Result<Vec<(&'a Component, String)>, RunnerError>> {
        Box::pin(self.manager.missing_images(components))
    }

    fn prepare(
        &self,
        job: &Job,
        task: &JobTask,
        image: &str,
        component: &Component,
        size: Size,
        settings: &Settings,
    ) -> std::io::Result<ContainerSpec> {
        self.manager
            .prepare(job, task, image, component, size, settings)
    }

    fn start<'a>(&'a self, run: &'a Run<'a>, cancel: CancellationToken) -> Pending<'a, RunOutcome> {
        Box::pin(self.run(run, cancel))
    }

    fn reattach<'a>(
        &'a self,
        run: &'a Run<'a>,
        id: &'a str,
        cancel: CancellationToken,
    ) -> Pending<'a, RunOutcome> {
        Box::pin(Swarm::reattach(self, run, id, cancel))
    }

    fn remove<'a>(&'a self, id: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            match self.manager.docker().await {
                Ok(docker) => remove_service(&docker, id).await,
                Err(error) => {
                    tracing::warn!(service = id, error = %chain(&error), "cannot remove a service")
                }
            }
        })
    }

    fn ours(&self) -> Pending<'_, Result<Vec<(String, String)>, RunnerError>> {
        Box::pin(async move {
            let docker = self.manager.docker().await?;
            let instance = format!("{LABEL_INSTANCE}={}", self.instance_id);
            let filters = HashMap::from([("label".to_string(), vec![instance])]);
            let options = ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build();
            let services = docker.list_services(Some(options)).await?;
            Ok(services
                .into_iter()
                .filter_map(|service| {
                    let spec = service.spec?;
                    let job_id = spec.labels?.get(LABEL_JOB_ID)?.clone();
                    Some((spec.name?, job_id))
                })
                .collect())
        })
    }

    fn check_data_dir<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> Pending<'a, Result<(), RunnerError>> {
        Box::pin(async move {
            let (image, instance_id) = (&self.probe_image, &self.instance_id);
            Ok(probe::check(&self.manager, settings, image, instance_id).await?)
        })
    }
}
