//! Stdout-flood benchmark (issue 10): a component printing 100,000 lines (5.8 MB) must end with
//! every line an event, in order, and take at most 1.5 times a bare run of the same container.
//!
//! ```sh
//! cargo bench --bench log_flood                              # 100,000 lines, 3 runs each
//! JOBQ_BENCH_LINES=1000000 cargo bench --bench log_flood     # a bigger flood
//! ```
//!
//! Settings (environment): `JOBQ_BENCH_LINES` (lines the component prints, default 100000),
//! `JOBQ_BENCH_RUNS` (timed runs of each side, default 3; the median is reported), `TMPDIR`
//! (where the daemon's data dir and the bare run's folder go), `RUST_LOG` (the daemon's log on
//! stderr, such as `info`; errors only by default). Needs the Docker engine (`DOCKER_HOST` or
//! the local socket).
//!
//! Both sides run the embedded fixture component (`fixtures/component`) with the same
//! `config.json` parameters: `print_count` lines `line <i>` plus a 47-byte `print_suffix` (about
//! 58 bytes a line), written block-buffered as a busy component writes to a pipe. The image is
//! built under its own tag (`local/jobq-fixture:log-flood-bench`), so test runs of other
//! checkouts, which rebuild the shared fixture tag, cannot change it under the benchmark.
//!
//! - **jobq**: a daemon in this process (`jobq::daemon::Daemon`, the real store, runner and
//!   HTTP server on 127.0.0.1:0, a fresh data dir) runs the job; the time is from `POST /jobs`
//!   until a long poll (`GET /jobs/{id}?wait=&index=`) sees the job finished: scheduling, the
//!   job folder, the container, its log into events, the result, the container's removal. Then,
//!   untimed, every event is read back through `GET /v2/storage/events` and the stdout lines
//!   are checked: all present, in order, once.
//! - **bare**: the same image through the engine's API with bollard (create, start, wait,
//!   remove, as `docker run --rm` does), `/data` bound to a folder holding the same
//!   `config.json`, network `none`, the same user; the engine's own log settings (this host's
//!   `daemon.json`); nobody reads the log.
//!
//! Runs alternate between the two. The ratio jobq / bare of the medians is the figure; speed
//! never fails the run, but missing or disordered lines do (exit 1).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use jobq::cli::client::ApiClient;
use jobq::daemon::Daemon;
use jobq::runner::Runner;
use jobq::settings::Settings;
use serde_json::{json, Value};

const IMAGE: &str = "local/jobq-fixture";
const TAG: &str = "log-flood-bench";
const COMPONENT: &str = "keboola.ex-log-flood";
const TOKEN: &str = "bench-token";
/// 47 bytes: with `line <i>` and the newline, about 58 bytes a line (5.8 MB per 100,000).
const SUFFIX: &str = " lorem ipsum dolor sit amet consectetur adipisci";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let lines = env_u64("JOBQ_BENCH_LINES", 100_000).max(1);
    let runs = env_u64("JOBQ_BENCH_RUNS", 3).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(lines, runs))
}

async fn bench(lines: u64, runs: usize) -> ExitCode {
    let reference = format!("{IMAGE}:{TAG}");
    let runner = Runner::new(None, "bench").expect("a Docker client");
    if let Err(error) = runner.ping().await {
        println!("The benchmark needs a Docker engine and could not reach it: {error}");
        return ExitCode::FAILURE;
    }
    runner
        .ensure_fixture_image(&reference)
        .await
        .expect("the fixture image builds");
    let docker = Docker::connect_with_defaults()
        .expect("a Docker client")
        .negotiate_version()
        .await
        .expect("the engine answers");
    let info = docker.info().await.expect("docker info");
    let version = docker.version().await.expect("docker version");
    println!(
        "engine {} (API {}), default log driver {}; {} lines of ~58 bytes, {runs} run(s) each",
        version.version.unwrap_or_default(),
        version.api_version.unwrap_or_default(),
        info.logging_driver.unwrap_or_default(),
        lines,
    );

    let parameters = json!({"print_count": lines, "print_suffix": SUFFIX, "echo": false});
    let dir = tempfile::Builder::new()
        .prefix("jobq-bench-log-flood-")
        .tempdir()
        .expect("a temporary folder (set TMPDIR)");
    let data_dir = dir.path().join("jobq");
    let daemon = start_daemon(&data_dir);
    let client = ApiClient::new(daemon.addr(), TOKEN);
    let bare_data = dir.path().join("bare");
    let user = prepare_bare(&bare_data, &parameters);

    let mut jobq_times = Vec::new();
    let mut bare_times = Vec::new();
    let mut failed = false;
    for run in 1..=runs {
        let (elapsed, job) = run_jobq(&client, &parameters).await;
        let stored = stdout_lines(&client, &job).await;
        let verdict = check_lines(&stored, lines);
        println!(
            "  run {run}/{runs}: jobq {:.2} s, job {} {}, {} of {lines} lines stored{}",
            elapsed.as_secs_f64(),
            job["id"].as_str().unwrap_or_default(),
            job["status"].as_str().unwrap_or_default(),
            stored.len(),
            verdict
                .as_ref()
                .map_or(String::new(), |problem| format!(" - {problem}")),
        );
        failed |= verdict.is_some() || job["status"] != "success";
        jobq_times.push(elapsed.as_secs_f64());

        let elapsed = run_bare(&docker, &reference, &bare_data, &user).await;
        println!("  run {run}/{runs}: bare {:.2} s", elapsed.as_secs_f64());
        bare_times.push(elapsed.as_secs_f64());
    }
    daemon.stop().expect("the daemon stops");

    let jobq_time = median(&mut jobq_times);
    let bare_time = median(&mut bare_times);
    println!();
    println!("{lines} stdout lines, median of {runs} run(s)");
    println!("| {:<40} | {:>8} |", "", "time (s)");
    println!("|{:-<42}|{:->10}|", "", "");
    println!(
        "| {:<40} | {:>8.2} |",
        "jobq (POST /jobs until finished)", jobq_time
    );
    println!(
        "| {:<40} | {:>8.2} |",
        "bare (create, start, wait, remove)", bare_time
    );
    println!();
    println!(
        "time jobq / bare: {:.2} (target <= 1.5)",
        jobq_time / bare_time
    );
    if failed {
        println!("FAIL: a job did not succeed or did not store every line in order");
        return ExitCode::FAILURE;
    }
    println!("ok: every line stored, in order, once");
    ExitCode::SUCCESS
}

