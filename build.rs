//! Builds the fixture component (`fixtures/component`) as a statically linked binary for the
//! host's own Linux target and leaves it at `$OUT_DIR/fixture`, where `src/runner/image.rs` embeds
//! it with `include_bytes!`. Where it cannot be built (another OS or architecture, no static
//! glibc), jobq still builds: the file stays empty and `JOBQ_FIXTURE_UNAVAILABLE` says why, so
//! only the demo and the tests that run the fixture fail, saying so.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("fixture");

    println!("cargo:rerun-if-changed=fixtures/component/src");
    println!("cargo:rerun-if-changed=fixtures/component/Cargo.toml");
    println!("cargo:rerun-if-changed=fixtures/component/Cargo.lock");

    let built = fixture_target().and_then(|target| build(&manifest_dir, &out_dir, &target));
    match built {
        Ok(binary) => {
            fs::copy(&binary, &dest).unwrap_or_else(|err| {
                panic!(
                    "cannot copy {} to {}: {err}",
                    binary.display(),
                    dest.display()
                )
            });
            println!("cargo:rustc-env=JOBQ_FIXTURE_UNAVAILABLE=");
        }
        Err(reason) => {
            fs::write(&dest, b"").expect("an empty fixture file in OUT_DIR");
            let first_line = reason.lines().next().unwrap_or_default().to_string();
            println!("cargo:warning=the fixture component is not built: {first_line}");
            // One line: a rustc-env value cannot span lines.
            println!(
                "cargo:rustc-env=JOBQ_FIXTURE_UNAVAILABLE={}",
                reason.replace('\n', " | ")
            );
        }
    }
}

/// The Linux target of the machine that builds jobq, which is the engine's: the fixture runs in
/// a `FROM scratch` image of the engine's own platform.
fn fixture_target() -> Result<String, String> {
    let host = env::var("HOST").unwrap_or_default();
    let arch = host.split('-').next().unwrap_or_default();
    let linux = host.contains("-linux-");
    match arch {
        "x86_64" | "aarch64" if linux => Ok(format!("{arch}-unknown-linux-gnu")),
        _ => Err(format!(
            "this host ({host}) is not x86_64 or aarch64 Linux, the platforms the fixture \
             component is built for"
        )),
    }
}

/// Builds the fixture for `target`; the binary's path, or why it cannot be built.
fn build(manifest_dir: &Path, out_dir: &Path, target: &str) -> Result<PathBuf, String> {
    let fixture_dir = manifest_dir.join("fixtures").join("component");
    let manifest = fixture_dir.join("Cargo.toml");
    let target_dir = out_dir.join("fixture-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target")
        .arg(target)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&fixture_dir);
    // Settings of the outer build that would leak into (and break or skew) the nested one.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    command
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TERM_COLOR", "never");

    let output = command.output().map_err(|err| {
        format!(
            "cannot run {} to build the fixture component: {err}",
            cargo.to_string_lossy()
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "building the fixture component for {target} failed with {}; it needs the {target} \
             Rust target and static glibc (libc6-dev)\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(target_dir.join(target).join("release").join("fixture"))
}
