//! Retention with real containers and `job_retention = "2s"` (so the sweep runs every second):
//! finished jobs go with their events, debug archives and folders and answer 404; running and
//! created jobs stay, and so does a finished job while a job run under it is unfinished; the
//! store file stops growing over create/expire cycles.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{fixture_image, COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG, TOKEN};
use jobq::cli::client::{Answer, ApiClient};
use jobq::daemon::Daemon;
use jobq::settings::Settings;
use serde_json::{json, Value};

/// A daemon with a 2 s job retention over its own data dir.
struct Retained {
    daemon: Option<Daemon>,
    client: ApiClient,
    data_dir: tempfile::TempDir,
}

impl Retained {
    async fn start() -> Retained {
        fixture_image(None).await;
        let data_dir = tempfile::Builder::new()
            .prefix("jobq-retention-")
            .tempdir()
            .unwrap();
        let settings = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
max_concurrent_jobs = 4
kill_grace_seconds = 1
job_retention = "2s"
[[tokens]]
id = "7"
token = "{TOKEN}"
[[components]]
id = "{COMPONENT}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
memory = "128m"
network = "none"
"#,
            data_dir = data_dir.path().display(),
        );
        let settings = Settings::parse(&settings).unwrap();
        assert_eq!(settings.sweep_interval, Duration::from_secs(1));
        let daemon = Daemon::start(settings).unwrap();
        let client = ApiClient::new(daemon.addr(), TOKEN);
        Retained {
            daemon: Some(daemon),
            client,
            data_dir,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.client.get(path).await.unwrap()
    }

    /// Creates a job (`body` completed with the component); returns its id.
    async fn create(&self, body: Value) -> String {
        self.create_under(body, None).await
    }

