//! Images from registries: makes sure an image is in the engine before a job runs it, pulling it
//! with the registry's credentials, once for all the jobs that wait for it, with its progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::settings::{Component, CredentialsError, ImageSource, Registry, Settings};

/// Progress percentages a waiting job is told about (besides the pull's start and end): a few
/// events per pull, not one per chunk.
const PROGRESS_STEPS: [u8; 3] = [25, 50, 75];

/// Words of the engine's answer that mean the registry could not be reached at all (rather than
/// that it answered with an error).
const UNREACHABLE_SIGNS: [&str; 7] = [
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "TLS handshake timeout",
    "connection reset by peer",
];

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The registry could not be reached; the engine's answer.
    Unreachable(String),
    /// The registry (or the engine) answered with an error; its answer.
    Failed(String),
}

impl PullError {
    /// The engine's (or registry's) answer.
    pub fn answer(&self) -> &str {
        match self {
            PullError::Unreachable(answer) | PullError::Failed(answer) => answer,
        }
    }

    fn of(answer: String) -> PullError {
        if UNREACHABLE_SIGNS.iter().any(|sign| answer.contains(sign)) {
            PullError::Unreachable(answer)
        } else {
            PullError::Failed(answer)
        }
    }
}

/// A pull as the jobs waiting for it see it.
#[derive(Debug, Clone)]
enum PullState {
    /// Bytes downloaded so far, in percent of the layers known so far.
    Progress(u8),
    Done(Result<(), PullError>),
}

/// The pulls under way, by image reference: a job needing an image that is being pulled waits
/// for that pull instead of starting its own.
#[derive(Default)]
pub struct Pulls {
    running: Arc<Mutex<Running>>,
}

type Running = HashMap<String, watch::Receiver<PullState>>;

impl Pulls {
    /// Pulls `reference` (`repository:tag`), or joins the pull of it under way; `told` hears the
    /// progress, a few times per pull. The pull goes on when the caller stops waiting.
    pub async fn pull(
        &self,
        docker: &Docker,
        reference: &str,
        credentials: Option<DockerCredentials>,
        told: &(dyn Fn(u8) + Sync),
    ) -> Result<(), PullError> {
        let mut state = {
            let mut running = lock(&self.running);
            match running.get(reference) {
                Some(state) => state.clone(),
                None => {
                    let (sender, state) = watch::channel(PullState::Progress(0));
                    running.insert(reference.to_string(), state.clone());
                    let docker = docker.clone();
                    let reference = reference.to_string();
                    let running = Arc::clone(&self.running);
                    tokio::spawn(async move {
                        let done = pull(&docker, &reference, credentials, &sender).await;
                        // Forgotten before it is told: the next job needing the image inspects
                        // it anew.
                        lock(&running).remove(&reference);
                        sender.send_replace(PullState::Done(done));
                    });
                    state
                }
            }
        };
        let mut step = 0;
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                PullState::Done(done) => return done,
                PullState::Progress(percent) => {
                    let passed = PROGRESS_STEPS.iter().filter(|s| percent >= **s).count();
                    if passed > step {
                        step = passed;
                        told(percent);
                    }
                }
            }
            if state.changed().await.is_err() {
                // The pull's task is gone; its last state is still there to read.
                if let PullState::Done(done) = state.borrow().clone() {
                    return done;
                }
                return Err(PullError::Failed(
                    "the pull stopped without an answer".into(),
                ));
            }
        }
    }
}

