//! Store-scale benchmark (issue 10): the daemon over a store of 1,000,000 jobs. Targets: start
//! to listening (recovery done) <= 2 s, every listing with `limit=100` p95 <= 5 ms, RSS
//! <= 100 MiB, `/stats/project` and grouped listings cheap.
//!
//! ```sh
//! cargo bench --bench store_scale                                 # fills 1,000,000 jobs first
//! JOBQ_BENCH_DATA=/work/bench/1m cargo bench --bench store_scale  # reuses (or fills) that dir
//! JOBQ_BENCH_BIN=/path/to/old/jobq JOBQ_BENCH_DATA=... cargo bench --bench store_scale
//! ```
//!
//! Settings (environment): `JOBQ_BENCH_JOBS` (jobs to fill, default 1000000), `JOBQ_BENCH_DATA`
//! (the data dir: reused when it holds a store, else filled; default a fresh one under
//! `TMPDIR`), `JOBQ_BENCH_BIN` (the `jobq` binary, default this checkout's release build: an
//! older build measures the "before"), `JOBQ_BENCH_REQUESTS` (timed requests per query, default
//! 200), `JOBQ_BENCH_RESTARTS` (timed starts, default 3), `JOBQ_BENCH_CACHE_MIB` (written as
//! `cache_size_mib` when given; older builds refuse the key). Needs no Docker engine, but uses
//! it when the daemon finds one (recovery lists containers).
//!
//! 1. **Fill**: `jobq bench-fill --jobs N` (see `src/cli/bench_fill.rs`: realistic finished
//!    jobs, trees, statuses, 2 events each) into the data dir, timed, unless it holds a store.
//! 2. **Restart**: `jobq serve` is started as a separate process, the time from spawning it to
//!    its "jobq is listening" log line (written after the store opened, Storage was swept and
//!    recovery finished) measured, then it is stopped with SIGTERM; `JOBQ_BENCH_RESTARTS` times.
//!    The first start is reported apart: it migrates a store of an older layout.
//! 3. **Queries**: against the last started daemon, each listing (`GET /search/jobs` and
//!    `GET /jobs` with each filter and some combinations, `limit=100`), `/stats/project` and
//!    grouped listings: 3 untimed requests, then `JOBQ_BENCH_REQUESTS` sequential ones, each
//!    timed from sending to the whole body read; p50, p95 and max. Deep offsets and a sort by
//!    another key than id get fewer requests (they are not targets, their cost is reported).
//! 4. **Memory**: `VmRSS` and `VmHWM` of the daemon from `/proc/<pid>/status` after the queries.
//!
//! A failed request (not 200) fails the run (exit 1); speed and memory never do.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jobq::cli::client::ApiClient;

const TOKEN: &str = "bench-token";

