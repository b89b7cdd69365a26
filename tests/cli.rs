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
             `data_dir`, `public_url`, `docker_host`, `executor`, `max_concurrent_jobs`, `max_body_bytes`, \
             `kill_grace_seconds`, `job_retention`, `job_folder_retention`, \
             `job_folder_retention_hours`, `sweep_interval`, `stack_id`, `container_user`, \
             `max_events_per_job`, `min_free_space`, `cache_size_mib`, `log_format`, `metrics_listen`, `schedule_catch_up`, `project`, `tokens`, `components`, \
             `registries`, `wait_for_registry`, `encryption_key`, `dev_mode`, `action_time_limit`, `max_concurrent_actions`, \
             `container_types`, `max_container_memory`, `max_container_cpus`, `no_internet_network`, \
             `trusted_ca_file`, `smtp`, `swarm`\n\n"
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
fn swarm_tls_files_that_cannot_be_used_stop_the_daemon_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let pem = |name: &str, label: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("-----BEGIN {label}-----\nMAA=\n-----END {label}-----\n"),
        )
        .unwrap();
        path.display().to_string()
    };
    let certificate = pem("cert.pem", "CERTIFICATE");
    let key = pem("key.pem", "PRIVATE KEY");
    let missing = dir.path().join("missing.pem").display().to_string();
    let data = dir.path().join("data");
    let settings = |ca: &str, key: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nexecutor = \"swarm\"\n[swarm]\n\
             manager = \"tcp://swarm.example.com:2376\"\nca_file = \"{ca}\"\n\
             cert_file = \"{certificate}\"\nkey_file = \"{key}\"\n\
             probe_image = \"busybox:1.36\"\n[[tokens]]\nid = \"1\"\n\
             token = \"t\"\n",
            data.display()
        )
    };
    let (stderr, _) = serve_fails_with(&settings(&missing, &key));
    assert_eq!(
        stderr,
        format!(
            "jobq: cannot use `swarm.ca_file` {missing} (I/O error: No such file or directory \
             (os error 2)); it must be a PEM file of the CA certificate that signed the \
             manager's certificate\n"
        )
    );
    let (stderr, _) = serve_fails_with(&settings(&certificate, &certificate));
    assert_eq!(
        stderr,
        format!(
            "jobq: cannot use `swarm.key_file` {certificate} (no items found); it must be a PEM \
             file of the private key of `swarm.cert_file`\n"
        )
    );
    assert!(
        !data.exists(),
        "nothing is written before the files are checked"
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
fn a_trusted_ca_file_that_cannot_be_used_stops_the_daemon_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |ca: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ntrusted_ca_file = \"{ca}\"\n\
             [[tokens]]\nid = \"1\"\ntoken = \"t\"\n",
            dir.path().join("data").display()
        )
    };
    let missing = dir.path().join("missing.pem").display().to_string();
    let (stderr, _) = serve_fails_with(&settings(&missing));
    assert_eq!(
        stderr,
        format!(
            "jobq: cannot read setting `trusted_ca_file` {missing}; give a readable PEM file of \
             CA certificates: No such file or directory (os error 2)\n"
        )
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (stderr, _) = serve_fails_with(&settings(&garbage.display().to_string()));
    assert!(
        stderr.starts_with(
            "jobq: setting `trusted_ca_file` holds no PEM certificates the webhook client can use; \
             give a PEM file of CA certificates: "
        ),
        "{stderr}"
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
    assert!(!log.contains('\x1b'), "no colours in a log file: {log}");
    assert!(dir.path().join("data/jobq.redb").exists());
}

#[tokio::test]
async fn json_log_has_one_object_a_line_and_a_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::binary::settings_file(dir.path(), &Options::without_docker());
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(&settings, format!("log_format = \"json\"\n{text}")).unwrap();
    let mut served = Served::start(&settings, &dir.path().join("jobq.log"), &[])
        .unwrap_or_else(|ended| panic!("{ended}"));
    assert_eq!(served.get("/v2/storage/tokens/verify").await.status, 200);
    let anonymous = jobq::cli::client::ApiClient::new(served.addr, "");
    assert_eq!(anonymous.get("/health/live").await.unwrap().status, 200);
    assert_eq!(anonymous.get("/nowhere").await.unwrap().status, 404);
    assert_eq!(anonymous.get("/jobs/1").await.unwrap().status, 401);
    assert!(served.terminate().success());

    let log = served.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let requests: Vec<(String, u64, bool)> = lines
        .iter()
        .filter(|line| line["message"] == "request")
        .map(|line| {
            (
                line["route"].as_str().unwrap().to_string(),
                line["status"].as_u64().unwrap(),
                !line["exception_id"].as_str().unwrap().is_empty(),
            )
        })
        .collect();
    assert_eq!(
        requests,
        [
            ("v2/storage/tokens/verify".to_string(), 200, false),
            ("health/live".to_string(), 200, false),
            ("(none)".to_string(), 404, true),
            ("jobs/{id}".to_string(), 401, true),
        ]
    );
    assert!(lines.iter().all(|line| line["level"].is_string()));
    assert!(
        !log.contains(TOKEN),
        "the token must never be logged: {log}"
    );
    assert!(!log.contains('\x1b'), "no colours in a log file: {log}");
}

#[test]
fn systemd_is_told_ready_once_the_daemon_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let settings = common::binary::settings_file(dir.path(), &Options::without_docker());
    let notify = socket_path.to_str().unwrap();
    let mut served = Served::start(
        &settings,
        &dir.path().join("jobq.log"),
        &[("NOTIFY_SOCKET", notify)],
    )
    .unwrap_or_else(|ended| panic!("{ended}"));
    let mut message = [0u8; 256];
    let length = socket.recv(&mut message).expect("READY within 30 s");
    assert_eq!(
        std::str::from_utf8(&message[..length]).unwrap(),
        "READY=1\n"
    );
    assert!(served.terminate().success());
}

#[test]
fn the_systemd_unit_verifies() {
    common::tools::ensure(&["systemd-analyze", "--version"], "systemd");
    // The unit with this build's binary in place of /usr/bin/jobq, which verify looks for.
    let dir = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/jobq.service"))
            .unwrap()
            .replace("/usr/bin/jobq", env!("CARGO_BIN_EXE_jobq"));
    assert!(unit.contains("Type=notify") && unit.contains("UMask=0077"));
    let path = dir.path().join("jobq.service");
    std::fs::write(&path, unit).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
