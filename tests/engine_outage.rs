//! Defect 8 of issue #9, engine outage noise: while the Docker engine is away, jobq logs the
//! outage once per job when the engine is lost and once when it answers again (not at every
//! retry), and leaves a `warn` event on each job saying that lines printed meanwhile may be
//! missing.
//!
//! The outage is real: the test runs a second Docker engine of its own (`common::engine`, with
//! `--live-restore`, so containers keep running while it is down), points the real `jobq`
//! binary at it, and stops and starts it while two jobs run:
//!
//! - the long job prints a line, sleeps through the whole outage and prints its second line
//!   after the engine is back: both lines are recorded, once each;
//! - the short job prints a line and prints its second line and ends while the engine is away.
//!   The engine (Docker 20.10 here) finds the container exited when it comes back, with its exit
//!   code, but never collects what the container printed while the engine was down: the second
//!   line is lost. This is the loss the warn event tells the user about. (A container that is
//!   still running when the engine comes back keeps such lines: the shim holds them in the
//!   pipe until the engine reads it again. That case depends on timing the test does not
//!   control, so it is not asserted.)
//!
//! The timings are checked against the containers' start times, so a slow machine fails with a
//! message saying which assumption broke instead of a puzzling assertion.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::binary::Served;
use common::engine::Engine;
use common::{id, Docker, Options, COMPONENT};
use serde_json::{json, Value};

/// The warn event the fix adds.
const ENGINE_LOST_MESSAGE: &str = jobq::runner::ENGINE_LOST_MESSAGE;
/// jobq's log line when a job's engine goes away, and when it answers again.
const LOST_LOG: &str = "the Docker engine is unreachable; waiting for it";
const BACK_LOG: &str = "the Docker engine answers again";

/// How long the engine stays down after it has stopped (at least).
const OUTAGE: Duration = Duration::from_secs(4);
/// The long job sleeps through stopping (about 2.5 s here: dockerd stops its containerd too),
/// the outage and starting (under 1 s), with a few seconds to spare.
const LONG_SLEEP: f64 = 12.0;
/// The short job prints its second line after the engine has stopped and before it starts.
const SHORT_SLEEP: f64 = 6.0;

