//! Scheduling rules with real containers: configuration locks, capacity, delays, job trees,
//! kill cascades, long polls, and re-attaching after a restart; and without an engine.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_error, assert_not_killable, id, Options, TestDaemon, COMPONENT, SMALL_COMPONENT,
};
use serde_json::{json, Value};

/// Creates a job of `config` (a stored-configuration id, which takes the lock) with `parameters`.
async fn create_for_config(t: &TestDaemon, config: &str, parameters: Value) -> String {
    let job = t
        .submit(json!({"component": COMPONENT, "config": config, "configData": {"parameters": parameters}}))
        .await;
    id(&job)
}

async fn create_child(t: &TestDaemon, parent_run_id: &str, parameters: Value) -> Value {
    let answer = t
        .client
        .post_with(
            "/jobs",
            &[("X-KBC-RunId", parent_run_id)],
            &json!({"component": COMPONENT, "configData": {"parameters": parameters}}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.json());
    answer.json()
}

fn time(job: &Value, field: &str) -> String {
    job[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing: {job}"))
        .to_string()
}

#[tokio::test]
async fn lock_makes_a_newer_job_of_the_same_configuration_wait_then_run() {
    let t = TestDaemon::start(Options::default()).await;
    let first = create_for_config(&t, "cfg-1", json!({"print": ["first"], "sleep": 6})).await;
    t.wait_status(&first, "processing").await;
    let second = create_for_config(&t, "cfg-1", json!({"print": ["second"]})).await;
    let waiting = t.wait_status(&second, "waiting").await;
    assert_eq!(waiting["startTime"], Value::Null);
    // Another configuration and a configData-only job are not held by that lock.
    let other = create_for_config(&t, "cfg-2", json!({})).await;
    let data_only = id(&t.create(COMPONENT, json!({})).await);
    assert_eq!(t.wait_finished(&other).await["status"], "success");
    assert_eq!(t.wait_finished(&data_only).await["status"], "success");
    assert_eq!(t.job(&second).await["status"], "waiting");

    let first = t.wait_finished(&first).await;
    let second = t.wait_finished(&second).await;
    assert_eq!(second["status"], "success");
    assert!(time(&second, "startTime") >= time(&first, "endTime"));
    assert!(t
        .messages(second["id"].as_str().unwrap())
        .await
        .contains(&"Waiting for an earlier job of the same configuration to finish.".to_string()));
}

#[tokio::test]
async fn three_jobs_of_one_configuration_run_one_after_another_in_order() {
    let t = TestDaemon::start(Options::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create_for_config(&t, "cfg", json!({"sleep": 1})).await);
    }
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(t.wait_finished(id).await);
    }
    for job in &jobs {
        assert_eq!(job["status"], "success");
    }
    for pair in jobs.windows(2) {
        assert!(
            time(&pair[1], "startTime") >= time(&pair[0], "endTime"),
            "{} started before {} ended",
            pair[1]["id"],
            pair[0]["id"]
        );
    }
}

#[tokio::test]
async fn a_lock_blocked_job_never_blocks_unrelated_jobs_behind_it() {
    let t = TestDaemon::start(Options {
        max_concurrent_jobs: 2,
        ..Options::default()
    })
    .await;
    let holder = create_for_config(&t, "cfg", json!({"sleep": 4})).await;
    t.wait_status(&holder, "processing").await;
    let blocked = create_for_config(&t, "cfg", json!({})).await;
    let unrelated = id(&t.create(COMPONENT, json!({})).await);
    t.wait_status(&blocked, "waiting").await;
    let unrelated = t.wait_finished(&unrelated).await;
    assert_eq!(unrelated["status"], "success");
    assert_eq!(t.job(&blocked).await["status"], "waiting");
    assert_eq!(t.wait_finished(&blocked).await["status"], "success");
}

#[tokio::test]
async fn capacity_keeps_jobs_created_never_waiting() {
    let t = TestDaemon::start(Options {
        max_concurrent_jobs: 1,
        ..Options::default()
    })
    .await;
    let busy = id(&t.create(COMPONENT, json!({"sleep": 3})).await);
    t.wait_status(&busy, "processing").await;
    let queued = create_for_config(&t, "cfg", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.job(&queued).await["status"], "created");
    let busy = t.wait_finished(&busy).await;
    let queued = t.wait_finished(&queued).await;
    assert_eq!(queued["status"], "success");
    assert!(time(&queued, "startTime") >= time(&busy, "endTime"));
}

