//! Jobs run end to end with real containers: statuses, results, events and the data folder.

mod common;

use common::{assert_not_killable, is_iso_time, keys, scenarios, Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

#[tokio::test]
async fn created_job_runs_to_success_with_the_exact_job_json() {
    let t = TestDaemon::start(Options::default()).await;
    let created = t
        .create(
            COMPONENT,
            json!({"print": ["hello", "world"], "usage": [{"metric": "rows", "value": 2}]}),
        )
        .await;
    let id = created["id"].as_str().expect("id is a string").to_string();

    let expected_keys = [
        "backend",
        "behavior",
        "branchId",
        "component",
        "config",
        "configData",
        "configRowIds",
        "createdTime",
        "delayedStartTime",
        "desiredStatus",
        "durationSeconds",
        "endTime",
        "id",
        "isFinished",
        "metrics",
        "mode",
        "onlyOrchestrationTaskIds",
        "orchestrationJobId",
        "orchestrationPhaseId",
        "orchestrationTaskId",
        "parallelism",
        "parentRunId",
        "previousJobId",
        "project",
        "result",
        "runId",
        "startTime",
        "status",
        "tag",
        "token",
        "type",
        "url",
        "usageData",
        "variableValuesData",
        "variableValuesId",
    ];
    assert_eq!(keys(&created), expected_keys);
    assert_eq!(created["status"], "created");
    assert_eq!(created["desiredStatus"], "processing");
    assert_eq!(created["isFinished"], false);
    assert_eq!(created["runId"], id.as_str());
    assert_eq!(created["parentRunId"], "");
    for field in [
        "orchestrationJobId",
        "orchestrationTaskId",
        "orchestrationPhaseId",
        "previousJobId",
        "onlyOrchestrationTaskIds",
    ] {
        assert_eq!(created[field], Value::Null, "{field}");
    }
    assert_eq!(
        created["project"],
        json!({"id": "123", "name": "Test project"})
    );
    assert_eq!(
        created["token"],
        json!({"id": "7", "description": "test token"})
    );
    assert_eq!(created["mode"], "run");
    assert_eq!(created["component"], COMPONENT);
    assert_eq!(created["config"], Value::Null);
    assert_eq!(created["tag"], "1.0.0");
    assert_eq!(created["branchId"], "456");
    assert_eq!(created["type"], "standard");
    assert_eq!(created["startTime"], Value::Null);
    assert_eq!(created["durationSeconds"], Value::Null);
    assert_eq!(created["variableValuesData"], json!({"values": []}));
    assert_eq!(created["url"], format!("http://{}/jobs/{id}", t.addr));
    assert!(
        is_iso_time(&created["createdTime"]),
        "{}",
        created["createdTime"]
    );

    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(job["isFinished"], true);
    assert_eq!(keys(&job), expected_keys);
    assert_eq!(job["result"]["message"], "Component processing finished.");
    let images = job["result"]["images"].as_array().expect("images");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0][0]["id"], "local/jobq-fixture:1.0.0");
    let digest = images[0][0]["digests"][0]
        .as_str()
        .expect("a digest or image id");
    assert!(digest.contains("sha256:"), "{digest}");
    assert!(job["result"].get("error").is_none());
    assert_eq!(job["usageData"], json!([{"metric": "rows", "value": 2}]));
    assert!(is_iso_time(&job["startTime"]) && is_iso_time(&job["endTime"]));
    assert!(job["durationSeconds"].as_i64().is_some_and(|d| d >= 0));
    assert_eq!(t.containers_of_job(&id).await, Vec::<String>::new());
}

#[tokio::test]
async fn container_sees_the_data_folder_config_and_environment_of_the_contract() {
    let t = TestDaemon::start(Options::default()).await;
    let answer = t
        .post(
            "/jobs",
            &json!({
                "component": COMPONENT,
                "configData": {
                    "parameters": {"answer": 42},
                    "runtime": {"tag": "1.0.0"},
                    "processors": {"before": []},
                    "storage": {},
                    "authorization": {"oauth_api": {"id": "1"}},
                },
            }),
        )
        .await;
    assert_eq!(answer.status, 201);
    let id = answer.json()["id"].as_str().unwrap().to_string();
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");

    let echo = t.echo(&id);
    assert_eq!(
        echo["config"],
        json!({
            "parameters": {"answer": 42},
            "authorization": {"oauth_api": {"id": "1"}, "context": format!("123_{COMPONENT}")},
            "image_parameters": {"greeting": "hello"},
            "action": "run",
        })
    );
    let env = &echo["env"];
    assert_eq!(env["KBC_DATADIR"], "/data/");
    assert_eq!(env["KBC_RUNID"], id.as_str());
    assert_eq!(env["KBC_PROJECTID"], "123");
    assert_eq!(env["KBC_COMPONENTID"], COMPONENT);
    assert_eq!(env["KBC_BRANCHID"], "456");
    assert_eq!(env["KBC_STACKID"], "jobq.local");
    assert_eq!(env["KBC_COMPONENT_RUN_MODE"], "run");
    assert_eq!(env["KBC_CONFIGVERSION"], "");
    assert!(env["KBC_PROJECT_FEATURE_GATES"]
        .as_str()
        .unwrap()
        .contains("queuev2"));
    let config_id = env["KBC_CONFIGID"].as_str().unwrap();
    assert_eq!(config_id.len(), 16, "a hash of the parameters: {config_id}");
    assert_ne!(echo["uid"], 0, "the container must not run as root");
    assert_eq!(echo["in"], json!(["files", "state.json", "tables", "user"]));
    let state = std::fs::read_to_string(
        t.data_dir
            .path()
            .join(format!("jobs/{id}/data/in/state.json")),
    )
    .unwrap();
    assert_eq!(state, "{}");
    for folder in ["out/tables", "out/files"] {
        assert!(t
            .data_dir
            .path()
            .join(format!("jobs/{id}/data/{folder}"))
            .is_dir());
    }
}

