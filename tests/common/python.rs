//! Python clients some tests drive jobq with: the real kbcstorage client (tests/
//! kbcstorage_check.py) and Playwright (tests/ui_browser.py), each in a virtual environment
//! under the target folder with its pinned packages, made on first use and shared by every later
//! run. A lock file keeps two test processes from making one at the same time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kbcstorage release tests/kbcstorage_check.py is written against.
pub const KBCSTORAGE_VERSION: &str = "0.12.0";
/// The Playwright release tests/ui_browser.py is written against. It drives Debian's chromium:
/// `playwright install` (which downloads browsers) is never needed.
pub const PLAYWRIGHT_VERSION: &str = "1.65.2";

/// The Python of an environment that has kbcstorage.
pub fn kbcstorage_python() -> PathBuf {
    venv("kbcstorage", KBCSTORAGE_VERSION)
}

/// The Python of an environment that has Playwright.
pub fn playwright_python() -> PathBuf {
    venv("playwright", PLAYWRIGHT_VERSION)
}

/// The Python of an environment with `package` at `version`; makes the environment when it is
/// missing. Panics, saying what to install, when it cannot be made: the test never skips.
fn venv(package: &str, version: &str) -> PathBuf {
    // Named after the pin, so that a new pin gets a new environment.
    let name = format!("py-{package}-{version}");
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
    let python = folder.join("bin/python");
    // Written last: a folder without it is an environment whose making was interrupted.
    let complete = folder.join("jobq-complete");

    std::fs::create_dir_all(folder.parent().unwrap()).expect("the target folder is writable");
    let lock = File::create(folder.with_file_name(format!("{name}.lock")))
        .expect("a lock file in the target folder");
    lock.lock().expect("the lock of the Python environment");
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
            &format!("{package}=={version}"),
        ]))
    });
    if let Err(problem) = made {
        let _ = std::fs::remove_dir_all(&folder);
        panic!(
            "This test needs Python 3 with its venv module, and the first run needs to download \
             {package} {version} with pip into {}. {problem}\nInstall Python 3 with venv and pip \
             (on Debian or Ubuntu: apt-get install python3 python3-venv), make the package index \
             reachable, and run the tests again.",
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
