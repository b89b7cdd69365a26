//! The integration test harness: a real daemon on 127.0.0.1:0 with a temporary data dir,
//! the fixture component's image built in the real Docker engine, and an HTTP client.
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod engine;

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
pub const PROCESSOR_TWO: &str = "keboola.processor-two";

/// Options of one test daemon.
pub struct Options {
    pub max_concurrent_jobs: usize,
    pub kill_grace_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrent_jobs: 4,
            kill_grace_seconds: 2,
        }
    }
}

/// A running daemon with its data dir; stopping and starting again keeps the data dir.
pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub data_dir: tempfile::TempDir,
    pub client: ApiClient,
    settings: String,
}

/// Builds the fixture image; fails the test with a clear message when Docker is unreachable.
pub async fn fixture_image() {
    let runner = Runner::new(None, "tests").expect("a Docker client");
    if let Err(error) = runner.ping().await {
        panic!(
            "These tests need a running Docker engine and could not reach it: {error}. \
             Start dockerd (or set DOCKER_HOST) and run the tests again."
        );
    }
    runner
        .ensure_fixture_image(&format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"))
        .await
        .expect("the fixture image builds");
}

impl TestDaemon {
    /// Builds the fixture image and starts a daemon with the fixture registered twice.
    pub async fn start(options: Options) -> TestDaemon {
        fixture_image().await;
        let data_dir = tempfile::Builder::new()
            .prefix("jobq-test-")
            .tempdir()
            .expect("a temporary data dir");
        let settings = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
max_concurrent_jobs = {max}
kill_grace_seconds = {grace}
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
process_timeout = 60
network = "none"
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
"#,
            data_dir = data_dir.path().display(),
            max = options.max_concurrent_jobs,
            grace = options.kill_grace_seconds,
        );
        let daemon = Daemon::start(Settings::parse(&settings).expect("valid settings"))
            .expect("the daemon starts");
        let client = ApiClient::new(daemon.addr(), TOKEN);
        TestDaemon {
            daemon: Some(daemon),
            data_dir,
            client,
            settings,
        }
    }

    /// Stops the daemon gracefully and starts a new one on the same data dir.
    pub fn restart(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().expect("the daemon stops cleanly");
        }
        let daemon = Daemon::start(Settings::parse(&self.settings).expect("valid settings"))
            .expect("the daemon starts again");
        self.client = ApiClient::new(daemon.addr(), TOKEN);
        self.daemon = Some(daemon);
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

    /// Creates a job of `component` with fixture `parameters`; asserts 201 and returns the job.
    pub async fn create(&self, component: &str, parameters: Value) -> Value {
        let answer = self
            .post(
                "/jobs",
                &json!({"component": component, "configData": {"parameters": parameters}}),
            )
            .await;
        assert_eq!(answer.status, 201, "create answered {}", answer.json());
        answer.json()
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

    /// What the fixture echoed: its KBC_ environment, config.json, uid and `in/` listing.
    pub fn echo(&self, id: &str) -> Value {
        let path = self
            .data_dir
            .path()
            .join(format!("jobs/{id}/data/out/files/echo.json"));
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&text).expect("echo.json is JSON")
    }
}

/// A test's daemon may stop while it creates a container; its store is gone for good then, so
/// nothing else would ever remove that container: the harness does.
impl Drop for TestDaemon {
    fn drop(&mut self) {
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        let instance = daemon.instance_id().to_string();
        drop(daemon);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let runner = Runner::new(None, &instance).ok()?;
                for (container, _) in runner.labelled_containers().await.ok()? {
                    runner.remove_container(&container).await;
                }
                Some(())
            })
        });
        let _ = cleanup.join();
    }
}

impl TestDaemon {
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
    /// Sends `body` as JSON with any method (PUT, PATCH, ...).
    pub async fn send_json(&self, method: hyper::Method, path: &str, body: &Value) -> Answer {
        self.client
            .send(
                method,
                path,
                &[("Content-Type", "application/json")],
                bytes::Bytes::from(body.to_string()),
            )
            .await
            .expect("the daemon answers")
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
        self.client
            .send(
                method,
                path,
                &[("Content-Type", "application/x-www-form-urlencoded")],
                bytes::Bytes::from(body),
            )
            .await
            .expect("the daemon answers")
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.client
            .send(hyper::Method::DELETE, path, &[], bytes::Bytes::new())
            .await
            .expect("the daemon answers")
    }

    /// Clients of this daemon that send no token, and a wrong one.
    pub fn clients_without_a_valid_token(&self) -> [ApiClient; 2] {
        let anonymous = ApiClient {
            addr: self.client.addr,
            token: None,
        };
        [anonymous, ApiClient::new(self.client.addr, "not-the-token")]
    }
}

impl TestDaemon {
    /// Restarts the daemon with `lines` (top-level settings, like `max_events_per_job = 50`)
    /// added to its settings.
    pub fn restart_with_settings(&mut self, lines: &str) {
        self.settings = format!("{lines}\n{}", self.settings);
        self.restart();
    }
}
