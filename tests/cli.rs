//! The real `jobq` binary: settings errors, serving, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobq::cli::client::ApiClient;

const BINARY: &str = env!("CARGO_BIN_EXE_jobq");

/// Runs `jobq serve` with `settings` written to a file; asserts it fails with exit code 1 and
/// prints nothing on stdout. Its stderr and the settings file's path.
fn serve_fails_with(settings: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobq.toml");
    std::fs::write(&path, settings).unwrap();
    let stderr = serve_fails(&path.display().to_string());
    (stderr, path.display().to_string())
}

fn serve_fails(config: &str) -> String {
    let output = Command::new(BINARY)
        .args(["serve", "--config", config])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "serve must refuse {config}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unreadable_settings_file_is_named_and_its_cause_shown_once() {
    assert_eq!(
        serve_fails("/nonexistent/jobq.toml"),
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
             `kill_grace_seconds`, `job_folder_retention_hours`, `stack_id`, `container_user`, \
             `project`, `tokens`, `components`, `encryption_key`\n\n"
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

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobq.toml");
    let secret = "cli-secret-token-31337";
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[tokens]]\nid = \"9\"\ndescription = \"cli\"\ntoken = \"{secret}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "jobq exited early: {log}"
        );
        log.push_str(&line);
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.trim().parse().expect("a socket address");
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime
        .block_on(ApiClient::new(addr, secret).get("/v2/storage/tokens/verify"))
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], "9");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "jobq did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert!(exit.success(), "exit {exit:?}: {log}");
    assert!(log.contains("jobq stopped"), "{log}");
    assert!(
        !log.contains(secret),
        "the token must never be logged: {log}"
    );
    assert!(dir.path().join("data/jobq.redb").exists());
}
