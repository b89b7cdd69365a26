//! Notifications through the real daemon and real containers: a webhook receiver in the test (a
//! loopback hyper server, plain or https) gets the failed, warning and succeeded events its
//! subscriptions' filters select, once each; a receiver that is down for a while, across a
//! restart of jobq, gets every event once when it comes up; an SMTP server in the test gets the
//! emails; a flow's phase jobs raise the phase-job events.

mod common;

use std::time::Duration;

use common::receivers::{Receiver, SmtpSink, TestCa};
use common::{assert_error, Api, Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};
use tokio::net::TcpListener;

async fn subscribe(api: &Api, body: Value) -> String {
    let answer = api.post("/project-subscriptions", &body).await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    answer.json()["id"].as_str().unwrap().to_string()
}

async fn configure(api: &Api, id: &str, configuration: Value, rows: &[(&str, Value)]) {
    let base = format!("/v2/storage/components/{COMPONENT}/configs");
    let answer = api
        .post(&base, &json!({"configurationId": id, "name": format!("{id} name"), "configuration": configuration}))
        .await;
    assert_eq!(answer.status, 201);
    for (row, configuration) in rows {
        let answer = api
            .post(
                &format!("{base}/{id}/rows"),
                &json!({"rowId": row, "name": row, "configuration": configuration}),
            )
            .await;
        assert_eq!(answer.status, 201);
    }
}

