//! Host faults on a real small file system (a tmpfs of a few MiB as `data_dir`, mounted by the
//! test: root only, as CI runs): a full disk answers 507 while reads and readiness keep
//! working, and jobq takes writes again by itself once space returns; a write that fails in
//! the file system itself reopens the store without losing a committed job; a job whose
//! container ends while the disk is full ends with its real status; `min_free_space` holds jobs
//! in `created` with one event; a debug archive that does not fit fails only its job.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::Served;
use common::disk::SmallDisk;
use common::{id, settings, Options, COMPONENT};
use jobq::cli::client::{Answer, ApiClient};
use serde_json::{json, Value};

/// Starts `jobq serve` (the real binary) with `data_dir` on `disk`, `lines` added to the
/// settings and `env` set.
async fn serve(
    dir: &Path,
    disk: &SmallDisk,
    options: &Options,
    lines: &str,
    env: &[(&str, &str)],
) -> Served {
    options.build_fixture_image().await;
    let path = dir.join("jobq.toml");
    std::fs::write(
        &path,
        format!("{lines}\n{}", settings(disk.path(), options)),
    )
    .unwrap();
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info"));
    Served::start(&path, &dir.join("jobq.log"), &env).unwrap_or_else(|ended| panic!("{ended}"))
}

fn folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("jobq-faults-")
        .tempdir()
        .unwrap()
}

/// One test's `jobq serve` on its own small disk; dropped in this order: the process, the
/// mount, the folder.
struct Setup {
    served: Served,
    disk: SmallDisk,
    _dir: tempfile::TempDir,
}

/// A disk of `mib` MiB as `data_dir` and `jobq serve` on it, with `lines` added to the settings
/// and `env` set.
async fn setup(mib: u64, options: &Options, lines: &str, env: &[(&str, &str)]) -> Setup {
    let dir = folder();
    let disk = SmallDisk::mount(&dir.path().join("data"), mib);
    let served = serve(dir.path(), &disk, options, lines, env).await;
    Setup {
        served,
        disk,
        _dir: dir,
    }
}

/// A client that sends a wrong token: the health routes need none.
fn anonymous(served: &Served) -> ApiClient {
    ApiClient::new(served.addr, "not-the-token")
}

/// What `/health/ready` answers while the store takes writes: these daemons run without a Docker
/// engine, so the engine is then the one reason left.
fn store_ready() -> (u16, Value) {
    (
        503,
        json!({"status": "not ready", "reason": "The Docker engine does not answer; jobs stay created."}),
    )
}

async fn ready(served: &Served) -> (u16, Value) {
    let answer = anonymous(served).get("/health/ready").await.unwrap();
    (answer.status, answer.json())
}

