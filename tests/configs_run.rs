//! Jobs of stored configurations with real containers: rows (sequential and parallel),
//! disabled configurations and rows, deep merge, state, variables, branches, versions.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{assert_error, Options, TestDaemon, COMPONENT};
use hyper::Method;
use serde_json::{json, Value};

async fn send(t: &TestDaemon, method: Method, path: &str, body: &Value) -> Value {
    let answer = t
        .client
        .send(
            method,
            path,
            &[("Content-Type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    assert!(
        answer.status < 300,
        "{path}: {} {}",
        answer.status,
        answer.json()
    );
    answer.json()
}

/// Creates configuration `id` of the fixture in `branch` with `configuration` and rows.
async fn configure(
    t: &TestDaemon,
    branch: &str,
    id: &str,
    configuration: Value,
    rows: &[(&str, Value)],
) {
    let base = format!("/v2/storage/branch/{branch}/components/{COMPONENT}/configs");
    send(
        t,
        Method::POST,
        &base,
        &json!({"configurationId": id, "name": id, "configuration": configuration}),
    )
    .await;
    for (row, configuration) in rows {
        send(
            t,
            Method::POST,
            &format!("{base}/{id}/rows"),
            &json!({"rowId": row, "name": row, "configuration": configuration}),
        )
        .await;
    }
}

fn echo_at(t: &TestDaemon, folder: &str) -> Value {
    let path = t
        .data_dir
        .path()
        .join(folder)
        .join("data/out/files/echo.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[tokio::test]
async fn rows_run_one_after_another_in_one_job_each_in_its_own_folder() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "rows",
        json!({"parameters": {"shared": {"a": 1, "b": 2}, "list": [1, 2, 3], "print": ["root"]}}),
        &[
            (
                "r1",
                json!({"parameters": {"shared": {"b": 20}, "print": ["row one"]}}),
            ),
            (
                "r2",
                json!({"parameters": {"list": [9], "print": ["row two"]}}),
            ),
            ("r3", json!({"parameters": {"print": ["row three"]}})),
        ],
    )
    .await;
    let job = t
        .run(json!({"component": COMPONENT, "config": "rows"}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(job["type"], "standard");
    assert_eq!(job["result"]["configVersion"], "4");
    let images = job["result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "one inner list per row");
    let id = job["id"].as_str().unwrap();
    let mut starts = Vec::new();
    for row in ["r1", "r2", "r3"] {
        let echo = echo_at(&t, &format!("jobs/{id}/rows/{row}"));
        assert_eq!(echo["env"]["KBC_CONFIGROWID"], row);
        assert_eq!(echo["env"]["KBC_CONFIGID"], "rows");
        assert_eq!(echo["env"]["KBC_CONFIGVERSION"], "4");
        starts.push(echo);
    }
    // Deep merge: objects by key, lists by index.
    assert_eq!(
        starts[0]["config"]["parameters"]["shared"],
        json!({"a": 1, "b": 20})
    );
    assert_eq!(starts[1]["config"]["parameters"]["list"], json!([9, 2, 3]));
    assert_eq!(
        starts[2]["config"]["parameters"]["print"],
        json!(["row three"])
    );
    let messages = t.messages(id).await;
    let order: Vec<&String> = messages
        .iter()
        .filter(|m| m.starts_with("row ") || m.starts_with("Running component"))
        .collect();
    assert_eq!(
        order,
        [
            &format!("Running component {COMPONENT} (row 1 of 3)"),
            &"row one".to_string(),
            &format!("Running component {COMPONENT} (row 2 of 3)"),
            &"row two".to_string(),
            &format!("Running component {COMPONENT} (row 3 of 3)"),
            &"row three".to_string(),
        ]
    );
}

#[tokio::test]
async fn parallelism_makes_a_container_job_with_one_child_per_row() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "par",
        json!({"parameters": {"sleep": 2}}),
        &[("r1", json!({})), ("r2", json!({})), ("r3", json!({}))],
    )
    .await;
    let container = t
        .submit(json!({"component": COMPONENT, "config": "par", "parallelism": "2"}))
        .await;
    assert_eq!(container["type"], "container");
    assert_eq!(container["parallelism"], "2");
    let container_id = container["id"].as_str().unwrap().to_string();
    let children = t
        .get(&format!(
            "/search/jobs?parentRunId={container_id}&sortOrder=asc"
        ))
        .await
        .json();
    let children = children.as_array().unwrap().clone();
    assert_eq!(children.len(), 3);
    for (child, row) in children.iter().zip(["r1", "r2", "r3"]) {
        assert_eq!(child["configRowIds"], json!([row]));
        assert_eq!(
            child["runId"],
            format!("{container_id}.{}", child["id"].as_str().unwrap())
        );
        assert_eq!(child["type"], "standard");
    }
    // Never more than two children processing at once; the third waits.
    let mut saw_waiting = false;
    loop {
        let now = t
            .get(&format!("/search/jobs?parentRunId={container_id}"))
            .await
            .json();
        let now = now.as_array().unwrap().clone();
        let processing = now.iter().filter(|c| c["status"] == "processing").count();
        assert!(processing <= 2, "{processing} children processing at once");
        saw_waiting |= now.iter().any(|c| c["status"] == "waiting");
        if now.iter().all(|c| c["isFinished"] == true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_waiting, "the third child must wait for a slot");
    let container = t.wait_finished(&container_id).await;
    assert_eq!(container["status"], "success");
}

#[tokio::test]
async fn a_failed_child_fails_the_container_and_killing_it_kills_the_children() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "mixed",
        json!({}),
        &[
            ("ok", json!({})),
            ("bad", json!({"parameters": {"exit_code": 1}})),
        ],
    )
    .await;
    let container = t
        .run(json!({"component": COMPONENT, "config": "mixed", "parallelism": "infinity"}))
        .await;
    assert_eq!(container["status"], "error");

    configure(
        &t,
        "default",
        "long",
        json!({"parameters": {"sleep": 60}}),
        &[("a", json!({})), ("b", json!({}))],
    )
    .await;
    let container = t
        .submit(json!({"component": COMPONENT, "config": "long", "parallelism": "infinity"}))
        .await;
    let id = container["id"].as_str().unwrap().to_string();
    let children = t
        .get(&format!("/search/jobs?parentRunId={id}"))
        .await
        .json();
    for child in children.as_array().unwrap() {
        t.wait_status(child["id"].as_str().unwrap(), "processing")
            .await;
    }
    assert_eq!(t.kill(&id).await.status, 202);
    assert_eq!(t.wait_finished(&id).await["status"], "terminated");
    for child in children.as_array().unwrap() {
        assert_eq!(
            t.wait_finished(child["id"].as_str().unwrap()).await["status"],
            "terminated"
        );
    }
}

#[tokio::test]
async fn disabled_configuration_fails_unless_force_run() {
    let t = TestDaemon::start(Options::default()).await;
    configure(&t, "default", "off", json!({}), &[]).await;
    send(
        &t,
        Method::PUT,
        &format!("/v2/storage/components/{COMPONENT}/configs/off"),
        &json!({"isDisabled": true}),
    )
    .await;
    let answer = t
        .post("/jobs", &json!({"component": COMPONENT, "config": "off"}))
        .await;
    assert_error(
        &answer,
        400,
        &format!("Configuration \"off\" of component \"{COMPONENT}\" is disabled."),
        json!({}),
    );
    let job = t
        .run(json!({"component": COMPONENT, "config": "off", "mode": "forceRun"}))
        .await;
    assert_eq!(job["status"], "success");
}

#[tokio::test]
async fn disabled_rows_are_skipped_unless_listed_and_unknown_rows_are_refused() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "cfg",
        json!({}),
        &[("on", json!({})), ("off", json!({}))],
    )
    .await;
    send(
        &t,
        Method::PUT,
        &format!("/v2/storage/components/{COMPONENT}/configs/cfg/rows/off"),
        &json!({"isDisabled": true}),
    )
    .await;
    let job = t
        .run(json!({"component": COMPONENT, "config": "cfg"}))
        .await;
    assert_eq!(job["result"]["images"].as_array().unwrap().len(), 1);
    let id = job["id"].as_str().unwrap();
    assert!(t
        .messages(id)
        .await
        .contains(&"Skipping disabled configuration: off".to_string()));
    assert!(!t
        .data_dir
        .path()
        .join(format!("jobs/{id}/rows/off"))
        .exists());

    let job = t
        .run(json!({"component": COMPONENT, "config": "cfg", "configRowIds": ["off"]}))
        .await;
    assert_eq!(job["status"], "success");
    assert!(t
        .data_dir
        .path()
        .join(format!("jobs/{}/rows/off", job["id"].as_str().unwrap()))
        .exists());

    let answer = t
        .post(
            "/jobs",
            &json!({"component": COMPONENT, "config": "cfg", "configRowIds": ["nope"]}),
        )
        .await;
    assert_error(
        &answer,
        400,
        &format!(
            "Configuration row(s) \"nope\" not found in configuration \"cfg\" of component \
             \"{COMPONENT}\"."
        ),
        json!({}),
    );
}

