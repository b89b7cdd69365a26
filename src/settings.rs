//! The daemon's settings: one TOML file, validated into typed values the rest of the code trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secrets::Key;

/// Settings after validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of each job's `url`, without a trailing slash.
    pub public_url: String,
    /// `None`: `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// Where jobs' containers run (`executor`, `[swarm]`).
    pub executor: ExecutorKind,
    pub max_concurrent_jobs: usize,
    pub max_body_bytes: usize,
    /// Time between SIGTERM and SIGKILL when a running job is killed.
    pub kill_grace: Duration,
    /// How long a finished job is kept (with its events, debug archives and the Storage files
    /// tagged with it) after it ended.
    pub job_retention: Duration,
    /// How long the folder of a finished job is kept.
    pub job_folder_retention: Duration,
    /// Time between two sweeps (expired jobs and folders, leftover containers).
    pub sweep_interval: Duration,
    /// Warnings about deprecated keys in use, logged when the daemon starts.
    pub deprecations: Vec<String>,
    /// `KBC_STACKID` given to components.
    pub stack_id: String,
    /// `(uid, gid)` the containers run as when the daemon is root (never root itself).
    pub container_user: (u32, u32),
    /// Component lines (stdout events) a job stores in full; past it lines are counted, one
    /// warning says how many were dropped, and each container's last lines are still stored.
    pub max_events_per_job: usize,
    /// Free bytes in `data_dir` below which no job starts (0: no check).
    pub min_free_space: u64,
    /// Bytes of the store's page cache (redb's, read and write together): most of the daemon's
    /// memory once the store is larger than it.
    pub cache_size_bytes: usize,
    /// How the daemon's log lines are written to stderr.
    pub log_format: LogFormat,
    /// A second address serving `GET /metrics` without a token (for a scraper that holds no
    /// API token); `None`: only the API's `/metrics`, with a token.
    pub metrics_listen: Option<SocketAddr>,
    pub project: Project,
    pub tokens: Vec<Token>,
    pub components: Vec<Component>,
    /// Credentials of image registries, by host.
    pub registries: Vec<Registry>,
    /// An image registry that cannot be reached keeps the job `created` (retried) instead of
    /// failing it.
    pub wait_for_registry: bool,
    /// The key `#` values are encrypted with; `None`: the key file in `data_dir`.
    pub encryption_key: Option<Key>,
    /// For a component developer's own machine: ad-hoc runs of unregistered images
    /// (`jobq run --image`), and application errors that show the component's stderr.
    pub dev_mode: bool,
    /// How long a synchronous action may run, from its container's start.
    pub action_time_limit: Duration,
    /// Synchronous actions running at once; more are refused with 503 and `Retry-After`.
    pub max_concurrent_actions: usize,
    /// What a schedule does at start-up about a fire missed while jobq was down.
    pub schedule_catch_up: CatchUp,
    /// The container types a job's `backend.containerType` names, by name.
    pub container_types: std::collections::BTreeMap<String, ContainerType>,
    /// The most memory (bytes) a job's container may ask for; more is a user error.
    pub max_container_memory: Option<i64>,
    /// The most CPUs a job's container may ask for; more is a user error.
    pub max_container_cpus: Option<f64>,
    /// The engine network of `no-internet` components, created by jobq when absent.
    pub no_internet_network: String,
    /// A PEM file of CA certificates trusted beside the system's by webhooks over https and
    /// the SMTP server's TLS (for receivers with certificates of an on-prem CA).
    pub trusted_ca_file: Option<PathBuf>,
    /// The SMTP server notification emails are sent through; `None`: email is recorded only.
    pub smtp: Option<Smtp>,
}

/// `executor`: where jobs' containers run. Synchronous actions always run on `docker_host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorKind {
    /// The Docker engine at `docker_host` (the default).
    Docker,
    /// A Docker Swarm cluster, through its manager (`[swarm]`).
    Swarm(Swarm),
}

/// `[swarm]`: the manager of the Docker Swarm cluster jobs run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swarm {
    /// `unix:///path/to/docker.sock` or `tcp://host:port`.
    pub manager: String,
    /// The client certificate, its key and the CA of a `tcp://` manager (TLS is required).
    pub tls: Option<SwarmTls>,
    /// How long a job's task may sit on a node the manager sees `Down` before the job ends
    /// with an application error naming the node.
    pub node_lost_timeout: Duration,
    /// An image with `/bin/sh` present on every node: the start-up probe that every node sees
    /// `data_dir` runs it.
    pub probe_image: String,
}

/// The PEM files of a TLS connection to a `tcp://` Swarm manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[smtp]`: the mail server notification emails go through.
#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// User name and password to log in with, when the server wants a login.
    pub login: Option<(String, String)>,
    /// The `From` address of every email.
    pub from: String,
}

/// `smtp.security`: how the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the host or a trusted network only).
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

// The password stays out of any debug output (and so out of logs).
impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "login",
                &self.login.as_ref().map(|(user, _)| (user, "[hidden]")),
            )
            .field("from", &self.from)
            .finish()
    }
}

/// A container type (`backend.containerType`): the factor of the component's memory and the
/// CPUs its containers get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerType {
    pub memory_factor: f64,
    pub cpus: f64,
}

/// The container type of a job that names none.
pub const DEFAULT_CONTAINER_TYPE: &str = "small";
/// The platform's container types with its values: the defaults of `[container_types]`.
const PLATFORM_CONTAINER_TYPES: [(&str, ContainerType); 4] = [
    (
        "xsmall",
        ContainerType {
            memory_factor: 0.5,
            cpus: 1.0,
        },
    ),
    (
        "small",
        ContainerType {
            memory_factor: 1.0,
            cpus: 2.0,
        },
    ),
    (
        "medium",
        ContainerType {
            memory_factor: 2.0,
            cpus: 4.0,
        },
    ),
    (
        "large",
        ContainerType {
            memory_factor: 7.1,
            cpus: 14.0,
        },
    ),
];

/// How a component's containers are confined (each hardening an operator may relax per
/// component); the same for its jobs, its actions and `jobq replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Confinement {
    /// Processes (tasks) the container may have at once; a fork past it fails.
    pub pids_limit: i64,
    /// Every capability dropped (`--cap-drop ALL`).
    pub drop_capabilities: bool,
    /// `no-new-privileges`: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// The image's root file system is read-only (`/data` and `/tmp` stay writable).
    pub read_only_rootfs: bool,
    /// `/tmp` as a tmpfs of this many bytes; `None`: the job's own `tmp/` folder.
    pub tmp_size: Option<i64>,
    /// The container runs as the image's own user, root included (the platform's
    /// `container-root-user` feature); otherwise as `container_user`, never root.
    pub root_user: bool,
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement {
            pids_limit: DEFAULT_PIDS_LIMIT,
            drop_capabilities: true,
            no_new_privileges: true,
            read_only_rootfs: false,
            tmp_size: None,
            root_user: false,
        }
    }
}

const DEFAULT_PIDS_LIMIT: i64 = 1024;

/// `log_format`: lines for people, or one JSON object a line for a log collector. Either way,
/// colours only on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `schedule_catch_up`: a fire missed while jobq was down happens once at start-up (however
/// many instants were missed), or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    Once,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    /// The id jobs of the main branch carry as `branchId`.
    pub default_branch_id: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub description: String,
    pub token: String,
}

// The secret stays out of any debug output (and so out of logs).
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("description", &self.description)
            .field("token", &"[hidden]")
            .finish()
    }
}

/// A registered component: which image runs it, where that image comes from, with which
/// limits (Keboola's component definition, the parts that matter on one host).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub id: String,
    /// The image's repository as the engine names it, registry host included when there is one
    /// (`local/x`, `keboola/x`, `quay.io/keboola/x`, `127.0.0.1:5000/x`).
    pub image: String,
    /// The tag a job runs unless it names its own.
    pub tag: String,
    pub source: ImageSource,
    pub memory_bytes: i64,
    pub process_timeout: Duration,
    pub network: Network,
    /// The component's own `image_parameters`, given to it in `config.json`.
    pub image_parameters: serde_json::Value,
    /// Output tables without a destination go to `<default_bucket_stage>.c-<component>-<config>`.
    pub default_bucket: bool,
    /// The actions `POST /actions` may run (the developer portal's `synchronous_actions`).
    pub synchronous_actions: Vec<String>,
    pub default_bucket_stage: BucketStage,
    /// The job's token goes to the component as `KBC_TOKEN` (with `KBC_URL`).
    pub forward_token: bool,
    pub confinement: Confinement,
    /// Swarm constraint expressions (`node.labels.jobq == true`) the component's services are
    /// placed by; the local engine ignores them.
    pub placement: Vec<String>,
}

