//! Secrets through whole jobs with real containers: stored and answered only as ciphertexts,
//! decrypted only into the job's folder, hidden in events, results, archives and the store.

mod common;

use bytes::Bytes;
use common::binary::Served;
use common::{Options, TestDaemon, COMPONENT, SMALL_COMPONENT};
use hyper::Method;
use serde_json::{json, Value};

const SECRET: &str = "correct-horse-battery-staple";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_secret_reaches_only_the_container() {
    let t = TestDaemon::start(Options::default()).await;
    let created = t
        .create(
            COMPONENT,
            json!({"#password": SECRET, "reveal": "#password", "exit_code": 1}),
        )
        .await;
    assert!(
        !created.to_string().contains(SECRET),
        "the create answer shows the secret"
    );
    let id = created["id"].as_str().unwrap();
    let job = t.wait_finished(id).await;
    assert_eq!(job["status"], "error");
    let cipher = job["configData"]["parameters"]["#password"]
        .as_str()
        .unwrap();
    assert!(cipher.starts_with("KBC::ProjectSecure::"), "{cipher}");
    assert_eq!(job["result"]["message"], "failed with #password = [hidden]");

    // The container got the plain value.
    assert_eq!(t.echo(id)["config"]["parameters"]["#password"], SECRET);
    // Events and every API answer hide it.
    let events = t.get(&format!("/v2/storage/events?runId={id}")).await;
    assert!(!contains(&events.body, SECRET), "{}", events.json());
    assert!(t
        .messages(id)
        .await
        .contains(&"the value of #password is [hidden]".to_string()));
    for path in [format!("/jobs/{id}"), "/search/jobs".to_string()] {
        assert!(!contains(&t.get(&path).await.body, SECRET), "{path}");
    }
    // The store file never holds it.
    let store = std::fs::read(t.data_dir.path().join("jobq.redb")).unwrap();
    assert!(!contains(&store, SECRET), "the redb file holds the secret");
}

#[tokio::test]
async fn debug_archives_never_hold_a_secret() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .run(json!({"component": COMPONENT, "mode": "debug",
               "configData": {"parameters": {"#password": SECRET, "state": {"#cursor": SECRET}}}}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert!(!job.to_string().contains(SECRET), "{job:#}");
    let files = t
        .get(&format!(
            "/v2/storage/files?tags[]=jobId:{}",
            job["id"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(files.as_array().unwrap().len(), 2);
    for file in files.as_array().unwrap() {
        let archive = t
            .get(&format!("/v2/storage/files/{}/download", file["id"]))
            .await;
        assert!(!archive.body.is_empty());
        assert!(
            !contains(&archive.body, SECRET),
            "{} holds the secret",
            file["name"]
        );
    }
}

#[tokio::test]
async fn a_ciphertext_of_another_component_fails_the_job_naming_the_key() {
    let t = TestDaemon::start(Options::default()).await;
    let answer = t
        .client
        .send(
            Method::POST,
            &format!("/encrypt?componentId={SMALL_COMPONENT}&projectId=123"),
            &[("Content-Type", "text/plain")],
            Bytes::from(SECRET),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let foreign = String::from_utf8(answer.body.to_vec()).unwrap();
    let job = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"#token": foreign}}}))
        .await;
    assert_eq!(job["status"], "error");
    assert!(!job.to_string().contains(SECRET), "{job:#}");
    let message = job["result"]["message"].as_str().unwrap();
    assert!(message.contains("parameters.#token"), "{message}");
    assert_eq!(job["result"]["error"]["type"], "user");
}

#[tokio::test]
async fn stored_configurations_and_state_keep_only_ciphertexts() {
    let t = TestDaemon::start(Options::default()).await;
    let path = format!("/v2/storage/components/{COMPONENT}/configs");
    let created = t
        .post(&path, &json!({"configurationId": "s", "name": "s",
                              "configuration": {"parameters": {"#token": SECRET, "state": {"#cursor": SECRET}}}}))
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    assert!(!contains(&created.body, SECRET));
    let stored = created.json();
    assert!(stored["configuration"]["parameters"]["#token"]
        .as_str()
        .unwrap()
        .starts_with("KBC::ProjectSecure::"));

    let first = t.run(json!({"component": COMPONENT, "config": "s"})).await;
    assert_eq!(first["status"], "success", "{first:#}");
    assert!(!first.to_string().contains(SECRET), "{first:#}");
    assert_eq!(
        t.echo(first["id"].as_str().unwrap())["config"]["parameters"]["#token"],
        SECRET
    );
    let detail = t.get(&format!("{path}/s")).await;
    assert!(
        !contains(&detail.body, SECRET),
        "the new state is stored encrypted"
    );
    assert!(detail.json()["state"]["component"]["#cursor"]
        .as_str()
        .unwrap()
        .starts_with("KBC::"));

    // The next run's container finds the state decrypted in in/state.json; once the job has
    // ended, the file keeps it hidden.
    let second = t.run(json!({"component": COMPONENT, "config": "s"})).await;
    let second = second["id"].as_str().unwrap();
    assert_eq!(t.echo(second)["state"], json!({"#cursor": SECRET}));
    let state = std::fs::read(
        t.data_dir
            .path()
            .join(format!("jobs/{second}/data/in/state.json")),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&state).unwrap(),
        json!({"#cursor": "[hidden]"})
    );
    let store = std::fs::read(t.data_dir.path().join("jobq.redb")).unwrap();
    assert!(!contains(&store, SECRET), "the redb file holds the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_log_hides_secrets_the_component_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::fresh(dir.path(), &Options::default(), "debug").await;
    let job = served
        .create(
            COMPONENT,
            json!({"#password": SECRET, "reveal": "#password", "exit_code": 2}),
        )
        .await;
    let job = served.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(job["result"]["error"]["type"], "application");
    served.kill_after(std::time::Duration::ZERO);
    let log = served.log();
    assert!(
        log.contains("failed with #password = [hidden]"),
        "the application error's stderr is logged, hidden: {log}"
    );
    assert!(
        !log.contains(SECRET),
        "the daemon log holds the secret: {log}"
    );
}
