//! The real kbcstorage Python client, for the test that reads jobq through it: a virtual
//! environment under the target folder with a pinned kbcstorage, made on first use and shared by
//! every later run. A lock file keeps two test processes from making it at the same time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kbcstorage release tests/kbcstorage_check.py is written against. The environment's folder
/// is named after it, so a new pin gets a new environment.
pub const KBCSTORAGE_VERSION: &str = "0.12.0";

/// The Python of an environment that has kbcstorage; makes the environment when it is missing.
/// Panics, saying what to install, when it cannot be made: the test never skips.
pub fn kbcstorage_python() -> PathBuf {
    let name = format!("py-kbcstorage-{KBCSTORAGE_VERSION}");
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
    let python = folder.join("bin/python");
    // Written last: a folder without it is an environment whose making was interrupted.
    let complete = folder.join("jobq-complete");

    std::fs::create_dir_all(folder.parent().unwrap()).expect("the target folder is writable");
    let lock = File::create(folder.with_file_name(format!("{name}.lock")))
        .expect("a lock file in the target folder");
    lock.lock().expect("the lock of the kbcstorage environment");
    if complete.exists() {
        return python;
    }
    if folder.exists() {
        std::fs::remove_dir_all(&folder).expect("an interrupted environment can be removed");
    }
    super::tools::ensure(&["python3", "-c", "import venv, ensurepip"], "python3-venv");
    let made = run(Command::new("python3").arg("-m").arg("venv").arg(&folder)).and_then(|()| {
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--disable-pip-version-check",
            &format!("kbcstorage=={KBCSTORAGE_VERSION}"),
        ]))
    });
    if let Err(problem) = made {
        let _ = std::fs::remove_dir_all(&folder);
        panic!(
            "The kbcstorage check needs Python 3 with its venv module, and the first run needs to \
             download kbcstorage {KBCSTORAGE_VERSION} with pip into {}. {problem}\nInstall \
             Python 3 with venv and pip (on Debian or Ubuntu: apt-get install python3 python3-venv), \
             make the package index reachable, and run the tests again.",
            folder.display()
        );
    }
    File::create(&complete).expect("the environment's completion mark");
    python
}

/// Runs `command` to its end; what failed and its output otherwise.
fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|error| format!("{shown} could not start: {error}."))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