impl Component {
    /// A development component running `image` (a whole reference, its tag included) with the
    /// default limits of a `[[components]]` entry: what `jobq run --image` runs in `dev_mode`.
    pub fn development(id: &str, image: &str) -> Component {
        let (image, tag) = match image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
            Some((image, tag)) => (image, tag),
            None => (image, "latest"),
        };
        Component {
            id: id.to_string(),
            image: image.to_string(),
            tag: tag.to_string(),
            memory_bytes: parse_memory(&default_memory()).unwrap_or(256_000_000),
            process_timeout: Duration::from_secs(default_process_timeout() as u64),
            network: Network::Bridge,
            image_parameters: serde_json::json!({}),
            default_bucket: false,
            synchronous_actions: Vec::new(),
            source: ImageSource::Local,
            default_bucket_stage: BucketStage::In,
            forward_token: false,
            confinement: Confinement::default(),
            placement: Vec::new(),
        }
    }

    /// `image:tag` as Docker names it.
    pub fn image_reference(&self, tag: &str) -> String {
        format!("{}:{}", self.image, tag)
    }
}

/// Where a component's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `image` and `tag`: built or loaded into the engine by hand, never pulled.
    Local,
    /// `definition`: pulled from the registry at `host` when the engine lacks it, or lacks
    /// `digest` (hex, without `sha256:`).
    Registry {
        host: String,
        digest: Option<String>,
    },
}

/// The host the engine pulls an image without a host in its name from (Docker Hub).
pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Bridge,
    None,
    /// Keboola's network without internet access: `no_internet_network`, an internal network
    /// of jobq's own.
    NoInternet,
}

/// The stage of a component's default bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketStage {
    In,
    Out,
}

impl BucketStage {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketStage::In => "in",
            BucketStage::Out => "out",
        }
    }
}

/// The credentials jobq logs in with to the image registry at `host`.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port]` as image names start with it; `docker.io` for Docker Hub.
    pub host: String,
    pub credentials: Credentials,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Password {
        username: String,
        password: String,
    },
    /// A Docker client's `config.json`, read at each pull (its `auths` entry of the host).
    DockerConfig(PathBuf),
}

// The password stays out of any debug output (and so out of logs).
impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = match &self.credentials {
            Credentials::Password { username, .. } => format!("{username} / [hidden]"),
            Credentials::DockerConfig(path) => path.display().to_string(),
        };
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("credentials", &credentials)
            .finish()
    }
}

/// Why a registry's credentials cannot be read from a Docker `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the Docker config file {path} of registry {host}; check `registries[].docker_config`")]
    Read {
        host: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the Docker config file {path} has no usable `auths` entry for registry {host}; log in \
         with `docker login {host}` or give `username` and `password` instead"
    )]
    Missing { host: String, path: PathBuf },
}

impl Registry {
    /// The user name and password to pull with.
    pub fn login(&self) -> Result<(String, String), CredentialsError> {
        match &self.credentials {
            Credentials::Password { username, password } => {
                Ok((username.clone(), password.clone()))
            }
            Credentials::DockerConfig(path) => {
                let text = std::fs::read(path).map_err(|source| CredentialsError::Read {
                    host: self.host.clone(),
                    path: path.clone(),
                    source,
                })?;
                docker_config_login(&text, &self.host).ok_or_else(|| CredentialsError::Missing {
                    host: self.host.clone(),
                    path: path.clone(),
                })
            }
        }
    }
}

/// The `auths` entry of `host` in a Docker `config.json`: `auth` (base64 of `user:password`),
/// else `username` and `password`. Its keys may be URLs (`https://host/v1/`).
fn docker_config_login(text: &[u8], host: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_slice(text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(key, entry)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or_default();
        let same = key == host || (host == DEFAULT_REGISTRY && key == "index.docker.io");
        same.then_some(entry)
    })?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some((user.to_string(), password.to_string()));
    }
    let field = |name: &str| entry.get(name)?.as_str().map(str::to_string);
    Some((field("username")?, field("password")?))
}

/// Why the settings file cannot be used. Each message names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "cannot read the settings file {path}; check the --config path and that jobq may read it"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{key}` is not valid: {message}")]
    Invalid { key: String, message: String },
}

impl Settings {
    /// Reads and validates a settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::parse(&text).map_err(|error| match error {
            SettingsError::Parse { message, .. } => SettingsError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates settings from TOML text.
    pub fn parse(text: &str) -> Result<Settings, SettingsError> {
        let raw: RawSettings = toml::from_str(text).map_err(|error| SettingsError::Parse {
            path: PathBuf::new(),
            message: error.to_string(),
        })?;
        raw.validate()
    }

    /// The secret of the token with `id`, if it is still listed.
    pub fn token_of(&self, id: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.token.as_str())
    }

    /// The credentials of the image registry at `host`, if the settings give any.
    pub fn registry(&self, host: &str) -> Option<&Registry> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// The registered component `id`, if any.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }

    /// The component a job of `id` with `config_data` runs: the registered one, else in
    /// `dev_mode` a development component of the image its `configData.runtime.image` names
    /// (jobq's extension for `jobq run --image`).
    pub fn job_component(
        &self,
        id: &str,
        config_data: &serde_json::Value,
    ) -> Option<std::borrow::Cow<'_, Component>> {
        if let Some(component) = self.component(id) {
            return Some(std::borrow::Cow::Borrowed(component));
        }
        let image = ad_hoc_image(config_data).filter(|_| self.dev_mode)?;
        Some(std::borrow::Cow::Owned(Component::development(id, image)))
    }

    /// Whether configurations of `id` may be stored and run: a `[[components]]` entry, or
    /// `keboola.orchestrator`, which jobq runs itself, or `keboola.scheduler`, whose
    /// configurations jobq keeps as schedules (they are never run as jobs).
    pub fn is_registered(&self, id: &str) -> bool {
        self.component(id).is_some()
            || id == crate::model::ORCHESTRATOR
            || id == crate::model::FLOW
            || id == crate::model::SCHEDULER
    }

    /// Where the redb file lives.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("jobq.redb")
    }

    /// The folder of one job (its `data/` and `tmp/` live inside).
    pub fn job_dir(&self, job_id: u64) -> PathBuf {
        self.data_dir.join("jobs").join(job_id.to_string())
    }
}

