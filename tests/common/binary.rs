//! The real `jobq` binary: its command line, and `jobq serve` as a child process with its log in
//! a file, for tests of what only the process shows (exit codes, stderr, the log, signals,
//! crashes).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{settings, Api, Options, TOKEN};

pub const BINARY: &str = env!("CARGO_BIN_EXE_jobq");

/// `jobq` with `args`, its log without colours.
pub fn jobq<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args).env("NO_COLOR", "1");
    command
}

/// Runs `command` to its end and asserts that it succeeded (showing its output otherwise); its
/// stdout.
#[track_caller]
pub fn succeeds(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{stderr}",
        output.status
    );
    stdout
}

/// Runs `command` to its end and asserts that it failed with exit code 1 and printed nothing on
/// stdout, as `jobq` does when it refuses; its stderr.
#[track_caller]
pub fn fails(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{command:?}: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "", "{command:?}");
    stderr
}

impl Api {
    /// `jobq` with `args`, then this daemon's `--url` and the test token, as the commands that
    /// talk to a running daemon (`load-table`, `run`, `debug`) take them.
    pub fn jobq<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut command = jobq(args);
        let url = format!("http://{}", self.addr);
        command.args(["--url", &url, "--token", TOKEN]);
        command
    }
}

/// Writes `dir/jobq.toml`: a test daemon's settings (see `settings`) with its data in
/// `dir/data`. The file's path.
pub fn settings_file(dir: &Path, options: &Options) -> PathBuf {
    let path = dir.join("jobq.toml");
    std::fs::write(&path, settings(&dir.join("data"), options)).expect("a settings file");
    path
}

/// The address and instance id of a log line (text or JSON) saying that jobq listens.
fn listening(line: &str) -> Option<(String, String)> {
    if !line.contains("jobq is listening") {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |name: &str| json[name].as_str().map(str::to_string);
        return Some((field("addr")?, field("instance")?));
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    Some((field("addr")?, field("instance")?))
}

/// A running `jobq serve`; killed when dropped. Its requests are `Api`'s.
pub struct Served {
    child: Child,
    log: PathBuf,
    api: Api,
    /// The instance id of its store, which names and labels its containers.
    pub instance: String,
}

impl std::ops::Deref for Served {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Served {
    /// Starts `jobq serve --config settings` with its log in `log` (level `info`, no crash
    /// point, unless `env` sets `RUST_LOG` or `JOBQ_CRASH_AT`) and waits until it listens.
    /// Err: how and with which log the process ended before it listened.
    pub fn start(settings: &Path, log: &Path, env: &[(&str, &str)]) -> Result<Served, String> {
        let mut command = jobq(["serve", "--config"]);
        command
            .arg(settings)
            .env("RUST_LOG", "info")
            .env_remove(jobq::failpoint::VARIABLE)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("a log file"));
        let mut child = command.spawn().expect("jobq starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some((addr, instance)) = text.lines().find_map(listening) {
                return Ok(Served {
                    api: Api::new(addr.parse().expect("a socket address")),
                    instance,
                    child,
                    log: log.to_path_buf(),
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("jobq ended ({status}) before it listened: {text}"));
            }
            assert!(Instant::now() < deadline, "jobq did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `jobq serve` for a fresh test daemon with its settings (see `settings_file`) and
    /// data in `dir` and its log at `level` in `dir/jobq.log`, after building the fixture image
    /// in its engine, if it has one.
    pub async fn fresh(dir: &Path, options: &Options, level: &str) -> Served {
        options.build_fixture_image().await;
        let settings = settings_file(dir, options);
        Served::start(&settings, &dir.join("jobq.log"), &[("RUST_LOG", level)])
            .unwrap_or_else(|ended| panic!("{ended}"))
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("the log file")
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to end; its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let signal = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(signal.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "jobq did not stop within 20 s of SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the process to end by itself, then SIGKILLs it; whether it ended
    /// by itself.
    pub fn kill_after(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().unwrap().is_some() {
            return true;
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        false
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