#[tokio::test]
async fn delay_holds_a_job_in_created_until_its_time() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .submit(json!({"component": COMPONENT, "delay": 3, "configData": {"parameters": {}}}))
        .await;
    let id = job["id"].as_str().unwrap();
    let delayed = time(&job, "delayedStartTime");
    assert!(delayed > time(&job, "createdTime"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(t.job(id).await["status"], "created");
    let job = t.wait_finished(id).await;
    assert_eq!(job["status"], "success");
    assert!(time(&job, "startTime") >= delayed);

    let at = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let job = t
        .submit(json!({"component": COMPONENT, "delayedStartTime": at}))
        .await;
    assert_eq!(job["delayedStartTime"], at.as_str());
    let job = t.wait_finished(job["id"].as_str().unwrap()).await;
    assert!(time(&job, "startTime") >= at);

    let both = t
        .post(
            "/jobs",
            &json!({"component": COMPONENT, "delay": 1, "delayedStartTime": at}),
        )
        .await;
    assert_error(
        &both,
        400,
        "Provide either \"delay\" or \"delayedStartTime\", but not both.",
        json!({}),
    );
}

#[tokio::test]
async fn kill_during_waiting_cancels_a_job_that_did_nothing() {
    let t = TestDaemon::start(Options::default()).await;
    let holder = create_for_config(&t, "cfg", json!({"sleep": 30})).await;
    t.wait_status(&holder, "processing").await;
    let waiting = create_for_config(&t, "cfg", json!({})).await;
    t.wait_status(&waiting, "waiting").await;
    assert_eq!(t.kill(&waiting).await.status, 202);
    let job = t.wait_finished(&waiting).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["startTime"], Value::Null);
    assert!(!t.data_dir.path().join(format!("jobs/{waiting}")).exists());
    assert_eq!(t.containers_of_job(&waiting).await, Vec::<String>::new());
    t.kill(&holder).await;
    assert_eq!(t.wait_finished(&holder).await["status"], "terminated");
}

#[tokio::test]
async fn kill_cascades_through_three_levels_with_mixed_statuses() {
    let t = TestDaemon::start(Options::default()).await;
    let parent = t
        .create(COMPONENT, json!({"print": ["parent"], "sleep": 60}))
        .await;
    let parent_id = parent["id"].as_str().unwrap().to_string();
    let done_child = create_child(&t, &parent_id, json!({})).await;
    let done_child_id = done_child["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_finished(&done_child_id).await["status"], "success");
    let running_child =
        create_child(&t, &parent_id, json!({"print": ["child"], "sleep": 60})).await;
    let running_child_id = running_child["id"].as_str().unwrap().to_string();
    let delayed = t
        .client
        .post_with(
            "/jobs",
            &[("X-KBC-RunId", running_child["runId"].as_str().unwrap())],
            &json!({"component": COMPONENT, "delay": 600}),
        )
        .await
        .unwrap()
        .json();
    let grandchild_id = delayed["id"].as_str().unwrap().to_string();
    let great = create_child(&t, delayed["runId"].as_str().unwrap(), json!({"sleep": 60})).await;
    let great_id = great["id"].as_str().unwrap().to_string();
    t.wait_for_message(&parent_id, "parent").await;
    t.wait_for_message(&running_child_id, "child").await;
    t.wait_status(&great_id, "processing").await;

    let killed = t.kill(&parent_id).await;
    assert_eq!(killed.status, 202);
    assert_eq!(t.wait_finished(&parent_id).await["status"], "terminated");
    assert_eq!(
        t.wait_finished(&running_child_id).await["status"],
        "terminated"
    );
    let grandchild = t.wait_finished(&grandchild_id).await;
    assert_eq!(grandchild["status"], "cancelled");
    assert_eq!(t.wait_finished(&great_id).await["status"], "terminated");
    assert_eq!(
        t.job(&done_child_id).await["status"],
        "success",
        "finished jobs never change"
    );
    for id in [&parent_id, &running_child_id, &great_id] {
        assert_eq!(t.containers_of_job(id).await, Vec::<String>::new());
    }

    // Killing again is harmless: finished jobs answer 400, nothing changes.
    let again = t.kill(&parent_id).await;
    assert_not_killable(&again, &parent_id, "terminated");
    assert_eq!(t.job(&grandchild_id).await["status"], "cancelled");
}

#[tokio::test]
async fn killing_a_terminating_job_again_is_harmless() {
    let t = TestDaemon::start(Options {
        kill_grace_seconds: 2,
        ..Options::default()
    })
    .await;
    let id = id(&t
        .create(
            COMPONENT,
            json!({"ignore_sigterm": true, "print": ["up"], "sleep": 60}),
        )
        .await);
    t.wait_for_message(&id, "up").await;
    assert_eq!(t.kill(&id).await.status, 202);
    t.wait_status(&id, "terminating").await;
    let again = t.kill(&id).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["desiredStatus"], "terminating");
    assert_eq!(t.wait_finished(&id).await["status"], "terminated");
}

