//! The real `jobq` binary: settings errors, serving, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobq::cli::client::ApiClient;

const BINARY: &str = env!("CARGO_BIN_EXE_jobq");

fn serve_fails_with(settings: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobq.toml");
    std::fs::write(&path, settings).unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "serve must refuse: {settings}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unreadable_settings_file_is_named() {
    let output = Command::new(BINARY)
        .args(["serve", "--config", "/nonexistent/jobq.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/jobq.toml"), "{stderr}");
}

#[test]
fn unknown_keys_and_bad_values_stop_the_daemon_naming_the_key() {
    let token = "[[tokens]]\nid = \"1\"\ntoken = \"t\"\n";
    let stderr = serve_fails_with(&format!("workers = 3\n{token}"));
    assert!(stderr.contains("workers"), "{stderr}");
    let stderr = serve_fails_with(&format!("max_concurrent_jobs = -2\n{token}"));
    assert!(stderr.contains("max_concurrent_jobs"), "{stderr}");
    let stderr = serve_fails_with(&format!(
        "{token}[[components]]\nid = \"c\"\nimage = \"i\"\ntag = \"1\"\nmemory = \"big\"\n"
    ));
    assert!(stderr.contains("components[0].memory"), "{stderr}");
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
