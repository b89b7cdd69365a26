//! A second Docker engine of the test's own, which the test may stop and start at will.
//!
//! It runs `dockerd` with everything under one temporary folder (socket, data root, exec root,
//! pid file, an empty config file, so the host's `/etc/docker/daemon.json` does not apply), a
//! bridge of its own made for it (`--bridge none` would make it delete the host's `docker0`,
//! which the host's engine needs), `--iptables=false` (it never touches the firewall) and
//! `--live-restore`, so containers keep running while it is stopped. Stopping is a SIGTERM to its
//! pid. When it goes away (normally or on a panic) it removes its containers, stops, unmounts
//! what it left mounted and deletes its folder.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the engine may take to start or to stop.
const ENGINE_LIMIT: Duration = Duration::from_secs(60);

pub struct Engine {
    dir: PathBuf,
    child: Option<Child>,
    /// Every start of the engine, as `dockerd` printed it, one file for all starts.
    log: PathBuf,
    /// The network bridge made for it (removed with it).
    bridge: String,
    /// Whether the engine ever answered (so it may have containers to remove).
    ran: bool,
    cleaned: bool,
}

impl Engine {
    /// Starts the engine; fails the test, saying why, when `dockerd` cannot run here.
    pub fn start() -> Engine {
        let dir = tempfile::Builder::new()
            .prefix("jobq-engine-")
            .tempdir()
            .expect("a temporary folder for the second Docker engine")
            .keep();
        std::fs::write(dir.join("daemon.json"), "{}").expect("the engine's config file");
        super::tools::ensure(&["ip", "-V"], "iproute2");
        let pid = std::process::id();
        let bridge = format!("jqbr{:x}", pid % 0x10000);
        let address = format!("10.213.{}.1/24", pid % 250);
        for args in [
            vec!["link", "add", bridge.as_str(), "type", "bridge"],
            vec!["addr", "add", address.as_str(), "dev", bridge.as_str()],
            vec!["link", "set", bridge.as_str(), "up"],
        ] {
            let made = Command::new("ip").args(&args).status();
            assert!(
                matches!(made, Ok(status) if status.success()),
                "this test's second Docker engine needs a bridge of its own: `ip {}` failed \
                 (run the test as root with iproute2 installed)",
                args.join(" ")
            );
        }
        let mut engine = Engine {
            log: dir.join("dockerd.log"),
            bridge,
            dir,
            child: None,
            ran: false,
            cleaned: false,
        };
        engine.launch();
        engine
    }

