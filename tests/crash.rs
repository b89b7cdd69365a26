//! The crash harness: the real `jobq` binary is SIGKILLed (or aborts at a crash point) again and
//! again while it runs a mix of jobs; after the last restart every job must have finished, each
//! at most once, with the right status, complete events, and no container left behind.
//!
//! The same harness runs on a three-node swarm (`executor = "swarm"`): no service of the store
//! may be left on the manager, and no container of it may still run on a node.
//!
//! CI runs a small count. The full count: `JOBQ_CRASH_JOBS=120 JOBQ_CRASH_ROUNDS=10 cargo test
//! --release --test crash -- --nocapture` (on the swarm: `JOBQ_CRASH_SWARM_JOBS`,
//! `JOBQ_CRASH_SWARM_ROUNDS`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::binary::{settings_file, Served};
use common::disk::SmallDisk;
use common::swarm::{Swarm, NODES};
use common::{fixture_image, id, units_of_instance, Docker, Options, COMPONENT};
use jobq::cli::client::ApiClient;
use serde_json::{json, Value};

/// Crash points armed in turn; `None` is a SIGKILL at a random moment.
const CRASH_POINTS: [Option<&str>; 5] = [
    None,
    Some("container-started"),
    Some("store-commit"),
    Some("container-created"),
    Some("container-ended"),
];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic generator, so a failing run can be repeated with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// Starts `jobq serve`, optionally armed with a crash point, and waits until it listens; `None`
/// when the armed crash point fired during start-up recovery, which is a crash too.
fn start(settings: &Path, log: &Path, crash_at: Option<&str>) -> Option<Served> {
    let env: Vec<(&str, &str)> = crash_at
        .map(|point| (jobq::failpoint::VARIABLE, point))
        .into_iter()
        .collect();
    match Served::start(settings, log, &env) {
        Ok(served) => Some(served),
        Err(ended) => {
            assert!(crash_at.is_some(), "{ended}");
            None
        }
    }
}

struct Plan {
    exit_code: i64,
    killed: bool,
}

fn parameters(i: usize, plan: &Plan) -> Value {
    let mut parameters = json!({
        "print": [format!("job {i} line 1"), format!("job {i} line 2")],
        "sleep": (i % 4) as f64 * 0.4,
        "append_run_id_to": "/tmp/ran.txt",
        "exit_code": plan.exit_code,
    });
    if plan.exit_code == 1 {
        parameters["stderr"] = json!([format!("job {i} failed")]);
    }
    parameters
}

async fn all_jobs(client: &ApiClient) -> Option<Vec<Value>> {
    let answer = client
        .get("/search/jobs?limit=500&sortOrder=asc")
        .await
        .ok()?;
    answer.json().as_array().cloned()
}

/// Where the harness runs its jobs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// The local engine, `data_dir` on the machine's disk.
    Local,
    /// The local engine, `data_dir` on a small file system that fills up and is freed.
    SmallDisk,
    /// A three-node swarm, `data_dir` in its shared folder.
    Swarm,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_repeated_crashes_and_each_runs_at_most_once() {
    crash_harness(Backend::Local).await;
}

/// The harness on a swarm, each image of a job a service: fewer jobs and rounds by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_a_swarm_survive_repeated_crashes_and_each_runs_at_most_once() {
    crash_harness(Backend::Swarm).await;
}

/// The harness once more with `data_dir` on a small file system that fills up (below the
/// store's reserve) in every other round and is freed before the next start: no job may end
/// because of the disk, none runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_crashes_while_the_disk_fills_and_frees() {
    crash_harness(Backend::SmallDisk).await;
}

