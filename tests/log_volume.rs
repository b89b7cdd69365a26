//! A component's log at volume (issue 10): a flood of lines is stored whole and in order even
//! when the engine's `daemon.json` rotates container logs (this host's says `"max-size": "10m",
//! "max-file": "3"`, and a 100,000-line flood of ~58 bytes a line fills more than one file);
//! past `max_events_per_job` lines are counted and the last ones kept; a SIGKILL of the real
//! binary in the middle of a flood, or a crash after a log was closed, neither loses nor
//! repeats a line.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::Served;
use common::{Options, TestDaemon, COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG, TOKEN};
use jobq::cli::client::ApiClient;
use serde_json::{json, Value};

/// 47 bytes: with `line <i>` and the newline, about 58 bytes a line (5.8 MB per 100,000).
const SUFFIX: &str = " lorem ipsum dolor sit amet consectetur adipisci";

/// Every event of job `id`, oldest first, read page by page (the API gives at most 1000).
async fn all_events(client: &ApiClient, id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let path = format!(
            "/v2/storage/events?runId={id}&limit=1000&offset={}",
            events.len()
        );
        let answer = client.get(&path).await.expect("the daemon answers");
        assert_eq!(answer.status, 200, "{}", answer.json());
        let page = answer
            .json()
            .as_array()
            .cloned()
            .expect("an array of events");
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    events.reverse();
    events
}

/// The messages of `events` that are the fixture's `print_count` lines.
fn printed(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| event["message"].as_str())
        .filter(|message| message.starts_with("line "))
        .collect()
}

/// `line <i><suffix>` for each i of `range`.
fn lines(range: std::ops::RangeInclusive<u64>, suffix: &str) -> Vec<String> {
    range.map(|i| format!("line {i}{suffix}")).collect()
}

