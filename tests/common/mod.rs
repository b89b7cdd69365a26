//! The integration test harness: a real daemon on 127.0.0.1:0 with a temporary data dir (in this
//! process, or the real binary: see `binary`), an HTTP client with the requests and assertions
//! tests share (`Api`), and for tests that run containers the fixture component's image built in
//! the real Docker engine. Tests of the API alone run without an engine.
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod binary;
pub mod disk;
pub mod engine;
pub mod proxy;
pub mod python;
pub mod receivers;
pub mod registry;
pub mod scenarios;
pub mod shell;
pub mod swarm;
pub mod tools;

use std::path::Path;
use std::time::{Duration, Instant};

use jobq::cli::client::{Answer, ApiClient};
use jobq::daemon::Daemon;
use jobq::runner::Runner;
use jobq::settings::Settings;
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token-7f3a";
pub const FIXTURE_IMAGE: &str = "local/jobq-fixture";
pub const FIXTURE_TAG: &str = "1.0.0";
pub const COMPONENT: &str = "keboola.ex-fixture";
/// A second registration of the fixture with a 32m memory limit and a 3 s timeout.
pub const SMALL_COMPONENT: &str = "keboola.ex-fixture-small";
/// A third registration whose output tables go to its default bucket.
pub const BUCKET_COMPONENT: &str = "keboola.ex-fixture-bucket";
/// Two more registrations of the fixture, used as processors.
pub const PROCESSOR_ONE: &str = "keboola.processor-one";
/// A processor whose image is only under its own repository and tag, never the job's tag.
pub const PROCESSOR_TAGGED: &str = "keboola.processor-tagged";
pub const PROCESSOR_IMAGE: &str = "local/jobq-processor";
pub const PROCESSOR_TAG: &str = "2.0.0";
pub const PROCESSOR_TWO: &str = "keboola.processor-two";
/// The synchronous actions `COMPONENT` lists (the fixture's README.md says what each answers);
/// `dumpConfigKeys` it could answer too, but does not list.
pub const FIXTURE_ACTIONS: [&str; 10] = [
    "emptyJsonObject",
    "emptyJsonArray",
    "object",
    "dumpEnv",
    "secretLength",
    "noResponse",
    "invalidJson",
    "userError",
    "applicationError",
    "timeout",
];

/// The Docker engine of a test daemon. With an engine, the fixture image is built in it first,
/// and the test fails saying so when the engine does not answer.
#[derive(Clone, Debug)]
pub enum Docker {
    /// The machine's engine (`DOCKER_HOST`, else the local socket).
    Local,
    /// The engine at this address, like a test's own `engine::Engine`.
    At(String),
    /// A swarm (`swarm::Swarm`) through its manager (over mutual TLS with `tls`); the data
    /// dir goes under `shared`, the folder every node sees at the same path. Fixture images are
    /// built on the host (the swarm loaded them into its nodes).
    Swarm {
        manager: String,
        tls: Option<jobq::settings::SwarmTls>,
        shared: std::path::PathBuf,
    },
    /// None: for a test of the API alone, which never runs a container. The daemon's engine
    /// address leads nowhere, so the test needs no engine and every job it makes stays
    /// `created`.
    Without,
}

/// Options of one test daemon.
pub struct Options {
    pub max_concurrent_jobs: usize,
    pub kill_grace_seconds: u64,
    /// `process_timeout` of `COMPONENT`, in seconds.
    pub timeout_seconds: u64,
    pub docker: Docker,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrent_jobs: 4,
            kill_grace_seconds: 2,
            timeout_seconds: 60,
            docker: Docker::Local,
        }
    }
}

impl Options {
    /// A daemon for a test of the API alone, which never runs a container.
    pub fn without_docker() -> Options {
        Options {
            docker: Docker::Without,
            ..Options::default()
        }
    }

    /// Builds the fixture image in the daemon's engine, if it has one.
    pub async fn build_fixture_image(&self) {
        match &self.docker {
            Docker::Local | Docker::Swarm { .. } => fixture_image(None).await,
            Docker::At(host) => fixture_image(Some(host)).await,
            Docker::Without => {}
        }
    }
}