#[tokio::test]
async fn unknown_configuration_is_404_naming_component_config_and_branch() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let answer = t
        .post(
            "/jobs",
            &json!({"component": COMPONENT, "config": "missing"}),
        )
        .await;
    assert_error(
        &answer,
        404,
        &format!(
            "Configuration \"missing\" of component \"{COMPONENT}\" not found in branch \"456\"."
        ),
        json!({}),
    );
}

/// Replaces the parameters of configuration `id` of the fixture.
async fn set_parameters(t: &TestDaemon, id: &str, parameters: Value) {
    let path = format!("/v2/storage/components/{COMPONENT}/configs/{id}");
    send(
        t,
        Method::PUT,
        &path,
        &json!({"configuration": {"parameters": parameters}}),
    )
    .await;
}

/// The stored component state of configuration `id` of the fixture.
async fn stored_state(t: &TestDaemon, id: &str) -> Value {
    let path = format!("/v2/storage/components/{COMPONENT}/configs/{id}");
    t.get(&path).await.json()["state"]["component"].clone()
}

#[tokio::test]
async fn state_round_trips_over_two_runs_and_survives_a_failed_run() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "st",
        json!({"parameters": {"state": {"cursor": 1}}}),
        &[],
    )
    .await;
    let first = t.run(json!({"component": COMPONENT, "config": "st"})).await;
    assert_eq!(first["status"], "success");
    assert_eq!(stored_state(&t, "st").await, json!({"cursor": 1}));

    // The next run sees it in in/state.json.
    set_parameters(&t, "st", json!({"state": {"cursor": 2}})).await;
    let second = t.run(json!({"component": COMPONENT, "config": "st"})).await;
    let folder = t.data_dir.path().join(format!(
        "jobs/{}/data/in/state.json",
        second["id"].as_str().unwrap()
    ));
    let seen: Value = serde_json::from_slice(&std::fs::read(folder).unwrap()).unwrap();
    assert_eq!(seen, json!({"cursor": 1}));
    assert_eq!(stored_state(&t, "st").await, json!({"cursor": 2}));

    // A failed run keeps the old state.
    set_parameters(&t, "st", json!({"state": {"cursor": 3}, "exit_code": 1})).await;
    let failed = t.run(json!({"component": COMPONENT, "config": "st"})).await;
    assert_eq!(failed["status"], "error");
    assert_eq!(stored_state(&t, "st").await, json!({"cursor": 2}));
    // So does a debug run.
    set_parameters(&t, "st", json!({"state": {"cursor": 4}})).await;
    let debug = t
        .run(json!({"component": COMPONENT, "config": "st", "mode": "debug"}))
        .await;
    assert_eq!(debug["status"], "success");
    assert_eq!(stored_state(&t, "st").await, json!({"cursor": 2}));
}

