//! Wires settings, store, runner and executor, queue and HTTP server into one running daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::channels::Channels;
use crate::configurations::Configurations;
use crate::http::webhook::{WebhookError, Webhooks};
use crate::http::{Services, Surface};
use crate::mail::{MailError, Mailer};
use crate::notifications::Notifications;
use crate::queue::{Queue, QueueError};
use crate::runner::{executor, Executor, Runner, RunnerError};
use crate::secrets::{Secrets, SecretsError};
use crate::settings::{ExecutorKind, ImageSource, Network, Settings};
use crate::storage::{Storage, StorageError};
use crate::store::{Store, StoreError};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create data_dir {path}; choose a writable `data_dir`")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}; choose another `{key}` address or stop what uses it")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot settle the jobs of the previous run")]
    Recover(#[from] QueueError),
    #[error(
        "cannot start the daemon's async runtime (threads, timers, I/O); check the process limits"
    )]
    Runtime(#[source] std::io::Error),
    #[error("the daemon's thread stopped unexpectedly")]
    Crashed,
    #[error(
        "cannot read setting `trusted_ca_file` {path}; give a readable PEM file of CA certificates"
    )]
    TrustedCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// Logs which registered images the engine lacks and how each will be obtained (a warning, not
/// fatal: a job pulls its image when it needs it, or fails saying it is missing).
async fn check_images(executor: Arc<dyn Executor>, settings: Arc<Settings>) {
    let components = &settings.components;
    let missing = match executor.missing_images(components).await {
        Ok(missing) => missing,
        Err(error) => {
            let error = crate::error::chain(&error);
            tracing::warn!(%error, "cannot check which component images are in the Docker engine");
            return;
        }
    };
    for (component, image) in missing {
        match &component.source {
            ImageSource::Registry { host, .. } => tracing::warn!(
                component = %component.id,
                %image,
                "image missing from the Docker engine: it will be pulled from {host} when a job needs it"
            ),
            ImageSource::Local => tracing::warn!(
                component = %component.id,
                %image,
                "image missing from the Docker engine and jobq cannot obtain it (a local image): \
                 its jobs will fail until it is built or loaded"
            ),
        }
    }
}