/// A daemon with the fixture registered as `COMPONENT` at `TAG`, on a fresh data dir.
fn start_daemon(data_dir: &Path) -> Daemon {
    let settings = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
max_concurrent_jobs = 1
[[tokens]]
id = "1"
token = "{TOKEN}"
[[components]]
id = "{COMPONENT}"
image = "{IMAGE}"
tag = "{TAG}"
network = "none"
"#,
        data_dir = data_dir.display(),
    );
    Daemon::start(Settings::parse(&settings).expect("valid settings")).expect("the daemon starts")
}

/// Runs one job; its time from the create request until it is seen finished, and the job.
async fn run_jobq(client: &ApiClient, parameters: &Value) -> (Duration, Value) {
    let body = json!({"component": COMPONENT, "configData": {"parameters": parameters}});
    let started = Instant::now();
    let answer = client
        .post_json("/jobs", &body)
        .await
        .expect("jobq answers");
    assert_eq!(answer.status, 201, "create answered {}", answer.json());
    let id = answer.json()["id"].as_str().expect("a job id").to_string();
    let mut index = 0u64;
    loop {
        let answer = client
            .get(&format!("/jobs/{id}?wait=60&index={index}"))
            .await
            .expect("jobq answers");
        let job = answer.json();
        if job["isFinished"] == true {
            return (started.elapsed(), job);
        }
        index = answer
            .headers
            .get("X-Jobq-Index")
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .unwrap_or(index);
    }
}

/// The job's stdout lines (`line ...` events), oldest first, read page by page.
async fn stdout_lines(client: &ApiClient, job: &Value) -> Vec<String> {
    let id = job["id"].as_str().expect("a job id");
    let mut messages = Vec::new();
    let mut offset = 0;
    loop {
        let answer = client
            .get(&format!(
                "/v2/storage/events?runId={id}&limit=1000&offset={offset}"
            ))
            .await
            .expect("jobq answers");
        let page = answer.json().as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        offset += page.len();
        messages.extend(
            page.iter()
                .filter_map(|event| event["message"].as_str())
                .filter(|message| message.starts_with("line "))
                .map(str::to_string),
        );
    }
    messages.reverse();
    messages
}

/// `None` when `stored` is exactly `line 1` .. `line <lines>` in order; else what is wrong.
fn check_lines(stored: &[String], lines: u64) -> Option<String> {
    let mut missing = 0u64;
    let mut wrong = None;
    let mut next = stored.iter();
    for i in 1..=lines {
        let expected = format!("line {i}{SUFFIX}");
        match next.next() {
            Some(line) if *line == expected => {}
            Some(line) if wrong.is_none() => wrong = Some(format!("line {i} reads {line:?}")),
            Some(_) => {}
            None => missing += 1,
        }
    }
    let extra = next.count();
    match (missing, wrong, extra) {
        (0, None, 0) => None,
        (missing, wrong, extra) => Some(format!(
            "{missing} missing, {extra} extra{}",
            wrong.map_or(String::new(), |w| format!(", first difference: {w}"))
        )),
    }
}

/// The bare run's `/data` with the same `config.json`; the user its container runs as (jobq's
/// rule: the daemon's own uid, or 1000:1000 when that is root).
fn prepare_bare(data: &Path, parameters: &Value) -> String {
    std::fs::create_dir_all(data).expect("the bare run's folder");
    let config = json!({"parameters": parameters, "action": "run"});
    std::fs::write(data.join("config.json"), config.to_string()).expect("config.json");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let id = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (uid, gid) = match (id("Uid:"), id("Gid:")) {
        (0, _) => (1000, 1000),
        ids => ids,
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o777))
        .expect("the bare run's folder is writable");
    format!("{uid}:{gid}")
}

/// One bare run: create, start, wait, remove.
async fn run_bare(docker: &Docker, reference: &str, data: &Path, user: &str) -> Duration {
    let body = ContainerCreateBody {
        image: Some(reference.to_string()),
        user: Some(user.to_string()),
        env: Some(vec!["KBC_DATADIR=/data/".to_string()]),
        labels: Some(HashMap::from([(
            "jobq.bench".to_string(),
            "log-flood".to_string(),
        )])),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/data", data.display())]),
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .expect("the engine creates the container");
    docker
        .start_container(&created.id, None)
        .await
        .expect("the engine starts the container");
    let wait = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut waited = docker.wait_container(&created.id, Some(wait));
    while let Some(item) = waited.next().await {
        if let Ok(response) = item {
            assert_eq!(response.status_code, 0, "the bare run failed");
        }
    }
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .expect("the engine removes the container");
    started.elapsed()
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