#[tokio::test]
async fn exit_one_without_stderr_uses_stdout() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .create(COMPONENT, json!({"print": ["only stdout"], "exit_code": 1}))
        .await;
    let job = t.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(job["result"]["message"], "only stdout");
}

#[tokio::test]
async fn kill_of_created_job_cancels_it() {
    let t = TestDaemon::start(Options {
        max_concurrent_jobs: 1,
        ..Options::default()
    })
    .await;
    let blocker = t.create(COMPONENT, json!({"sleep": 30})).await;
    let blocker = blocker["id"].as_str().unwrap();
    t.wait_status(blocker, "processing").await;
    let queued = t.create(COMPONENT, json!({})).await;
    let queued = queued["id"].as_str().unwrap();

    let killed = t.kill(queued).await;
    assert_eq!(killed.status, 202);
    assert_eq!(killed.json()["desiredStatus"], "terminating");
    let job = t.wait_finished(queued).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["startTime"], Value::Null);
    assert!(
        !t.data_dir.path().join(format!("jobs/{queued}")).exists(),
        "a cancelled job did nothing"
    );

    let again = t.kill(queued).await;
    assert_not_killable(&again, queued, "cancelled");
    t.kill(blocker).await;
    t.wait_finished(blocker).await;
}

#[tokio::test]
async fn capacity_keeps_jobs_created_until_a_slot_frees() {
    let t = TestDaemon::start(Options {
        max_concurrent_jobs: 1,
        ..Options::default()
    })
    .await;
    let first = t.create(COMPONENT, json!({"sleep": 3})).await;
    let second = t.create(COMPONENT, json!({})).await;
    let third = t.create(COMPONENT, json!({})).await;
    let [first, second, third] =
        [&first, &second, &third].map(|j| j["id"].as_str().unwrap().to_string());

    t.wait_status(&first, "processing").await;
    for id in [&second, &third] {
        assert_eq!(
            t.job(id).await["status"],
            "created",
            "job {id} must wait for capacity"
        );
    }
    let first_job = t.wait_finished(&first).await;
    let second_job = t.wait_finished(&second).await;
    let third_job = t.wait_finished(&third).await;
    for job in [&first_job, &second_job, &third_job] {
        assert_eq!(job["status"], "success");
    }
    // One slot: each started only after the one before ended.
    assert!(second_job["startTime"].as_str().unwrap() >= first_job["endTime"].as_str().unwrap());
    assert!(third_job["startTime"].as_str().unwrap() >= second_job["endTime"].as_str().unwrap());
}

// The scenarios the swarm's tests run too (tests/swarm.rs), here on the local engine.

#[tokio::test]
async fn stdout_lines_become_info_events_in_order() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::success_with_every_line_as_events_in_order(&t).await;
}

#[tokio::test]
async fn exit_one_is_a_user_error_with_the_stderr_message() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::exit_one_is_a_user_error_with_the_stderr_message(&t).await;
}

#[tokio::test]
async fn exit_two_is_an_application_error() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::exit_two_is_an_application_error(&t).await;
}

#[tokio::test]
async fn timeout_kills_the_container_with_a_user_error() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::timeout_kills_the_unit_with_a_user_error(&t).await;
}

#[tokio::test]
async fn out_of_memory_is_a_user_error_naming_the_limit() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::out_of_memory_is_a_user_error_naming_the_limit(&t).await;
}

#[tokio::test]
async fn kill_of_processing_job_terminates_it_and_removes_its_container() {
    let t = TestDaemon::start(Options::default()).await;
    scenarios::kill_terminates_a_running_job(&t, false).await;
}

#[tokio::test]
async fn kill_of_a_component_ignoring_sigterm_ends_terminated_after_the_grace_period() {
    let t = TestDaemon::start(Options {
        kill_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    scenarios::kill_terminates_a_running_job(&t, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_reattaches_and_keeps_every_line_once() {
    let mut t = TestDaemon::start(Options::default()).await;
    scenarios::reattach_after_a_restart_keeps_every_line_once(&mut t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_no_job_owns_is_removed_at_start() {
    let mut t = TestDaemon::start(Options::default()).await;
    scenarios::a_unit_no_job_owns_is_removed_at_start(&mut t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_counts_from_the_container_start_across_a_restart() {
    let mut t = TestDaemon::start(Options::default()).await;
    scenarios::timeout_after_a_restart_counts_from_the_start(&mut t).await;
}