/// Panics, naming the first difference, unless `stored` is `expected` exactly.
fn assert_lines(stored: &[&str], expected: &[String]) {
    if let Some(at) = stored.iter().zip(expected).position(|(s, e)| s != e) {
        panic!(
            "line {at} differs: stored {:?}, expected {:?}",
            stored[at], expected[at]
        );
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "{} lines stored, {} expected (first {} match)",
        stored.len(),
        expected.len(),
        stored.len().min(expected.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_100000_lines_is_stored_whole_and_in_order() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .create(
            COMPONENT,
            json!({"print_count": 100_000, "print_suffix": SUFFIX, "echo": false}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let job = t.wait_finished(id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let events = all_events(&t.client, id).await;
    assert_lines(&printed(&events), &lines(1..=100_000, SUFFIX));
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "event ids increase");
    assert!(
        !events.iter().any(|e| e["type"] == "warn"),
        "no warning for a flood within the bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_events_per_job_lines_are_counted_and_the_last_ones_kept() {
    let mut t = TestDaemon::start(Options::default()).await;
    t.restart_with_settings("max_events_per_job = 50");

    let job = t
        .create(COMPONENT, json!({"print_count": 3000, "echo": false}))
        .await;
    let id = job["id"].as_str().unwrap();
    let job = t.wait_finished(id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let events = all_events(&t.client, id).await;
    let mut expected = lines(1..=50, "");
    expected.extend(lines(2001..=3000, ""));
    assert_lines(&printed(&events), &expected);
    // The warning stands where the lines were dropped: after line 50, before line 2001.
    let warnings: Vec<usize> = (0..events.len())
        .filter(|&i| events[i]["type"] == "warn")
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {events:#?}");
    let at = warnings[0];
    assert_eq!(
        events[at]["message"],
        "The component printed more lines than a job keeps (max_events_per_job = 50): 1950 \
         lines were not stored; its last 1000 lines follow."
    );
    assert_eq!(events[at - 1]["message"], "line 50");
    assert_eq!(events[at + 1]["message"], "line 2001");

    // Just past the bound, the last lines hold everything: nothing is dropped, no warning.
    let job = t
        .create(COMPONENT, json!({"print_count": 700, "echo": false}))
        .await;
    let id = job["id"].as_str().unwrap();
    t.wait_finished(id).await;
    let events = all_events(&t.client, id).await;
    assert_lines(&printed(&events), &lines(1..=700, ""));
    assert!(!events.iter().any(|e| e["type"] == "warn"), "{events:#?}");

    // A failure's message still comes from the head and tail of the whole output.
    let job = t
        .create(
            COMPONENT,
            json!({"print_count": 3000, "echo": false, "exit_code": 1}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let job = t.wait_finished(id).await;
    assert_eq!(job["status"], "error", "{job:#}");
    let message = job["result"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 1\nline 2\n"), "{message}");
    assert!(message.ends_with("line 2999\nline 3000"), "{message}");
    assert!(message.contains(" ... "), "{message}");
}

/// `jobq serve` on `settings`, optionally armed with a crash point, once it listens.
fn serve(settings: &Path, log: &Path, crash_at: Option<&str>) -> Served {
    let env: Vec<(&str, &str)> = crash_at
        .map(|point| (jobq::failpoint::VARIABLE, point))
        .into_iter()
        .collect();
    Served::start(settings, log, &env).unwrap_or_else(|ended| panic!("{ended}"))
}

/// A settings file for the real binary: the fixture as `COMPONENT`, plus `extra` lines.
fn settings_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("jobq.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n{extra}\n\
             [[tokens]]\nid = \"1\"\ntoken = \"{TOKEN}\"\n\
             [[components]]\nid = \"{COMPONENT}\"\nimage = \"{FIXTURE_IMAGE}\"\n\
             tag = \"{FIXTURE_TAG}\"\nprocess_timeout = 120\nnetwork = \"none\"\n",
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_the_middle_of_a_flood_neither_loses_nor_repeats_a_line() {
    common::fixture_image(None).await;
    let dir = tempfile::Builder::new()
        .prefix("jobq-flood-kill-")
        .tempdir()
        .unwrap();
    let settings = settings_file(dir.path(), "");
    let mut first = serve(&settings, &dir.path().join("jobq-1.log"), None);
    // The flood, then a pause and one more line, so the container still runs after the kill.
    let parameters = json!({
        "print_count": 60_000,
        "print_suffix": SUFFIX,
        "sleep": 3,
        "print_after_sleep": ["after the flood"],
        "echo": false,
    });
    let body = json!({"component": COMPONENT, "configData": {"parameters": parameters}});
    let answer = first.client.post_json("/jobs", &body).await.unwrap();
    assert_eq!(answer.status, 201, "{}", answer.json());
    let id = answer.json()["id"].as_str().unwrap().to_string();

    // Killed once some lines are stored and before the flood is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_at_kill = loop {
        let path = format!("/v2/storage/events?runId={id}&limit=1");
        let newest = first.client.get(&path).await.unwrap().json();
        let message = newest[0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(number) = message
            .strip_prefix("line ")
            .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        {
            first.kill_after(Duration::ZERO);
            break number;
        }
        assert!(Instant::now() < deadline, "no line was stored within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        stored_at_kill < 60_000,
        "the kill came after the whole flood was stored ({stored_at_kill} lines); \
         nothing was tested"
    );

    let mut second = serve(&settings, &dir.path().join("jobq-2.log"), None);
    let job = second.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let events = all_events(&second.client, &id).await;
    assert_lines(&printed(&events), &lines(1..=60_000, SUFFIX));
    let after: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "after the flood")
        .collect();
    assert_eq!(after.len(), 1, "the line after the flood once");
    second.kill_after(Duration::ZERO);
    println!("killed after {stored_at_kill} of 60000 lines were stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_log_was_closed_stores_its_last_lines_once() {
    common::fixture_image(None).await;
    let dir = tempfile::Builder::new()
        .prefix("jobq-closed-log-")
        .tempdir()
        .unwrap();
    let settings = settings_file(dir.path(), "max_events_per_job = 50");
    // `container-ended` is passed after the log's end (warning and last lines) is stored and
    // before the result is: the restarted process re-attaches to the ended container.
    let mut first = serve(
        &settings,
        &dir.path().join("jobq-1.log"),
        Some("container-ended"),
    );
    let body = json!({"component": COMPONENT, "configData": {"parameters":
        {"print_count": 3000, "echo": false}}});
    let answer = first.client.post_json("/jobs", &body).await.unwrap();
    assert_eq!(answer.status, 201, "{}", answer.json());
    let id = answer.json()["id"].as_str().unwrap().to_string();
    assert!(
        first.kill_after(Duration::from_secs(60)),
        "jobq never reached its crash point"
    );

    let mut second = serve(&settings, &dir.path().join("jobq-2.log"), None);
    let job = second.wait_finished(&id).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let events = all_events(&second.client, &id).await;
    let mut expected = lines(1..=50, "");
    expected.extend(lines(2001..=3000, ""));
    assert_lines(&printed(&events), &expected);
    let warnings = events.iter().filter(|e| e["type"] == "warn").count();
    assert_eq!(warnings, 1, "{events:#?}");
    second.kill_after(Duration::ZERO);
}