/// Stores configuration `id` (named "<id> name") of flow `component` and runs it to its end; the job.
async fn store_and_run(t: &TestDaemon, component: &str, id: &str, configuration: Value) -> Value {
    let answer = t
        .post(
            &format!("/v2/storage/components/{component}/configs"),
            &json!({"configurationId": id, "name": format!("{id} name"), "configuration": configuration}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    t.run(json!({"component": component, "config": id})).await
}

async fn deliveries(api: &Api, subscription: &str) -> Vec<Value> {
    let answer = api
        .get(&format!("/project-subscriptions/{subscription}/deliveries"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    answer.json().as_array().unwrap().clone()
}

/// The body with the given `eventType`; there must be exactly one.
fn one_of<'a>(bodies: &'a [Value], event: &str) -> &'a Value {
    let found: Vec<&Value> = bodies.iter().filter(|b| b["eventType"] == event).collect();
    assert_eq!(found.len(), 1, "{event}: {bodies:?}");
    found[0]
}

#[tokio::test]
async fn a_webhook_gets_the_failed_warning_and_succeeded_events_its_filters_select_once_each() {
    let t = TestDaemon::start(Options::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = Receiver::start(listener).await;
    let hook = json!({"channel": "webhook", "url": url});
    let succeeded = subscribe(
        &t,
        json!({"event": "job-succeeded", "recipient": hook,
        "filters": [{"field": "job.configuration.id", "value": "ok"}]}),
    )
    .await;
    let failed = subscribe(
        &t,
        json!({"event": "job-failed", "recipient": hook,
        "filters": [{"field": "job.component.id", "operator": "==", "value": COMPONENT},
                    {"field": "branch.id", "operator": "!=", "value": "1"}]}),
    )
    .await;
    let warning = subscribe(
        &t,
        json!({"event": "job-succeeded-with-warning", "recipient": hook}),
    )
    .await;
    let other = subscribe(
        &t,
        json!({"event": "job-failed", "recipient": hook,
        "filters": [{"field": "job.component.id", "value": "keboola.other"}]}),
    )
    .await;
    let email = subscribe(
        &t,
        json!({"event": "job-succeeded",
        "recipient": {"channel": "email", "address": "ops@example.com"}, "expiresAt": "+24 hours"}),
    )
    .await;

    let listed = t
        .get(&format!("/project-subscriptions/{failed}"))
        .await
        .json();
    assert_eq!(listed["event"], "job-failed");
    assert_eq!(
        listed["recipient"],
        json!({"channel": "webhook", "url": url})
    );
    assert_eq!(
        listed["filters"],
        json!([{"field": "job.component.id", "operator": "==", "value": COMPONENT},
               {"field": "branch.id", "operator": "!=", "value": "1"}])
    );
    let only_failed = t
        .get("/project-subscriptions?event=job-failed")
        .await
        .json();
    assert_eq!(only_failed.as_array().unwrap().len(), 2);

    configure(&t, "ok", json!({"parameters": {"print": ["fine"]}}), &[]).await;
    configure(&t, "plain", json!({"parameters": {}}), &[]).await;
    configure(
        &t,
        "rows",
        json!({}),
        &[
            ("good", json!({})),
            ("bad", json!({"parameters": {"exit_code": 1}})),
        ],
    )
    .await;
    let ok = t.run(json!({"component": COMPONENT, "config": "ok"})).await;
    assert_eq!(ok["status"], "success");
    let plain = t
        .run(json!({"component": COMPONENT, "config": "plain"}))
        .await;
    assert_eq!(plain["status"], "success");
    let broken = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"exit_code": 1}}}))
        .await;
    assert_eq!(broken["status"], "error");
    // A container job of two rows, one failing: the container warns; its rows raise nothing.
    let rows = t
        .run(json!({"component": COMPONENT, "config": "rows", "parallelism": "2", "behavior": {"onError": "warning"}}))
        .await;
    assert_eq!(rows["status"], "warning");

    let bodies = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let body = one_of(&bodies, "job-succeeded");
    let ok_id = ok["id"].as_str().unwrap();
    assert_eq!(body["job"]["id"], ok_id);
    assert_eq!(body["job"]["url"], ok["url"]);
    assert_eq!(
        body["job"]["component"],
        json!({"id": COMPONENT, "name": COMPONENT})
    );
    assert_eq!(
        body["job"]["configuration"],
        json!({"id": "ok", "name": "ok name"})
    );
    assert_eq!(body["job"]["startTime"], ok["startTime"]);
    assert_eq!(body["job"]["endTime"], ok["endTime"]);
    assert_eq!(
        body["project"],
        json!({"id": "123", "name": "Test project"})
    );
    assert_eq!(body["branch"], json!({"id": "456"}));
    assert!(body.get("errorMessage").is_none(), "{body}");
    let body = one_of(&bodies, "job-failed");
    assert_eq!(body["job"]["id"], broken["id"]);
    assert_eq!(body["errorMessage"], broken["result"]["message"]);
    assert!(body["job"].get("configuration").is_none(), "{body}");
    let body = one_of(&bodies, "job-succeeded-with-warning");
    assert_eq!(body["job"]["id"], rows["id"]);
    assert_eq!(body["errorMessage"], rows["result"]["message"]);

    let delivered = deliveries(&t, &succeeded).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["state"], "delivered");
    assert_eq!(delivered[0]["event"], "job-succeeded");
    assert_eq!(delivered[0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivered[0]["attempts"][0]["statusCode"], 200);
    assert_eq!(delivered[0]["payload"]["job"]["id"], ok_id);
    assert_eq!(deliveries(&t, &failed).await.len(), 1);
    assert_eq!(deliveries(&t, &warning).await.len(), 1);
    assert_eq!(deliveries(&t, &other).await, Vec::<Value>::new());
    // Email without [smtp] settings: recorded for both successes, not sent, saying why.
    let emails = deliveries(&t, &email).await;
    assert_eq!(emails.len(), 2);
    for delivery in &emails {
        assert_eq!(delivery["state"], "notSent");
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{delivery}");
        assert_eq!(attempts[0]["statusCode"], Value::Null);
        assert_eq!(attempts[0]["error"], jobq::model::NO_SMTP);
    }
    assert_eq!(emails[0]["payload"]["job"]["id"], plain["id"]);

    // Deleting a subscription ends its deliveries.
    assert_eq!(
        t.delete(&format!("/project-subscriptions/{email}"))
            .await
            .status,
        204
    );
    assert_error(
        &t.get(&format!("/project-subscriptions/{email}")).await,
        404,
        &format!("Subscription \"{email}\" not found; GET /project-subscriptions lists them."),
        json!({}),
    );
}