#[tokio::test]
async fn variables_replace_placeholders_or_fail_the_job() {
    let t = TestDaemon::start(Options::default()).await;
    configure(
        &t,
        "default",
        "vars",
        json!({"parameters": {"print": ["hello {{name}}"]}}),
        &[],
    )
    .await;
    let job = t.run(json!({"component": COMPONENT, "config": "vars", "variableValuesData": {"values": [{"name": "name", "value": "world"}]}}),
    )
    .await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert!(t
        .messages(job["id"].as_str().unwrap())
        .await
        .contains(&"hello world".to_string()));
    assert_eq!(
        job["result"]["variables"],
        json!([{"name": "name", "value": "world"}])
    );

    let job = t
        .run(json!({"component": COMPONENT, "config": "vars"}))
        .await;
    assert_eq!(job["status"], "error");
    assert_eq!(
        job["result"]["message"],
        "Missing values for placeholders: name"
    );
    assert_eq!(job["result"]["error"]["type"], "user");
}

#[tokio::test]
async fn a_configuration_in_a_dev_branch_runs_with_that_branch_id() {
    let t = TestDaemon::start(Options::default()).await;
    let branch = send(
        &t,
        Method::POST,
        "/v2/storage/dev-branches",
        &json!({"name": "feature"}),
    )
    .await;
    let branch_id = branch["id"].to_string().trim_matches('"').to_string();
    configure(
        &t,
        &branch_id,
        "same-id",
        json!({"parameters": {"print": ["dev"]}}),
        &[],
    )
    .await;
    configure(
        &t,
        "default",
        "same-id",
        json!({"parameters": {"print": ["main"]}}),
        &[],
    )
    .await;
    let job = t
        .run(json!({"component": COMPONENT, "config": "same-id", "branchId": branch_id}))
        .await;
    assert_eq!(job["status"], "success");
    assert_eq!(job["branchId"], branch_id.as_str());
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        echo_at(&t, &format!("jobs/{id}"))["env"]["KBC_BRANCHID"],
        branch_id.as_str()
    );
    assert!(t.messages(id).await.contains(&"dev".to_string()));
    let main = t
        .run(json!({"component": COMPONENT, "config": "same-id"}))
        .await;
    assert!(t
        .messages(main["id"].as_str().unwrap())
        .await
        .contains(&"main".to_string()));
}

#[tokio::test]
async fn each_change_bumps_the_version_the_job_records() {
    let t = TestDaemon::start(Options::default()).await;
    configure(&t, "default", "v", json!({}), &[]).await;
    let path = format!("/v2/storage/components/{COMPONENT}/configs/v");
    assert_eq!(t.get(&path).await.json()["version"], 1);
    send(
        &t,
        Method::PUT,
        &path,
        &json!({"configuration": {"parameters": {"x": 1}}}),
    )
    .await;
    assert_eq!(t.get(&path).await.json()["version"], 2);
    let job = t.run(json!({"component": COMPONENT, "config": "v"})).await;
    assert_eq!(job["result"]["configVersion"], "2");
}