/// The settings of a test daemon keeping its data in `data_dir`: the test token and project,
/// and the fixture registered as each of the components above.
pub fn settings(data_dir: &Path, options: &Options) -> String {
    let data_dir = data_dir.display();
    let docker_host = match &options.docker {
        Docker::Local => String::new(),
        Docker::At(host) => format!("docker_host = \"{host}\""),
        Docker::Without => format!("docker_host = \"unix://{data_dir}/no-docker-engine.sock\""),
        Docker::Swarm { .. } => "executor = \"swarm\"".to_string(),
    };
    let swarm = match &options.docker {
        Docker::Swarm { manager, tls, .. } => {
            let tls = tls.as_ref().map_or(String::new(), |tls| {
                format!(
                    "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                    tls.ca_file.display(),
                    tls.cert_file.display(),
                    tls.key_file.display()
                )
            });
            let probe = shell::SHELL_IMAGE;
            format!(
                "[swarm]\nmanager = \"{manager}\"\n{tls}node_lost_timeout = \"3s\"\n\
                 probe_image = \"{probe}\"\n"
            )
        }
        _ => String::new(),
    };
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
max_concurrent_jobs = {max}
kill_grace_seconds = {grace}
{docker_host}
[project]
id = "123"
name = "Test project"
default_branch_id = "456"
[[tokens]]
id = "7"
description = "test token"
token = "{TOKEN}"
[[components]]
id = "{COMPONENT}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
memory = "128m"
process_timeout = {timeout}
network = "none"
synchronous_actions = [{actions}]
[components.image_parameters]
greeting = "hello"
[[components]]
id = "{SMALL_COMPONENT}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
memory = "32m"
process_timeout = 3
network = "none"
[[components]]
id = "{BUCKET_COMPONENT}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
network = "none"
default_bucket = true
[[components]]
id = "{PROCESSOR_ONE}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
network = "none"
[components.image_parameters]
role = "first processor"
[[components]]
id = "{PROCESSOR_TWO}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
network = "none"
[[components]]
id = "{PROCESSOR_TAGGED}"
image = "{PROCESSOR_IMAGE}"
tag = "{PROCESSOR_TAG}"
network = "none"
{swarm}"#,
        max = options.max_concurrent_jobs,
        grace = options.kill_grace_seconds,
        timeout = options.timeout_seconds,
        actions = FIXTURE_ACTIONS.map(|a| format!("\"{a}\"")).join(", "),
    )
}

/// Builds the fixture image in the engine at `docker_host` (else the machine's); fails the test
/// with a clear message when the engine does not answer.
pub async fn fixture_image(docker_host: Option<&str>) {
    let runner = Runner::new(docker_host, "tests").expect("a Docker client");
    if let Err(error) = runner.ping().await {
        panic!(
            "This test runs containers: it needs a running Docker engine, which did not answer \
             ({}). Start dockerd (or set DOCKER_HOST) and run the tests again.",
            jobq::error::chain(&error)
        );
    }
    for image in [
        format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"),
        format!("{PROCESSOR_IMAGE}:{PROCESSOR_TAG}"),
    ] {
        runner
            .ensure_fixture_image(&image)
            .await
            .expect("the fixture image builds");
    }
}

/// The keys of the JSON object `value`, sorted.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Whether `value` is a time as the API writes them (RFC 3339, UTC as `+00:00`).
pub fn is_iso_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| t.ends_with("+00:00") && chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

/// The id of `job` (a job as the API answers it).
pub fn id(job: &Value) -> String {
    job["id"].as_str().expect("a job with an id").to_string()
}

/// Asserts that `answer` is exactly Keboola's error body with `status`, `message` and `context`
/// (and a random `exception-...` id), sent as JSON.
#[track_caller]
pub fn assert_error(answer: &Answer, status: u16, message: &str, context: Value) {
    let body = answer.json();
    assert_eq!(answer.status, status, "{body}");
    let content_type = answer
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap());
    assert_eq!(content_type, Some("application/json"), "{body}");
    let exception = body["exceptionId"].as_str().unwrap_or_default();
    assert!(exception.starts_with("exception-"), "{body}");
    let mut rest = body.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("exceptionId");
    }
    assert_eq!(
        rest,
        json!({"error": message, "code": status, "status": "error", "context": context}),
        "{body}"
    );
}