#[tokio::test]
async fn subscription_requests_are_checked() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let answer = t
        .post(
            "/project-subscriptions",
            &json!({"event": "job-exploded",
            "recipient": {"channel": "webhook", "url": "http://127.0.0.1:1/"}}),
        )
        .await;
    assert_error(
        &answer,
        400,
        "Invalid event type \"job-exploded\", valid types are: \"job-failed, job-succeeded, \
         job-succeeded-with-warning, job-processing-long, phase-job-failed, phase-job-succeeded, \
         phase-job-succeeded-with-warning, phase-job-processing-long\".",
        json!({}),
    );
    let answer = t
        .post(
            "/project-subscriptions",
            &json!({"event": "job-failed", "recipient": {"channel": "sms"}}),
        )
        .await;
    assert_error(
        &answer,
        400,
        "Field \"recipient.channel\" must be \"webhook\" (with \"url\") or \"email\" (with \"address\").",
        json!({}),
    );
    // The Go SDK sends a webhook's URL as `address`: accepted, answered as `url`.
    let answer = t
        .post(
            "/project-subscriptions",
            &json!({"event": "phase-job-failed",
            "recipient": {"channel": "webhook", "address": "http://127.0.0.1:1/x"},
            "expiresAt": "2030-01-07 14:00:00+01:00"}),
        )
        .await;
    assert_eq!(answer.status, 201);
    let body = answer.json();
    assert_eq!(
        body["recipient"],
        json!({"channel": "webhook", "url": "http://127.0.0.1:1/x"})
    );
    assert_eq!(body["expiresAt"], "2030-01-07T13:00:00+00:00");
    assert_eq!(body["filters"], json!([]));
    for (client, _) in t.clients_without_a_valid_token() {
        assert_eq!(
            client.get("/project-subscriptions").await.unwrap().status,
            401
        );
    }
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_once_across_a_restart() {
    let mut t = TestDaemon::start(Options::default()).await;
    // A port nothing listens on, for now.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let hook = json!({"channel": "webhook", "url": format!("http://{address}/hook")});
    let succeeded = subscribe(&t, json!({"event": "job-succeeded", "recipient": hook})).await;
    let failed = subscribe(&t, json!({"event": "job-failed", "recipient": hook})).await;

    let ok = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    let broken = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"exit_code": 1}}}))
        .await;
    assert_eq!(
        (ok["status"].as_str(), broken["status"].as_str()),
        (Some("success"), Some("error"))
    );
    // Attempts fail while the receiver is down; the deliveries stay pending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = deliveries(&t, &succeeded).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["state"], "pending");
    let attempts = pending[0]["attempts"].as_array().unwrap();
    assert!(!attempts.is_empty(), "{pending:?}");
    assert!(
        attempts
            .iter()
            .all(|a| a["statusCode"].is_null() && a["error"].is_string()),
        "{pending:?}"
    );
    assert!(pending[0]["nextAttemptAt"].is_string());

    t.restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let receiver = Receiver::start(TcpListener::bind(address).await.unwrap()).await;
    // Backoff doubles from 1 s: the next attempt is at most 8 s away here.
    let bodies = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(one_of(&bodies, "job-succeeded")["job"]["id"], ok["id"]);
    assert_eq!(one_of(&bodies, "job-failed")["job"]["id"], broken["id"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.all().len(), 2, "an event came twice");
    for subscription in [&succeeded, &failed] {
        let done = deliveries(&t, subscription).await;
        assert_eq!(done.len(), 1);
        assert_eq!(done[0]["state"], "delivered", "{done:?}");
        let attempts = done[0]["attempts"].as_array().unwrap();
        assert_eq!(attempts.last().unwrap()["statusCode"], 200);
        assert!(attempts.len() >= 2, "{done:?}");
        assert!(done[0]["nextAttemptAt"].is_null());
    }
}