const LONG_FIRST: &str = "long: before the outage";
const LONG_SECOND: &str = "long: after the outage";
const SHORT_FIRST: &str = "short: before the outage";
const SHORT_SECOND: &str = "short: while the engine is away";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_outage_is_logged_once_per_job_and_warns_on_the_job() {
    let mut engine = Engine::start();
    let dir = tempfile::Builder::new()
        .prefix("jobq-engine-outage-")
        .tempdir()
        .unwrap();
    let options = Options {
        max_concurrent_jobs: 2,
        kill_grace_seconds: 1,
        timeout_seconds: 120,
        docker: Docker::At(engine.host()),
    };
    let jobq = Served::fresh(dir.path(), &options, "info").await;

    let long = id(&jobq
        .create(
            COMPONENT,
            json!({"print": [LONG_FIRST], "sleep": LONG_SLEEP, "print_after_sleep": [LONG_SECOND]}),
        )
        .await);
    let short = id(&jobq
        .create(
            COMPONENT,
            json!({"print": [SHORT_FIRST], "sleep": SHORT_SLEEP, "print_after_sleep": [SHORT_SECOND]}),
        )
        .await);
    jobq.wait_for_message(&long, LONG_FIRST).await;
    jobq.wait_for_message(&short, SHORT_FIRST).await;
    let short_seen = Utc::now();
    let long_started = started_at(&engine, &long);
    let short_started = started_at(&engine, &short);
    let secs = |s: f64| chrono::Duration::milliseconds((s * 1000.0) as i64);

    // The outage: SIGTERM to the engine's pid, wait until it exited and its socket is silent.
    let pid = engine.pid();
    let stopping = Utc::now();
    engine.stop();
    let stopped = Utc::now();
    assert!(
        stopped + secs(0.5) < short_started + secs(SHORT_SLEEP),
        "timing: the engine took until {stopped} to stop, too close to {} when the short job \
         prints its second line",
        short_started + secs(SHORT_SLEEP)
    );
    // Down for OUTAGE, and at least until the short job has printed its second line and ended.
    let short_ended = short_seen + secs(SHORT_SLEEP + 1.0);
    let down_until = (stopped + chrono::Duration::from_std(OUTAGE).unwrap()).max(short_ended);
    tokio::time::sleep((down_until - Utc::now()).to_std().unwrap_or_default()).await;
    let starting = Utc::now();
    engine.restart();
    let back = Utc::now();
    assert!(
        back + secs(1.0) < long_started + secs(LONG_SLEEP),
        "timing: the engine answered again at {back}, too close to {} when the long job prints \
         its second line",
        long_started + secs(LONG_SLEEP)
    );
    println!(
        "engine (pid {pid}) got SIGTERM at {stopping}, exited at {stopped}, restarted at {starting}, \
         answered at {back}; long job started {long_started}, short job started {short_started}"
    );

    let long_job = jobq.wait_finished(&long).await;
    let short_job = jobq.wait_finished(&short).await;
    let long_events = jobq.events(&long).await;
    let short_events = jobq.events(&short).await;
    let log = jobq.log();
    let engine_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Docker engine"))
        .collect();
    println!(
        "jobq's log lines about the engine:\n{}",
        engine_lines.join("\n")
    );
    for (id, events) in [(&long, &long_events), (&short, &short_events)] {
        println!("events of job {id}, oldest first:");
        for event in events {
            println!("  {} {}", event["type"], event["message"]);
        }
    }

    // A client sees both jobs succeed: the engine kept their containers and their exit codes.
    assert_eq!(long_job["status"], "success", "long job: {long_job:#}");
    assert_eq!(short_job["status"], "success", "short job: {short_job:#}");

    // An operator sees the outage once per job when it starts and once when it ends, and no
    // other line about the engine (the old code logged one at every retry, each second).
    for id in [&long, &short] {
        for message in [LOST_LOG, BACK_LOG] {
            let of_job = engine_lines
                .iter()
                .filter(|line| line.contains(message) && names_job(line, id))
                .count();
            assert_eq!(
                of_job,
                1,
                "jobq's log should say \"{message}\" once for job {id}; its lines about the \
                 engine:\n{}",
                engine_lines.join("\n")
            );
        }
    }
    assert_eq!(
        engine_lines.len(),
        4,
        "jobq's log should have no other line about the engine than one loss and one return per \
         job:\n{}",
        engine_lines.join("\n")
    );

    // Each job carries the warning exactly once.
    for (id, events) in [(&long, &long_events), (&short, &short_events)] {
        let warnings: Vec<&Value> = events
            .iter()
            .filter(|event| event["message"] == ENGINE_LOST_MESSAGE)
            .collect();
        assert_eq!(
            warnings.len(),
            1,
            "job {id} should have the warn event \"{ENGINE_LOST_MESSAGE}\" once: {events:#?}"
        );
        assert_eq!(warnings[0]["type"], "warn", "{:#}", warnings[0]);
    }

    // The long job's lines are both recorded, once each: after the outage jobq reads the log
    // from the start again and skips the lines it has. The short job's second line, printed
    // while the engine was away by a container that ended before the engine came back, is gone.
    assert_eq!(printed(&long_events, "long: "), [LONG_FIRST, LONG_SECOND]);
    assert_eq!(printed(&short_events, "short: "), [SHORT_FIRST]);

    // jobq removes the containers once their results are stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine.containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left in the engine: {:?}",
            engine.containers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(jobq);
    engine
        .shut_down()
        .expect("the second Docker engine is cleaned up");
}

/// When the job's container started, as the engine says.
fn started_at(engine: &Engine, job_id: &str) -> DateTime<Utc> {
    let (container, _) = engine
        .containers()
        .into_iter()
        .find(|(_, labels)| labels[jobq::runner::LABEL_JOB_ID] == job_id)
        .unwrap_or_else(|| panic!("job {job_id} has no container"));
    let inspect = engine.inspect(&container);
    let started = inspect["State"]["StartedAt"].as_str().unwrap_or_default();
    DateTime::parse_from_rfc3339(started)
        .unwrap_or_else(|e| panic!("StartedAt {started:?}: {e}"))
        .with_timezone(&Utc)
}

/// Whether a log line carries the field `job_id=<id>`.
fn names_job(line: &str, id: &str) -> bool {
    line.split_whitespace()
        .any(|word| word == format!("job_id={id}"))
}

/// The messages of `events` starting with `prefix` (what the component printed), oldest first.
fn printed<'a>(events: &'a [Value], prefix: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|event| event["message"].as_str())
        .filter(|message| message.starts_with(prefix))
        .collect()
}
