//! The start-up check that every node of a swarm sees `data_dir`: one `global-job` service
//! (a task on each node) copies a random token from a fresh folder under `data_dir` into a
//! file named after its node, and every node that is `Ready` and `Active` must have written it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{
    Limit, Mount, MountType, NodeSpecAvailabilityEnum, NodeState, ServiceSpec, ServiceSpecMode,
    Task, TaskSpec, TaskSpecContainerSpec, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListNodesOptions, ListTasksOptionsBuilder};
use bollard::Docker;

use super::workspace::Identity;
use super::{absolute, Runner, LABEL_INSTANCE};
use crate::blocking::blocking;
use crate::error::chain;
use crate::settings::Settings;

/// How long the probe's tasks may take, all together.
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// The probe's folder under `data_dir`, made afresh for each probe and removed after it.
const PROBE_FOLDER: &str = "swarm-probe";
/// How often the probe's tasks are asked.
const POLL: Duration = Duration::from_millis(500);
/// Where the probe's folder is mounted in its containers.
const MOUNTED: &str = "/probe";
/// Shell built-ins only, so that any image with `/bin/sh` runs it; it exits with `UNREAD` or
/// `UNWRITTEN`.
const SCRIPT: &str =
    "read -r token < /probe/token || exit 3; echo \"$token\" > \"/probe/seen-$JOBQ_NODE\" || exit 4";
/// The script's exit code when it cannot read the token.
const UNREAD: i64 = 3;
/// The script's exit code when it cannot write its file.
const UNWRITTEN: i64 = 4;

/// Why the probe failed; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot prepare the swarm storage probe's folder {path}; check that jobq may write in \
         `data_dir`"
    )]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the swarm manager refused the storage probe (a global-job service of `swarm.probe_image` \
         {image}); check that `swarm.manager` is a manager of a swarm"
    )]
    Engine {
        image: String,
        source: bollard::errors::Error,
    },
    #[error(
        "the check that every swarm node sees data_dir {data_dir} (the same shared storage, NFS \
         or similar, mounted at the same path on every node) failed: {}; fix these nodes or \
         drain them (`docker node update --availability drain <node>`)",
        describe(nodes)
    )]
    Unseen {
        data_dir: PathBuf,
        nodes: Vec<(String, Unseen)>,
    },
}

/// Why one node failed the probe.
#[derive(Debug, PartialEq, Eq)]
pub enum Unseen {
    /// The node has no such path: its task was rejected (Swarm's reason).
    NoPath(String),
    /// The node lacks the probe image (Swarm's reason).
    NoImage { image: String, reason: String },
    /// The node rejected the task for another reason.
    Rejected(String),
    /// The task found no token it could read: another folder, or one its user may not read.
    Unread,
    /// The task could not write its file.
    Unwritten,
    /// The task ran and failed otherwise (its exit code, Swarm's message).
    Failed { code: i64, message: String },
    /// The task ended well, but its file is not in this host's folder (or holds another
    /// token): the node's path is another folder.
    Elsewhere,
    /// The task did not end within `PROBE_LIMIT` (its last state; none: no task).
    NoEnd(Option<TaskState>),
}

/// Runs the probe of `image` through the swarm's `manager` for the store `instance_id`, unless
/// the manager does not answer: then it logs that it is skipped (jobs wait for the manager
/// anyway, and a node that lacks a job folder rejects the job's task, which fails naming it).
pub async fn check(
    manager: &Runner,
    settings: &Settings,
    image: &str,
    instance_id: &str,
) -> Result<(), ProbeError> {
    let answered = match manager.ping().await {
        Ok(()) => manager.docker().await,
        Err(error) => Err(error),
    };
    let docker = match answered {
        Ok(docker) => docker,
        Err(error) => {
            let error = chain(&error);
            tracing::warn!(%error, "the swarm manager does not answer: the check that every node sees data_dir is skipped");
            return Ok(());
        }
    };
    let data_dir = &settings.data_dir;
    let identity =
        blocking(|| manager.identity(settings)).map_err(|source| ProbeError::Folder {
            path: data_dir.clone(),
            source,
        })?;
    let name = format!("jobq-{instance_id}-storage-probe");
    run(&docker, data_dir, &identity, image, &name, instance_id).await
}