#[tokio::test]
async fn a_job_running_past_its_configurations_average_raises_processing_long_once() {
    let t = TestDaemon::start(Options::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook =
        json!({"channel": "webhook", "url": format!("http://{}/", listener.local_addr().unwrap())});
    let receiver = Receiver::start(listener).await;
    let doubled = subscribe(
        &t,
        json!({"event": "job-processing-long", "recipient": hook,
        "filters": [{"field": "durationOvertimePercentage", "operator": ">=", "value": 1}]}),
    )
    .await;
    let never = subscribe(
        &t,
        json!({"event": "job-processing-long", "recipient": hook,
        "filters": [{"field": "durationOvertimePercentage", "operator": ">=", "value": 100}]}),
    )
    .await;
    // No history yet: a job of a new configuration never runs long. (2 s each: a loaded
    // machine's jitter never doubles the second run.)
    configure(&t, "slow", json!({"parameters": {"sleep": 2}}), &[]).await;
    let first = t
        .run(json!({"component": COMPONENT, "config": "slow"}))
        .await;
    let second = t
        .run(json!({"component": COMPONENT, "config": "slow"}))
        .await;
    assert_eq!(
        (first["status"].as_str(), second["status"].as_str()),
        (Some("success"), Some("success"))
    );
    assert_eq!(receiver.all(), Vec::<Value>::new());
    let seconds = |job: &Value| job["durationSeconds"].as_f64().unwrap();
    let answer = t
        .send_json(
            hyper::Method::PUT,
            &format!("/v2/storage/components/{COMPONENT}/configs/slow"),
            &json!({"configuration": {"parameters": {"sleep": 12}}}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let long = t
        .run(json!({"component": COMPONENT, "config": "slow"}))
        .await;
    assert_eq!(long["status"], "success");
    let bodies = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = &bodies[0];
    assert_eq!(body["eventType"], "job-processing-long");
    assert_eq!(body["uniqueId"], long["id"]);
    assert_eq!(body["job"]["id"], long["id"]);
    assert_eq!(
        body["job"]["configuration"],
        json!({"id": "slow", "name": "slow name"})
    );
    let average = body["averageDuration"].as_f64().unwrap();
    let current = body["currentDuration"].as_f64().unwrap();
    let overtime = body["durationOvertimePercentage"].as_f64().unwrap();
    // The average of the two earlier runs (whole seconds in the job object, exact here).
    let (low, high) = (
        seconds(&first).min(seconds(&second)),
        seconds(&first).max(seconds(&second)) + 1.0,
    );
    assert!(
        average >= low && average <= high,
        "{average} not in {low}..{high}"
    );
    assert!((1.0..2.0).contains(&overtime), "{body}");
    assert!((current / average - 1.0 - overtime).abs() < 1e-9, "{body}");
    assert!(current < seconds(&long) + 1.0, "sent while it ran: {body}");
    assert_eq!(deliveries(&t, &doubled).await.len(), 1);
    assert_eq!(deliveries(&t, &never).await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_sigkill_right_after_a_job_ended_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    options.build_fixture_image().await;
    let settings = common::binary::settings_file(dir.path(), &options);
    let armed = [(jobq::failpoint::VARIABLE, jobq::failpoint::JOB_ENDED)];
    let mut served =
        common::binary::Served::start(&settings, &dir.path().join("armed.log"), &armed).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook =
        json!({"channel": "webhook", "url": format!("http://{}/", listener.local_addr().unwrap())});
    let receiver = Receiver::start(listener).await;
    let subscription = subscribe(
        &served,
        json!({"event": "job-succeeded", "recipient": hook}),
    )
    .await;
    let job = served
        .submit(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    assert!(
        served.kill_after(Duration::from_secs(60)),
        "the crash point did not fire: {}",
        served.log()
    );
    assert!(
        served.log().contains("crash point job-ended reached"),
        "{}",
        served.log()
    );

    let served =
        common::binary::Served::start(&settings, &dir.path().join("after.log"), &[]).unwrap();
    let bodies = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["eventType"], "job-succeeded");
    assert_eq!(bodies[0]["job"]["id"], job["id"]);
    let done = deliveries(&served, &subscription).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["state"], "delivered");
}

/// `[smtp]` settings for the sink: plain SMTP on its port.
fn smtp_settings(sink: &SmtpSink) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"jobq@example.com\"\n",
        sink.port
    )
}

#[tokio::test]
async fn a_failed_job_is_emailed_through_the_smtp_server_once() {
    let sink = SmtpSink::start().await;
    let t = TestDaemon::start_with(Options::default(), "", &smtp_settings(&sink)).await;
    let email = subscribe(
        &t,
        json!({"event": "job-failed", "recipient": {"channel": "email", "address": "ops@example.com"}}),
    )
    .await;
    let broken = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"exit_code": 1}}}))
        .await;
    assert_eq!(broken["status"], "error");
    let id = broken["id"].as_str().unwrap();

    let mails = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "jobq@example.com");
    assert_eq!(mail.to, ["ops@example.com"]);
    assert_eq!(mail.header("To").as_deref(), Some("ops@example.com"));
    assert_eq!(
        mail.header("Subject"),
        Some(format!("[Test project] Job {id} failed: {COMPONENT}"))
    );
    let body = mail.body();
    assert!(
        body.contains(&format!("Job {id} ({COMPONENT}) failed.")),
        "{body}"
    );
    assert!(body.contains("Event: job-failed"), "{body}");
    let message = broken["result"]["message"].as_str().unwrap();
    assert!(body.contains(&format!("Error: {message}")), "{body}");
    assert!(body.contains(broken["url"].as_str().unwrap()), "{body}");

    let done = deliveries(&t, &email).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["state"], "delivered", "{done:?}");
    assert_eq!(done[0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done[0]["attempts"][0]["statusCode"], 250);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.all().len(), 1, "an email came twice");
}