/// The unregistered image `configData.runtime.image` asks to run (`jobq run --image`), if any.
pub fn ad_hoc_image(config_data: &serde_json::Value) -> Option<&str> {
    config_data
        .pointer("/runtime/image")
        .and_then(serde_json::Value::as_str)
        .filter(|image| !image.trim().is_empty())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    public_url: Option<String>,
    docker_host: Option<String>,
    #[serde(default = "default_executor")]
    executor: String,
    #[serde(default = "default_max_concurrent_jobs")]
    max_concurrent_jobs: i64,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: i64,
    #[serde(default = "default_kill_grace_seconds")]
    kill_grace_seconds: i64,
    #[serde(default = "default_job_retention")]
    job_retention: String,
    job_folder_retention: Option<String>,
    /// Deprecated: `job_folder_retention`.
    job_folder_retention_hours: Option<i64>,
    sweep_interval: Option<String>,
    #[serde(default = "default_stack_id")]
    stack_id: String,
    #[serde(default = "default_container_user")]
    container_user: String,
    #[serde(default = "default_max_events_per_job")]
    max_events_per_job: i64,
    #[serde(default = "default_min_free_space")]
    min_free_space: String,
    #[serde(default = "default_cache_size_mib")]
    cache_size_mib: i64,
    #[serde(default = "default_log_format")]
    log_format: LogFormat,
    metrics_listen: Option<String>,
    #[serde(default = "default_schedule_catch_up")]
    schedule_catch_up: String,
    #[serde(default)]
    project: RawProject,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    components: Vec<RawComponent>,
    #[serde(default)]
    registries: Vec<RawRegistry>,
    #[serde(default)]
    wait_for_registry: bool,
    encryption_key: Option<String>,
    #[serde(default)]
    dev_mode: bool,
    #[serde(default = "default_action_time_limit")]
    action_time_limit: String,
    #[serde(default = "default_max_concurrent_actions")]
    max_concurrent_actions: i64,
    #[serde(default)]
    container_types: std::collections::BTreeMap<String, RawContainerType>,
    max_container_memory: Option<String>,
    max_container_cpus: Option<f64>,
    #[serde(default = "default_no_internet_network")]
    no_internet_network: String,
    trusted_ca_file: Option<PathBuf>,
    smtp: Option<RawSmtp>,
    swarm: Option<RawSwarm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwarm {
    manager: String,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_node_lost_timeout")]
    node_lost_timeout: String,
    probe_image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerType {
    memory_factor: Option<f64>,
    cpus: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<i64>,
    #[serde(default = "default_smtp_security")]
    security: String,
    username: Option<String>,
    password: Option<String>,
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    #[serde(default = "default_project_id")]
    id: String,
    #[serde(default = "default_project_name")]
    name: String,
    #[serde(default = "default_branch_id")]
    default_branch_id: String,
}

impl Default for RawProject {
    fn default() -> Self {
        RawProject {
            id: default_project_id(),
            name: default_project_name(),
            default_branch_id: default_branch_id(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    id: String,
    #[serde(default)]
    description: String,
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    id: String,
    /// A local image (with `tag`); `definition` names a registry's instead.
    image: Option<String>,
    tag: Option<String>,
    definition: Option<RawDefinition>,
    #[serde(default = "default_memory")]
    memory: String,
    #[serde(default = "default_process_timeout")]
    process_timeout: i64,
    #[serde(default = "default_network")]
    network: String,
    #[serde(default)]
    image_parameters: toml::Table,
    #[serde(default)]
    default_bucket: bool,
    #[serde(default)]
    synchronous_actions: Vec<String>,
    #[serde(default = "default_bucket_stage")]
    default_bucket_stage: String,
    #[serde(default)]
    forward_token: bool,
    #[serde(default = "default_pids_limit")]
    pids_limit: i64,
    #[serde(default = "default_true")]
    drop_capabilities: bool,
    #[serde(default = "default_true")]
    no_new_privileges: bool,
    #[serde(default)]
    read_only_rootfs: bool,
    tmp_size: Option<String>,
    #[serde(default)]
    container_root_user: bool,
    #[serde(default)]
    placement: Vec<String>,
}

/// Keboola's `data.definition` of a component.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    #[serde(rename = "type")]
    kind: String,
    uri: String,
    #[serde(default = "default_definition_tag")]
    tag: String,
    #[serde(default)]
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    host: String,
    username: Option<String>,
    password: Option<String>,
    docker_config: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_max_concurrent_jobs() -> i64 {
    4
}
fn default_max_body_bytes() -> i64 {
    10 * 1024 * 1024
}
fn default_kill_grace_seconds() -> i64 {
    10
}
fn default_job_retention() -> String {
    "90d".into()
}
fn default_job_folder_retention() -> String {
    "7d".into()
}
/// The longest time between two sweeps, unless `sweep_interval` says otherwise.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
fn default_action_time_limit() -> String {
    "30s".into()
}
fn default_max_concurrent_actions() -> i64 {
    4
}
fn default_stack_id() -> String {
    "jobq.local".into()
}
fn default_container_user() -> String {
    "1000:1000".into()
}
fn default_min_free_space() -> String {
    "256MiB".to_string()
}

fn default_max_events_per_job() -> i64 {
    1_000_000
}
/// The store's page cache in MiB unless `cache_size_mib` says otherwise.
pub const DEFAULT_CACHE_SIZE_MIB: i64 = 32;
fn default_cache_size_mib() -> i64 {
    DEFAULT_CACHE_SIZE_MIB
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_schedule_catch_up() -> String {
    "once".into()
}
fn default_smtp_security() -> String {
    "starttls".into()
}
fn default_project_id() -> String {
    "1".into()
}
fn default_project_name() -> String {
    "Local".into()
}
fn default_branch_id() -> String {
    "1".into()
}
fn default_memory() -> String {
    "256m".into()
}
fn default_process_timeout() -> i64 {
    3600
}
fn default_network() -> String {
    "bridge".into()
}
fn default_bucket_stage() -> String {
    "in".into()
}
fn default_definition_tag() -> String {
    "latest".into()
}
fn default_pids_limit() -> i64 {
    DEFAULT_PIDS_LIMIT
}
fn default_true() -> bool {
    true
}
fn default_node_lost_timeout() -> String {
    "60s".into()
}

fn default_executor() -> String {
    "docker".into()
}

fn default_no_internet_network() -> String {
    "jobq-no-internet".into()
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn positive(key: &str, value: i64) -> Result<i64, SettingsError> {
    if value < 1 {
        return Err(invalid(key, format!("must be at least 1, not {value}")));
    }
    Ok(value)
}

/// The duration setting `key` written as `text`.
fn duration(key: &str, text: &str) -> Result<Duration, SettingsError> {
    parse_duration(text).ok_or_else(|| {
        invalid(
            key,
            format!(
                "\"{text}\" is not a duration like \"90d\", \"12h\", \"15m\" or \"30s\" \
                 (a whole number above 0, at most 36500d)"
            ),
        )
    })
}

/// `cache_size_mib` in bytes: at least 1 MiB, at most 1 TiB.
fn cache_size_bytes(mib: i64) -> Result<usize, SettingsError> {
    const MAX_MIB: i64 = 1 << 20;
    let mib = positive("cache_size_mib", mib)?;
    if mib > MAX_MIB {
        return Err(invalid(
            "cache_size_mib",
            format!("must be at most {MAX_MIB} (1 TiB), not {mib}"),
        ));
    }
    Ok((mib as usize) << 20)
}

fn not_empty(key: String, value: String) -> Result<String, SettingsError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(value)
}

/// `256m`, `1g`, `512k` or plain bytes; `k`/`m`/`g` are powers of ten.
pub fn parse_memory(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, factor) = match text.char_indices().last()? {
        (i, 'k') => (&text[..i], 1_000),
        (i, 'm') => (&text[..i], 1_000_000),
        (i, 'g') => (&text[..i], 1_000_000_000),
        _ => (text.as_str(), 1),
    };
    let value: i64 = digits.parse().ok()?;
    (value > 0).then(|| value.checked_mul(factor)).flatten()
}

/// A positive whole number and a unit: `30s`, `15m`, `12h`, `90d` (seconds, minutes, hours,
/// days); surrounding blanks are ignored.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (i, unit) = text.char_indices().last()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &text[..i];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let total = value.checked_mul(seconds).filter(|&total| total > 0)?;
    // Far beyond any retention, and still a valid time offset in microseconds.
    (total <= 100 * 365 * 86_400).then(|| Duration::from_secs(total))
}

/// `key`'s address, like 127.0.0.1:8080.
fn socket_address(key: &str, text: &str) -> Result<SocketAddr, SettingsError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("\"{text}\" is not an address like 127.0.0.1:8080"),
        )
    })
}

