//! The real `jobq` binary: settings errors, serving, and a graceful stop on SIGTERM. No Docker
//! engine needed.

mod common;

use common::binary::{fails, jobq, Served};
use common::{Options, TOKEN};

/// Runs `jobq serve` with `settings` written to a file; asserts it fails with exit code 1 and
/// prints nothing on stdout. Its stderr and the settings file's path.
fn serve_fails_with(settings: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobq.toml");
    std::fs::write(&path, settings).unwrap();
    let stderr = fails(jobq(["serve", "--config"]).arg(&path));
    (stderr, path.display().to_string())
}

#[test]
fn unreadable_settings_file_is_named_and_its_cause_shown_once() {
    assert_eq!(
        fails(&mut jobq(["serve", "--config", "/nonexistent/jobq.toml"])),
        "jobq: cannot read the settings file /nonexistent/jobq.toml; check the --config path and \
         that jobq may read it: No such file or directory (os error 2)\n"
    );
}

#[test]
fn unknown_keys_and_bad_values_stop_the_daemon_naming_the_key() {
    let token = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
    let (stderr, path) = serve_fails_with(&format!("workers = 3\n{token}"));
    assert_eq!(
        stderr,
        format!(
            "jobq: the settings file {path} is not valid: TOML parse error at line 1, column 1\n  \
             |\n1 | workers = 3\n  | ^^^^^^^\nunknown field `workers`, expected one of `listen`, \
             `data_dir`, `public_url`, `docker_host`, `max_concurrent_jobs`, `max_body_bytes`, \
             `kill_grace_seconds`, `job_retention`, `job_folder_retention`, \
             `job_folder_retention_hours`, `sweep_interval`, `stack_id`, `container_user`, \
             `max_events_per_job`, `min_free_space`, `cache_size_mib`, `project`, `tokens`, `components`, \
             `registries`, `wait_for_registry`, `encryption_key`\n\n"
        )
    );
    let (stderr, _) = serve_fails_with(&format!("max_concurrent_jobs = -2\n{token}"));
    assert_eq!(
        stderr,
        "jobq: setting `max_concurrent_jobs` is not valid: must be at least 1, not -2\n"
    );
    let (stderr, _) = serve_fails_with(&format!(
        "{token}[[components]]\nid = \"c\"\nimage = \"i\"\ntag = \"1\"\nmemory = \"big\"\n"
    ));
    assert_eq!(
        stderr,
        "jobq: setting `components[0].memory` is not valid: \"big\" is not a size like 256m or 1g\n"
    );
}

#[test]
fn a_data_dir_that_cannot_be_made_is_named_with_its_cause_once() {
    let (stderr, _) =
        serve_fails_with("data_dir = \"/proc/jobq-data\"\n[[tokens]]\nid = \"1\"\ntoken = \"t\"\n");
    assert_eq!(
        stderr,
        "jobq: cannot create data_dir /proc/jobq-data; choose a writable `data_dir`: No such file \
         or directory (os error 2)\n"
    );
}

#[tokio::test]
async fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::fresh(dir.path(), &Options::without_docker(), "debug").await;
    let answer = served.get("/v2/storage/tokens/verify").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], "7");

    let exit = served.terminate();
    let log = served.log();
    assert!(exit.success(), "exit {exit:?}: {log}");
    assert!(log.contains("jobq stopped"), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the token must never be logged: {log}"
    );
    assert!(dir.path().join("data/jobq.redb").exists());
}