#[tokio::test]
async fn long_poll_answers_at_the_next_change() {
    let t = TestDaemon::start(Options::default()).await;
    let id = id(&t.create(COMPONENT, json!({"sleep": 2})).await);
    let mut index: u64 = 0;
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = t.get(&format!("/jobs/{id}?wait=30&index={index}")).await;
        assert_eq!(answer.status, 200);
        let next: u64 = answer.headers["x-jobq-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(next >= index, "the index never goes back");
        index = next;
        let job = answer.json();
        let status = job["status"].as_str().unwrap().to_string();
        if statuses.last() != Some(&status) {
            statuses.push(status);
        }
        if job["isFinished"] == true {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(statuses.last().unwrap(), "success");
    assert!(statuses.contains(&"processing".to_string()), "{statuses:?}");

    // With a current index the poll waits the full time when nothing changes.
    let started = Instant::now();
    let answer = t.get(&format!("/jobs/{id}?wait=1&index={index}")).await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let bad = t.get(&format!("/jobs/{id}?wait=soon")).await;
    assert_error(
        &bad,
        400,
        "Parameter \"wait\" must be a non-negative integer, \"soon\" given.",
        json!({}),
    );
}

#[tokio::test]
async fn events_since_id_returns_only_newer_events() {
    let t = TestDaemon::start(Options::default()).await;
    let id = id(&t.create(COMPONENT, json!({"print": ["a", "b", "c"]})).await);
    t.wait_finished(&id).await;
    let events = t.events(&id).await;
    let second_id = events[1]["id"].as_str().unwrap();
    let newer = t
        .get(&format!(
            "/v2/storage/events?runId={id}&sinceId={second_id}"
        ))
        .await
        .json();
    let newer: Vec<&str> = newer
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(newer, ["Output mapping done.", "c", "b"]);
}

#[tokio::test]
async fn restart_re_attaches_to_a_running_container_without_running_it_twice() {
    let mut t = TestDaemon::start(Options::default()).await;
    let id = id(&t
        .create(
            COMPONENT,
            json!({"print": ["one", "two"], "sleep": 3, "append_run_id_to": "/tmp/ran.txt", "exit_code": 1, "stderr": ["failed after the restart"]}),
        )
        .await);
    t.wait_for_message(&id, "two").await;
    t.restart();
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["result"]["message"], "failed after the restart");
    let stdout: Vec<String> = t
        .messages(&id)
        .await
        .into_iter()
        .filter(|m| m == "one" || m == "two")
        .collect();
    assert_eq!(stdout, ["one", "two"], "no line lost or repeated");
    let ran =
        std::fs::read_to_string(t.data_dir.path().join(format!("jobs/{id}/tmp/ran.txt"))).unwrap();
    assert_eq!(ran.lines().count(), 1, "the container ran once: {ran:?}");
    assert_eq!(t.containers_of_job(&id).await, Vec::<String>::new());
}

#[tokio::test]
async fn timeout_still_counts_after_a_restart() {
    let mut t = TestDaemon::start(Options::default()).await;
    let id = id(&t
        .create(SMALL_COMPONENT, json!({"print": ["up"], "sleep": 30}))
        .await);
    t.wait_for_message(&id, "up").await;
    t.restart();
    let job = t.wait_finished(&id).await;
    assert_eq!(
        job["result"]["message"],
        "Running local/jobq-fixture:1.0.0 container exceeded the timeout of 3 seconds."
    );
    assert!(job["durationSeconds"].as_i64().unwrap() < 10, "{job}");
}

#[tokio::test]
async fn without_a_docker_engine_the_daemon_serves_and_jobs_stay_created() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let job = t.create(COMPONENT, json!({})).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        (&job["status"], &job["isFinished"]),
        (&json!("created"), &json!(false))
    );
    // Scheduler passes come and go (one every 2 s while the engine is away); the job waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let job = t.job(id).await;
    assert_eq!(
        (&job["status"], &job["startTime"], &job["isFinished"]),
        (&json!("created"), &Value::Null, &json!(false))
    );
    // A kill needs no engine: the job never started, so it is cancelled.
    let killed = t.kill(id).await;
    assert_eq!(killed.status, 202);
    let job = t.wait_finished(id).await;
    assert_eq!(
        (&job["status"], &job["startTime"]),
        (&json!("cancelled"), &Value::Null)
    );
}
