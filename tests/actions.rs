//! Synchronous actions (`POST /actions`, `GET /actions`) against the real daemon and engine: every
//! answer the fixture component can give, secrets, the time limit, the concurrency limit, and
//! containers removed in every case (the daemon's stop included).

mod common;

use std::time::Duration;

use common::binary::Served;
use common::{
    assert_error, Api, Options, TestDaemon, COMPONENT, FIXTURE_ACTIONS, FIXTURE_IMAGE, FIXTURE_TAG,
};
use serde_json::{json, Value};

/// `POST /actions` of `action` of `COMPONENT` with `parameters`.
async fn action(api: &Api, action: &str, parameters: Value) -> jobq::cli::client::Answer {
    let body = json!({"componentId": COMPONENT, "action": action, "configData": {"parameters": parameters}});
    api.post("/actions", &body).await
}

/// The action containers of the store `instance` in the engine (running or not).
fn action_containers(instance: &str) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter", "label=jobq.action"])
        .args(["--filter", &format!("label=jobq.instance={instance}")])
        .output()
        .expect("the docker command runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// What is left in `data_dir/actions` (each action's folder goes when it ends).
fn action_folders(data_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("actions"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn actions_answer_the_component_json_verbatim_or_the_error_it_means() {
    let daemon = TestDaemon::start(Options::default()).await;
    let instance = daemon.daemon.as_ref().unwrap().instance_id().to_string();

    let listed = daemon
        .get(&format!("/actions?componentId={COMPONENT}"))
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), json!({"actions": FIXTURE_ACTIONS}));

    for (name, body) in [("emptyJsonObject", "{}"), ("emptyJsonArray", "[]")] {
        let answer = action(&daemon, name, json!({})).await;
        assert_eq!(answer.status, 201, "{name}: {}", answer.json());
        assert_eq!(String::from_utf8_lossy(&answer.body), body, "{name}");
        let content_type = answer
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(content_type, "application/json");
    }
    let answer = action(&daemon, "object", json!({"greeting": "hi"})).await;
    assert_eq!(
        (answer.status, answer.json()),
        (201, json!({"action": "object", "parameters": "hi"}))
    );

    // The environment of a job's container, for the default branch, with `action` the only
    // difference in config.json (no input or output mapping runs).
    let answer = action(&daemon, "dumpEnv", json!({})).await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    let env = answer.json();
    assert_eq!(env["KBC_COMPONENTID"], COMPONENT);
    assert_eq!(env["KBC_PROJECTID"], "123");
    assert_eq!(env["KBC_BRANCHID"], "456");
    assert_eq!(env["KBC_DATADIR"], "/data/");
    assert_eq!(env["KBC_COMPONENT_RUN_MODE"], "run");
    let in_branch =
        json!({"componentId": COMPONENT, "action": "dumpEnv", "configData": [], "branchId": 789});
    let answer = daemon.post("/actions", &in_branch).await;
    assert_eq!(
        (answer.status, answer.json()["KBC_BRANCHID"].clone()),
        (201, json!("789"))
    );

    assert_error(
        &action(&daemon, "noResponse", json!({})).await,
        400,
        "No response from component.",
        json!({}),
    );
    let decode = serde_json::from_str::<Value>("this is {not JSON").unwrap_err();
    assert_error(
        &action(&daemon, "invalidJson", json!({})).await,
        400,
        &format!("Decoding JSON response from component failed: {decode}"),
        json!({}),
    );
    assert_error(
        &action(
            &daemon,
            "userError",
            json!({"message": "the host is unreachable"}),
        )
        .await,
        400,
        "User error: the host is unreachable",
        json!({}),
    );
    assert_error(
        &action(&daemon, "applicationError", json!({})).await,
        500,
        "Internal Server Error occurred.",
        json!({}),
    );

    // Refused before any container: unknown component, unlisted action, `run`, no configData.
    let unknown = json!({"componentId": "keboola.nothing", "action": "object", "configData": {}});
    assert_error(
        &daemon.post("/actions", &unknown).await,
        404,
        "Component \"keboola.nothing\" not found; give the componentId of one of the [[components]] in the settings.",
        json!({}),
    );
    assert_error(
        &action(&daemon, "dumpConfigKeys", json!({})).await,
        404,
        &format!("Action \"dumpConfigKeys\" not defined for component \"{COMPONENT}\"."),
        json!({}),
    );
    assert_error(
        &action(&daemon, "run", json!({})).await,
        400,
        "Action \"run\" is not a synchronous action; run the component as a job (POST /jobs).",
        json!({}),
    );
    let without_config = json!({"componentId": COMPONENT, "action": "object"});
    assert_error(
        &daemon.post("/actions", &without_config).await,
        400,
        "Field \"configData\" is required.",
        json!({}),
    );
    assert_error(
        &daemon.get("/actions?componentId=keboola.nothing").await,
        404,
        "Component \"keboola.nothing\" not found; give the componentId of one of the [[components]] in the settings.",
        json!({}),
    );
    for (client, message) in daemon.clients_without_a_valid_token() {
        let answer = client.post_json("/actions", &json!({})).await.unwrap();
        assert_error(&answer, 401, message, json!({}));
    }

    // Actions leave no job, no container and no folder.
    assert_eq!(daemon.get("/jobs").await.json(), json!([]));
    assert_eq!(action_containers(&instance), Vec::<String>::new());
    assert_eq!(action_folders(daemon.data_dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn secrets_are_decrypted_for_the_action_and_hidden_in_its_errors() {
    let daemon = TestDaemon::start(Options::default()).await;
    let secret = "s3cret-pass-word";
    let encrypt = |value: &str| {
        let path = format!("/encrypt?componentId={COMPONENT}&projectId=123");
        let value = value.to_string();
        let api = &*daemon;
        async move {
            let answer = api
                .send(hyper::Method::POST, &path, "text/plain", value)
                .await;
            assert_eq!(answer.status, 200);
            String::from_utf8(answer.body.to_vec()).unwrap()
        }
    };
    let ciphertext = encrypt(secret).await;
    let answer = action(&daemon, "secretLength", json!({"#secret": ciphertext})).await;
    assert_eq!(
        (answer.status, answer.json()),
        (201, json!({"length": secret.len()}))
    );

    let answer = action(&daemon, "userError", json!({"#message": ciphertext})).await;
    assert_error(&answer, 400, "User error: [hidden]", json!({}));

    // A value encrypted for another component is refused naming its key.
    let other = daemon
        .send(
            hyper::Method::POST,
            "/encrypt?componentId=keboola.ex-fixture-small&projectId=123",
            "text/plain",
            secret,
        )
        .await;
    let other = String::from_utf8(other.body.to_vec()).unwrap();
    let answer = action(&daemon, "secretLength", json!({"#secret": other})).await;
    assert_eq!(answer.status, 400, "{}", answer.json());
    let message = answer.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("`parameters.#secret` cannot be decrypted"),
        "{message}"
    );
    assert!(!message.contains(secret), "{message}");
}

#[tokio::test]
async fn the_time_limit_ends_an_action_and_its_concurrency_limit_answers_503() {
    let mut daemon = TestDaemon::start(Options::default()).await;
    daemon.restart_with_settings("action_time_limit = \"2s\"\nmax_concurrent_actions = 1");
    let instance = daemon.daemon.as_ref().unwrap().instance_id().to_string();
    let api = Api::new(daemon.daemon.as_ref().unwrap().addr());

    let slow = tokio::spawn(async move { action(&api, "timeout", json!({})).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while action_containers(&instance).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the action's container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = action(&daemon, "emptyJsonObject", json!({})).await;
    assert_error(
        &busy,
        503,
        "1 synchronous actions are running already (`max_concurrent_actions`); try again in a moment.",
        json!({}),
    );
    assert_eq!(
        busy.headers.get("retry-after").unwrap().to_str().unwrap(),
        "1"
    );

    let timed_out = slow.await.unwrap();
    assert_error(
        &timed_out,
        400,
        &format!(
            "Running {FIXTURE_IMAGE}:{FIXTURE_TAG} container exceeded the timeout of 2 seconds."
        ),
        json!({}),
    );
    assert_eq!(action_containers(&instance), Vec::<String>::new());
    // The slot is free again, and jobs never waited for it.
    let answer = action(&daemon, "emptyJsonObject", json!({})).await;
    assert_eq!(answer.status, 201);
    let job = daemon
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    assert_eq!(job["status"], "success");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_error_is_logged_under_its_exception_id_and_a_stop_removes_running_actions()
{
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::fresh(dir.path(), &Options::default(), "info").await;

    let answer = action(&served, "applicationError", json!({})).await;
    assert_eq!(answer.status, 500, "{}", answer.json());
    let exception_id = answer.json()["exceptionId"].as_str().unwrap().to_string();
    let log = served.log();
    let line = log
        .lines()
        .find(|line| line.contains(&exception_id))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("Application error: the component broke"),
        "{line}"
    );

    let api = Api::new(served.addr);
    let slow = tokio::spawn(async move { action(&api, "timeout", json!({})).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while action_containers(&served.instance).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the action's container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = tokio::task::block_in_place(|| served.terminate());
    assert!(exit.success(), "{}", served.log());
    let stopped = slow.await.unwrap();
    assert_error(
        &stopped,
        503,
        "jobq is stopping; try the action again once it is back.",
        json!({}),
    );
    assert_eq!(action_containers(&served.instance), Vec::<String>::new());
    assert_eq!(
        action_folders(&dir.path().join("data")),
        Vec::<String>::new()
    );
}