/// Creates the network of `no-internet` components when one is registered and the engine lacks
/// it (a warning, not fatal: each such job makes sure of it again before its container).
async fn create_networks(runner: Arc<Runner>, settings: Arc<Settings>) {
    let wanted = settings
        .components
        .iter()
        .any(|component| component.network == Network::NoInternet);
    if !wanted {
        return;
    }
    let created = match runner.docker().await {
        Ok(docker) => {
            runner
                .ensure_network(&docker, &settings.no_internet_network)
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = created {
        let error = crate::error::chain(&error);
        tracing::warn!(%error, network = %settings.no_internet_network, "cannot make sure of the no-internet network");
    }
}

/// Warns that the local engine ignores the `placement` of components (a Swarm's constraints).
fn warn_unused_placement(settings: &Settings) {
    if settings.executor != ExecutorKind::Docker {
        return;
    }
    let placed: Vec<&str> = settings
        .components
        .iter()
        .filter(|component| !component.placement.is_empty())
        .map(|component| component.id.as_str())
        .collect();
    if !placed.is_empty() {
        tracing::warn!(
            components = %placed.join(", "),
            "`placement` is ignored with executor = \"docker\": it places services on a swarm"
        );
    }
}

/// Runs the daemon on the current (multi-threaded) runtime until `shutdown` is cancelled.
/// `ready` is told the bound address and the store's instance id once the API answers.
pub async fn run(
    settings: Settings,
    ready: impl FnOnce(SocketAddr, &str),
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    for warning in &settings.deprecations {
        tracing::warn!("{warning}");
    }
    // Before anything is written: a trusted_ca_file, [smtp] or executor that cannot be used
    // stops here.
    let channels = channels(&settings)?;
    executor::check(&settings)?;
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| DaemonError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let secrets = Arc::new(Secrets::open(
        &settings.data_dir,
        settings.encryption_key.as_ref(),
    )?);
    let store = Arc::new(Store::open_with_cache(
        &settings.database_path(),
        settings.cache_size_bytes,
    )?);
    let instance_id = store.instance_id().to_string();
    let runner = Arc::new(Runner::new(settings.docker_host.as_deref(), &instance_id)?);
    let executor = executor::connect(&settings, Arc::clone(&runner), &instance_id)?;
    warn_unused_placement(&settings);
    executor.check_data_dir(&settings).await?;
    let (listener, addr) = bind("listen", settings.listen).await?;
    let metrics_listener = match settings.metrics_listen {
        Some(address) => Some(bind("metrics_listen", address).await?),
        None => None,
    };
    let mut settings = settings;
    if settings.public_url == format!("http://{}", settings.listen) {
        // The default base follows the real port when listening on port 0.
        settings.public_url = format!("http://{addr}");
    }
    let settings = Arc::new(settings);
    tokio::spawn(check_images(Arc::clone(&executor), Arc::clone(&settings)));
    tokio::spawn(create_networks(Arc::clone(&runner), Arc::clone(&settings)));
    let storage = Arc::new(Storage::open(Arc::clone(&store), &settings.data_dir)?);
    let actions = Actions::new(
        Arc::clone(&settings),
        Arc::clone(&secrets),
        Arc::clone(&runner),
        shutdown.child_token(),
    );
    let queue = Queue::new(
        Arc::clone(&store),
        Arc::clone(&storage),
        Arc::clone(&secrets),
        Arc::clone(&settings),
        executor,
    );
    queue.set_channels(Arc::clone(&channels));
    let scheduler = match queue.recover().await {
        // A full or failing disk: serve (reads work, writes answer 507/503) and recover once
        // the store takes writes again.
        Err(QueueError::Store(error)) if error.is_host_fault() => {
            tracing::warn!(%error, "recovery waits until the store takes writes");
            tokio::spawn(Arc::clone(&queue).recover_then_schedule(shutdown.clone()))
        }
        recovered => {
            recovered?;
            tokio::spawn(Arc::clone(&queue).run_scheduler(shutdown.clone()))
        }
    };
    // Before any new action can start: what actions of an earlier process left goes.
    let leftovers = std::time::Duration::from_secs(10);
    let _ = tokio::time::timeout(leftovers, actions.remove_leftovers()).await;
    let notifications = Notifications::new(Arc::clone(&store), Arc::clone(&settings), channels);
    let deliveries = tokio::spawn(Arc::clone(&notifications).run(shutdown.clone()));
    tracing::info!(instance = %instance_id, %addr, "jobq is listening");
    ready(addr, &instance_id);
    let services = Services {
        configurations: Configurations::new(store, Arc::clone(&secrets), Arc::clone(&settings)),
        settings,
        queue,
        storage,
        secrets,
        actions: Arc::clone(&actions),
        notifications,
        sessions: Default::default(),
    };
    let services = Arc::new(services);
    let metrics = metrics_listener.map(|(listener, addr)| {
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let (services, shutdown) = (Arc::clone(&services), shutdown.clone());
        tokio::spawn(crate::http::serve(
            listener,
            services,
            Surface::Metrics,
            shutdown,
        ))
    });
    crate::http::serve(listener, services, Surface::Api, shutdown).await;
    // Running actions were stopped with the shutdown; their containers and folders go now.
    actions.stop_all().await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = scheduler.await;
    let _ = deliveries.await;
    tracing::info!("jobq stopped");
    Ok(())
}

/// How notifications and flows' notification tasks are sent: the HTTP layer's webhook client
/// (its error as one line) and, with `[smtp]`, the SMTP client; both trust `trusted_ca_file`.
fn channels(settings: &Settings) -> Result<Arc<Channels>, DaemonError> {
    let trusted_ca = match &settings.trusted_ca_file {
        Some(path) => Some(
            std::fs::read(path).map_err(|source| DaemonError::TrustedCa {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let webhooks = Webhooks::new(trusted_ca.as_deref())?;
    let mail = match &settings.smtp {
        Some(smtp) => Some(Mailer::new(smtp, trusted_ca.as_deref())?),
        None => None,
    };
    let post = Arc::new(move |url: String, body: serde_json::Value| {
        let webhooks = webhooks.clone();
        let sent = async move {
            webhooks
                .post_json(&url, &body)
                .await
                .map_err(|error| crate::error::chain(&error))
        };
        Box::pin(sent) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
    });
    Ok(Channels::new(post, mail))
}

/// A daemon on its own thread and runtime: what `jobq demo` and the tests start.
pub struct Daemon {
    addr: SocketAddr,
    instance_id: String,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), DaemonError>>>,
}

impl Daemon {
    /// Starts the daemon and returns once it listens.
    pub fn start(settings: Settings) -> Result<Daemon, DaemonError> {
        let shutdown = CancellationToken::new();
        // A std channel: the caller may be inside an async runtime, where blocking_recv panics.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("jobq-daemon".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(DaemonError::Runtime)?;
                runtime.block_on(run(
                    settings,
                    move |addr, instance: &str| {
                        let _ = ready_tx.send((addr, instance.to_string()));
                    },
                    token,
                ))
            })
            .map_err(|_| DaemonError::Crashed)?;
        match ready_rx.recv() {
            Ok((addr, instance_id)) => Ok(Daemon {
                addr,
                instance_id,
                shutdown,
                thread: Some(thread),
            }),
            Err(_) => Err(thread
                .join()
                .map_err(|_| DaemonError::Crashed)?
                .err()
                .unwrap_or(DaemonError::Crashed)),
        }
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store's instance id, which labels its containers.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Stops the daemon gracefully and waits until its store is closed.
    pub fn stop(mut self) -> Result<(), DaemonError> {
        self.shutdown_and_join()
    }

    fn shutdown_and_join(&mut self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| DaemonError::Crashed)?,
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shutdown_and_join();
    }
}

/// A listener on `addr` (setting `key`) and the address it got (port 0: a free one).
async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), DaemonError> {
    let error = |source| DaemonError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}