fn lock(running: &Mutex<Running>) -> std::sync::MutexGuard<'_, Running> {
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One pull through the engine, its progress sent to `progress`.
async fn pull(
    docker: &Docker,
    reference: &str,
    credentials: Option<DockerCredentials>,
    progress: &watch::Sender<PullState>,
) -> Result<(), PullError> {
    let (repository, tag) = split_reference(reference);
    let options = CreateImageOptionsBuilder::default()
        .from_image(repository)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(options), None, credentials);
    // Per layer: bytes downloaded and its size.
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(PullError::of(error))
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(PullError::of(message))
            }
            Err(error) => return Err(PullError::of(error.to_string())),
        };
        if let Some(detail) = info.error_detail {
            let message = detail.message.unwrap_or_else(|| "unknown error".into());
            return Err(PullError::of(message));
        }
        let (Some(layer), Some(status)) = (info.id, info.status) else {
            continue;
        };
        let entry = layers.entry(layer).or_insert((0, 0));
        match status.as_str() {
            "Downloading" => {
                if let Some(detail) = info.progress_detail {
                    entry.0 = detail.current.unwrap_or(entry.0);
                    entry.1 = detail.total.unwrap_or(entry.1);
                }
            }
            "Download complete" | "Pull complete" | "Already exists" => entry.0 = entry.1.max(1),
            _ => continue,
        }
        let (done, total) = layers.values().fold((0i64, 0i64), |(d, t), (done, size)| {
            (d + done, t + size.max(done))
        });
        if total > 0 {
            let percent = (done.saturating_mul(100) / total).clamp(0, 100) as u8;
            progress.send_if_modified(|state| match state {
                PullState::Progress(before) if *before < percent => {
                    *before = percent;
                    true
                }
                _ => false,
            });
        }
    }
    Ok(())
}

/// The credentials `settings.registries` give for the registry `component`'s image comes from
/// (`None` for a local image, or a registry without credentials).
pub fn credentials(
    component: &Component,
    settings: &Settings,
) -> Result<Option<DockerCredentials>, CredentialsError> {
    let ImageSource::Registry { host, .. } = &component.source else {
        return Ok(None);
    };
    let login = settings.registry(host).map(Registry::login).transpose()?;
    Ok(login.map(|(username, password)| DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(host.clone()),
        ..Default::default()
    }))
}

/// `repository` and `tag` of `repository:tag` (a port in the host is not a tag).
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (reference, "latest"),
    }
}

/// Whether an image's `RepoDigests` (`repository@sha256:<hex>`) hold `digest` (hex).
pub fn has_digest(repo_digests: &[String], digest: &str) -> bool {
    repo_digests
        .iter()
        .any(|entry| entry.rsplit_once("@sha256:").map(|(_, hex)| hex) == Some(digest))
}

/// The platform's printable form of an image name of a registry (`result.images`): the name
/// without its first path segment (`quay.io/keboola/x:1` -> `keboola/x:1`).
pub fn printable(name: &str) -> &str {
    name.split_once('/').map_or(name, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_at_the_port() {
        assert_eq!(
            split_reference("127.0.0.1:5000/x/y:1.0"),
            ("127.0.0.1:5000/x/y", "1.0")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x", "latest")
        );
        assert_eq!(split_reference("keboola/x:latest"), ("keboola/x", "latest"));
    }

    #[test]
    fn digests_match_by_their_hex() {
        let digests = ["127.0.0.1:5000/x@sha256:abc".to_string()];
        assert!(has_digest(&digests, "abc"));
        assert!(!has_digest(&digests, "ab"));
        assert!(!has_digest(&[], "abc"));
    }

    #[test]
    fn printable_names_lose_their_first_segment() {
        assert_eq!(printable("quay.io/keboola/x:1"), "keboola/x:1");
        assert_eq!(printable("127.0.0.1:5000/x@sha256:ab"), "x@sha256:ab");
        assert_eq!(printable("keboola/docker-demo:1"), "docker-demo:1");
        assert_eq!(printable("alone:1"), "alone:1");
    }

    #[test]
    fn an_unreachable_registry_is_told_from_one_that_answers() {
        let refused =
            "Get \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused";
        assert_eq!(
            PullError::of(refused.into()),
            PullError::Unreachable(refused.into())
        );
        let failed = "received unexpected HTTP status: 500 Internal Server Error";
        assert_eq!(
            PullError::of(failed.into()),
            PullError::Failed(failed.into())
        );
    }
}
