//! The queue's promises as a client sees them, whatever executor runs the jobs: each scenario
//! takes a started `TestDaemon` (on the local engine or on a swarm) and asserts its jobs' JSON,
//! events and job folders, and that no unit of theirs is left. The local and the swarm tests
//! call the same functions.

use std::time::Duration;

use serde_json::json;

use super::{id, is_iso_time, keys, TestDaemon, COMPONENT, SMALL_COMPONENT};

/// The message of the fixture's timeout (`SMALL_COMPONENT`'s 3 s, or a job's own).
fn timeout_message(seconds: u64) -> String {
    format!("Running local/jobq-fixture:1.0.0 container exceeded the timeout of {seconds} seconds.")
}

/// Asserts that job `id`, whose component appended its run id to `/tmp/ran.txt`
/// (`append_run_id_to`), ran once.
#[track_caller]
pub fn assert_ran_once(t: &TestDaemon, id: &str) {
    let ran = std::fs::read_to_string(t.data_dir.path().join(format!("jobs/{id}/tmp/ran.txt")))
        .expect("the job's run record");
    assert_eq!(ran, format!("{id}\n"), "job {id} ran once");
}

/// Asserts that job `id` has no unit left in its executor.
async fn assert_no_unit_of(t: &TestDaemon, id: &str) {
    assert_eq!(
        t.units_of_job(id).await,
        Vec::<String>::new(),
        "units of job {id} left"
    );
}

/// Success: every stdout line an info event in order, stderr after success one error event,
/// between the start and the end events of the queue.
pub async fn success_with_every_line_as_events_in_order(t: &TestDaemon) {
    let lines: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
    let job = t
        .create(
            COMPONENT,
            json!({"print": lines, "stderr": ["a warning on stderr"]}),
        )
        .await;
    let id = id(&job);
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(job["result"]["message"], "Component processing finished.");

    let events = t.events(&id).await;
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let mut expected = vec![format!("Running component {COMPONENT} (row 1 of 1)")];
    expected.extend(lines);
    expected.push("a warning on stderr".into());
    expected.push("Output mapping done.".into());
    assert_eq!(messages, expected);
    for event in &events {
        assert_eq!(
            keys(event),
            ["component", "created", "id", "message", "runId", "type"]
        );
        assert_eq!(event["runId"], id);
        assert_eq!(event["component"], COMPONENT);
        assert!(is_iso_time(&event["created"]));
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let stderr_at = events.len() - 2;
    assert_eq!(
        types[stderr_at], "error",
        "stderr after success is one error event"
    );
    assert!(types
        .iter()
        .enumerate()
        .all(|(i, t)| i == stderr_at || *t == "info"));
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow with time: {ids:?}"
    );
    // Newest first, paged.
    let page = t
        .get(&format!("/v2/storage/events?runId={id}&limit=2&offset=1"))
        .await
        .json();
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["a warning on stderr", "line 20"]);
    assert_no_unit_of(t, &id).await;
}

/// Exit 1: a user error whose message is the component's stderr.
pub async fn exit_one_is_a_user_error_with_the_stderr_message(t: &TestDaemon) {
    let job = t
        .create(
            COMPONENT,
            json!({"print": ["working"], "stderr": ["Table \"x\" is missing."], "exit_code": 1}),
        )
        .await;
    let id = id(&job);
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(job["result"]["message"], "Table \"x\" is missing.");
    assert_eq!(job["result"]["error"]["type"], "user");
    assert!(job["result"]["error"]["exceptionId"]
        .as_str()
        .unwrap()
        .starts_with("exception-"));
    let messages = t.messages(&id).await;
    assert_eq!(
        messages.last().unwrap(),
        &format!("Job \"{id}\" ended with user error: \"Table \"x\" is missing.\"")
    );
    assert!(messages.contains(&"working".to_string()));
    assert_no_unit_of(t, &id).await;
}

/// Exit 2: an application error, its details only in the daemon's log.
pub async fn exit_two_is_an_application_error(t: &TestDaemon) {
    let job = t
        .create(
            COMPONENT,
            json!({"stderr": ["internal details"], "exit_code": 2}),
        )
        .await;
    let id = id(&job);
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(job["result"]["message"], "Application error");
    assert_eq!(job["result"]["error"]["type"], "application");
    let events = t.events(&id).await;
    assert!(events
        .iter()
        .any(|e| e["type"] == "error" && e["message"] == "Application error"));
    assert!(
        !events
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("internal details")),
        "an application error's details stay in the daemon log"
    );
    assert_no_unit_of(t, &id).await;
}

/// A component running past its timeout (`SMALL_COMPONENT`'s 3 s) is killed: a user error.
pub async fn timeout_kills_the_unit_with_a_user_error(t: &TestDaemon) {
    let job = t.create(SMALL_COMPONENT, json!({"sleep": 30})).await;
    let id = id(&job);
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(job["result"]["message"], timeout_message(3));
    assert_eq!(job["result"]["error"]["type"], "user");
    assert!(job["durationSeconds"].as_i64().unwrap() < 30);
    assert_no_unit_of(t, &id).await;
}