    /// Creates a job, run under `parent` (`X-KBC-RunId`) when given; returns its id.
    async fn create_under(&self, mut body: Value, parent: Option<&str>) -> String {
        body["component"] = json!(COMPONENT);
        let headers: Vec<(&str, &str)> = parent.map(|p| ("X-KBC-RunId", p)).into_iter().collect();
        let answer = self
            .client
            .post_with("/jobs", &headers, &body)
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "{}", answer.json());
        answer.json()["id"].as_str().unwrap().to_string()
    }

    async fn kill(&self, id: &str) {
        let answer = self
            .client
            .post_json(&format!("/jobs/{id}/kill"), &json!({}))
            .await
            .unwrap();
        assert_eq!(answer.status, 202, "{}", answer.json());
    }

    /// The job, or `None` once it answers 404.
    async fn job(&self, id: &str) -> Option<Value> {
        let answer = self.get(&format!("/jobs/{id}")).await;
        match answer.status {
            200 => Some(answer.json()),
            404 => None,
            other => panic!("GET /jobs/{id} answered {other}: {}", answer.json()),
        }
    }

    /// Polls until `done(job)` holds (the job still exists); panics after `limit`.
    async fn wait_for(&self, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let job = self
                .job(id)
                .await
                .unwrap_or_else(|| panic!("job {id} is gone"));
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} stuck: {job:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_finished(&self, id: &str) -> Value {
        self.wait_for(id, Duration::from_secs(90), |job| job["isFinished"] == true)
            .await
    }

    /// Polls until the job is finished or already deleted: a loaded machine may poll less
    /// often than the 2 s retention, and only finished jobs are ever deleted.
    async fn wait_finished_or_deleted(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while let Some(job) = self.job(id).await {
            if job["isFinished"] == true {
                return;
            }
            assert!(Instant::now() < deadline, "job {id} stuck: {job:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the job answers 404 (at most 30 s).
    async fn wait_deleted(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(job) = self.job(id).await {
            assert!(
                Instant::now() < deadline,
                "job {id} was never deleted: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self, id: &str) -> Answer {
        self.get(&format!("/v2/storage/events?runId={id}&limit=1000"))
            .await
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.data_dir.path().join(relative)
    }

    fn store_size(&self) -> u64 {
        std::fs::metadata(self.path("jobq.redb")).unwrap().len()
    }
}

impl Drop for Retained {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_go_with_their_events_archives_and_folders_and_unfinished_ones_stay() {
    let t = Retained::start().await;
    let running = t
        .create(json!({"configData": {"parameters": {"sleep": 120}}}))
        .await;
    let created = t.create(json!({"delay": 3600})).await;
    // A job with a job run under it: it ends first, and must stay while the other runs.
    let parent = t
        .create(json!({"configData": {"parameters": {"sleep": 1}}}))
        .await;
    let child = t
        .create_under(
            json!({"configData": {"parameters": {"print": ["under"], "sleep": 120}}}),
            Some(&parent),
        )
        .await;
    let debug = t
        .create(json!({"mode": "debug", "configData": {"parameters": {"print": ["debugged"]}}}))
        .await;
    let done = t
        .create(json!({"configData": {"parameters": {"print": ["one", "two"]}}}))
        .await;

    t.wait_for(&running, Duration::from_secs(60), |job| {
        job["status"] == "processing"
    })
    .await;
    t.wait_for(&child, Duration::from_secs(60), |job| {
        job["status"] == "processing"
    })
    .await;
    let parent_job = t.wait_finished(&parent).await;
    assert_eq!(parent_job["status"], "success", "{parent_job:#}");
    assert_eq!(t.wait_finished(&debug).await["status"], "success");
    assert_eq!(t.wait_finished(&done).await["status"], "success");
    let answer = t.events(&done).await;
    assert_eq!(answer.status, 200);
    assert!(answer.json().as_array().unwrap().len() >= 2);
    let archives = t
        .get(&format!("/v2/storage/files?tags[]=jobId:{debug}"))
        .await
        .json();
    let archives: Vec<String> = archives
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            file["id"]
                .as_str()
                .map_or(file["id"].to_string(), String::from)
        })
        .collect();
    assert_eq!(archives.len(), 2, "stage_0 and stage_output");
    for id in &archives {
        assert!(t.path(&format!("storage/files/{id}")).is_file());
    }
    assert!(t.path(&format!("jobs/{done}")).is_dir());

    // 2 s after they ended, the next sweep deletes them.
    t.wait_deleted(&done).await;
    t.wait_deleted(&debug).await;
    for id in [&done, &debug] {
        let answer = t.events(id).await;
        assert_eq!(answer.status, 404, "events of {id}: {}", answer.json());
        let answer = t.get(&format!("/jobs/{id}")).await;
        assert_eq!(
            answer.json()["error"],
            format!("Job \"{id}\" not found."),
            "like a job that never existed"
        );
        let listed = t.get(&format!("/search/jobs?id[]={id}")).await.json();
        assert_eq!(listed, json!([]));
    }
    let listed = t
        .get(&format!("/v2/storage/files?tags[]=jobId:{debug}"))
        .await
        .json();
    assert_eq!(listed, json!([]));
    for id in &archives {
        assert_eq!(t.get(&format!("/v2/storage/files/{id}")).await.status, 404);
        assert!(!t.path(&format!("storage/files/{id}")).exists());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.path(&format!("jobs/{done}")).exists() {
        assert!(Instant::now() < deadline, "the folder of job {done} stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Unfinished jobs stay, and so does the finished parent of one, long after it expired.
    let parent_ended = Instant::now();
    while parent_ended.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, status) in [
        (&running, "processing"),
        (&created, "created"),
        (&child, "processing"),
        (&parent, "success"),
    ] {
        let job = t
            .job(id)
            .await
            .unwrap_or_else(|| panic!("job {id} deleted"));
        assert_eq!(job["status"], status, "{job:#}");
        let events = t.events(id).await;
        assert_eq!(events.status, 200);
        if id != &created {
            assert!(
                !events.json().as_array().unwrap().is_empty(),
                "events of {id}"
            );
        }
    }
    assert!(t.path(&format!("jobs/{parent}")).is_dir());

    // Once the job under it ends and expires, both go.
    t.kill(&child).await;
    t.wait_finished_or_deleted(&child).await;
    t.wait_deleted(&child).await;
    t.wait_deleted(&parent).await;
    for id in [&running, &created] {
        t.kill(id).await;
        t.wait_finished_or_deleted(id).await;
        t.wait_deleted(id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_file_stops_growing_over_create_and_expire_cycles() {
    let t = Retained::start().await;
    let lines: Vec<String> = (0..200)
        .map(|n| format!("line {n} {}", "x".repeat(80)))
        .collect();
    let mut sizes = Vec::new();
    for _ in 0..20 {
        let mut ids = vec![
            t.create(json!({"configData": {"parameters": {"print": lines}}}))
                .await,
        ];
        for _ in 0..8 {
            let id = t.create(json!({"delay": 3600})).await;
            t.kill(&id).await;
            ids.push(id);
        }
        for id in &ids {
            t.wait_finished_or_deleted(id).await;
        }
        for id in &ids {
            t.wait_deleted(id).await;
        }
        sizes.push(t.store_size());
    }
    eprintln!("store file sizes after each cycle: {sizes:?}");
    // redb's allocator moves the end of the file by some pages either way.
    let first = sizes[..5].iter().max().copied().unwrap();
    let last = sizes[15..].iter().max().copied().unwrap();
    assert!(
        last <= first + first / 4,
        "the store file grew from {first} to {last} bytes: {sizes:?}"
    );
}