/// Asserts the answer to killing job `id`, which already ended with `status`.
#[track_caller]
pub fn assert_not_killable(answer: &Answer, id: &str, status: &str) {
    let message = format!(
        "Job \"{id}\" is already finished ({status}); only jobs in one of killable states \
         (created, waiting, processing, terminating) can be killed."
    );
    let context = json!({"stringCode": "statusTransitionForbidden"});
    assert_error(answer, 400, &message, context);
}

/// A client of one daemon, with the requests tests make; each expects the daemon to answer.
pub struct Api {
    pub client: ApiClient,
    /// The daemon's address, for raw exchanges and the URLs it answers with.
    pub addr: std::net::SocketAddr,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr) -> Api {
        Api {
            client: ApiClient::new(addr, TOKEN),
            addr,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.client.get(path).await.expect("the daemon answers")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.client
            .post_json(path, body)
            .await
            .expect("the daemon answers")
    }

    /// Sends `body` as `content_type` with any method.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        content_type: &str,
        body: impl AsRef<[u8]>,
    ) -> Answer {
        self.client
            .send(
                method,
                path,
                &[("Content-Type", content_type)],
                bytes::Bytes::copy_from_slice(body.as_ref()),
            )
            .await
            .expect("the daemon answers")
    }

    /// Sends `body` as JSON with any method (PUT, PATCH, ...).
    pub async fn send_json(&self, method: hyper::Method, path: &str, body: &Value) -> Answer {
        self.send(method, path, "application/json", body.to_string())
            .await
    }

    /// Sends `fields` as an `application/x-www-form-urlencoded` body, as Storage API clients do.
    pub async fn send_form(
        &self,
        method: hyper::Method,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(method, path, "application/x-www-form-urlencoded", body)
            .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.client
            .send(hyper::Method::DELETE, path, &[], bytes::Bytes::new())
            .await
            .expect("the daemon answers")
    }

    /// Clients of this daemon that send no token, and a wrong one, each with the message of the
    /// 401 it gets.
    pub fn clients_without_a_valid_token(&self) -> [(ApiClient, &'static str); 2] {
        let anonymous = self.client.with_token(None);
        [
            (
                anonymous,
                "Access token must be set in the X-StorageApi-Token header.",
            ),
            (
                self.client.with_token(Some("not-the-token")),
                "Invalid access token.",
            ),
        ]
    }

    /// Asks to kill job `id`.
    pub async fn kill(&self, id: &str) -> Answer {
        self.post(&format!("/jobs/{id}/kill"), &json!({})).await
    }

    /// Creates a job from `body` (`POST /jobs`); asserts 201 and returns the job.
    pub async fn submit(&self, body: Value) -> Value {
        let answer = self.post("/jobs", &body).await;
        assert_eq!(answer.status, 201, "create answered {}", answer.json());
        answer.json()
    }

    /// Creates a job of `component` with fixture `parameters`; asserts 201 and returns the job.
    pub async fn create(&self, component: &str, parameters: Value) -> Value {
        self.submit(json!({"component": component, "configData": {"parameters": parameters}}))
            .await
    }

    /// Creates a job from `body` and waits until it is finished; the finished job.
    pub async fn run(&self, body: Value) -> Value {
        let job = self.submit(body).await;
        self.wait_finished(job["id"].as_str().unwrap()).await
    }

    pub async fn job(&self, id: &str) -> Value {
        let answer = self.get(&format!("/jobs/{id}")).await;
        assert_eq!(answer.status, 200, "{}", answer.json());
        answer.json()
    }

    /// Polls the job until `done(job)` holds; panics after `limit`.
    pub async fn wait_for(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not reach the expected state within {limit:?}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the job is finished (at most 90 s).
    pub async fn wait_finished(&self, id: &str) -> Value {
        self.wait_for(id, Duration::from_secs(90), |job| job["isFinished"] == true)
            .await
    }

    /// Polls until the job has `status` (at most 60 s).
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, Duration::from_secs(60), |job| job["status"] == status)
            .await
    }

    /// The job's events, oldest first.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let answer = self
            .get(&format!("/v2/storage/events?runId={id}&limit=1000"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.json());
        let mut events = answer
            .json()
            .as_array()
            .cloned()
            .expect("an array of events");
        events.reverse();
        events
    }

    /// Polls until the job has an event with `message` (at most 30 s).
    pub async fn wait_for_message(&self, id: &str, message: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.messages(id).await.iter().any(|m| m == message) {
            assert!(
                Instant::now() < deadline,
                "job {id} never logged \"{message}\""
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages of the job's events, oldest first.
    pub async fn messages(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A daemon running in this process with its data dir; stopping and starting again keeps the
/// data dir. Its requests are `Api`'s.
pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub data_dir: tempfile::TempDir,
    api: Api,
    settings: String,
    docker: Docker,
}

impl std::ops::Deref for TestDaemon {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestDaemon {
    /// Starts a daemon with the fixture registered (see `settings`), after building the fixture
    /// image unless `options` say the test runs no container.
    pub async fn start(options: Options) -> TestDaemon {
        TestDaemon::start_with(options, "", "").await
    }

    /// Starts a daemon like `start` with more settings: `top` (top-level keys) before the
    /// harness's, `tables` (like `[[components]]` entries) after them.
    pub async fn start_with(options: Options, top: &str, tables: &str) -> TestDaemon {
        options.build_fixture_image().await;
        let mut builder = tempfile::Builder::new();
        builder.prefix("jobq-test-");
        let data_dir = match &options.docker {
            Docker::Swarm { shared, .. } => builder.tempdir_in(shared),
            _ => builder.tempdir(),
        }
        .expect("a temporary data dir");
        let settings = format!("{top}\n{}\n{tables}", settings(data_dir.path(), &options));
        let daemon = Daemon::start(Settings::parse(&settings).expect("valid settings"))
            .expect("the daemon starts");
        TestDaemon {
            api: Api::new(daemon.addr()),
            daemon: Some(daemon),
            data_dir,
            settings,
            docker: options.docker.clone(),
        }
    }

    /// Stops the daemon gracefully and starts a new one on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the daemon gracefully; the units of its jobs go on running.
    pub fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().expect("the daemon stops cleanly");
        }
    }

    /// Starts a new daemon on the data dir of the stopped one.
    pub fn start_again(&mut self) {
        let daemon = Daemon::start(Settings::parse(&self.settings).expect("valid settings"))
            .expect("the daemon starts again");
        self.api = Api::new(daemon.addr());
        self.daemon = Some(daemon);
    }

    /// The units of this daemon's store its executor still has (containers in the engine,
    /// services on the swarm's manager), as (unit, job id).
    pub async fn units(&self) -> Vec<(String, String)> {
        let instance = self
            .daemon
            .as_ref()
            .expect("a running daemon")
            .instance_id();
        units_of_instance(&self.docker, instance).await
    }

    /// Makes a unit of this store in its executor, labelled with job `job_id`, as a jobq that
    /// crashed could leave it (a container never started; a service of no task): its id.
    pub async fn plant_unit(&self, job_id: &str) -> String {
        let instance = self
            .daemon
            .as_ref()
            .expect("a running daemon")
            .instance_id();
        let labels = std::collections::HashMap::from([
            (
                jobq::runner::LABEL_INSTANCE.to_string(),
                instance.to_string(),
            ),
            (jobq::runner::LABEL_JOB_ID.to_string(), job_id.to_string()),
        ]);
        let image = format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}");
        let engine = match &self.docker {
            Docker::Swarm { manager, .. } => {
                return swarm::plant_service(manager, &image, labels).await
            }
            Docker::Local => bollard::Docker::connect_with_local_defaults(),
            Docker::At(host) => bollard::Docker::connect_with_host(host),
            Docker::Without => panic!("a daemon without an engine has no units"),
        }
        .expect("a Docker client");
        let body = bollard::models::ContainerCreateBody {
            image: Some(image),
            labels: Some(labels),
            ..Default::default()
        };
        engine
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .expect("the engine creates the planted container")
            .id
    }

    /// The labels of each unit of job `job_id` its executor still has.
    pub async fn unit_labels_of_job(
        &self,
        job_id: &str,
    ) -> Vec<std::collections::HashMap<String, String>> {
        let instance = self
            .daemon
            .as_ref()
            .expect("a running daemon")
            .instance_id();
        let units = labelled_units(&self.docker, instance).await.into_iter();
        units
            .map(|(_, labels)| labels)
            .filter(|labels| {
                labels.get(jobq::runner::LABEL_JOB_ID).map(String::as_str) == Some(job_id)
            })
            .collect()
    }

    /// The units of job `job_id` its executor still has.
    pub async fn units_of_job(&self, job_id: &str) -> Vec<String> {
        let units = self.units().await.into_iter();
        units
            .filter(|(_, job)| job == job_id)
            .map(|(unit, _)| unit)
            .collect()
    }

    /// What the fixture echoed: its KBC_ environment, config.json, uid and `in/` listing.
    pub fn echo(&self, id: &str) -> Value {
        let path = self
            .data_dir
            .path()
            .join(format!("jobs/{id}/data/out/files/echo.json"));
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&text).expect("echo.json is JSON")
    }

    /// Containers of this daemon's store still labelled with `job_id` in the engine.
    pub async fn containers_of_job(&self, job_id: &str) -> Vec<String> {
        let instance = self
            .daemon
            .as_ref()
            .expect("a running daemon")
            .instance_id();
        containers_of_job(instance, job_id).await
    }
}