/// The value of metric `name` in `/metrics`.
async fn metric(served: &Served, name: &str) -> u64 {
    let answer = served.get("/metrics").await;
    assert_eq!(answer.status, 200);
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

async fn create(served: &Served) -> Answer {
    served
        .post(
            "/jobs",
            &json!({"component": COMPONENT, "configData": {"parameters": {}}}),
        )
        .await
}

/// Creates jobs until one is answered 201 (at most `limit`); every other answer must be
/// `refused` (507 or 503).
async fn create_once_writable(served: &Served, refused: u16, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let answer = create(served).await;
        if answer.status == 201 {
            return answer.json();
        }
        assert_eq!(answer.status, refused, "{}", answer.json());
        assert!(
            Instant::now() < deadline,
            "no write succeeded within {limit:?} of freeing space"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the Keboola error body of a store refusing for a full disk.
#[track_caller]
fn assert_full(answer: &Answer, disk: &SmallDisk) {
    let body = answer.json();
    assert_eq!(answer.status, 507, "{body}");
    assert_eq!(
        (&body["code"], &body["status"], &body["context"]),
        (&json!(507), &json!("error"), &json!({}))
    );
    let message = body["error"].as_str().unwrap();
    let free: u64 = message
        .strip_prefix("data_dir is full: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(free < 16 << 20, "{message}");
    let mount = disk.path().canonicalize().unwrap();
    assert!(
        message.contains(&format!(" bytes free on {} (", mount.display())),
        "{message}"
    );
    assert!(
        message.ends_with("); jobq takes writes again by itself once more than 16.0 MiB are free"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_keeps_reads_and_takes_writes_again_without_a_restart() {
    let setup = setup(
        48,
        &Options::without_docker(),
        "min_free_space = \"0\"",
        &[],
    )
    .await;
    let (served, disk) = (&setup.served, &setup.disk);
    let before = create(served).await;
    assert_eq!(before.status, 201);
    let before = id(&before.json());
    assert_eq!(ready(served).await, store_ready());

    disk.fill(1 << 20);
    for _ in 0..5 {
        assert_full(&create(served).await, disk);
    }
    // Reads keep working.
    assert_eq!(served.job(&before).await["status"], "created");
    let listed = served.get("/jobs").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json().as_array().unwrap().len(), 1);
    let (status, body) = ready(served).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("data_dir is full: "),
        "{body}"
    );
    assert_eq!(metric(served, "jobq_store_writable").await, 0);
    assert!(metric(served, "jobq_store_writes_refused_total").await >= 5);
    assert_eq!(metric(served, "jobq_store_write_failures_total").await, 0);

    disk.free_ballast();
    let after = create_once_writable(served, 507, Duration::from_secs(10)).await;
    assert_eq!(served.job(&id(&after)).await["status"], "created");
    assert_eq!(served.job(&before).await["status"], "created");
    assert_eq!(ready(served).await, store_ready());
    assert_eq!(metric(served, "jobq_store_writable").await, 1);
    // Said once when it started and once when it ended, not per request.
    let log = served.log();
    assert_eq!(
        log.matches("the job store refuses writes until the fault passes")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("the job store takes writes again").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_in_the_file_system_reopens_the_store_and_loses_no_job() {
    let setup = setup(
        32,
        &Options::without_docker(),
        "min_free_space = \"0\"",
        &[(jobq::failpoint::WRITE_RESERVE_VARIABLE, "0")],
    )
    .await;
    let (served, disk) = (&setup.served, &setup.disk);
    disk.fill(0);
    let mut created = Vec::new();
    let refused = loop {
        let answer = create(served).await;
        if answer.status != 201 {
            break answer;
        }
        created.push(id(&answer.json()));
        assert!(created.len() < 100_000, "the full disk took every write");
    };
    let body = refused.json();
    assert_eq!(refused.status, 503, "{body}");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("the job store cannot be written since a write failed ("),
        "{message}"
    );
    assert!(message.ends_with("jobq reopens it by itself as soon as the file system takes writes again: retry shortly"), "{message}");
    assert!(metric(served, "jobq_store_write_failures_total").await >= 1);
    assert_eq!(ready(served).await.0, 503);

    disk.free_ballast();
    let after = create_once_writable(served, 503, Duration::from_secs(15)).await;
    created.push(id(&after));
    for job in &created {
        assert_eq!(served.job(job).await["status"], "created", "job {job}");
    }
    assert_eq!(ready(served).await, store_ready());
    let log = served.log();
    assert!(log.contains("reopened the job store"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_container_ends_on_a_full_disk_ends_with_its_real_status() {
    let setup = setup(64, &Options::default(), "min_free_space = \"0\"", &[]).await;
    let (served, disk) = (&setup.served, &setup.disk);
    let job = served
        .create(
            COMPONENT,
            json!({"print": ["before"], "sleep": 2, "print_after_sleep": ["after the full disk"]}),
        )
        .await;
    let job = id(&job);
    served.wait_status(&job, "processing").await;
    served.wait_for_message(&job, "before").await;
    // Below the store's reserve, with room for the component's own small writes.
    disk.fill(4 << 20);
    // The container ends meanwhile; nothing can be recorded.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served.job(&job).await["status"], "processing");
    assert_eq!(ready(served).await.0, 503);

    disk.free_ballast();
    let finished = served.wait_finished(&job).await;
    assert_eq!(finished["status"], "success", "{finished:#}");
    let messages = served.messages(&job).await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| *m == "after the full disk")
            .count(),
        1,
        "{messages:?}"
    );
    let runner = jobq::runner::Runner::new(None, &served.instance).unwrap();
    let left: Vec<_> = runner.labelled_containers().await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_free_space_jobs_stay_created_with_one_event_until_space_returns() {
    let setup = setup(64, &Options::default(), "min_free_space = \"40MiB\"", &[]).await;
    let (served, disk) = (&setup.served, &setup.disk);
    disk.fill(30 << 20);
    let job = id(&served.create(COMPONENT, json!({"print": ["ran"]})).await);
    let prefix = "The job waits for free space: data_dir has ";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served
        .messages(&job)
        .await
        .iter()
        .any(|m| m.starts_with(prefix))
    {
        assert!(Instant::now() < deadline, "no event said why the job waits");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several scheduler passes later: still created, still one event.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served.job(&job).await["status"], "created");
    let events = served.events(&job).await;
    let waits: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(waits.len(), 1, "{events:#?}");
    let message = waits[0]["message"].as_str().unwrap();
    assert_eq!(waits[0]["type"], "warn");
    let mount = disk.path().canonicalize().unwrap();
    assert!(
        message.ends_with(&format!(
            " free on {}, less than min_free_space (40.0 MiB). It starts once space is freed.",
            mount.display()
        )),
        "{message}"
    );

    disk.free_ballast();
    let finished = served.wait_finished(&job).await;
    assert_eq!(finished["status"], "success", "{finished:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_archive_that_does_not_fit_fails_its_job_and_the_daemon_serves_on() {
    let setup = setup(64, &Options::default(), "min_free_space = \"0\"", &[]).await;
    let (served, disk) = (&setup.served, &setup.disk);
    let job = served
        .run(json!({
            "component": COMPONENT,
            "mode": "debug",
            "configData": {"parameters": {"sparse": [{"name": "out/files/big.bin", "bytes": 200u64 << 20}]}},
        }))
        .await;
    assert_eq!(job["status"], "error", "{job:#}");
    let message = job["result"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Not enough free space in data_dir for the debug archive stage_output.zip of the data folder (200.0 MiB): it needs about 406.0 MiB, and "),
        "{message}"
    );
    assert!(
        message.ends_with(
            " (jobq keeps 16.0 MiB free for its store). Free some space, or make the data smaller."
        ),
        "{message}"
    );
    // Nothing half-written is left, and the daemon runs the next job.
    let archives: Vec<_> = walk(disk.path())
        .into_iter()
        .filter(|p| p.ends_with("stage_output.zip"))
        .collect();
    assert!(archives.is_empty(), "{archives:?}");
    let next = served
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    assert_eq!(next["status"], "success", "{next:#}");
}

fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobq_starts_on_a_full_disk_serves_reads_and_recovers_once_space_returns() {
    let dir = folder();
    let disk = SmallDisk::mount(&dir.path().join("data"), 48);
    let options = Options::without_docker();
    let mut served = serve(dir.path(), &disk, &options, "min_free_space = \"0\"", &[]).await;
    let before = id(&create(&served).await.json());
    assert!(served.terminate().success());

    disk.fill(1 << 20);
    let served = serve(dir.path(), &disk, &options, "min_free_space = \"0\"", &[]).await;
    assert_eq!(served.job(&before).await["status"], "created");
    assert_full(&create(&served).await, &disk);
    assert_eq!(ready(&served).await.0, 503);

    disk.free_ballast();
    let after = create_once_writable(&served, 507, Duration::from_secs(10)).await;
    assert_eq!(served.job(&id(&after)).await["status"], "created");
    assert_eq!(ready(&served).await, store_ready());
    let log = served.log();
    assert!(
        log.contains("the job store cannot be written at start"),
        "{log}"
    );
}