/// Runs the probe through the manager `docker`: the folder handed to `identity`, the service
/// `name` (labelled with `instance_id`) of `image`; the service and the folder are removed
/// afterwards whatever happened.
async fn run(
    docker: &Docker,
    data_dir: &Path,
    identity: &Identity,
    image: &str,
    name: &str,
    instance_id: &str,
) -> Result<(), ProbeError> {
    let folder = data_dir.join(PROBE_FOLDER);
    // A probe a crashed jobq left behind goes first.
    super::swarm::remove_service(docker, name).await;
    let token = format!("{:032x}", rand::random::<u128>());
    blocking(|| prepare(&folder, &token, identity)).map_err(|source| ProbeError::Folder {
        path: folder.clone(),
        source,
    })?;
    let probed = probe(docker, &folder, identity, image, name, instance_id).await;
    super::swarm::remove_service(docker, name).await;
    let verdicts = probed.map(|ended| {
        let unseen = |(node, ended): (Node, Ended)| {
            Some((node.hostname, unseen(&folder, &token, &node.id, ended)?))
        };
        blocking(|| ended.into_iter().filter_map(unseen).collect::<Vec<_>>())
    });
    if let Err(error) = blocking(|| std::fs::remove_dir_all(&folder)) {
        tracing::warn!(folder = %folder.display(), %error, "cannot remove the swarm storage probe's folder");
    }
    let mut nodes = verdicts.map_err(|source| ProbeError::Engine {
        image: image.to_string(),
        source,
    })?;
    nodes.sort_by(|(a, _), (b, _)| a.cmp(b));
    if nodes.is_empty() {
        return Ok(());
    }
    Err(ProbeError::Unseen {
        data_dir: data_dir.to_path_buf(),
        nodes,
    })
}

/// A node the probe must reach.
struct Node {
    id: String,
    hostname: String,
}

/// How a node's task ended, as far as the manager says.
enum Ended {
    /// Its file is to be checked.
    Complete,
    Not(Unseen),
}

/// The probe's folder afresh: the token in it, both handed to the containers' user.
fn prepare(folder: &Path, token: &str, identity: &Identity) -> std::io::Result<()> {
    match std::fs::remove_dir_all(folder) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::create_dir_all(folder)?;
    std::fs::write(folder.join("token"), format!("{token}\n"))?;
    super::workspace::hand_over(folder, identity.owner)
}