impl RawSettings {
    fn validate(self) -> Result<Settings, SettingsError> {
        let listen = socket_address("listen", &self.listen)?;
        let metrics_listen = match &self.metrics_listen {
            Some(address) => Some(socket_address("metrics_listen", address)?),
            None => None,
        };
        let public_url = match self.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_string()
            }
            Some(url) => {
                return Err(invalid(
                    "public_url",
                    format!("\"{url}\" must start with http:// or https://"),
                ))
            }
            None => format!("http://{listen}"),
        };
        if let Some(host) = &self.docker_host {
            let known = ["unix://", "tcp://", "http://", "https://"];
            if !known.iter().any(|scheme| host.starts_with(scheme)) {
                return Err(invalid(
                    "docker_host",
                    format!("\"{host}\" must start with unix://, tcp:// or http://"),
                ));
            }
        }
        let encryption_key = match &self.encryption_key {
            None => None,
            // The message never repeats the value: it may be the real key, mistyped.
            Some(text) => Some(Key::from_hex(text).ok_or_else(|| {
                invalid(
                    "encryption_key",
                    "must be 64 hex characters (32 random bytes, as `openssl rand -hex 32` \
                     prints)",
                )
            })?),
        };
        let job_retention = duration("job_retention", &self.job_retention)?;
        let mut deprecations = Vec::new();
        let job_folder_retention =
            match (&self.job_folder_retention, self.job_folder_retention_hours) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "job_folder_retention_hours",
                        "is replaced by `job_folder_retention`; give only `job_folder_retention`",
                    ))
                }
                (Some(text), None) => duration("job_folder_retention", text)?,
                (None, Some(hours)) => {
                    let hours = positive("job_folder_retention_hours", hours)?;
                    deprecations.push(format!(
                        "setting `job_folder_retention_hours` is deprecated: write \
                     `job_folder_retention = \"{hours}h\"` instead"
                    ));
                    duration("job_folder_retention_hours", &format!("{hours}h"))?
                }
                (None, None) => duration("job_folder_retention", &default_job_folder_retention())?,
            };
        let sweep_interval = match &self.sweep_interval {
            Some(text) => duration("sweep_interval", text)?,
            // Half the shortest retention, so nothing outlives it by much more than half.
            None => (job_retention.min(job_folder_retention) / 2)
                .clamp(Duration::from_secs(1), MAX_SWEEP_INTERVAL),
        };
        let container_user = self
            .container_user
            .split_once(':')
            .and_then(|(uid, gid)| Some((uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?)))
            .filter(|(uid, _)| *uid != 0)
            .ok_or_else(|| {
                invalid(
                    "container_user",
                    format!(
                        "\"{}\" must be a non-root numeric uid:gid like 1000:1000",
                        self.container_user
                    ),
                )
            })?;

        let mut tokens = Vec::new();
        for (i, raw) in self.tokens.into_iter().enumerate() {
            tokens.push(Token {
                id: not_empty(format!("tokens[{i}].id"), raw.id)?,
                description: raw.description,
                token: not_empty(format!("tokens[{i}].token"), raw.token)?,
            });
        }
        if tokens.is_empty() {
            return Err(invalid(
                "tokens",
                "add at least one [[tokens]] entry: every API request needs a token",
            ));
        }

        let components = unique_entries(
            "components",
            self.components,
            RawComponent::validate,
            ("id", |c| &c.id),
        )?;
        let registries = unique_entries(
            "registries",
            self.registries,
            RawRegistry::validate,
            ("host", |r| &r.host),
        )?;

        Ok(Settings {
            listen,
            data_dir: self.data_dir,
            public_url,
            docker_host: self.docker_host,
            executor: executor(&self.executor, self.swarm)?,
            max_concurrent_jobs: positive("max_concurrent_jobs", self.max_concurrent_jobs)?
                as usize,
            max_body_bytes: positive("max_body_bytes", self.max_body_bytes)? as usize,
            kill_grace: Duration::from_secs(
                positive("kill_grace_seconds", self.kill_grace_seconds)? as u64,
            ),
            job_retention,
            job_folder_retention,
            sweep_interval,
            deprecations,
            stack_id: not_empty("stack_id".into(), self.stack_id)?,
            container_user,
            max_events_per_job: positive("max_events_per_job", self.max_events_per_job)? as usize,
            min_free_space: crate::disk::parse_size(&self.min_free_space).ok_or_else(|| {
                invalid(
                    "min_free_space",
                    format!(
                        "\"{}\" is not a size like \"256MiB\", \"2GiB\" or \"0\" (no check)",
                        self.min_free_space
                    ),
                )
            })?,
            cache_size_bytes: cache_size_bytes(self.cache_size_mib)?,
            log_format: self.log_format,
            metrics_listen,
            schedule_catch_up: match self.schedule_catch_up.as_str() {
                "once" => CatchUp::Once,
                "skip" => CatchUp::Skip,
                other => {
                    return Err(invalid(
                        "schedule_catch_up",
                        format!("must be \"once\" or \"skip\", not \"{other}\""),
                    ))
                }
            },
            project: Project {
                id: not_empty("project.id".into(), self.project.id)?,
                name: self.project.name,
                default_branch_id: not_empty(
                    "project.default_branch_id".into(),
                    self.project.default_branch_id,
                )?,
            },
            tokens,
            components,
            registries,
            wait_for_registry: self.wait_for_registry,
            encryption_key,
            dev_mode: self.dev_mode,
            action_time_limit: duration("action_time_limit", &self.action_time_limit)?,
            max_concurrent_actions: positive("max_concurrent_actions", self.max_concurrent_actions)?
                as usize,
            container_types: container_types(self.container_types)?,
            max_container_memory: self
                .max_container_memory
                .map(|text| {
                    parse_memory(&text).ok_or_else(|| {
                        invalid(
                            "max_container_memory",
                            format!("\"{text}\" is not a size like 256m or 8g"),
                        )
                    })
                })
                .transpose()?,
            max_container_cpus: self
                .max_container_cpus
                .map(|cpus| cpu_count("max_container_cpus", cpus))
                .transpose()?,
            no_internet_network: not_empty("no_internet_network".into(), self.no_internet_network)?,
            trusted_ca_file: self.trusted_ca_file,
            smtp: self.smtp.map(RawSmtp::validate).transpose()?,
        })
    }
}

/// `executor` and `[swarm]` together: a swarm needs its manager, and `[swarm]` without
/// `executor = "swarm"` is a mistake worth telling.
fn executor(kind: &str, swarm: Option<RawSwarm>) -> Result<ExecutorKind, SettingsError> {
    match (kind, swarm) {
        ("docker", None) => Ok(ExecutorKind::Docker),
        ("docker", Some(_)) => Err(invalid(
            "swarm",
            "is used only with `executor = \"swarm\"`; set that or remove [swarm]",
        )),
        ("swarm", Some(swarm)) => Ok(ExecutorKind::Swarm(swarm.validate()?)),
        ("swarm", None) => Err(invalid(
            "executor",
            "\"swarm\" needs a [swarm] section with the manager's `manager` address",
        )),
        (other, _) => Err(invalid(
            "executor",
            format!("\"{other}\" is not one of docker, swarm"),
        )),
    }
}

impl RawSwarm {
    fn validate(self) -> Result<Swarm, SettingsError> {
        let files = (self.ca_file, self.cert_file, self.key_file);
        let tls =
            if self.manager.starts_with("unix://") {
                if files != (None, None, None) {
                    return Err(invalid(
                        "swarm.ca_file",
                        "TLS files are for a tcp:// manager; remove them for a unix:// one",
                    ));
                }
                None
            } else if self.manager.starts_with("tcp://") {
                match files {
                    (Some(ca_file), Some(cert_file), Some(key_file)) => Some(SwarmTls {
                        ca_file,
                        cert_file,
                        key_file,
                    }),
                    _ => return Err(invalid(
                        "swarm.ca_file",
                        "a tcp:// manager needs TLS: give `ca_file`, `cert_file` and `key_file` \
                         (PEM files of the manager's CA and of jobq's client certificate)",
                    )),
                }
            } else {
                return Err(invalid(
                    "swarm.manager",
                    format!("\"{}\" must start with unix:// or tcp://", self.manager),
                ));
            };
        let probe_image = self.probe_image.ok_or_else(|| {
            invalid(
                "swarm.probe_image",
                "is missing: name an image with /bin/sh that every node has (such as \
                 busybox:1.36); jobq runs it on every node at start to check that each sees \
                 `data_dir`",
            )
        })?;
        Ok(Swarm {
            manager: self.manager,
            tls,
            node_lost_timeout: duration("swarm.node_lost_timeout", &self.node_lost_timeout)?,
            probe_image: not_empty("swarm.probe_image".into(), probe_image)?,
        })
    }
}