/// A test's daemon may stop while it creates a container; its store is gone for good then, so
/// nothing else would ever remove that container: the harness does.
impl Drop for TestDaemon {
    fn drop(&mut self) {
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        let host = match &self.docker {
            Docker::Local => None,
            Docker::At(host) => Some(host.clone()),
            // The swarm goes with the test, its services with it.
            Docker::Without | Docker::Swarm { .. } => return,
        };
        let instance = daemon.instance_id().to_string();
        drop(daemon);
        cleanup(move || async move {
            let runner = Runner::new(host.as_deref(), &instance).ok()?;
            for (container, _) in runner.labelled_containers().await.ok()? {
                runner.remove_container(&container).await;
            }
            Some(())
        });
    }
}

/// Runs `work` to its end on a runtime of its own in a thread of its own, as a `Drop` cleans
/// up (inside a test's runtime or not); it stops at its first `None`.
pub fn cleanup<F>(work: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = Option<()>>,
{
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(work())
    });
    let _ = thread.join();
}

/// The units of the store `instance` that `docker` still has, as (unit, job id): containers
/// labelled with the instance in an engine, services labelled with it on a swarm's manager.
pub async fn units_of_instance(docker: &Docker, instance: &str) -> Vec<(String, String)> {
    let units = labelled_units(docker, instance).await.into_iter();
    units
        .filter_map(|(unit, mut labels)| Some((unit, labels.remove(jobq::runner::LABEL_JOB_ID)?)))
        .collect()
}