/// A component allocating past its memory limit (`SMALL_COMPONENT`'s 32m): a user error naming
/// the limit. Its timeout is raised from the component's 3 s, so that a loaded machine (a
/// swarm's service takes a while to start) cannot make it a timeout.
pub async fn out_of_memory_is_a_user_error_naming_the_limit(t: &TestDaemon) {
    let job = t
        .submit(json!({"component": SMALL_COMPONENT, "configData": {
            "runtime": {"process_timeout": 60},
            "parameters": {"allocate_mib": 200},
        }}))
        .await;
    let id = id(&job);
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(
        job["result"]["message"],
        "Component out of memory (exceeded 32m)"
    );
    assert_eq!(job["result"]["error"]["type"], "user");
    assert_no_unit_of(t, &id).await;
}

/// A kill of a running job stops its unit (SIGTERM, then SIGKILL after the daemon's
/// `kill_grace_seconds` for a component that ignores SIGTERM): `terminated`, no unit left.
pub async fn kill_terminates_a_running_job(t: &TestDaemon, ignore_sigterm: bool) {
    let job = t
        .create(
            COMPONENT,
            json!({"ignore_sigterm": ignore_sigterm, "print": ["up"], "sleep": 60}),
        )
        .await;
    let id = id(&job);
    // The unit really runs once its first line arrived.
    t.wait_for_message(&id, "up").await;
    assert_eq!(t.job(&id).await["status"], "processing");
    let labels = t.unit_labels_of_job(&id).await;
    assert_eq!(labels.len(), 1, "{labels:?}");
    let instance = t.daemon.as_ref().unwrap().instance_id();
    let label = |name: &str| labels[0].get(name).map(String::as_str);
    assert_eq!(label(jobq::runner::LABEL_INSTANCE), Some(instance));
    assert_eq!(label(jobq::runner::LABEL_RUN_ID), Some(id.as_str()));
    assert_eq!(label(jobq::runner::LABEL_ROW_ID), Some(""));
    assert_eq!(label(jobq::runner::LABEL_STAGE), Some("0"));

    let killed = t.kill(&id).await;
    assert_eq!(killed.status, 202);
    assert_eq!(killed.json()["desiredStatus"], "terminating");
    let job = t.wait_finished(&id).await;
    assert_eq!(job["status"], "terminated", "{job:#}");
    assert!(job["durationSeconds"].as_i64().unwrap() < 60);
    assert_no_unit_of(t, &id).await;
}

/// The daemon stops while a job's unit runs and a new one starts on the same data dir: it
/// re-attaches, and the job succeeds with its lines from before and after the restart each
/// once, in order, having run once.
pub async fn reattach_after_a_restart_keeps_every_line_once(t: &mut TestDaemon) {
    let job = t
        .create(
            COMPONENT,
            json!({"print": ["before the restart"], "sleep": 4,
                   "print_after_sleep": ["after the restart"], "append_run_id_to": "/tmp/ran.txt"}),
        )
        .await;
    let id = id(&job);
    t.wait_for_message(&id, "before the restart").await;
    t.restart();
    let job = t.wait_finished(&id).await;
    let messages = t.messages(&id).await;
    assert_eq!(job["status"], "success", "{job:#} {messages:?}");
    let lines: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains(" the restart"))
        .collect();
    assert_eq!(
        lines,
        ["before the restart", "after the restart"],
        "{messages:?}"
    );
    assert_ran_once(t, &id);
    assert_no_unit_of(t, &id).await;
}

/// A job's timeout counts from its unit's start, not from a re-attach: with the daemon away
/// past the job's deadline, the new daemon kills the unit as it re-attaches, before the
/// component prints its line after the sleep (which it would, were the timeout counted anew).
pub async fn timeout_after_a_restart_counts_from_the_start(t: &mut TestDaemon) {
    const TIMEOUT: u64 = 6;
    let job = t
        .submit(json!({"component": COMPONENT, "configData": {
            "runtime": {"process_timeout": TIMEOUT},
            "parameters": {"print": ["started"], "sleep": 12, "print_after_sleep": ["slept"]},
        }}))
        .await;
    let id = id(&job);
    t.wait_for_message(&id, "started").await;
    t.stop();
    // The unit started before its line arrived: its deadline has passed once this sleep ends.
    tokio::time::sleep(Duration::from_secs(TIMEOUT + 1)).await;
    t.start_again();
    let job = t.wait_finished(&id).await;
    let messages = t.messages(&id).await;
    assert_eq!(job["status"], "error", "{job:#} {messages:?}");
    assert_eq!(job["result"]["message"], timeout_message(TIMEOUT));
    assert!(!messages.contains(&"slept".to_string()), "{messages:?}");
    assert_no_unit_of(t, &id).await;
}

/// A unit of this store that no job owns (a crashed jobq's, of a job since gone) is removed
/// when the daemon starts.
pub async fn a_unit_no_job_owns_is_removed_at_start(t: &mut TestDaemon) {
    let unit = t.plant_unit("999999").await;
    assert!(
        t.units()
            .await
            .contains(&(unit.clone(), "999999".to_string())),
        "the planted unit {unit} is not listed"
    );
    t.restart();
    let started = std::time::Instant::now();
    while t.units().await.iter().any(|(listed, _)| *listed == unit) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the unit {unit} no job owns is still there 30 s after the start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every scenario above that keeps the daemon running, at the same time.
pub async fn every_ending(t: &TestDaemon) {
    tokio::join!(
        success_with_every_line_as_events_in_order(t),
        exit_one_is_a_user_error_with_the_stderr_message(t),
        exit_two_is_an_application_error(t),
        timeout_kills_the_unit_with_a_user_error(t),
        out_of_memory_is_a_user_error_naming_the_limit(t),
        kill_terminates_a_running_job(t, false),
        kill_terminates_a_running_job(t, true),
    );
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}
