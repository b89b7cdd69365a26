//! The operator's endpoints: `GET /metrics` as Prometheus scrapes it (the OpenMetrics text
//! after a few real jobs, a token on the API's address, none on `metrics_listen`), and
//! `GET /health/ready` saying why jobs cannot run.

mod common;

use std::collections::BTreeMap;

use common::binary::{settings_file, Served};
use common::{assert_error, Options, TestDaemon, COMPONENT};
use serde_json::json;

/// The samples of an OpenMetrics text: `name{labels}` to value, and its `# TYPE` lines.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {text}"
    );
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            (
                series.to_string(),
                value.parse().unwrap_or_else(|_| panic!("{line}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_jobs_containers_and_requests_after_real_jobs() {
    let t = TestDaemon::start(Options::default()).await;
    let ok = t.create(COMPONENT, json!({"print": ["fine"]})).await;
    let user = t.create(COMPONENT, json!({"exit_code": 1})).await;
    let app = t.create(COMPONENT, json!({"exit_code": 2})).await;
    for job in [&ok, &user, &app] {
        t.wait_finished(job["id"].as_str().unwrap()).await;
    }
    let killed = t.create(COMPONENT, json!({"sleep": 30})).await;
    let killed_id = killed["id"].as_str().unwrap();
    t.wait_status(killed_id, "processing").await;
    assert_eq!(t.kill(killed_id).await.status, 202);
    t.wait_status(killed_id, "terminated").await;

    let answer = t.get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let samples = samples(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let finished = |status: &str, error: &str| {
        value(&format!(
            "jobq_jobs_finished_total{{component=\"{COMPONENT}\",status=\"{status}\",error_type=\"{error}\"}}"
        ))
    };
    assert_eq!(finished("success", "none"), 1.0);
    assert_eq!(finished("error", "user"), 1.0);
    assert_eq!(finished("error", "application"), 1.0);
    assert_eq!(finished("terminated", "killed"), 1.0);
    assert_eq!(value("jobq_containers_ended_total{reason=\"exit\"}"), 3.0);
    assert_eq!(value("jobq_containers_ended_total{reason=\"killed\"}"), 1.0);
    let component = format!("{{component=\"{COMPONENT}\"}}");
    assert_eq!(
        value(&format!("jobq_job_queue_wait_seconds_count{component}")),
        4.0
    );
    assert_eq!(
        value(&format!(
            "jobq_job_duration_seconds_count{{component=\"{COMPONENT}\",status=\"success\"}}"
        )),
        1.0
    );
    assert_eq!(
        value("jobq_http_requests_total{method=\"POST\",route=\"jobs\",code=\"201\"}"),
        4.0
    );
    assert_eq!(
        value("jobq_http_requests_total{method=\"POST\",route=\"jobs/{id}/kill\",code=\"202\"}"),
        1.0
    );
    assert!(value("jobq_http_request_duration_seconds_count{route=\"jobs/{id}\"}") >= 4.0);
    assert_eq!(value("jobq_slots_max"), 4.0);
    assert_eq!(value("jobq_slots_used"), 0.0);
    assert_eq!(value("jobq_engine_up"), 1.0);
    assert_eq!(value("jobq_store_writable"), 1.0);
    assert_eq!(value("jobq_jobs{status=\"processing\"}"), 0.0);
    assert!(value("jobq_events_written_total") >= 8.0);
    assert!(value("jobq_data_dir_free_bytes") > 0.0);
    // Bounded labels: no job id is ever a label value.
    for job in [&ok, &user, &app, &killed] {
        let id = job["id"].as_str().unwrap();
        assert!(
            !text.contains(&format!("\"{id}\"")),
            "job id {id} in\n{text}"
        );
    }
    // The API's /metrics needs a token.
    let [(anonymous, message), _] = t.clients_without_a_valid_token();
    assert_error(
        &anonymous.get("/metrics").await.unwrap(),
        401,
        message,
        json!({}),
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_without_a_token_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_file(dir.path(), &Options::without_docker());
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        format!("metrics_listen = \"127.0.0.1:0\"\n{text}"),
    )
    .unwrap();
    let mut served = Served::start(&settings, &dir.path().join("jobq.log"), &[])
        .unwrap_or_else(|ended| panic!("{ended}"));
    let log = served.log();
    let addr: std::net::SocketAddr = log
        .lines()
        .find_map(|line| line.split("metrics at http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the log names the metrics address: {log}"))
        .parse()
        .unwrap();
    let scraper = jobq::cli::client::ApiClient::anonymous(addr);
    let answer = scraper.get("/metrics").await.unwrap();
    assert_eq!(answer.status, 200);
    let samples = samples(std::str::from_utf8(&answer.body).unwrap());
    assert_eq!(samples["jobq_slots_max"], 4.0);
    assert_eq!(scraper.get("/health/live").await.unwrap().status, 200);
    assert_error(
        &scraper.get("/jobs").await.unwrap(),
        404,
        "Route GET /jobs not found: this address serves GET /metrics.",
        json!({}),
    );
    assert!(served.terminate().success());
}

#[tokio::test]
async fn ready_needs_the_engine_and_no_token() {
    let t = TestDaemon::start(Options::default()).await;
    let [(anonymous, _), _] = t.clients_without_a_valid_token();
    let answer = anonymous.get("/health/ready").await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"status": "ready"}))
    );

    // A daemon whose engine does not answer is live, not ready.
    let t = TestDaemon::start(Options::without_docker()).await;
    let [(anonymous, _), _] = t.clients_without_a_valid_token();
    let answer = anonymous.get("/health/ready").await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (
            503,
            json!({"status": "not ready", "reason": "The Docker engine does not answer; jobs stay created."})
        )
    );
    let answer = anonymous.get("/health/live").await.unwrap();
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"status": "live"}))
    );
}