async fn crash_harness(backend: Backend) {
    fixture_image(None).await;
    let disk_faults = backend == Backend::SmallDisk;
    let swarm = match backend {
        Backend::Swarm => Some(Swarm::start().await),
        Backend::Local | Backend::SmallDisk => None,
    };
    let (jobs, rounds) = match swarm {
        Some(_) => (
            env_number("JOBQ_CRASH_SWARM_JOBS", 12),
            env_number("JOBQ_CRASH_SWARM_ROUNDS", CRASH_POINTS.len()),
        ),
        None => (
            env_number("JOBQ_CRASH_JOBS", 30),
            env_number("JOBQ_CRASH_ROUNDS", CRASH_POINTS.len()),
        ),
    };
    let seed = env_number("JOBQ_CRASH_SEED", 0x5eed) as u64;
    let mut rng = Rng(seed | 1);
    let mut builder = tempfile::Builder::new();
    builder.prefix("jobq-crash-");
    let dir = match &swarm {
        Some(swarm) => builder.tempdir_in(swarm.shared()),
        None => builder.tempdir(),
    }
    .unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    let disk = disk_faults.then(|| SmallDisk::mount(&data_dir, 64));
    let docker = match &swarm {
        Some(swarm) => Docker::Swarm {
            manager: swarm.manager(),
            tls: None,
            shared: swarm.shared(),
        },
        None => Docker::Local,
    };
    // Crashes and restarts take a while: the fixture's timeout must outlast them all.
    let options = Options {
        kill_grace_seconds: 1,
        timeout_seconds: 120,
        docker,
        ..Options::default()
    };
    let settings = settings_file(dir.path(), &options);
    if disk.is_some() {
        // The small disk is far below the default 256 MiB: only the store's reserve applies.
        let text = std::fs::read_to_string(&settings).unwrap();
        std::fs::write(&settings, format!("min_free_space = \"0\"\n{text}")).unwrap();
    }
    let plans: Vec<Plan> = (0..jobs)
        .map(|i| Plan {
            exit_code: if i % 7 == 3 { 1 } else { 0 },
            killed: i % 10 == 5,
        })
        .collect();

    // Round 0: submit everything, ask for the kills, then SIGKILL at a random moment.
    let log = |round: usize| dir.path().join(format!("jobq-{round}.log"));
    let mut first = start(&settings, &log(0), None).unwrap();
    let instance = first.instance.clone();
    let mut ids = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let job = first.create(COMPONENT, parameters(i, plan)).await;
        ids.push(id(&job));
    }
    for (id, plan) in ids.iter().zip(&plans) {
        if plan.killed {
            let answer = first.kill(id).await;
            assert!(
                answer.status == 202 || answer.status == 400,
                "{}",
                answer.json()
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200 + rng.next(1500))).await;
    first.kill_after(Duration::ZERO);

    let mut self_crashes = 0;
    for round in 1..=rounds {
        let point = CRASH_POINTS[round % CRASH_POINTS.len()];
        let armed = point.map(|p| match p {
            "store-commit" => format!("{p}:{}", 3 + rng.next(40)),
            p => p.to_string(),
        });
        let process = start(&settings, &log(round), armed.as_deref());
        let full = disk.as_ref().filter(|_| round % 2 == 1);
        if let (Some(disk), Some(_)) = (full, &process) {
            tokio::time::sleep(Duration::from_millis(rng.next(1000))).await;
            disk.fill(4 << 20);
        }
        let crashed_itself = match (process, &armed) {
            (None, _) => true,
            (Some(mut process), Some(_)) => process.kill_after(Duration::from_secs(15)),
            (Some(mut process), None) => {
                process.kill_after(Duration::from_millis(300 + rng.next(2500)))
            }
        };
        if let Some(disk) = full {
            disk.free_ballast();
        }
        self_crashes += usize::from(crashed_itself);
        println!("round {round}: {armed:?}, crashed by itself: {crashed_itself}");
    }

    // The last start runs everything to the end.
    let mut last = start(&settings, &log(rounds + 1), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        if let Some(jobs) = all_jobs(&last.client).await {
            if jobs.len() == plans.len() && jobs.iter().all(|j| j["isFinished"] == true) {
                break jobs;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every job finished within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for ((i, plan), job) in plans.iter().enumerate().zip(&finished) {
        let id = job["id"].as_str().unwrap();
        assert_eq!(id, ids[i]);
        let status = job["status"].as_str().unwrap().to_string();
        *counts.entry(status.clone()).or_default() += 1;
        let ran = std::fs::read_to_string(data_dir.join(format!("jobs/{id}/tmp/ran.txt")))
            .unwrap_or_default();
        let runs = ran.lines().count();
        assert!(runs <= 1, "job {id} ran {runs} times");
        assert_ne!(
            job["result"]["message"],
            jobq::runner::outcome::LOST_MESSAGE,
            "job {id} lost its container"
        );
        let expected_status = if plan.exit_code == 0 {
            "success"
        } else {
            "error"
        };
        match status.as_str() {
            "cancelled" => {
                assert!(plan.killed, "job {id} was cancelled but never killed");
                assert_eq!(runs, 0, "a cancelled job did nothing");
            }
            "terminated" => assert!(plan.killed, "job {id} was terminated but never killed"),
            other => {
                assert_eq!(other, expected_status, "job {id}: {job}");
                assert_eq!(runs, 1, "job {id} finished {other} but never ran");
                let lines: Vec<String> = last
                    .messages(id)
                    .await
                    .into_iter()
                    .filter(|m| m.starts_with(&format!("job {i} line")))
                    .collect();
                assert_eq!(
                    lines,
                    [format!("job {i} line 1"), format!("job {i} line 2")],
                    "events of job {id}"
                );
                if plan.exit_code == 1 {
                    assert_eq!(job["result"]["message"], format!("job {i} failed"));
                }
            }
        }
    }
    last.kill_after(Duration::ZERO);
    if disk_faults {
        let refusals: usize = (0..=rounds + 1)
            .map(|round| std::fs::read_to_string(log(round)).unwrap_or_default())
            .map(|text| text.matches("the job store refuses writes").count())
            .sum();
        assert!(refusals > 0, "the disk never filled under a running jobq");
    }
    let leftovers = units_of_instance(&options.docker, &instance).await;
    assert_eq!(leftovers, Vec::new(), "units left behind");
    if let Some(swarm) = &swarm {
        no_container_runs_on_the_nodes(swarm, &instance).await;
    }
    println!(
        "crash harness ({backend:?}): {} jobs, {rounds} crashes ({self_crashes} at crash points), final statuses {counts:?}",
        plans.len()
    );
}

/// Waits (at most 30 s) until no container of the store `instance` runs on any node of
/// `swarm`. Containers of removed services that have ended may remain: Swarm removes them
/// lazily (40 s and more after their service), and they hold no process.
async fn no_container_runs_on_the_nodes(swarm: &Swarm, instance: &str) {
    let label = format!("{}={instance}", jobq::runner::LABEL_INSTANCE);
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = Vec::new();
        let mut ended = 0;
        for index in 0..NODES {
            let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let containers = swarm
                .engine(index)
                .list_containers(Some(options))
                .await
                .unwrap();
            for container in containers {
                use bollard::models::ContainerSummaryStateEnum::{CREATED, DEAD, EXITED};
                match container.state {
                    Some(EXITED | DEAD | CREATED) => ended += 1,
                    state => running.push(format!("node{index}: {:?} {state:?}", container.names)),
                }
            }
        }
        if running.is_empty() {
            println!("{ended} ended containers of removed services not yet removed by Swarm");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers of the store still run on the swarm's nodes: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A folder for one crash-point test: its settings file (the fixture registered) and its logs.
struct CrashDir {
    dir: tempfile::TempDir,
    settings: PathBuf,
}

impl CrashDir {
    async fn new() -> CrashDir {
        fixture_image(None).await;
        let dir = tempfile::Builder::new()
            .prefix("jobq-crash-")
            .tempdir()
            .unwrap();
        let settings = settings_file(dir.path(), &Options::default());
        CrashDir { dir, settings }
    }

    /// Starts process number `n`, armed at `crash_at`.
    fn start(&self, n: usize, crash_at: Option<&str>) -> Served {
        self.try_start(n, crash_at).expect("jobq starts")
    }

    /// Starts process number `n`, armed at `crash_at`; `None` when it crashed during start-up.
    fn try_start(&self, n: usize, crash_at: Option<&str>) -> Option<Served> {
        let log = self.dir.path().join(format!("jobq-{n}.log"));
        start(&self.settings, &log, crash_at)
    }
}

/// Creates a job from `body` on `process`, which must then stop by itself at its crash point.
async fn create_until_crash(mut process: Served, body: Value) -> String {
    let id = id(&process.submit(body).await);
    assert!(
        process.kill_after(Duration::from_secs(30)),
        "jobq did not stop at its crash point"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_output_mapping_loads_nothing_twice_and_keeps_the_inputs() {
    let crash = CrashDir::new().await;
    let first = crash.start(0, Some("output-mapped"));
    let loaded = first
        .client
        .load_table(
            "in.c-src.items",
            bytes::Bytes::from("id\n1\n2\n"),
            false,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(loaded.status, 201, "{}", loaded.json());
    let body = json!({"component": COMPONENT, "configData": {
        "storage": {
            "input": {"tables": [{"source": "in.c-src.items", "destination": "items.csv"}]},
            "output": {"tables": [{"source": "rows.csv", "destination": "out.c-dst.rows", "incremental": true}]},
        },
        "parameters": {"write_tables": [{"name": "rows.csv", "content": "n\n1\n2\n3\n"}]},
    }});
    let id = create_until_crash(first, body).await;

    // The next process re-attaches to the ended container and maps the outputs again.
    let mut second = crash.start(1, None);
    let job = second.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let table = second.get("/v2/storage/tables/out.c-dst.rows").await.json();
    assert_eq!(
        table["rowsCount"], 3,
        "an incremental load applied twice: {table:#}"
    );
    assert_eq!(
        job["result"]["input"]["tables"][0]["id"], "in.c-src.items",
        "the re-attached row lost its input tables: {job:#}"
    );
    assert_eq!(job["result"]["output"]["tables"][0]["id"], "out.c-dst.rows");
    second.kill_after(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_job_ends_keeps_its_final_event() {
    let crash = CrashDir::new().await;
    let first = crash.start(0, Some("job-ended"));
    let body = json!({"component": COMPONENT, "configData": {"parameters": {
        "exit_code": 1, "stderr": ["broken input"],
    }}});
    let id = create_until_crash(first, body).await;

    let mut second = crash.start(1, None);
    let job = second.wait_finished(&id).await;
    assert_eq!(job["status"], "error");
    let events = second.events(&id).await;
    let finals: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == format!("Job \"{id}\" ended with user error: \"broken input\""))
        .collect();
    assert_eq!(finals.len(), 1, "final events: {events:#?}");
    assert_eq!(finals[0]["type"], "error");
    second.kill_after(Duration::ZERO);
}

/// Crash points of the flow test: the start of a phase (its task jobs created with it), any
/// commit, a job's end (its phase not yet settled), a container's start, a conditional flow's
/// record written without task jobs (a variable set, a transition taken); `None` is a SIGKILL
/// at a random moment.
const FLOW_CRASH_POINTS: [Option<&str>; 6] = [
    None,
    Some("children-created"),
    Some("store-commit"),
    Some("job-ended"),
    Some("container-started"),
    Some("flow-recorded"),
];

/// An orchestration of three phases (A; B after A; C after B) of four fixture tasks each.
fn three_by_four() -> Value {
    let phases =
        json!([{"id": "A"}, {"id": "B", "dependsOn": ["A"]}, {"id": "C", "dependsOn": ["B"]}]);
    let tasks: Vec<Value> = (0..12)
        .map(|i| {
            let phase = ["A", "B", "C"][i / 4];
            json!({"id": i, "name": format!("task {i}"), "phase": phase, "task": {
                "componentId": COMPONENT,
                "configData": {"parameters": {"sleep": 1.0 + (i % 3) as f64, "append_run_id_to": "/tmp/ran.txt"}},
            }})
        })
        .collect();
    json!({"phases": phases, "tasks": tasks})
}

/// The same as a `keboola.flow`: phases A -> B -> C through `next`, each also setting a
/// variable before its four job tasks.
fn conditional_three_by_four() -> Value {
    let orchestration = three_by_four();
    let next = |to: Value| json!([{"id": "next", "goto": to}]);
    let phases = json!([
        {"id": "A", "name": "A", "next": next(json!("B"))},
        {"id": "B", "name": "B", "next": next(json!("C"))},
        {"id": "C", "name": "C", "next": next(Value::Null)}
    ]);
    let mut tasks: Vec<Value> = orchestration["tasks"].as_array().unwrap().clone();
    for task in &mut tasks {
        task["id"] = json!(task["id"].to_string());
        task["task"]["type"] = json!("job");
        task["task"]["mode"] = json!("run");
    }
    for phase in ["A", "B", "C"] {
        tasks.push(
            json!({"id": format!("v{phase}"), "name": format!("variable {phase}"), "phase": phase,
                          "task": {"type": "variable", "name": "reached", "value": phase}}),
        );
    }
    json!({"phases": phases, "tasks": tasks})
}

/// One line per job (id, run id, type, status, desired status, result message), for failures.
async fn summary(process: &Served) -> Vec<String> {
    let jobs = all_jobs(&process.client).await.unwrap_or_default();
    let line = |j: &Value| {
        let fields = ["id", "runId", "type", "status", "desiredStatus"].map(|f| j[f].to_string());
        format!("{} {}", fields.join(" "), j["result"]["message"])
    };
    jobs.iter().map(line).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_survives_repeated_crashes_creating_and_running_each_task_once() {
    let rounds = env_number("JOBQ_CRASH_FLOW_ROUNDS", 10);
    let mut rng = Rng(env_number("JOBQ_CRASH_SEED", 0x5eed) as u64 | 1);
    let crash = CrashDir::new().await;
    let data_dir = crash.dir.path().join("data");
    let first = crash.start(0, None);
    let instance = first.instance.clone();
    for (component, configuration) in [
        ("keboola.orchestrator", three_by_four()),
        ("keboola.flow", conditional_three_by_four()),
    ] {
        for config in ["flow", "killed"] {
            let path = format!("/v2/storage/components/{component}/configs");
            let body =
                json!({"configurationId": config, "name": config, "configuration": configuration});
            assert_eq!(first.post(&path, &body).await.status, 201);
        }
    }
    let flow = id(&first
        .submit(json!({"component": "keboola.orchestrator", "config": "flow"}))
        .await);
    let killed = id(&first
        .submit(json!({"component": "keboola.orchestrator", "config": "killed"}))
        .await);
    let conditional = id(&first
        .submit(json!({"component": "keboola.flow", "config": "flow"}))
        .await);
    let conditional_killed = id(&first
        .submit(json!({"component": "keboola.flow", "config": "killed"}))
        .await);
    tokio::time::sleep(Duration::from_millis(300 + rng.next(1000))).await;
    assert_eq!(first.kill(&killed).await.status, 202);
    assert_eq!(first.kill(&conditional_killed).await.status, 202);
    let mut first = first;
    first.kill_after(Duration::from_millis(rng.next(1500)));

    for round in 1..=rounds {
        let point = FLOW_CRASH_POINTS[round % FLOW_CRASH_POINTS.len()];
        let armed = point.map(|p| match p {
            "store-commit" => format!("{p}:{}", 3 + rng.next(30)),
            p => format!("{p}:{}", 1 + rng.next(3)),
        });
        let crashed_itself = match (crash.try_start(round, armed.as_deref()), &armed) {
            (None, _) => true,
            (Some(mut process), Some(_)) => process.kill_after(Duration::from_secs(3)),
            (Some(mut process), None) => {
                process.kill_after(Duration::from_millis(300 + rng.next(1500)))
            }
        };
        println!("flow round {round}: {armed:?}, crashed by itself: {crashed_itself}");
    }

    let mut last = crash.start(rounds + 1, None);
    let done = last.wait_finished(&flow).await;
    assert_eq!(done["status"], "success", "{:#?}", summary(&last).await);
    let phases = last
        .get(&format!("/search/jobs?parentRunId={flow}&sortOrder=asc"))
        .await
        .json();
    let phases = phases.as_array().unwrap();
    assert_eq!(phases.len(), 3, "{phases:#?}");
    let mut task_ids = Vec::new();
    for phase in phases {
        assert_eq!(phase["status"], "success");
        let run = phase["runId"].as_str().unwrap();
        let tasks = last
            .get(&format!("/search/jobs?parentRunId={run}&sortOrder=asc"))
            .await
            .json();
        let tasks = tasks.as_array().unwrap();
        assert_eq!(
            tasks.len(),
            4,
            "phase {run} made its task jobs once: {tasks:#?}"
        );
        for task in tasks {
            assert_eq!(task["status"], "success");
            task_ids.push(task["orchestrationTaskId"].as_str().unwrap().to_string());
            let ran =
                std::fs::read_to_string(data_dir.join(format!("jobs/{}/tmp/ran.txt", id(task))))
                    .unwrap_or_default();
            assert_eq!(ran.lines().count(), 1, "task job {} ran once", id(task));
        }
    }
    let expected: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    assert_eq!(task_ids, expected);

    // The killed flow stays killed: its later phases never started.
    let gone = last.wait_finished(&killed).await;
    let status = gone["status"].as_str();
    assert!(
        matches!(status, Some("terminated" | "cancelled")),
        "{:#?}",
        summary(&last).await
    );
    let phases = last
        .get(&format!("/search/jobs?parentRunId={killed}&sortOrder=asc"))
        .await
        .json();
    for phase in phases.as_array().unwrap().iter().skip(1) {
        assert_eq!(phase["status"], "cancelled", "{phase:#}");
        let run = phase["runId"].as_str().unwrap();
        let tasks = last
            .get(&format!("/search/jobs?parentRunId={run}"))
            .await
            .json();
        assert_eq!(tasks, json!([]));
    }

    // The conditional flow: its twelve task jobs, direct children, each created and run once.
    let done = last.wait_finished(&conditional).await;
    assert_eq!(done["status"], "success", "{:#?}", summary(&last).await);
    assert_eq!(done["result"]["flow"]["variables"], json!({"reached": "C"}));
    let tasks = last
        .get(&format!(
            "/search/jobs?parentRunId={conditional}&sortOrder=asc"
        ))
        .await
        .json();
    let tasks = tasks.as_array().unwrap();
    let task_ids: Vec<&str> = tasks
        .iter()
        .map(|t| t["orchestrationTaskId"].as_str().unwrap())
        .collect();
    assert_eq!(task_ids, expected, "each task job was created once");
    for task in tasks {
        assert_eq!(task["status"], "success");
        let ran = std::fs::read_to_string(data_dir.join(format!("jobs/{}/tmp/ran.txt", id(task))))
            .unwrap_or_default();
        assert_eq!(ran.lines().count(), 1, "task job {} ran once", id(task));
    }
    // The killed conditional flow stays killed: no task job of a later phase exists.
    let gone = last.wait_finished(&conditional_killed).await;
    let status = gone["status"].as_str();
    assert!(
        matches!(status, Some("terminated" | "cancelled")),
        "{:#?}",
        summary(&last).await
    );
    let tasks = last
        .get(&format!("/search/jobs?parentRunId={conditional_killed}"))
        .await
        .json();
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["orchestrationPhaseId"], "A", "{task:#}");
        assert!(
            matches!(
                task["status"].as_str(),
                Some("terminated" | "cancelled" | "success")
            ),
            "{task:#}"
        );
    }
    last.kill_after(Duration::ZERO);
    assert_eq!(
        units_of_instance(&Docker::Local, &instance).await,
        Vec::new()
    );
}
