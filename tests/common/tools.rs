//! Tools some tests need beyond Rust, Python 3 and a Docker engine: installed from Debian's
//! packages on first use when missing, so `cargo test` provisions what it needs itself.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One installation at a time: apt holds a lock of its own.
static APT: Mutex<()> = Mutex::new(());

/// Makes sure `probe` (a command and its arguments) runs successfully, installing Debian's
/// `package` first when it does not; fails the test saying what to install otherwise.
pub fn ensure(probe: &[&str], package: &str) {
    let works = || {
        Command::new(probe[0])
            .args(&probe[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if works() {
        return;
    }
    let _apt = APT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if works() {
        return;
    }
    let installed = Command::new("sh")
        .args([
            "-c",
            &format!("apt-get update -qq && apt-get install -y -qq {package}"),
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed && works(),
        "this test needs `{}` (Debian's {package}), and installing it failed; install it \
         (as root: apt-get install -y {package}) and run the test again",
        probe.join(" ")
    );
}
