//! Schedules through the real daemon: activation and its errors, an every-minute schedule that
//! runs its job in a real container, a fire time passing while jobq is stopped (catch-up once
//! or skip), and SIGKILLs just before and just after a fire commits.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::binary::{settings_file, Served};
use common::{assert_error, Api, Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

const SCHEDULER: &str = "keboola.scheduler";

/// Stores configuration `id` of the fixture (it prints a line and succeeds).
async fn configure_target(api: &Api, id: &str) {
    let answer = api
        .post(
            &format!("/v2/storage/components/{COMPONENT}/configs"),
            &json!({"configurationId": id, "name": id,
                    "configuration": {"parameters": {"print": ["scheduled run"]}}}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
}

/// Stores `keboola.scheduler` configuration `id` with `configuration`.
async fn configure_schedule(api: &Api, id: &str, configuration: Value) {
    let answer = api
        .post(
            &format!("/v2/storage/components/{SCHEDULER}/configs"),
            &json!({"configurationId": id, "name": id, "configuration": configuration}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
}

fn definition(cron_tab: &str, target: &str) -> Value {
    json!({
        "schedule": {"cronTab": cron_tab, "timezone": "UTC", "state": "enabled"},
        "target": {"componentId": COMPONENT, "configurationId": target, "mode": "run"}
    })
}

/// Activates `keboola.scheduler` configuration `id`; the schedule object.
async fn activate(api: &Api, id: &str) -> Value {
    let answer = api
        .post("/schedules", &json!({"configurationId": id}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    answer.json()
}

/// The jobs of the fixture's configuration `config`, newest first.
async fn jobs_of(api: &Api, config: &str) -> Vec<Value> {
    let answer = api
        .get(&format!("/jobs?component={COMPONENT}&config={config}"))
        .await;
    assert_eq!(answer.status, 200);
    answer.json().as_array().expect("a list").clone()
}

/// Polls until configuration `config` has `count` jobs (at most `limit`); its jobs.
async fn wait_for_jobs(api: &Api, config: &str, count: usize, limit: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let jobs = jobs_of(api, config).await;
        if jobs.len() >= count || tokio::time::Instant::now() > deadline {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first whole minute after `time`.
fn minute_after(time: DateTime<Utc>) -> DateTime<Utc> {
    let floor = time.with_second(0).and_then(|t| t.with_nanosecond(0));
    floor.expect("a whole minute") + chrono::Duration::minutes(1)
}

/// The first whole minute at least `margin` seconds from now.
fn fire_instant(margin: i64) -> DateTime<Utc> {
    minute_after(Utc::now() + chrono::Duration::seconds(margin))
}

async fn sleep_until(time: DateTime<Utc>) {
    let left = (time - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[tokio::test]
async fn an_every_minute_schedule_fires_within_its_minute_with_the_scheduler_token() {
    let t = TestDaemon::start(Options::default()).await;
    configure_target(&t, "minutely").await;
    configure_schedule(&t, "100", definition("* * * * *", "minutely")).await;
    let before = Utc::now();
    let schedule = activate(&t, "100").await;
    let after = Utc::now();
    assert_eq!(
        schedule,
        json!({
            "id": "1",
            "tokenId": "7",
            "configurationId": "100",
            "configurationVersionId": "1",
            "schedule": {"cronTab": "* * * * *", "timezone": "UTC", "state": "enabled"},
            "target": {"componentId": COMPONENT, "configurationId": "minutely",
                       "configurationRowIds": [], "mode": "run", "tag": ""},
            "executions": []
        })
    );
    // Activation is not a fire: the first is the next whole minute.
    let due = minute_after(after);
    assert_eq!(jobs_of(&t, "minutely").await, Vec::<Value>::new());
    let jobs = wait_for_jobs(
        &t,
        "minutely",
        1,
        (due - before).to_std().unwrap() + Duration::from_secs(10),
    )
    .await;
    assert_eq!(jobs.len(), 1, "no job within its minute");
    let job = &jobs[0];
    assert_eq!(
        job["token"],
        json!({"id": "7", "description": "[_internal] Scheduler"})
    );
    assert_eq!(job["mode"], "run");
    let created = DateTime::parse_from_rfc3339(job["createdTime"].as_str().unwrap()).unwrap();
    assert!(
        created >= due && created < due + chrono::Duration::seconds(5),
        "{created} for {due}"
    );
    let id = job["id"].as_str().unwrap().to_string();
    let finished = t.wait_finished(&id).await;
    assert_eq!(finished["status"], "success", "{finished}");
    let schedule = t.get("/schedules/1").await.json();
    assert_eq!(
        schedule["executions"],
        json!([{"jobId": id, "executionTime": iso(due)}])
    );
    if Utc::now() < due + chrono::Duration::seconds(58) {
        assert_eq!(
            jobs_of(&t, "minutely").await.len(),
            1,
            "a second job within one minute"
        );
    }
}

#[tokio::test]
async fn a_schedule_activated_at_an_older_version_fires_that_versions_target() {
    let t = TestDaemon::start(Options::default()).await;
    configure_target(&t, "first").await;
    configure_target(&t, "second").await;
    configure_schedule(&t, "pinned", definition("* * * * *", "first")).await;
    let answer = t
        .send_json(
            hyper::Method::PUT,
            &format!("/v2/storage/components/{SCHEDULER}/configs/pinned"),
            &json!({"configuration": definition("* * * * *", "second")}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["version"], 2);
    let answer = t
        .post(
            "/schedules",
            &json!({"configurationId": "pinned", "configurationVersionId": "1"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let schedule = answer.json();
    assert_eq!(schedule["configurationVersionId"], "1");
    assert_eq!(schedule["target"]["configurationId"], "first");
    let due = minute_after(Utc::now());
    let limit = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(10);
    let jobs = wait_for_jobs(&t, "first", 1, limit).await;
    assert_eq!(
        jobs.len(),
        1,
        "no job of version 1's target within its minute"
    );
    assert_eq!(jobs[0]["token"]["description"], "[_internal] Scheduler");
    assert_eq!(jobs_of(&t, "second").await, Vec::<Value>::new());
}

#[tokio::test]
async fn activation_checks_the_configuration_and_names_the_field() {
    let t = TestDaemon::start(Options::without_docker()).await;
    configure_target(&t, "target").await;
    let target = json!({"componentId": COMPONENT, "configurationId": "target"});
    let cases = [
        (
            json!({"schedule": {"cronTab": "* * * *"}, "target": target}),
            "Field \"schedule.cronTab\" must have five fields (minute hour day-of-month month \
             day-of-week), like \"0 6 * * 1-5\"; \"* * * *\" given.",
        ),
        (
            json!({"schedule": {"cronTab": "0 6 * * *", "timezone": "Mars/Olympus"}, "target": target}),
            "Field \"schedule.timezone\" \"Mars/Olympus\" is not a known time zone; give an IANA \
             name like \"Europe/Prague\" or \"UTC\", or an offset like \"+0100\".",
        ),
        (
            json!({"schedule": {"cronTab": "0 6 * * *"}}),
            "Field \"target\" (an object with componentId, configurationId and mode) is required \
             in the schedule's configuration.",
        ),
        (
            json!({"schedule": {"cronTab": "0 6 * * *"}, "target": {"componentId": COMPONENT}}),
            "Field \"target.configurationId\" is required in the schedule's configuration.",
        ),
        (
            json!({"schedule": {"cronTab": "0 6 * * *"},
                   "target": {"componentId": "keboola.unknown", "configurationId": "1"}}),
            "Field \"target.componentId\": component \"keboola.unknown\" is not registered in \
             jobq's settings.",
        ),
    ];
    for (n, (configuration, message)) in cases.into_iter().enumerate() {
        let id = format!("bad{n}");
        configure_schedule(&t, &id, configuration).await;
        let answer = t.post("/schedules", &json!({"configurationId": id})).await;
        assert_error(&answer, 400, message, json!({}));
    }
    // A cron field out of range: croner's reason, after the field's name.
    configure_schedule(&t, "range", definition("61 * * * *", "target")).await;
    let answer = t
        .post("/schedules", &json!({"configurationId": "range"}))
        .await;
    assert_eq!(answer.status, 400);
    let message = answer.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.starts_with(
            "Field \"schedule.cronTab\" is not a valid cron expression (\"61 * * * *\""
        ),
        "{message}"
    );

    let answer = t
        .post("/schedules", &json!({"configurationId": "404"}))
        .await;
    assert_error(
        &answer,
        404,
        "Configuration \"404\" of component \"keboola.scheduler\" not found in branch \"456\".",
        json!({}),
    );
    let answer = t.post("/schedules", &json!({})).await;
    assert_error(
        &answer,
        400,
        "Field \"configurationId\" is required.",
        json!({}),
    );
    assert_eq!(t.get("/schedules").await.json(), json!([]));

    // Activation pins the current version; again after a change, the same schedule, new version.
    configure_schedule(&t, "good", definition("0 6 * * 1-5", "target")).await;
    let first = activate(&t, "good").await;
    assert_eq!(
        (
            first["id"].as_str(),
            first["configurationVersionId"].as_str()
        ),
        (Some("1"), Some("1"))
    );
    let answer = t
        .send_json(
            hyper::Method::PUT,
            &format!("/v2/storage/components/{SCHEDULER}/configs/good"),
            &json!({"configuration": definition("30 7 * * *", "target")}),
        )
        .await;
    assert_eq!(answer.status, 200);
    // Not re-activated: still the pinned version.
    let pinned = t.get("/schedules/1").await.json();
    assert_eq!(pinned["schedule"]["cronTab"], "0 6 * * 1-5");
    for version in ["3", "0", "one"] {
        let answer = t
            .post(
                "/schedules",
                &json!({"configurationId": "good", "configurationVersionId": version}),
            )
            .await;
        assert_error(
            &answer,
            400,
            &format!(
                "Version \"{version}\" of configuration \"good\" does not exist; give a version \
                 from 1 to 2, or leave \"configurationVersionId\" out for the current one."
            ),
            json!({}),
        );
    }
    // The older version, activated again: its own definition.
    let answer = t
        .post(
            "/schedules",
            &json!({"configurationId": "good", "configurationVersionId": "1"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["configurationVersionId"], "1");
    assert_eq!(answer.json()["schedule"]["cronTab"], "0 6 * * 1-5");
    let answer = t
        .post(
            "/schedules",
            &json!({"configurationId": "good", "configurationVersionId": 2}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let second = answer.json();
    assert_eq!(second["id"], "1");
    assert_eq!(second["configurationVersionId"], "2");
    assert_eq!(second["schedule"]["cronTab"], "30 7 * * *");

    // Listings filter on the target, both parameters or none.
    configure_target(&t, "other").await;
    configure_schedule(&t, "second", definition("0 0 * * *", "other")).await;
    activate(&t, "second").await;
    let all = t.get("/schedules").await.json();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2"]);
    let filtered = t
        .get(&format!(
            "/schedules?componentId={COMPONENT}&configurationId=other"
        ))
        .await
        .json();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["configurationId"], "second");
    let answer = t.get(&format!("/schedules?componentId={COMPONENT}")).await;
    assert_error(
        &answer,
        400,
        "Query parameters \"componentId\" and \"configurationId\" filter together; give both or \
         neither.",
        json!({}),
    );

    // Deactivation: by id, or every schedule of a scheduler configuration; Storage keeps it.
    let answer = t.delete("/schedules/1").await;
    assert_eq!(answer.status, 204);
    assert_error(
        &t.get("/schedules/1").await,
        404,
        "Schedule \"1\" not found; GET /schedules lists the activated schedules.",
        json!({}),
    );
    assert_eq!(t.delete("/schedules/1").await.status, 404);
    assert_eq!(t.delete("/configurations/second").await.status, 204);
    assert_eq!(t.get("/schedules").await.json(), json!([]));
    let kept = t
        .get(&format!(
            "/v2/storage/components/{SCHEDULER}/configs/second"
        ))
        .await;
    assert_eq!(kept.status, 200);
    // Every route needs the token.
    for (client, _) in t.clients_without_a_valid_token() {
        let answer = client.get("/schedules").await.unwrap();
        assert_eq!(answer.status, 401);
    }
}

/// Activates a daily schedule due at the next whole minute (at least 5 s away), stops jobq
/// before it is due and starts it again (with `catch_up`) after; the daemon and that instant.
async fn restart_across_a_fire(catch_up: &str) -> (TestDaemon, DateTime<Utc>) {
    let mut t = TestDaemon::start(Options::without_docker()).await;
    configure_target(&t, "daily").await;
    let due = fire_instant(5);
    let cron = format!("{} {} * * *", due.minute(), due.hour());
    configure_schedule(&t, "200", definition(&cron, "daily")).await;
    activate(&t, "200").await;
    t.daemon.take().expect("running").stop().expect("stops");
    sleep_until(due + chrono::Duration::seconds(2)).await;
    t.restart_with_settings(&format!("schedule_catch_up = \"{catch_up}\""));
    (t, due)
}

#[tokio::test]
async fn a_fire_time_passing_while_jobq_is_stopped_fires_once_after_the_restart() {
    let (mut t, due) = restart_across_a_fire("once").await;
    let jobs = wait_for_jobs(&t, "daily", 1, Duration::from_secs(10)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["token"]["description"], "[_internal] Scheduler");
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    let executions = json!([{"jobId": id, "executionTime": iso(due)}]);
    assert_eq!(t.get("/schedules/1").await.json()["executions"], executions);
    // Neither later nor after another restart does that instant fire again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(jobs_of(&t, "daily").await.len(), 1);
    assert_eq!(t.get("/schedules/1").await.json()["executions"], executions);
}

#[tokio::test]
async fn with_catch_up_skip_a_fire_missed_while_stopped_does_not_fire() {
    let (t, _) = restart_across_a_fire("skip").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(jobs_of(&t, "daily").await, Vec::<Value>::new());
    let schedule = t.get("/schedules/1").await.json();
    assert_eq!(schedule["executions"], json!([]));
    assert_eq!(schedule["schedule"]["state"], "enabled");
}

/// A `* * * * *` schedule on a `jobq serve` armed to abort at `point` when the next minute
/// fires; after the crash a plain restart has that minute's job exactly once.
async fn crash_at_a_fire(dir: &Path, point: &str) {
    let settings = settings_file(dir, &Options::without_docker());
    let armed = [(jobq::failpoint::VARIABLE, point)];
    let mut served = Served::start(&settings, &dir.join("armed.log"), &armed).unwrap();
    configure_target(&served, "minutely").await;
    configure_schedule(&served, "300", definition("* * * * *", "minutely")).await;
    let before = Utc::now();
    activate(&served, "300").await;
    let due = minute_after(before);
    let limit = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(10);
    assert!(
        served.kill_after(limit),
        "the crash point did not fire: {}",
        served.log()
    );
    assert!(
        served
            .log()
            .contains(&format!("crash point {point} reached")),
        "{}",
        served.log()
    );

    let served = Served::start(&settings, &dir.join("after.log"), &[]).unwrap();
    let jobs = wait_for_jobs(&served, "minutely", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        Utc::now() < due + chrono::Duration::seconds(55),
        "the check ran into the next minute"
    );
    assert_eq!(
        jobs_of(&served, "minutely").await.len(),
        1,
        "{point}: {jobs:?}"
    );
    let id = jobs[0]["id"].as_str().unwrap();
    assert_eq!(
        served.get("/schedules/1").await.json()["executions"],
        json!([{"jobId": id, "executionTime": iso(due)}]),
        "{point}"
    );
}

#[tokio::test]
async fn a_sigkill_before_a_fire_commits_fires_it_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    crash_at_a_fire(dir.path(), jobq::failpoint::SCHEDULE_FIRING).await;
}

#[tokio::test]
async fn a_sigkill_after_a_fire_committed_never_fires_it_again() {
    let dir = tempfile::tempdir().unwrap();
    crash_at_a_fire(dir.path(), jobq::failpoint::SCHEDULE_FIRED).await;
}
