//! The operator's commands against a real daemon and real containers: `jobq run` (its id at
//! once, events as they come, exit codes, `--async`, Ctrl-C), `jobs`, `status`, `logs [-f]`,
//! `kill`, `components`, in table and JSON output.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

fn run(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("jobq starts");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[tokio::test]
async fn run_on_a_terminal_shows_the_elapsed_time() {
    let t = TestDaemon::start(Options::default()).await;
    let data = parameters(json!({"sleep": 2, "print": ["slept"]}));
    // `script` gives the command a terminal; its own stdout carries what the command wrote.
    let (code, stdout, stderr) = run(std::process::Command::new("script")
        .args([
            "-qec",
            r#""$JOBQ" run "$COMPONENT" --config-data "$DATA" --url "$URL" --token "$TOKEN""#,
            "/dev/null",
        ])
        .env("JOBQ", common::binary::BINARY)
        .env("COMPONENT", COMPONENT)
        .env("DATA", &data)
        .env("URL", format!("http://{}", t.addr))
        .env("TOKEN", common::TOKEN));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("running for"), "{stdout}");
    assert!(stdout.contains("info  slept"), "{stdout}");
    assert!(stdout.contains("ended success after"), "{stdout}");
}

// Multi-threaded: the proxy's tasks answer while the test's thread waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_daemon_over_https_under_a_base_path() {
    let t = TestDaemon::start(Options::default()).await;
    let ca = common::receivers::TestCa::new();
    let proxy = common::proxy::TlsProxy::start(&ca, "/jobq", t.addr).await;
    let ca_file = t.data_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let over_https = |args: &[&str]| {
        let mut command = common::binary::jobq(args);
        command.args(["--url", &proxy.url, "--token", common::TOKEN]);
        command
    };
    let data = parameters(json!({"print": ["through the proxy"]}));
    let (code, stdout, stderr) = run(over_https(&[
        "run",
        COMPONENT,
        "--config-data",
        &data,
        "--ca-cert",
        ca_file,
    ])
    .arg("--output")
    .arg("json"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("info  through the proxy"),
        "events streamed: {stderr}"
    );
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "success");
    let (code, stdout, stderr) = run(&mut over_https(&[
        "jobs",
        "--ca-cert",
        ca_file,
        "--output",
        "json",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed[0]["id"], job["id"]);

    // Without the CA the certificate is not trusted: jobq is unreachable (3), saying why.
    let (code, _, stderr) = run(&mut over_https(&["jobs"]));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to jobq at {}", proxy.url)),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

fn parameters(value: Value) -> String {
    json!({"parameters": value}).to_string()
}

#[tokio::test]
async fn run_prints_the_id_at_once_streams_events_and_exits_by_the_jobs_status() {
    let t = TestDaemon::start(Options::default()).await;
    let data = parameters(json!({"print": ["hello from the component"]}));
    let (code, stdout, stderr) = run(&mut t.jobq(["run", COMPONENT, "--config-data", &data]));
    assert_eq!(code, Some(0), "{stderr}");
    let job: Value = serde_json::from_str(&stdout).expect("the job as JSON on stdout");
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "success");
    let first = stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!("Created job {id} ({})", job["url"].as_str().unwrap())
    );
    assert!(
        stderr.contains("info  hello from the component"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Job {id} ended success after")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("running for"),
        "no elapsed-time line when stderr is not a terminal: {stderr}"
    );

    // A failing job: exit code 1, its message in the summary.
    let data = parameters(json!({"stderr": ["Table x is missing."], "exit_code": 1}));
    let (code, stdout, stderr) = run(&mut t.jobq([
        "run",
        COMPONENT,
        "--config-data",
        &data,
        "--output",
        "table",
    ]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stdout.starts_with("Job ") && stdout.contains("ended error after"),
        "{stdout}"
    );
    assert!(stdout.contains("Table x is missing."), "{stdout}");

    // --async: back at once with the created job.
    let data = parameters(json!({"sleep": 1}));
    let (code, stdout, _) = run(&mut t.jobq(["run", COMPONENT, "--config-data", &data, "--async"]));
    assert_eq!(code, Some(0));
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert!(["created", "processing"].contains(&created["status"].as_str().unwrap()));
    t.wait_finished(created["id"].as_str().unwrap()).await;

    // A refused request: 2; jobq unreachable: 3.
    let (code, _, stderr) = run(&mut t.jobq(["run", "keboola.unknown"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("jobq answered 400 to the new job"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&mut common::binary::jobq([
        "run",
        COMPONENT,
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "x",
    ]));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "cannot connect to jobq at http://127.0.0.1:9; check that the daemon runs there"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn ctrl_c_leaves_the_job_running_and_says_how_to_kill_it() {
    let t = TestDaemon::start(Options::default()).await;
    let data = parameters(json!({"sleep": 30}));
    let mut child = t
        .jobq(["run", COMPONENT, "--config-data", &data])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let id = line
        .strip_prefix("Created job ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    t.wait_status(&id, "processing").await;
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        rest.contains(&format!(
            "Stopped following job {id}: it keeps running. Kill it with: jobq kill {id}"
        )),
        "{rest}"
    );
    assert_eq!(t.job(&id).await["status"], "processing");

    // jobq kill ends it.
    let (code, stdout, stderr) = run(&mut t.jobq(["kill", &id, "--output", "table"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!("Job {id}: asked to terminate (now processing)\n")
    );
    t.wait_status(&id, "terminated").await;
    let (code, _, stderr) = run(&mut t.jobq(["kill", &id]));
    assert_eq!(code, Some(2), "{stderr}");
}

#[tokio::test]
async fn jobs_status_logs_and_components_in_table_and_json() {
    let t = TestDaemon::start(Options::default()).await;
    let ok = t.run(json!({"component": COMPONENT, "configData": {"parameters": {"print": ["one", "two"]}}})).await;
    let failed = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"exit_code": 1}}}))
        .await;
    let (ok_id, failed_id) = (ok["id"].as_str().unwrap(), failed["id"].as_str().unwrap());

    let (code, stdout, _) = run(&mut t.jobq(["jobs"]));
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed_id, ok_id]);
    let (_, stdout, _) = run(&mut t.jobq([
        "jobs", "--status", "error", "--since", "1h", "--output", "table",
    ]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS") && lines[0].contains("MESSAGE")
    );
    assert!(
        lines[1].starts_with(failed_id)
            && lines[1].contains(COMPONENT)
            && lines[1].contains("error"),
        "{stdout}"
    );

    let (code, stdout, _) = run(&mut t.jobq(["status", ok_id]));
    assert_eq!(code, Some(0));
    let tree: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(tree.as_array().unwrap().len(), 1);
    assert_eq!(tree[0]["id"], ok_id);
    let (code, _, stderr) = run(&mut t.jobq(["status", "99999"]));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("Job \"99999\" not found."), "{stderr}");

    let (code, stdout, _) = run(&mut t.jobq(["logs", ok_id]));
    assert_eq!(code, Some(0));
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let one = messages.iter().position(|m| *m == "one").unwrap();
    assert_eq!(messages[one + 1], "two", "oldest first: {messages:?}");
    let (_, stdout, _) =
        run(&mut t.jobq(["logs", failed_id, "--type", "error", "--output", "table"]));
    assert!(
        !stdout.is_empty() && stdout.lines().all(|l| l.contains(" error ")),
        "{stdout}"
    );
}

#[tokio::test]
async fn components_say_whether_the_engine_has_each_image() {
    let absent = "[[components]]\nid = \"keboola.ex-absent\"\nimage = \"local/jobq-absent\"\ntag = \"1.0.0\"\n";
    let t = TestDaemon::start_with(Options::default(), "", absent).await;
    let (code, stdout, _) = run(&mut t.jobq(["components", "--output", "table"]));
    assert_eq!(code, Some(0));
    let line = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} listed: {stdout}"))
            .to_string()
    };
    assert!(line(COMPONENT).ends_with("present"), "{stdout}");
    assert!(line("keboola.ex-absent").ends_with("missing"), "{stdout}");
    let (_, stdout, _) = run(&mut t.jobq(["components", "--output", "json"]));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let present = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["imagePresent"]
            .clone()
    };
    assert_eq!(
        (present(COMPONENT), present("keboola.ex-absent")),
        (json!(true), json!(false))
    );

    let without_engine = TestDaemon::start(Options::without_docker()).await;
    let (code, stdout, _) = run(&mut without_engine.jobq(["components", "--output", "table"]));
    assert_eq!(code, Some(0));
    assert!(
        stdout
            .lines()
            .skip(1)
            .all(|l| l.ends_with("unknown (engine down)")),
        "{stdout}"
    );
}

#[tokio::test]
async fn logs_follow_ends_with_the_job() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .create(
            COMPONENT,
            json!({"print": ["early"], "sleep": 2, "print_after_sleep": ["late"]}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let mut follow = t.jobq(["logs", id, "-f", "--output", "table"]);
    let (code, stdout, stderr) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || run(&mut follow)),
    )
    .await
    .expect("logs -f ends with the job")
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let early = stdout.find(" early").expect("early");
    let late = stdout.find(" late").expect("late");
    assert!(early < late, "{stdout}");
    assert_eq!(t.job(id).await["status"], "success");
}