impl RawSmtp {
    fn validate(self) -> Result<Smtp, SettingsError> {
        let security = match self.security.as_str() {
            "none" => SmtpSecurity::None,
            "starttls" => SmtpSecurity::StartTls,
            "tls" => SmtpSecurity::Tls,
            other => {
                return Err(invalid(
                    "smtp.security",
                    format!("\"{other}\" is not one of none, starttls, tls"),
                ))
            }
        };
        let default_port = match security {
            SmtpSecurity::None => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        };
        let port = match self.port {
            None => default_port,
            Some(port) => u16::try_from(port)
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| invalid("smtp.port", format!("{port} is not a port (1-65535)")))?,
        };
        let login = match (self.username, self.password) {
            (Some(username), Some(password)) => {
                Some((not_empty("smtp.username".into(), username)?, password))
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "smtp.username",
                    "give both `username` and `password`, or neither (a server without login)",
                ))
            }
        };
        let from = not_empty("smtp.from".into(), self.from)?;
        if !from.contains('@') {
            return Err(invalid(
                "smtp.from",
                format!("\"{from}\" is not an email address like jobq@example.com"),
            ));
        }
        Ok(Smtp {
            host: not_empty("smtp.host".into(), self.host)?,
            port,
            security,
            login,
            from,
        })
    }
}

/// `[container_types.<name>]`: the platform's four types, each value replaceable.
fn container_types(
    raw: std::collections::BTreeMap<String, RawContainerType>,
) -> Result<std::collections::BTreeMap<String, ContainerType>, SettingsError> {
    let mut types: std::collections::BTreeMap<String, ContainerType> = PLATFORM_CONTAINER_TYPES
        .iter()
        .map(|(name, kind)| (name.to_string(), *kind))
        .collect();
    for (name, given) in raw {
        let key = |field: &str| format!("container_types.{name}.{field}");
        let Some(kind) = types.get_mut(&name) else {
            return Err(invalid(
                format!("container_types.{name}"),
                "is not a container type; the types are xsmall, small, medium and large",
            ));
        };
        if let Some(factor) = given.memory_factor {
            if !(factor > 0.0 && factor.is_finite()) {
                return Err(invalid(
                    key("memory_factor"),
                    format!("must be above 0, not {factor}"),
                ));
            }
            kind.memory_factor = factor;
        }
        if let Some(cpus) = given.cpus {
            kind.cpus = cpu_count(&key("cpus"), cpus)?;
        }
    }
    Ok(types)
}

/// A CPU count (fractions allowed, as `docker run --cpus`): at least 0.01.
fn cpu_count(key: &str, cpus: f64) -> Result<f64, SettingsError> {
    if !(cpus >= 0.01 && cpus.is_finite()) {
        return Err(invalid(key, format!("must be at least 0.01, not {cpus}")));
    }
    Ok(cpus)
}

