//! The component developer's loop against the real daemon, engine and binary: a debug run's
//! stage replayed as the exact `docker run` (printed and executed), a debug run exported as a
//! keboola/datadirtest test, a failed debug run's `stage_output`, and in `dev_mode` ad-hoc runs
//! of unregistered images and application errors that show stderr.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::binary::{fails, succeeds};
use common::{Options, TestDaemon, COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG};
use serde_json::{json, Value};

/// A path as a command-line argument.
fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Every file under `root` (relative path -> content); folders as `path/` with no content.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                found.insert(format!("{relative}/"), Vec::new());
                walk(root, &path, found);
            } else {
                found.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(root, root, &mut found);
    found
}

/// Runs `COMPONENT` with fixture `parameters` in debug mode to its end; the finished job.
async fn debug_run(daemon: &TestDaemon, parameters: Value) -> Value {
    let body =
        json!({"component": COMPONENT, "mode": "debug", "configData": {"parameters": parameters}});
    daemon.run(body).await
}

/// The job's component output (stdout events), oldest first.
async fn stdout_lines(daemon: &TestDaemon, id: &str) -> Vec<String> {
    let events = daemon.events(id).await;
    let printed = events
        .iter()
        .filter(|e| e["type"] == "info" && e["message"].as_str().unwrap().starts_with("printed "));
    printed
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn replay_prints_and_runs_the_exact_container_of_a_debug_stage() {
    let daemon = TestDaemon::start(Options::default()).await;
    let parameters = json!({"print": ["printed first", "printed second"], "echo": true});
    let job = debug_run(&daemon, parameters).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = common::id(&job);
    let echo = daemon.echo(&id);
    let out = tempfile::tempdir().unwrap();

    let printed = succeeds(&mut daemon.jobq(["replay", &id, "--out", &text(out.path())]));
    let stage = std::path::absolute(out.path().join("stage_0")).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert_eq!(
        lines[0],
        format!("# The `#` values of {}/config.json are [hidden] (secrets never leave jobq): put the real values there first.", stage.display())
    );
    let words: Vec<&str> = lines[1].split(' ').collect();
    let uid = echo["uid"].as_u64().unwrap();
    let head = ["docker", "run", "--rm", "--init", "--user"];
    assert_eq!(words[..5], head, "{printed}");
    assert!(words[5].starts_with(&format!("{uid}:")), "{printed}");
    assert_eq!(
        words[6..12],
        [
            "--memory",
            "128000000",
            "--memory-swap",
            "128000000",
            "--network",
            "none"
        ]
    );
    // The same confinement as the job's container: the small type's CPUs (capped by the
    // host's cores) and the hardening defaults.
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .min(2)
        .to_string();
    assert_eq!(
        words[12..20],
        [
            "--cpus",
            cpus.as_str(),
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            "1024"
        ]
    );
    // The environment is the job's (what its container saw), pair by pair.
    let env: BTreeMap<String, String> = words
        .windows(2)
        .filter(|pair| pair[0] == "--env")
        .map(|pair| {
            let (name, value) = pair[1].split_once('=').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect();
    let seen: BTreeMap<String, String> =
        serde_json::from_value(echo["env"].clone()).expect("the echoed environment");
    assert_eq!(env, seen);
    let tail = &words[words.len() - 5..];
    assert_eq!(
        tail,
        [
            "--volume",
            &format!("{}:/data", stage.display()),
            "--volume",
            &format!("{}:/tmp", stage.with_file_name("stage_0.tmp").display()),
            &format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"),
        ]
    );

    // Run it: the container prints what the job printed.
    let ran = succeeds(&mut daemon.jobq(["replay", &id, "--exec", "--out", &text(out.path())]));
    let expected: Vec<String> = stdout_lines(&daemon, &id).await;
    assert_eq!(expected, ["printed first", "printed second"]);
    assert_eq!(ran, format!("{}\n", expected.join("\n")));

    let missing =
        fails(&mut daemon.jobq(["replay", &id, "--stage", "3", "--out", &text(out.path())]));
    assert_eq!(
        missing,
        format!("jobq: job {id} has no debug archive stage_3; `jobq debug {id}` lists the stages it has\n")
    );
}

#[tokio::test]
async fn a_debug_run_becomes_a_datadirtest_test_file_by_file() {
    let daemon = TestDaemon::start(Options::default()).await;
    let parameters = json!({
        "echo": false,
        "write_tables": [{"name": "result.csv", "content": "id,name\n1,a\n"}],
        "write_files": [{"name": "report.txt", "content": "done"}],
    });
    let job = debug_run(&daemon, parameters).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = common::id(&job);
    let stages = tempfile::tempdir().unwrap();
    succeeds(&mut daemon.jobq(["debug", &id, "--out", &text(stages.path())]));
    let test = tempfile::tempdir().unwrap();
    let listed = succeeds(&mut daemon.jobq(["debug", &id, "--datadirtest", &text(test.path())]));
    assert_eq!(listed, format!("{}\n", test.path().display()));

    let mut expected = BTreeMap::new();
    for (prefix, folder) in [
        ("source/data", stages.path().join("stage_0")),
        ("expected/data/out", stages.path().join("stage_output/out")),
    ] {
        expected.insert(
            format!("{}/", prefix.split('/').next().unwrap()),
            Vec::new(),
        );
        expected.insert(format!("{prefix}/"), Vec::new());
        for (path, content) in tree(&folder) {
            expected.insert(format!("{prefix}/{path}"), content);
        }
    }
    expected.insert("expected/data/".into(), Vec::new());
    expected.insert("expected-code".into(), b"0".to_vec());
    assert_eq!(tree(test.path()), expected);
    assert_eq!(
        tree(test.path())["expected/data/out/tables/result.csv"],
        b"id,name\n1,a\n"
    );
    assert!(tree(test.path()).contains_key("source/data/config.json"));
}

#[tokio::test]
async fn a_failed_debug_run_keeps_its_stage_output_marked_failed() {
    let daemon = TestDaemon::start(Options::default()).await;
    let parameters = json!({
        "echo": false,
        "write_tables": [{"name": "partial.csv", "content": "id\n1\n"}],
        "stderr": ["cannot reach the source"],
        "exit_code": 1,
    });
    let job = debug_run(&daemon, parameters).await;
    assert_eq!(
        (job["status"].as_str(), job["result"]["message"].as_str()),
        (Some("error"), Some("cannot reach the source"))
    );
    let id = common::id(&job);
    let files = daemon
        .get(&format!("/v2/storage/files?tags[]=jobId:{id}"))
        .await
        .json();
    let mut archives: Vec<(String, Value)> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f["tags"].clone()))
        .collect();
    archives.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        archives,
        [
            (
                "stage_0.zip".to_string(),
                json!(["debug", COMPONENT, format!("jobId:{id}"), "rowId:"])
            ),
            (
                "stage_output.zip".to_string(),
                json!([
                    "debug",
                    COMPONENT,
                    format!("jobId:{id}"),
                    "rowId:",
                    "failed"
                ])
            ),
        ]
    );
    let out = tempfile::tempdir().unwrap();
    succeeds(&mut daemon.jobq(["debug", &id, "--out", &text(out.path())]));
    let left =
        std::fs::read_to_string(out.path().join("stage_output/out/tables/partial.csv")).unwrap();
    assert_eq!(left, "id\n1\n");

    // As a datadirtest test, it expects the user error's exit code.
    let test = tempfile::tempdir().unwrap();
    succeeds(&mut daemon.jobq(["debug", &id, "--datadirtest", &text(test.path())]));
    assert_eq!(
        std::fs::read_to_string(test.path().join("expected-code")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(test.path().join("expected/data/out/tables/partial.csv")).unwrap(),
        "id\n1\n"
    );
}

#[tokio::test]
async fn dev_mode_runs_unregistered_images_and_shows_stderr_of_application_errors() {
    let mut daemon = TestDaemon::start(Options::default()).await;
    let image = format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}");
    let data = r#"{"parameters": {"print": ["printed ad hoc"]}}"#;

    // Off by default: refused naming the setting, before any job exists.
    let refused = daemon
        .jobq(["run", "--image", &image, "--config-data", data])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "a refused request");
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "jobq: jobq answered 400 to the new job: Component \"jobq.dev-component\" is not registered, \
         and unregistered images (configData.runtime.image) run only when the settings say `dev_mode = true`.\n"
    );
    assert_eq!(daemon.get("/jobs").await.json(), json!([]));
    let failing = json!({"component": COMPONENT, "configData": {"parameters": {"stderr": ["kaput: index out of range"], "exit_code": 2}}});
    let job = daemon.run(failing.clone()).await;
    assert_eq!(job["result"]["message"], "Application error");

    daemon.restart_with_settings("dev_mode = true");
    let printed = succeeds(&mut daemon.jobq([
        "run",
        "--image",
        &image,
        "--component-id",
        "my.component",
        "--config-data",
        data,
    ]));
    let job: Value = serde_json::from_str(&printed).expect("the finished job as JSON");
    assert_eq!(
        (job["status"].as_str(), job["component"].as_str()),
        (Some("success"), Some("my.component"))
    );
    assert_eq!(job["result"]["images"][0][0]["id"], image.as_str());
    let id = common::id(&job);
    assert_eq!(stdout_lines(&daemon, &id).await, ["printed ad hoc"]);
    // The same hardening as a registered component's container: not root, the default limits.
    let echo = daemon.echo(&id);
    assert_ne!(echo["uid"], 0);
    assert_eq!(echo["env"]["KBC_COMPONENTID"], "my.component");
    assert!(echo["config"].get("runtime").is_none(), "{echo:#}");

    let job = daemon.run(failing).await;
    assert_eq!(
        job["result"]["message"],
        "Application error: kaput: index out of range"
    );
    assert_eq!(job["result"]["error"]["type"], "application");
}
