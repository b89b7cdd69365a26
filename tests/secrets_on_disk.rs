//! A decrypted secret is on disk only while its job runs: once a job ends, however it ends,
//! no file under `data_dir` holds it, and job folders are private to their owner.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

const SECRET: &str = "tr0ub4dor-and-3-more-words";

/// Every file under `root` whose bytes contain `needle`, like `grep -rl`.
fn files_containing(root: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// The parameters of a fixture run with the secret in `config.json` and both state files; the
/// fixture does not echo its configuration into `out/files` (a component's own output is its
/// data, not jobq's to scrub).
fn with_secret(extra: Value) -> Value {
    let mut parameters = json!({
        "#password": SECRET,
        "echo": false,
        "state": {"#cursor": SECRET},
    });
    for (key, value) in extra.as_object().unwrap() {
        parameters[key] = value.clone();
    }
    json!({"parameters": parameters})
}

fn assert_no_secret_on_disk(t: &TestDaemon, case: &str) {
    let found = files_containing(t.data_dir.path(), SECRET);
    assert!(found.is_empty(), "{case}: the raw secret is in {found:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn no_decrypted_secret_stays_on_disk_after_a_job_ends_however_it_ends() {
    let mut t = TestDaemon::start(Options::default()).await;
    let cases = [
        ("success", json!({}), "run"),
        ("error", json!({"exit_code": 1}), "run"),
        ("success", json!({}), "debug"),
    ];
    for (expected, extra, mode) in cases {
        let job = t
            .run(json!({"component": COMPONENT, "mode": mode, "configData": with_secret(extra)}))
            .await;
        assert_eq!(job["status"], expected, "{job:#}");
        assert_no_secret_on_disk(&t, &format!("{mode} job ending {expected}"));
    }

    // Killed while its container runs.
    let job = t
        .submit(json!({"component": COMPONENT, "configData": with_secret(json!({"sleep": 30}))}))
        .await;
    let id = job["id"].as_str().unwrap();
    t.wait_status(id, "processing").await;
    t.wait_for_message(id, "Running component keboola.ex-fixture (row 1 of 1)")
        .await;
    let killed = t.kill(id).await;
    assert_eq!(killed.status, 202);
    assert_eq!(t.wait_finished(id).await["status"], "terminated");
    assert_no_secret_on_disk(&t, "terminated job");

    // The daemon stops while the container runs; the next one re-attaches and finishes it.
    let job = t
        .submit(json!({"component": COMPONENT, "configData": with_secret(json!({"sleep": 2}))}))
        .await;
    let id = job["id"].as_str().unwrap();
    t.wait_for_message(id, "Running component keboola.ex-fixture (row 1 of 1)")
        .await;
    t.restart();
    let job = t.wait_finished(id).await;
    assert_eq!(
        job["status"],
        "success",
        "{job:#} {:?}",
        t.messages(id).await
    );
    assert_no_secret_on_disk(&t, "job re-attached after a restart");

    // Job folders are private to their owner.
    let jobs = t.data_dir.path().join("jobs");
    assert_eq!(mode(&jobs), 0o700, "jobs/");
    assert_eq!(mode(&jobs.join(id)), 0o700, "jobs/{id}");
    assert_eq!(mode(&jobs.join(id).join("data")), 0o700, "jobs/{id}/data");
}

#[tokio::test]
async fn stored_state_keeps_its_secret_as_a_ciphertext_after_the_folder_is_sealed() {
    let t = TestDaemon::start(Options::default()).await;
    let created = t
        .post(
            "/v2/storage/components/keboola.ex-fixture/configs",
            &json!({"name": "with state", "configuration": with_secret(json!({}))}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    let config = created.json()["id"].as_str().unwrap().to_string();
    let job = t
        .run(json!({"component": COMPONENT, "config": config}))
        .await;
    assert_eq!(job["status"], "success");
    assert_no_secret_on_disk(&t, "a stored configuration's job");
    let stored = t
        .get(&format!(
            "/v2/storage/components/keboola.ex-fixture/configs/{config}"
        ))
        .await
        .json();
    let cursor = stored["state"]["component"]["#cursor"].as_str().unwrap();
    assert!(cursor.starts_with("KBC::ProjectSecure::"), "{cursor}");
}