/// The units of the store `instance` that `docker` still has, with all their labels, as the
/// engine (or the swarm's manager) lists them.
pub async fn labelled_units(
    docker: &Docker,
    instance: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let host = match docker {
        Docker::Local => None,
        Docker::At(host) => Some(host.as_str()),
        Docker::Swarm { manager, .. } => {
            return swarm::services_of_instance(manager, instance).await
        }
        Docker::Without => return Vec::new(),
    };
    let engine = match host {
        Some(host) => bollard::Docker::connect_with_host(host),
        None => bollard::Docker::connect_with_local_defaults(),
    }
    .expect("a Docker client");
    let label = format!("{}={instance}", jobq::runner::LABEL_INSTANCE);
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = engine
        .list_containers(Some(options))
        .await
        .expect("the engine lists containers");
    containers
        .into_iter()
        .filter_map(|container| Some((container.id?, container.labels?)))
        .collect()
}

/// Containers of the store `instance` still labelled with `job_id` in the engine.
pub async fn containers_of_job(instance: &str, job_id: &str) -> Vec<String> {
    let runner = Runner::new(None, instance).expect("a Docker client");
    runner
        .labelled_containers()
        .await
        .expect("the engine lists containers")
        .into_iter()
        .filter(|(_, job)| job == job_id)
        .map(|(id, _)| id)
        .collect()
}

impl TestDaemon {
    /// Restarts the daemon with `lines` (top-level settings, like `max_events_per_job = 50`)
    /// added to its settings.
    pub fn restart_with_settings(&mut self, lines: &str) {
        self.settings = format!("{lines}\n{}", self.settings);
        self.restart();
    }

    /// Restarts the daemon with `tables` (like `[[components]]` entries) added at the end of
    /// its settings.
    pub fn restart_with_tables(&mut self, tables: &str) {
        self.settings = format!("{}\n{tables}", self.settings);
        self.restart();
    }
}