/// The entries of the list setting `list` (`components`, `registries`), each validated with its
/// index; a second entry with the same `key` (the field `field`) is refused.
fn unique_entries<R, T>(
    list: &str,
    raws: Vec<R>,
    validate: fn(R, usize) -> Result<T, SettingsError>,
    (field, key): (&str, fn(&T) -> &String),
) -> Result<Vec<T>, SettingsError> {
    let mut entries: Vec<T> = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let entry = validate(raw, i)?;
        if entries.iter().any(|e| key(e) == key(&entry)) {
            return Err(invalid(
                format!("{list}[{i}].{field}"),
                format!("\"{}\" is listed twice", key(&entry)),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

impl RawComponent {
    /// The component of `components[i]`.
    fn validate(self, i: usize) -> Result<Component, SettingsError> {
        let key = |name: &str| format!("components[{i}].{name}");
        let id = not_empty(key("id"), self.id)?;
        let (image, tag, source) = match (self.definition, self.image, self.tag) {
            (Some(definition), None, None) => definition.validate(&key("definition"))?,
            (None, Some(image), Some(tag)) => (
                not_empty(key("image"), image)?,
                not_empty(key("tag"), tag)?,
                ImageSource::Local,
            ),
            (Some(_), _, _) => {
                return Err(invalid(
                    key("definition"),
                    "give either `definition` (an image from a registry) or `image` and `tag` \
                     (a local image), not both",
                ))
            }
            (None, None, _) => {
                return Err(invalid(
                    key("definition"),
                    "is missing: give `definition = { type, uri, tag }` (an image from a \
                     registry) or `image` and `tag` (a local image)",
                ))
            }
            (None, Some(_), None) => return Err(invalid(key("tag"), "is missing beside `image`")),
        };
        let memory_bytes = parse_memory(&self.memory).ok_or_else(|| {
            invalid(
                key("memory"),
                format!("\"{}\" is not a size like 256m or 1g", self.memory),
            )
        })?;
        let pids_limit = positive(&key("pids_limit"), self.pids_limit)?;
        let tmp_size = self
            .tmp_size
            .map(|text| {
                parse_memory(&text).ok_or_else(|| {
                    invalid(
                        key("tmp_size"),
                        format!("\"{text}\" is not a size like 64m or 1g"),
                    )
                })
            })
            .transpose()?;
        let network = match self.network.as_str() {
            "bridge" => Network::Bridge,
            "none" => Network::None,
            "no-internet" => Network::NoInternet,
            other => {
                return Err(invalid(
                    key("network"),
                    format!("\"{other}\" is not one of bridge, none, no-internet"),
                ))
            }
        };
        let default_bucket_stage = match self.default_bucket_stage.as_str() {
            "in" => BucketStage::In,
            "out" => BucketStage::Out,
            other => {
                return Err(invalid(
                    key("default_bucket_stage"),
                    format!("\"{other}\" is not one of in, out"),
                ))
            }
        };
        let timeout = positive(&key("process_timeout"), self.process_timeout)?;
        let image_parameters = serde_json::to_value(&self.image_parameters)
            .map_err(|e| invalid(key("image_parameters"), e.to_string()))?;
        if let Some(bad) = self.placement.iter().find(|c| !is_constraint(c)) {
            return Err(invalid(
                key("placement"),
                format!(
                    "\"{bad}\" is not a Swarm constraint like \"node.labels.jobq == true\" \
                     (an attribute, == or !=, a value)"
                ),
            ));
        }
        Ok(Component {
            id,
            image,
            tag,
            source,
            memory_bytes,
            process_timeout: Duration::from_secs(timeout as u64),
            network,
            image_parameters,
            default_bucket: self.default_bucket,
            default_bucket_stage,
            forward_token: self.forward_token,
            synchronous_actions: self.synchronous_actions,
            confinement: Confinement {
                pids_limit,
                drop_capabilities: self.drop_capabilities,
                no_new_privileges: self.no_new_privileges,
                read_only_rootfs: self.read_only_rootfs,
                tmp_size,
                root_user: self.container_root_user,
            },
            placement: self.placement,
        })
    }
}

/// Whether `text` has the shape of a Swarm placement constraint: an attribute, `==` or `!=`,
/// a value (the manager checks the attribute itself when a service is created).
fn is_constraint(text: &str) -> bool {
    let split = text.split_once("==").or_else(|| text.split_once("!="));
    split.is_some_and(|(attribute, value)| !attribute.trim().is_empty() && !value.trim().is_empty())
}

impl RawDefinition {
    /// The repository, default tag and source of `definition` (named `key`), as Keboola
    /// composes them: `dockerhub` and `quayio` name a repository there, `aws-ecr` and `registry`
    /// a full one starting with its host.
    fn validate(self, key: &str) -> Result<(String, String, ImageSource), SettingsError> {
        let uri = not_empty(format!("{key}.uri"), self.uri)?;
        let tag = not_empty(format!("{key}.tag"), self.tag)?;
        let digest = self.digest.trim();
        let digest = digest.strip_prefix("sha256:").unwrap_or(digest);
        let digest = match digest {
            "" => None,
            hex if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            other => {
                return Err(invalid(
                    format!("{key}.digest"),
                    format!("\"{other}\" is not a sha256 digest (64 hex characters)"),
                ))
            }
        };
        let first = uri.split('/').next().unwrap_or_default();
        let has_host = uri.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let (image, host) = match self.kind.as_str() {
            "dockerhub" if !has_host => (uri.clone(), DEFAULT_REGISTRY.to_string()),
            "quayio" if !has_host => (format!("quay.io/{uri}"), "quay.io".to_string()),
            "aws-ecr" | "registry" if has_host => (uri.clone(), first.to_string()),
            "dockerhub" | "quayio" => {
                return Err(invalid(
                    format!("{key}.uri"),
                    format!(
                        "\"{uri}\" names a registry host; a `{}` uri is the repository only \
                         (like keboola/ex-sample), or use type \"registry\"",
                        self.kind
                    ),
                ))
            }
            "aws-ecr" | "registry" => {
                return Err(invalid(
                    format!("{key}.uri"),
                    format!(
                        "\"{uri}\" must start with the registry's host, like \
                         127.0.0.1:5000/team/ex-sample"
                    ),
                ))
            }
            other => {
                return Err(invalid(
                    format!("{key}.type"),
                    format!("\"{other}\" is not one of dockerhub, quayio, aws-ecr, registry"),
                ))
            }
        };
        if image.contains('@') || image.rsplit('/').next().unwrap_or_default().contains(':') {
            return Err(invalid(
                format!("{key}.uri"),
                format!(
                    "\"{uri}\" must not carry a tag or digest; give them as `tag` and `digest`"
                ),
            ));
        }
        Ok((image, tag, ImageSource::Registry { host, digest }))
    }
}

impl RawRegistry {
    /// The registry of `registries[i]`.
    fn validate(self, i: usize) -> Result<Registry, SettingsError> {
        let key = |name: &str| format!("registries[{i}].{name}");
        let host = not_empty(key("host"), self.host)?;
        let credentials = match (self.username, self.password, self.docker_config) {
            (Some(username), Some(password), None) => Credentials::Password {
                username: not_empty(key("username"), username)?,
                password,
            },
            (None, None, Some(path)) => Credentials::DockerConfig(path),
            _ => {
                return Err(invalid(
                    key("host"),
                    "give either `username` and `password`, or `docker_config` (the path of a \
                     Docker client's config.json)",
                ))
            }
        };
        Ok(Registry { host, credentials })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config.example.toml");

    fn error_of(text: &str) -> String {
        Settings::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn example_file_parses_with_documented_values() {
        let settings = Settings::parse(EXAMPLE).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.public_url, "http://127.0.0.1:8080");
        assert_eq!(settings.max_concurrent_jobs, 4);
        assert_eq!(settings.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(settings.max_events_per_job, 1_000_000);
        assert_eq!(settings.min_free_space, 256 << 20);
        assert_eq!(settings.cache_size_bytes, 32 << 20);
        assert!(!settings.dev_mode);
        assert_eq!(settings.action_time_limit, Duration::from_secs(30));
        assert_eq!(settings.max_concurrent_actions, 4);
        let component = settings.component("keboola.ex-sample").unwrap();
        assert_eq!(component.synchronous_actions, Vec::<String>::new());
        assert_eq!(component.memory_bytes, 256_000_000);
        assert_eq!(component.process_timeout, Duration::from_secs(3600));
        assert_eq!(component.network, Network::Bridge);
        assert_eq!(component.confinement, Confinement::default());
        assert_eq!(component.placement, Vec::<String>::new());
        assert_eq!(settings.no_internet_network, "jobq-no-internet");
        assert_eq!(
            (settings.max_container_memory, settings.max_container_cpus),
            (None, None)
        );
        assert_eq!(
            settings.container_types["large"],
            ContainerType {
                memory_factor: 7.1,
                cpus: 14.0
            }
        );
        assert_eq!(component.image_reference("1.0.0"), "local/ex-sample:1.0.0");
    }

    #[test]
    fn ad_hoc_images_run_only_in_dev_mode_with_default_limits() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let data = serde_json::json!({"runtime": {"image": "registry.local:5000/team/ex:2.1"}});
        let off = Settings::parse(base).unwrap();
        assert!(off.job_component("my.ex", &data).is_none());
        let on = Settings::parse(&format!("dev_mode = true\n{base}")).unwrap();
        let component = on.job_component("my.ex", &data).unwrap();
        assert_eq!(component.id, "my.ex");
        assert_eq!(
            component.image_reference(&component.tag),
            "registry.local:5000/team/ex:2.1"
        );
        assert_eq!(component.memory_bytes, 256_000_000);
        assert_eq!(component.process_timeout, Duration::from_secs(3600));
        assert_eq!(component.network, Network::Bridge);
        let untagged = serde_json::json!({"runtime": {"image": "registry.local:5000/ex"}});
        let component = on.job_component("my.ex", &untagged).unwrap();
        assert_eq!(
            (component.image.as_str(), component.tag.as_str()),
            ("registry.local:5000/ex", "latest")
        );
        assert!(on.job_component("my.ex", &serde_json::json!({})).is_none());
    }

    #[test]
    fn defaults_fill_everything_but_tokens() {
        let settings = Settings::parse("[[tokens]]\nid = \"1\"\ntoken = \"t\"\n").unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.kill_grace, Duration::from_secs(10));
        assert_eq!(settings.max_events_per_job, 1_000_000);
        assert_eq!(settings.cache_size_bytes, 32 << 20);
        assert_eq!(settings.project.id, "1");
        assert!(settings.components.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let message = error_of("[[tokens]]\nid = \"1\"\ntoken = \"t\"\nmax_jobs = 3\n");
        assert!(message.contains("max_jobs"), "{message}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let component = "[[components]]\nid = \"c\"\nimage = \"i\"\ntag = \"1\"\n";
        let cases = [
            (format!("listen = \"nowhere\"\n{base}"), "`listen`"),
            (
                format!("max_concurrent_jobs = 0\n{base}"),
                "`max_concurrent_jobs`",
            ),
            (
                format!("container_user = \"0:0\"\n{base}"),
                "`container_user`",
            ),
            (
                format!("max_events_per_job = 0\n{base}"),
                "`max_events_per_job`",
            ),
            (
                format!("min_free_space = \"256m\"\n{base}"),
                "`min_free_space`",
            ),
            (format!("cache_size_mib = 0\n{base}"), "`cache_size_mib`"),
            (
                format!("cache_size_mib = 2000000\n{base}"),
                "`cache_size_mib`",
            ),
            (format!("public_url = \"ftp://x\"\n{base}"), "`public_url`"),
            (
                format!("{base}{component}memory = \"lots\"\n"),
                "`components[0].memory`",
            ),
            (
                format!("{base}{component}network = \"host\"\n"),
                "`components[0].network`",
            ),
            (
                format!("{base}{component}process_timeout = -1\n"),
                "`components[0].process_timeout`",
            ),
            ("listen = \"127.0.0.1:1\"\n".to_string(), "`tokens`"),
            (
                format!("{base}{component}pids_limit = 0\n"),
                "`components[0].pids_limit`",
            ),
            (
                format!("{base}{component}tmp_size = \"big\"\n"),
                "`components[0].tmp_size`",
            ),
            (
                format!("max_container_memory = \"lots\"\n{base}"),
                "`max_container_memory`",
            ),
            (
                format!("max_container_cpus = 0\n{base}"),
                "`max_container_cpus`",
            ),
            (
                format!("no_internet_network = \" \"\n{base}"),
                "`no_internet_network`",
            ),
            (
                format!("{base}[container_types.huge]\ncpus = 1\n"),
                "`container_types.huge`",
            ),
            (
                format!("{base}[container_types.small]\nmemory_factor = 0\n"),
                "`container_types.small.memory_factor`",
            ),
        ];
        for (text, key) in cases {
            let message = error_of(&text);
            assert!(message.contains(key), "{key} not named in: {message}");
        }
    }

    #[test]
    fn wrong_type_is_reported_with_key() {
        let message = error_of("max_concurrent_jobs = \"four\"\n");
        assert!(message.contains("max_concurrent_jobs"), "{message}");
    }

    #[test]
    fn memory_units_are_powers_of_ten() {
        assert_eq!(parse_memory("256m"), Some(256_000_000));
        assert_eq!(parse_memory("1g"), Some(1_000_000_000));
        assert_eq!(parse_memory("32M"), Some(32_000_000));
        assert_eq!(parse_memory("1000"), Some(1000));
        assert_eq!(parse_memory("0m"), None);
        assert_eq!(parse_memory("m"), None);
    }

    #[test]
    fn durations_are_a_whole_number_and_a_unit() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_duration("30s"), secs(30));
        assert_eq!(parse_duration("15m"), secs(900));
        assert_eq!(parse_duration("12h"), secs(43_200));
        assert_eq!(parse_duration("90d"), secs(90 * 86_400));
        assert_eq!(parse_duration(" 2s "), secs(2));
        assert_eq!(parse_duration("36500d"), secs(36_500 * 86_400));
        for bad in [
            "",
            "s",
            "90",
            "0s",
            "0d",
            "-1h",
            "+1h",
            "1.5h",
            "1 h",
            "1H",
            "1w",
            "1h30m",
            "1ms",
            "d90",
            "36501d",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retentions_have_defaults_and_derive_the_sweep_interval() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let settings = Settings::parse(base).unwrap();
        assert_eq!(settings.job_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(
            settings.job_folder_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(settings.sweep_interval, Duration::from_secs(60));
        assert!(settings.deprecations.is_empty());

        let short = Settings::parse(&format!("job_retention = \"2s\"\n{base}")).unwrap();
        assert_eq!(short.job_retention, Duration::from_secs(2));
        assert_eq!(short.sweep_interval, Duration::from_secs(1));
        let folders = Settings::parse(&format!("job_folder_retention = \"30s\"\n{base}")).unwrap();
        assert_eq!(folders.job_folder_retention, Duration::from_secs(30));
        assert_eq!(folders.sweep_interval, Duration::from_secs(15));
        let given = Settings::parse(&format!(
            "job_retention = \"1s\"\nsweep_interval = \"5m\"\n{base}"
        ))
        .unwrap();
        assert_eq!(given.sweep_interval, Duration::from_secs(300));
    }

    #[test]
    fn the_old_folder_retention_key_still_works_with_a_warning() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let old = Settings::parse(&format!("job_folder_retention_hours = 12\n{base}")).unwrap();
        assert_eq!(old.job_folder_retention, Duration::from_secs(12 * 3600));
        assert_eq!(
            old.deprecations,
            ["setting `job_folder_retention_hours` is deprecated: write \
              `job_folder_retention = \"12h\"` instead"]
        );
        let both = error_of(&format!(
            "job_folder_retention_hours = 12\njob_folder_retention = \"12h\"\n{base}"
        ));
        assert!(both.contains("`job_folder_retention_hours`"), "{both}");
        assert!(both.contains("give only `job_folder_retention`"), "{both}");
        let zero = error_of(&format!("job_folder_retention_hours = 0\n{base}"));
        assert!(zero.contains("`job_folder_retention_hours`"), "{zero}");
    }

    #[test]
    fn bad_durations_name_their_key() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        for key in ["job_retention", "job_folder_retention", "sweep_interval"] {
            let message = error_of(&format!("{key} = \"90 days\"\n{base}"));
            assert_eq!(
                message,
                format!(
                    "setting `{key}` is not valid: \"90 days\" is not a duration like \"90d\", \
                     \"12h\", \"15m\" or \"30s\" (a whole number above 0, at most 36500d)"
                )
            );
        }
        let number = error_of(&format!("job_retention = 90\n{base}"));
        assert!(number.contains("job_retention"), "{number}");
    }

    #[test]
    fn definitions_name_an_image_of_a_registry_with_keboolas_defaults() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let digest = "ab".repeat(32);
        let text = format!(
            "{base}[[components]]\nid = \"a\"\ndefinition = {{ type = \"dockerhub\", uri = \"keboola/ex\" }}\n\
             [[components]]\nid = \"b\"\nnetwork = \"no-internet\"\ndefault_bucket_stage = \"out\"\n\
             forward_token = true\n\
             definition = {{ type = \"quayio\", uri = \"keboola/ex\", tag = \"2\", digest = \"sha256:{digest}\" }}\n\
             [[components]]\nid = \"c\"\ndefinition = {{ type = \"registry\", uri = \"127.0.0.1:5000/team/ex\", tag = \"3\" }}\n"
        );
        let settings = Settings::parse(&text).unwrap();
        let a = settings.component("a").unwrap();
        assert_eq!(a.image_reference(&a.tag), "keboola/ex:latest");
        let registry = |host: &str, digest: Option<&str>| ImageSource::Registry {
            host: host.into(),
            digest: digest.map(str::to_string),
        };
        assert_eq!(a.source, registry(DEFAULT_REGISTRY, None));
        assert_eq!((a.memory_bytes, a.network), (256_000_000, Network::Bridge));
        assert_eq!(a.default_bucket_stage, BucketStage::In);
        assert!(!a.forward_token);
        let b = settings.component("b").unwrap();
        assert_eq!(b.image_reference(&b.tag), "quay.io/keboola/ex:2");
        assert_eq!(b.source, registry("quay.io", Some(&digest)));
        assert_eq!(b.network, Network::NoInternet);
        assert_eq!(b.default_bucket_stage, BucketStage::Out);
        assert!(b.forward_token);
        let c = settings.component("c").unwrap();
        assert_eq!(c.image_reference(&c.tag), "127.0.0.1:5000/team/ex:3");
        assert_eq!(c.source, registry("127.0.0.1:5000", None));
        let local = Settings::parse(EXAMPLE).unwrap();
        assert_eq!(
            local.component("keboola.ex-sample").unwrap().source,
            ImageSource::Local
        );
    }

    #[test]
    fn bad_definitions_name_their_key() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n[[components]]\nid = \"c\"\n";
        let cases = [
            (
                "definition = { type = \"ftp\", uri = \"x/y\" }",
                "`components[0].definition.type`",
            ),
            (
                "definition = { type = \"registry\", uri = \"team/x\" }",
                "`components[0].definition.uri`",
            ),
            (
                "definition = { type = \"dockerhub\", uri = \"h.io/x\" }",
                "`components[0].definition.uri`",
            ),
            (
                "definition = { type = \"dockerhub\", uri = \"x/y:1\" }",
                "`components[0].definition.uri`",
            ),
            (
                "definition = { type = \"dockerhub\", uri = \"x\", digest = \"abc\" }",
                "`components[0].definition.digest`",
            ),
            (
                "definition = { type = \"dockerhub\", uri = \"x\" }\nimage = \"i\"\ntag = \"1\"",
                "`components[0].definition`",
            ),
            ("image = \"i\"", "`components[0].tag`"),
            ("", "`components[0].definition`"),
            (
                "image = \"i\"\ntag = \"1\"\ndefault_bucket_stage = \"up\"",
                "`components[0].default_bucket_stage`",
            ),
        ];
        for (lines, key) in cases {
            let message = error_of(&format!("{base}{lines}\n"));
            assert!(message.contains(key), "{key} not named in: {message}");
        }
        let registry = format!(
            "{base}image = \"i\"\ntag = \"1\"\n[[registries]]\nhost = \"h\"\nusername = \"u\"\n"
        );
        let message = error_of(&registry);
        assert!(message.contains("`registries[0].host`"), "{message}");
        let twice = "[[registries]]\nhost = \"h\"\ndocker_config = \"c.json\"\n";
        let message = error_of(&format!("{base}image = \"i\"\ntag = \"1\"\n{twice}{twice}"));
        assert_eq!(
            message,
            "setting `registries[1].host` is not valid: \"h\" is listed twice"
        );
    }

    #[test]
    fn registry_passwords_never_in_debug_output_and_docker_configs_are_read() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        // "puller:pw-2" and an entry with plain fields, keyed by URL.
        std::fs::write(
            &config,
            r#"{"auths": {"h1:5000": {"auth": "cHVsbGVyOnB3LTI="},
                          "https://h2/v1/": {"username": "u3", "password": "pw-3"}}}"#,
        )
        .unwrap();
        let text = format!(
            "{base}[[registries]]\nhost = \"h0\"\nusername = \"u\"\npassword = \"pw-1-secret\"\n\
             [[registries]]\nhost = \"h1:5000\"\ndocker_config = \"{path}\"\n\
             [[registries]]\nhost = \"h2\"\ndocker_config = \"{path}\"\n\
             [[registries]]\nhost = \"h3\"\ndocker_config = \"{path}\"\n",
            path = config.display()
        );
        let settings = Settings::parse(&text).unwrap();
        assert!(!format!("{settings:?}").contains("pw-1-secret"));
        let login = |host: &str| settings.registry(host).unwrap().login();
        assert_eq!(login("h0").unwrap(), ("u".into(), "pw-1-secret".into()));
        assert_eq!(login("h1:5000").unwrap(), ("puller".into(), "pw-2".into()));
        assert_eq!(login("h2").unwrap(), ("u3".into(), "pw-3".into()));
        let missing = login("h3").unwrap_err().to_string();
        assert!(
            missing.contains("no usable `auths` entry for registry h3"),
            "{missing}"
        );
        assert!(settings.registry("elsewhere").is_none());
    }

    #[test]
    fn smtp_settings_have_port_defaults_and_hide_the_password() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let none = Settings::parse(base).unwrap();
        assert_eq!((none.smtp, none.trusted_ca_file), (None, None));
        let with = |smtp: &str| Settings::parse(&format!("{base}[smtp]\n{smtp}"));
        let smtp = with("host = \"mail\"\nfrom = \"jobq@example.com\"\nusername = \"u\"\npassword = \"smtp-pw-3\"\n")
            .unwrap()
            .smtp
            .unwrap();
        assert_eq!((smtp.security, smtp.port), (SmtpSecurity::StartTls, 587));
        assert_eq!(smtp.login, Some(("u".to_string(), "smtp-pw-3".to_string())));
        assert!(!format!("{smtp:?}").contains("smtp-pw-3"), "{smtp:?}");
        let tls = with("host = \"mail\"\nfrom = \"a@b.c\"\nsecurity = \"tls\"\n").unwrap();
        assert_eq!(tls.smtp.unwrap().port, 465);
        let plain = with("host = \"mail\"\nfrom = \"a@b.c\"\nsecurity = \"none\"\nport = 2525\n");
        assert_eq!(plain.unwrap().smtp.unwrap().port, 2525);
        for (smtp, message) in [
            ("host = \"m\"\nfrom = \"a@b.c\"\nsecurity = \"ssl\"\n", "setting `smtp.security` is not valid: \"ssl\" is not one of none, starttls, tls"),
            ("host = \"m\"\nfrom = \"a@b.c\"\nport = 70000\n", "setting `smtp.port` is not valid: 70000 is not a port (1-65535)"),
            ("host = \"m\"\nfrom = \"nobody\"\n", "setting `smtp.from` is not valid: \"nobody\" is not an email address like jobq@example.com"),
            ("host = \"m\"\nfrom = \"a@b.c\"\nusername = \"u\"\n", "setting `smtp.username` is not valid: give both `username` and `password`, or neither (a server without login)"),
            ("host = \"\"\nfrom = \"a@b.c\"\n", "setting `smtp.host` is not valid: must not be empty"),
        ] {
            assert_eq!(with(smtp).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn executor_is_docker_unless_a_swarm_manager_is_given() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let with = |text: &str| Settings::parse(&format!("{text}\n{base}"));
        assert_eq!(with("").unwrap().executor, ExecutorKind::Docker);
        let probe = "probe_image = \"busybox:1.36\"";
        let unix = with(&format!(
            "executor = \"swarm\"\n[swarm]\nmanager = \"unix:///run/m.sock\"\n{probe}"
        ))
        .unwrap()
        .executor;
        let swarm = |manager: &str, tls| {
            ExecutorKind::Swarm(Swarm {
                manager: manager.into(),
                tls,
                node_lost_timeout: Duration::from_secs(60),
                probe_image: "busybox:1.36".into(),
            })
        };
        assert_eq!(unix, swarm("unix:///run/m.sock", None));
        let tcp = with(&format!(
            "executor = \"swarm\"\n[swarm]\nmanager = \"tcp://m:2376\"\nca_file = \"/c\"\n\
             cert_file = \"/e\"\nkey_file = \"/k\"\n{probe}"
        ))
        .unwrap()
        .executor;
        let tls = SwarmTls {
            ca_file: "/c".into(),
            cert_file: "/e".into(),
            key_file: "/k".into(),
        };
        assert_eq!(tcp, swarm("tcp://m:2376", Some(tls)));
        for (text, message) in [
            ("executor = \"k8s\"", "setting `executor` is not valid: \"k8s\" is not one of docker, swarm"),
            ("executor = \"swarm\"", "setting `executor` is not valid: \"swarm\" needs a [swarm] section with the manager's `manager` address"),
            ("[swarm]\nmanager = \"unix:///m\"", "setting `swarm` is not valid: is used only with `executor = \"swarm\"`; set that or remove [swarm]"),
            ("executor = \"swarm\"\n[swarm]\nmanager = \"m:2376\"", "setting `swarm.manager` is not valid: \"m:2376\" must start with unix:// or tcp://"),
            ("executor = \"swarm\"\n[swarm]\nmanager = \"tcp://m:2376\"\nca_file = \"/c\"", "setting `swarm.ca_file` is not valid: a tcp:// manager needs TLS: give `ca_file`, `cert_file` and `key_file` (PEM files of the manager's CA and of jobq's client certificate)"),
            ("executor = \"swarm\"\n[swarm]\nmanager = \"unix:///m\"\nkey_file = \"/k\"", "setting `swarm.ca_file` is not valid: TLS files are for a tcp:// manager; remove them for a unix:// one"),
            ("executor = \"swarm\"\n[swarm]\nmanager = \"unix:///m\"", "setting `swarm.probe_image` is not valid: is missing: name an image with /bin/sh that every node has (such as busybox:1.36); jobq runs it on every node at start to check that each sees `data_dir`"),
            ("executor = \"swarm\"\n[swarm]\nmanager = \"unix:///m\"\nprobe_image = \" \"", "setting `swarm.probe_image` is not valid: must not be empty"),
        ] {
            assert_eq!(with(text).unwrap_err().to_string(), message, "{text}");
        }
    }

    #[test]
    fn placement_is_a_list_of_swarm_constraints() {
        let component = |placement: &str| {
            Settings::parse(&format!(
                "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n[[components]]\nid = \"c\"\n\
                 image = \"i\"\ntag = \"1\"\n{placement}"
            ))
        };
        assert_eq!(
            component("").unwrap().components[0].placement,
            Vec::<String>::new()
        );
        let placed =
            component("placement = [\"node.labels.jobq == true\", \"node.role!=manager\"]");
        assert_eq!(
            placed.unwrap().components[0].placement,
            ["node.labels.jobq == true", "node.role!=manager"]
        );
        for bad in ["node.labels.jobq", "", "== true", "node.role != "] {
            let text = format!("placement = [\"node.role == worker\", \"{bad}\"]");
            assert_eq!(
                component(&text).unwrap_err().to_string(),
                format!(
                    "setting `components[0].placement` is not valid: \"{bad}\" is not a Swarm \
                     constraint like \"node.labels.jobq == true\" (an attribute, == or !=, a \
                     value)"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn token_secret_never_in_debug_output() {
        let settings =
            Settings::parse("[[tokens]]\nid = \"1\"\ntoken = \"s3cret-value\"\n").unwrap();
        assert!(!format!("{settings:?}").contains("s3cret-value"));
    }

    #[test]
    fn encryption_key_is_64_hex_characters_never_shown() {
        let base = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
        let key = "0f".repeat(32);
        let settings = Settings::parse(&format!("encryption_key = \"{key}\"\n{base}")).unwrap();
        assert!(settings.encryption_key.is_some());
        assert!(!format!("{settings:?}").contains(&key));
        assert!(Settings::parse(base).unwrap().encryption_key.is_none());
        let message = error_of(&format!("encryption_key = \"{}\"\n{base}", "0g".repeat(32)));
        assert_eq!(
            message,
            "setting `encryption_key` is not valid: must be 64 hex characters (32 random \
             bytes, as `openssl rand -hex 32` prints)"
        );
    }
}