fn main() -> ExitCode {
    let jobs = env_u64("JOBQ_BENCH_JOBS", 1_000_000);
    let requests = env_u64("JOBQ_BENCH_REQUESTS", 200).max(1) as usize;
    let restarts = env_u64("JOBQ_BENCH_RESTARTS", 3).max(1) as usize;
    let bin = std::env::var_os("JOBQ_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_jobq")));
    let scratch = tempfile::tempdir().expect("a temporary folder");
    let data = std::env::var_os("JOBQ_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().join("data"));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let settings = scratch.path().join("settings.toml");
    write_settings(&settings, &data, addr);
    println!("binary: {}", bin.display());
    println!("data dir: {}", data.display());

    if !data.join("jobq.redb").exists() {
        let started = Instant::now();
        let status = Command::new(&bin)
            .args(["bench-fill", "--jobs", &jobs.to_string(), "--settings"])
            .arg(&settings)
            .status()
            .expect("jobq bench-fill runs");
        assert!(status.success(), "jobq bench-fill failed");
        println!("fill: {:.1} s", started.elapsed().as_secs_f64());
    }
    let file = std::fs::metadata(data.join("jobq.redb")).map_or(0, |m| m.len());
    println!("store file: {} MiB", file >> 20);

    let mut starts = Vec::new();
    let mut daemon = None;
    for run in 0..restarts {
        if let Some(mut previous) = daemon.take() {
            stop(&mut previous);
        }
        let (child, took) = start(&bin, &settings);
        println!("start {}: {:.0} ms to listening", run + 1, ms(took));
        starts.push(took);
        daemon = Some(child);
    }
    let mut daemon = daemon.expect("a daemon runs");
    let later = &starts[1.min(starts.len() - 1)..];
    println!(
        "restart to listening: first {:.0} ms, then max {:.0} ms",
        ms(starts[0]),
        later.iter().map(|d| ms(*d)).fold(0.0, f64::max)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let failed = runtime.block_on(queries(ApiClient::new(addr, TOKEN), requests));
    let (rss, hwm) = memory(daemon.id());
    println!("daemon memory after the queries: VmRSS {rss} MiB, VmHWM {hwm} MiB");
    stop(&mut daemon);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Times every query; answers whether one failed.
async fn queries(client: ApiClient, requests: usize) -> bool {
    let newest = get(&client, "/search/jobs?limit=1").await;
    let newest_id = newest[0]["id"].as_str().expect("a job").to_string();
    let container = get(&client, "/search/jobs?type=container&limit=1").await;
    let parent = container[0]["runId"].as_str().expect("a container job");
    let component = "keboola.ex-bench-07";
    let day = 86_400_000_000i64;
    let now = jobq::model::now_micros();
    let old_from = jobq::model::format_time(now - 30 * day).replace('+', "%2B");
    let old_to = jobq::model::format_time(now - 29 * day).replace('+', "%2B");
    let listings: Vec<(String, String)> = vec![
        ("no filter".into(), "/search/jobs".into()),
        ("GET /jobs".into(), "/jobs".into()),
        (
            "status=success".into(),
            "/search/jobs?status=success".into(),
        ),
        ("status=error".into(), "/search/jobs?status=error".into()),
        (
            "status=warning,terminated".into(),
            "/search/jobs?status=warning&status=terminated".into(),
        ),
        (
            "status=processing (none)".into(),
            "/jobs?status=processing".into(),
        ),
        (
            "status=error asc".into(),
            "/search/jobs?status=error&sortOrder=asc".into(),
        ),
        (
            "component".into(),
            format!("/search/jobs?componentId={component}"),
        ),
        (
            "component+config".into(),
            format!("/search/jobs?componentId={component}&configId=1002"),
        ),
        (
            "component+config+branch".into(),
            format!("/search/jobs?componentId={component}&configId=1002&branchId=103"),
        ),
        ("branch".into(), "/search/jobs?branchId=103".into()),
        (
            "configId (no component)".into(),
            "/search/jobs?configId=1002".into(),
        ),
        (
            "parentRunId (children)".into(),
            format!("/search/jobs?parentRunId={parent}"),
        ),
        (
            "parentRunId= (roots)".into(),
            "/search/jobs?parentRunId=".into(),
        ),
        ("runId".into(), format!("/search/jobs?runId={parent}")),
        (
            "id x3".into(),
            format!("/search/jobs?id={newest_id}&id=1&id=500000"),
        ),
        (
            "createdTime last day".into(),
            "/search/jobs?createdTimeFrom=-1%20day".into(),
        ),
        (
            "createdTime 30..29 days ago".into(),
            format!("/search/jobs?createdTimeFrom={old_from}&createdTimeTo={old_to}"),
        ),
        (
            "status=error+component".into(),
            format!("/search/jobs?status=error&componentId={component}"),
        ),
        (
            "status=success+component+last week".into(),
            format!(
                "/search/jobs?status=success&componentId={component}&createdTimeFrom=-1%20week"
            ),
        ),
        (
            "status=error+branch".into(),
            "/search/jobs?status=error&branchId=103".into(),
        ),
        (
            "status=cancelled+component+config".into(),
            format!("/search/jobs?status=cancelled&componentId={component}&configId=1001"),
        ),
        ("/stats/project".into(), "/stats/project".into()),
        (
            "grouped component+config".into(),
            "/search/grouped-jobs?groupBy[]=componentId&groupBy[]=configId".into(),
        ),
        (
            "grouped component, desc, 1 per group".into(),
            "/search/grouped-jobs?groupBy=componentId&sortOrder=desc&jobsPerGroup=1".into(),
        ),
        (
            "grouped config+branch, status=error".into(),
            "/search/grouped-jobs?groupBy[]=configId&groupBy[]=branchId&status=error".into(),
        ),
    ];
    let expensive: Vec<(String, String)> = vec![
        (
            "offset=1000".into(),
            "/search/jobs?status=success&offset=1000".into(),
        ),
        (
            "offset=10000".into(),
            "/search/jobs?status=success&offset=10000".into(),
        ),
        (
            "offset=100000".into(),
            "/search/jobs?status=success&offset=100000".into(),
        ),
        (
            "sortBy=createdTime status=error".into(),
            "/search/jobs?status=error&sortBy=createdTime".into(),
        ),
    ];
    println!();
    println!("| query | answers | p50 ms | p95 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut failed = false;
    for (list, count) in [(&listings, requests), (&expensive, (requests / 10).max(5))] {
        for (name, path) in list.iter() {
            match time(&client, path, count).await {
                Ok((answers, times)) => println!(
                    "| {name} | {answers} | {:.2} | {:.2} | {:.2} |",
                    percentile(&times, 50),
                    percentile(&times, 95),
                    percentile(&times, 100)
                ),
                Err(message) => {
                    println!("| {name} | failed: {message} | | | |");
                    failed = true;
                }
            }
        }
    }
    println!();
    failed
}

/// `count` timed requests after 3 untimed ones: the answer's length (array) and the times.
async fn time(
    client: &ApiClient,
    path: &str,
    count: usize,
) -> Result<(usize, Vec<Duration>), String> {
    let mut times = Vec::with_capacity(count);
    let mut answers = 0;
    for n in 0..count + 3 {
        let started = Instant::now();
        let answer = client.get(path).await.map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if answer.status != 200 {
            return Err(format!("{} {}", answer.status, answer.json()));
        }
        if n >= 3 {
            times.push(took);
        } else {
            answers = answer.json().as_array().map_or(1, Vec::len);
        }
    }
    times.sort();
    Ok((answers, times))
}

async fn get(client: &ApiClient, path: &str) -> serde_json::Value {
    let answer = client.get(path).await.expect("the daemon answers");
    assert_eq!(answer.status, 200, "{path}: {}", answer.json());
    answer.json()
}

fn percentile(sorted: &[Duration], percent: usize) -> f64 {
    let at = (sorted.len() * percent)
        .div_ceil(100)
        .clamp(1, sorted.len())
        - 1;
    ms(sorted[at])
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn write_settings(path: &Path, data: &Path, addr: SocketAddr) {
    let mut text = format!(
        "listen = \"{addr}\"\ndata_dir = {:?}\njob_retention = \"3650d\"\n",
        data.display().to_string()
    );
    if let Ok(mib) = std::env::var("JOBQ_BENCH_CACHE_MIB") {
        text.push_str(&format!("cache_size_mib = {mib}\n"));
    }
    text.push_str(&format!(
        "[[tokens]]\nid = \"1\"\ndescription = \"bench\"\ntoken = \"{TOKEN}\"\n"
    ));
    let mut file = std::fs::File::create(path).expect("the settings file");
    file.write_all(text.as_bytes())
        .expect("the settings written");
}

/// Starts `jobq serve`; returns it once it logged that it listens, and how long that took.
fn start(bin: &Path, settings: &Path) -> (Child, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(settings)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jobq serve starts");
    let stderr = child.stderr.take().expect("its stderr");
    let (listening, heard) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("jobq is listening") {
                let _ = listening.send(());
            }
        }
    });
    heard
        .recv_timeout(Duration::from_secs(600))
        .expect("the daemon listens");
    (child, started.elapsed())
}

/// SIGTERM, then waits for the end.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib >> 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