#[tokio::test]
async fn an_email_is_retried_until_the_smtp_server_takes_it() {
    // A port nothing listens on, for now.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let settings = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"jobq@example.com\"\nusername = \"jobq\"\npassword = \"smtp-secret-81\"\n"
    );
    let t = TestDaemon::start_with(Options::default(), "", &settings).await;
    let email = subscribe(
        &t,
        json!({"event": "job-succeeded", "recipient": {"channel": "email", "address": "ops@example.com"}}),
    )
    .await;
    let ok = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    assert_eq!(ok["status"], "success");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = deliveries(&t, &email).await;
    assert_eq!(pending[0]["state"], "pending", "{pending:?}");
    let error = pending[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "the SMTP server 127.0.0.1:{port} did not take the email to ops@example.com"
        )),
        "{error}"
    );
    assert!(!pending
        .iter()
        .any(|d| d.to_string().contains("smtp-secret-81")));
}

/// Writes `pem` to a file in `dir`; its path.
fn pem_file(dir: &std::path::Path, pem: &str) -> String {
    let path = dir.join("trusted-ca.pem");
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn https_webhooks_trust_the_ca_of_trusted_ca_file_and_no_other() {
    let trusted = TestCa::new();
    let stranger = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "trusted_ca_file = \"{}\"",
        pem_file(dir.path(), &trusted.ca_pem)
    );
    let t = TestDaemon::start_with(Options::default(), &top, "").await;
    let good = Receiver::start_tls(&trusted).await;
    let bad = Receiver::start_tls(&stranger).await;
    assert!(good.url.starts_with("https://127.0.0.1:"), "{}", good.url);
    let to_good = subscribe(
        &t,
        json!({"event": "job-succeeded", "recipient": {"channel": "webhook", "url": good.url}}),
    )
    .await;
    let to_bad = subscribe(
        &t,
        json!({"event": "job-succeeded", "recipient": {"channel": "webhook", "url": bad.url}}),
    )
    .await;
    let ok = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    assert_eq!(ok["status"], "success");

    let bodies = good.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["eventType"], "job-succeeded");
    assert_eq!(bodies[0]["job"]["id"], ok["id"]);
    let done = deliveries(&t, &to_good).await;
    assert_eq!(done[0]["state"], "delivered", "{done:?}");
    assert_eq!(done[0]["attempts"][0]["statusCode"], 200);

    // A certificate of another CA: a failed attempt saying why, retried later.
    assert_eq!(bad.all(), Vec::<Value>::new());
    let failed = deliveries(&t, &to_bad).await;
    assert_eq!(failed[0]["state"], "pending", "{failed:?}");
    let attempt = &failed[0]["attempts"][0];
    assert_eq!(attempt["statusCode"], Value::Null);
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "cannot connect to the webhook at {}; check that it listens, and for https that its \
             certificate is valid for the host and issued by a CA the system or \
             `trusted_ca_file` trusts",
            bad.url
        )),
        "{error}"
    );
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_flows_phase_jobs_raise_the_phase_job_events_their_filters_select() {
    let t = TestDaemon::start(Options::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = Receiver::start(listener).await;
    let hook = json!({"channel": "webhook", "url": receiver.url});
    let phase = |event: &str, field: &str, value: &str| {
        json!({"event": event, "recipient": hook,
               "filters": [{"field": field, "value": value}]})
    };
    let failed_b = subscribe(&t, phase("phase-job-failed", "phase.id", "B")).await;
    let failed_a = subscribe(&t, phase("phase-job-failed", "phase.id", "A")).await;
    let succeeded = subscribe(&t, phase("phase-job-succeeded", "phase.name", "Extract")).await;
    let succeeded_b = subscribe(&t, phase("phase-job-succeeded", "phase.id", "B")).await;
    let warned = subscribe(
        &t,
        phase("phase-job-succeeded-with-warning", "phase.id", "W"),
    )
    .await;
    let warned_a = subscribe(
        &t,
        phase("phase-job-succeeded-with-warning", "phase.id", "A"),
    )
    .await;

    let task = |id: u64, phase: &str, parameters: Value| {
        json!({"id": id, "name": format!("t{id}"), "phase": phase, "enabled": true,
               "task": {"componentId": COMPONENT, "configData": {"parameters": parameters}, "mode": "run"}})
    };
    let mut may_fail = task(21, "W", json!({"exit_code": 1}));
    may_fail["continueOnFailure"] = json!(true);
    let flow = json!({
        "phases": [{"id": "A", "name": "Extract"},
                   {"id": "W", "name": "Check", "dependsOn": ["A"]},
                   {"id": "B", "name": "Load", "dependsOn": ["A"]}],
        "tasks": [task(11, "A", json!({})), may_fail, task(31, "B", json!({"exit_code": 1}))],
    });
    let job = store_and_run(&t, "keboola.orchestrator", "phased", flow).await;
    assert_eq!(job["status"], "error");

    let bodies = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    for (event, id, name) in [
        ("phase-job-succeeded", "A", "Extract"),
        ("phase-job-succeeded-with-warning", "W", "Check"),
        ("phase-job-failed", "B", "Load"),
    ] {
        let body = one_of(&bodies, event);
        assert_eq!(body["phase"], json!({"id": id, "name": name}), "{body}");
        assert_eq!(body["job"]["component"]["id"], "keboola.orchestrator");
        assert_eq!(
            body["job"]["configuration"],
            json!({"id": "phased", "name": "phased name"})
        );
        assert_eq!(
            body["project"],
            json!({"id": "123", "name": "Test project"})
        );
        assert_eq!(body["branch"], json!({"id": "456"}));
        assert_ne!(
            body["job"]["id"], job["id"],
            "a phase job of its own: {body}"
        );
        assert_eq!(
            body.get("errorMessage").is_some(),
            event != "phase-job-succeeded"
        );
    }
    for (subscription, count) in [
        (&failed_b, 1),
        (&failed_a, 0),
        (&succeeded, 1),
        (&succeeded_b, 0),
        (&warned, 1),
        (&warned_a, 0),
    ] {
        assert_eq!(
            deliveries(&t, subscription).await.len(),
            count,
            "{subscription}"
        );
    }
}

#[tokio::test]
async fn a_flows_email_notification_task_goes_through_the_smtp_server() {
    let sink = SmtpSink::start().await;
    let t = TestDaemon::start_with(Options::default(), "", &smtp_settings(&sink)).await;
    let flow = json!({
        "phases": [{"id": "A", "name": "Extract", "next": [{"id": "end", "goto": null}]}],
        "tasks": [
            {"id": "n1", "name": "hello", "phase": "A", "task": {"type": "notification",
             "title": "Flow started", "message": "Extracting now",
             "recipients": [{"channel": "email", "address": "ops@example.com"}]}},
            {"id": "a1", "name": "extract", "phase": "A", "task": {"type": "job",
             "componentId": COMPONENT, "configData": {"parameters": {}}, "mode": "run"}}
        ]
    });
    let job = store_and_run(&t, "keboola.flow", "mailing", flow).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = job["id"].as_str().unwrap();
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Flow started"));
    let body = mails[0].body();
    assert!(body.starts_with("Extracting now\r\n"), "{body}");
    assert!(
        body.contains(&format!(
            "Flow job {id} (keboola.flow, configuration mailing), phase \"A\", task \"hello\"."
        )),
        "{body}"
    );
    assert!(t.messages(id).await.contains(
        &"Notification \"Flow started\" of task \"hello\" sent to ops@example.com (SMTP 250)."
            .to_string()
    ));
}

#[tokio::test]
async fn a_phase_running_past_its_average_raises_phase_job_processing_long() {
    let t = TestDaemon::start(Options::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = Receiver::start(listener).await;
    let hook = json!({"channel": "webhook", "url": receiver.url});
    let long = |phase: &str| {
        json!({"event": "phase-job-processing-long", "recipient": hook,
               "filters": [{"field": "phase.id", "value": phase},
                           {"field": "durationOvertimePercentage", "operator": ">=", "value": 1}]})
    };
    let slow_phase = subscribe(&t, long("A")).await;
    let other_phase = subscribe(&t, long("B")).await;
    let flow = |sleep: u64| {
        json!({
            "phases": [{"id": "A", "name": "Extract"}, {"id": "B", "name": "Load", "dependsOn": ["A"]}],
            "tasks": [
                {"id": 1, "name": "t1", "phase": "A", "enabled": true,
                 "task": {"componentId": COMPONENT, "configData": {"parameters": {"sleep": sleep}}, "mode": "run"}},
                // Phase B takes 4 s each time: a loaded machine's jitter never doubles it.
                {"id": 2, "name": "t2", "phase": "B", "enabled": true,
                 "task": {"componentId": COMPONENT, "configData": {"parameters": {"sleep": 4}}, "mode": "run"}}
            ]
        })
    };
    let run = || t.run(json!({"component": "keboola.orchestrator", "config": "slow"}));
    let first = store_and_run(&t, "keboola.orchestrator", "slow", flow(2)).await;
    assert_eq!(first["status"], "success");
    assert_eq!(run().await["status"], "success");
    assert_eq!(receiver.all(), Vec::<Value>::new());
    let answer = t
        .send_json(
            hyper::Method::PUT,
            "/v2/storage/components/keboola.orchestrator/configs/slow",
            &json!({"configuration": flow(12)}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let job = run().await;
    assert_eq!(job["status"], "success");
    let bodies = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = &bodies[0];
    assert_eq!(body["eventType"], "phase-job-processing-long");
    assert_eq!(body["phase"], json!({"id": "A", "name": "Extract"}));
    assert_eq!(body["job"]["component"]["id"], "keboola.orchestrator");
    assert_ne!(
        body["job"]["id"], job["id"],
        "the phase job, not the orchestration"
    );
    assert_eq!(body["uniqueId"], body["job"]["id"]);
    assert!(
        body["durationOvertimePercentage"].as_f64().unwrap() >= 1.0,
        "{body}"
    );
    assert_eq!(deliveries(&t, &slow_phase).await.len(), 1);
    assert_eq!(deliveries(&t, &other_phase).await, Vec::<Value>::new());
}