    /// `unix://<folder>/docker.sock`, for `docker_host` and `Runner::new`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pid of the running `dockerd`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the engine runs").id()
    }

    /// Stops the engine: SIGTERM to its pid, then waits until it exited and its socket no longer
    /// answers. Its containers keep running (`--live-restore`).
    pub fn stop(&mut self) {
        if let Err(why) = self.try_stop() {
            panic!("{why}");
        }
    }

    /// Starts the engine again with the same flags and data root.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the engine runs already");
        self.launch();
    }

    fn launch(&mut self) {
        if let Err(why) = self.try_launch() {
            panic!("{why}");
        }
    }

    /// Every container of this engine, running or not, as (id, labels).
    pub fn containers(&self) -> Vec<(String, Value)> {
        let (status, body) = request(&self.socket(), "GET", "/containers/json?all=1")
            .expect("the second engine answers");
        assert_eq!(status, 200, "listing containers answered {body}");
        let list: Value = serde_json::from_str(&body).expect("a JSON list of containers");
        list.as_array()
            .expect("a JSON list of containers")
            .iter()
            .map(|c| {
                (
                    c["Id"].as_str().unwrap_or_default().to_string(),
                    c["Labels"].clone(),
                )
            })
            .collect()
    }

    /// `GET /containers/<id>/json`.
    pub fn inspect(&self, id: &str) -> Value {
        let (status, body) = request(&self.socket(), "GET", &format!("/containers/{id}/json"))
            .expect("the second engine answers");
        assert_eq!(status, 200, "inspecting {id} answered {body}");
        serde_json::from_str(&body).expect("a JSON container")
    }

    /// Removes the containers, stops the engine and deletes its folder; returns what went wrong.
    pub fn shut_down(mut self) -> Result<(), String> {
        self.clean_up()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn try_launch(&mut self) -> Result<(), String> {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|error| format!("cannot open {}: {error}", self.log.display()))?;
        let spawned = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--live-restore",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|error| error.to_string())?)
            .stderr(log)
            .spawn();
        let mut child = spawned.map_err(|error| {
            format!(
                "this test runs a second Docker engine of its own and cannot start `dockerd`: \
                 {error}. Install Docker's engine (dockerd on PATH) and run the test as root."
            )
        })?;
        let deadline = Instant::now() + ENGINE_LIMIT;
        loop {
            if ping(&self.socket()).is_some() {
                self.child = Some(child);
                self.ran = true;
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "this test runs a second Docker engine of its own and `dockerd` exited at start \
                     ({status}); running dockerd needs root (or rootless Docker's setup) and a \
                     kernel that allows containers. Its last log lines ({}):\n{}",
                    self.log.display(),
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the second Docker engine did not answer on {} within {ENGINE_LIMIT:?}. Its last \
                     log lines:\n{}",
                    self.socket().display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_stop(&mut self) -> Result<(), String> {
        let mut child = self.child.take().ok_or("the engine is not running")?;
        let pid = child.id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|error| format!("cannot run `kill`: {error}"))?;
        if !sent.success() {
            return Err(format!("cannot send SIGTERM to dockerd ({pid})"));
        }
        let deadline = Instant::now() + ENGINE_LIMIT;
        while child
            .try_wait()
            .map_err(|error| error.to_string())?
            .is_none()
        {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the second Docker engine ({pid}) did not stop within {ENGINE_LIMIT:?} of a \
                     SIGTERM; its log: {}",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if ping(&self.socket()).is_some() {
            return Err("the second Docker engine exited but its socket still answers".into());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// With `--live-restore` a stopped engine leaves its containers running, so the engine is
    /// started (if it is down) to remove them, then stopped. Whatever of it still runs or is
    /// mounted afterwards is ended by pid and unmounted before the folder is deleted.
    fn clean_up(&mut self) -> Result<(), String> {
        self.cleaned = true;
        let mut problems = Vec::new();
        if self.child.is_none() && self.ran {
            if let Err(why) = self.try_launch() {
                problems.push(format!("cannot start the engine to clean up: {why}"));
            }
        }
        if self.child.is_some() {
            let socket = self.socket();
            let listed = request(&socket, "GET", "/containers/json?all=1")
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok());
            for container in listed
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = container["Id"].as_str().unwrap_or_default();
                match request(&socket, "DELETE", &format!("/containers/{id}?force=1&v=1")) {
                    Some((204, _)) => {}
                    other => problems.push(format!("cannot remove container {id}: {other:?}")),
                }
            }
            if let Err(why) = self.try_stop() {
                problems.push(format!("cannot stop the engine: {why}"));
            }
        }
        // dockerd stops its containerd; shims end with their containers. Anything left that
        // names this folder on its command line was started by this engine.
        for pid in processes_naming(&self.dir) {
            problems.push(format!("process {pid} outlived the engine; killed"));
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let removed = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        if !matches!(removed, Ok(status) if status.success()) {
            problems.push(format!("cannot remove the bridge {}", self.bridge));
        }
        // dockerd bind-mounts its data root onto itself and may leave that mount behind.
        for mount in mounts_under(&self.dir).into_iter().rev() {
            let status = Command::new("umount").arg(&mount).status();
            if !matches!(status, Ok(s) if s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
        }
        if mounts_under(&self.dir).is_empty() {
            if let Err(error) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("cannot delete {}: {error}", self.dir.display()));
            }
        } else {
            problems.push(format!(
                "{} still has mounts; left in place",
                self.dir.display()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.cleaned {
            if let Err(problems) = self.clean_up() {
                eprintln!("cleaning up the second Docker engine: {problems}");
            }
        }
    }
}

/// Whether the engine at `socket` answers `GET /_ping`.
fn ping(socket: &Path) -> Option<()> {
    match request(socket, "GET", "/_ping") {
        Some((200, _)) => Some(()),
        _ => None,
    }
}

/// One HTTP/1.0 request over the engine's socket (the connection closes after the answer):
/// (status, body), or `None` when the engine does not answer.
fn request(socket: &Path, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Processes whose command line mentions `dir` (this engine's containerd and shims).
fn processes_naming(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points at or under `dir`, in the order they were mounted.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
        .filter(|mount| mount == &prefix || mount.starts_with(&format!("{prefix}/")))
        .collect()
}