/// Creates the service and waits until the task of every `Ready` and `Active` node ended (or
/// `PROBE_LIMIT` passed): how each ended.
async fn probe(
    docker: &Docker,
    folder: &Path,
    identity: &Identity,
    image: &str,
    name: &str,
    instance_id: &str,
) -> Result<Vec<(Node, Ended)>, bollard::errors::Error> {
    let nodes = eligible_nodes(docker).await?;
    if nodes.is_empty() {
        tracing::warn!("no swarm node is Ready and Active: the storage probe checked none");
        return Ok(Vec::new());
    }
    let spec = service_spec(folder, identity, image, name, instance_id);
    docker.create_service(spec, None).await?;
    let deadline = tokio::time::Instant::now() + PROBE_LIMIT;
    loop {
        let tasks = tasks(docker, name).await?;
        let ended: Vec<Ended> = nodes
            .iter()
            .map(|node| {
                let of_node = tasks
                    .iter()
                    .filter(|t| t.node_id.as_deref() == Some(&node.id));
                ended(of_node, image)
            })
            .collect();
        let waiting = ended
            .iter()
            .any(|e| matches!(e, Ended::Not(Unseen::NoEnd(_))));
        if !waiting || tokio::time::Instant::now() >= deadline {
            return Ok(nodes.into_iter().zip(ended).collect());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The nodes jobs may run on: `Ready` and `Active`.
async fn eligible_nodes(docker: &Docker) -> Result<Vec<Node>, bollard::errors::Error> {
    let nodes = docker.list_nodes(None::<ListNodesOptions>).await?;
    Ok(nodes
        .into_iter()
        .filter(|node| node.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
        .filter(|node| {
            node.spec.as_ref().and_then(|s| s.availability)
                == Some(NodeSpecAvailabilityEnum::ACTIVE)
        })
        .filter_map(|node| {
            let id = node.id?;
            let hostname = node
                .description
                .and_then(|d| d.hostname)
                .unwrap_or_else(|| id.clone());
            Some(Node { id, hostname })
        })
        .collect())
}

async fn tasks(docker: &Docker, name: &str) -> Result<Vec<Task>, bollard::errors::Error> {
    let filters = HashMap::from([("service".to_string(), vec![name.to_string()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await
}

/// How a node's tasks ended: one complete wins; else one failed, else one rejected (Swarm
/// retries a rejected task without end); else not yet, in the newest task's state.
fn ended<'a>(tasks: impl Iterator<Item = &'a Task>, image: &str) -> Ended {
    let mut tasks: Vec<&Task> = tasks.collect();
    tasks.sort_by_key(|task| task.created_at.clone());
    let state = |task: &&Task| task.status.as_ref().and_then(|s| s.state);
    let message = |task: &Task| {
        let status = task.status.as_ref();
        status.and_then(|s| s.err.clone()).unwrap_or_default()
    };
    if tasks.iter().any(|t| state(t) == Some(TaskState::COMPLETE)) {
        return Ended::Complete;
    }
    Ended::Not(
        if let Some(task) = tasks.iter().find(|t| state(t) == Some(TaskState::FAILED)) {
            let status = task.status.as_ref();
            let container = status.and_then(|s| s.container_status.as_ref());
            match container.and_then(|c| c.exit_code).unwrap_or(-1) {
                UNREAD => Unseen::Unread,
                UNWRITTEN => Unseen::Unwritten,
                code => Unseen::Failed {
                    code,
                    message: message(task),
                },
            }
        } else if let Some(task) = tasks.iter().find(|t| state(t) == Some(TaskState::REJECTED)) {
            rejected(image, message(task))
        } else {
            Unseen::NoEnd(tasks.last().and_then(state))
        },
    )
}

/// Why a node does not see the folder, if it does not: a complete task's file must hold the
/// token.
fn unseen(folder: &Path, token: &str, node_id: &str, ended: Ended) -> Option<Unseen> {
    match ended {
        Ended::Complete => {
            let seen = std::fs::read_to_string(folder.join(format!("seen-{node_id}")));
            match seen {
                Ok(seen) if seen.trim() == token => None,
                _ => Some(Unseen::Elsewhere),
            }
        }
        Ended::Not(unseen) => Some(unseen),
    }
}

/// A rejection, told apart by Swarm's reason.
fn rejected(image: &str, reason: String) -> Unseen {
    if reason.contains("bind source path does not exist") {
        Unseen::NoPath(reason)
    } else if reason.contains("No such image") || reason.contains(image) {
        Unseen::NoImage {
            image: image.to_string(),
            reason,
        }
    } else {
        Unseen::Rejected(reason)
    }
}

/// The nodes and their reasons, for `ProbeError::Unseen`.
fn describe(nodes: &[(String, Unseen)]) -> String {
    let limit = PROBE_LIMIT.as_secs();
    let reasons: Vec<String> = nodes
        .iter()
        .map(|(node, unseen)| match unseen {
            Unseen::NoPath(reason) => format!("{node} has no such path ({reason})"),
            Unseen::NoImage { image, reason } => format!(
                "{node} lacks the probe image {image}; load it on every node or set \
                 `swarm.probe_image` to an image every node has ({reason})"
            ),
            Unseen::Rejected(reason) => format!("{node} rejected the probe's task ({reason})"),
            Unseen::Unread => format!(
                "{node} finds no probe token there: its path is another folder, not the shared \
                 storage, or the containers' user may not read it"
            ),
            Unseen::Unwritten => {
                format!("{node} sees the probe token but the containers' user may not write there")
            }
            Unseen::Failed { code, message } => {
                format!("{node}: the probe's task failed with exit code {code} ({message})")
            }
            Unseen::Elsewhere => format!(
                "{node} wrote its probe file elsewhere: its path is another folder, not the \
                 shared storage"
            ),
            Unseen::NoEnd(None) => format!("{node} got no probe task within {limit} s"),
            Unseen::NoEnd(Some(state)) => {
                format!("{node}: the probe's task did not end within {limit} s (it is {state})")
            }
        })
        .collect();
    reasons.join("; ")
}

/// The probe's service: one task on each node that is never restarted, as the containers'
/// user, without capabilities, the folder mounted at `MOUNTED`.
fn service_spec(
    folder: &Path,
    identity: &Identity,
    image: &str,
    name: &str,
    instance_id: &str,
) -> ServiceSpec {
    let labels = HashMap::from([(LABEL_INSTANCE.to_string(), instance_id.to_string())]);
    ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                labels: Some(labels),
                command: Some(vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()]),
                env: Some(vec!["JOBQ_NODE={{.Node.ID}}".into()]),
                user: Some(identity.user.clone()),
                mounts: Some(vec![Mount {
                    target: Some(MOUNTED.to_string()),
                    source: Some(absolute(folder)),
                    typ: Some(MountType::BIND),
                    ..Default::default()
                }]),
                capability_drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(32 << 20),
                    pids: Some(16),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            global_job: Some(HashMap::new()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_told_apart_by_swarms_reason() {
        let path = "invalid mount config for type \"bind\": bind source path does not exist: /d";
        assert_eq!(rejected("sh:1", path.into()), Unseen::NoPath(path.into()));
        let image = "No such image: sh:1";
        assert_eq!(
            rejected("sh:1", image.into()),
            Unseen::NoImage {
                image: "sh:1".into(),
                reason: image.into()
            }
        );
        assert_eq!(
            rejected("sh:1", "no suitable node".into()),
            Unseen::Rejected("no suitable node".into())
        );
    }
}
