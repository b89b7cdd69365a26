//! Builds the fixture component (`fixtures/component`) as a statically linked binary and leaves it
//! at `$OUT_DIR/fixture`, where `src/runner/image.rs` embeds it with `include_bytes!`.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The fixture runs in a `FROM scratch` linux/amd64 image.
const FIXTURE_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fixture_dir = manifest_dir.join("fixtures").join("component");
    let manifest = fixture_dir.join("Cargo.toml");
    let target_dir = out_dir.join("fixture-target");

    println!("cargo:rerun-if-changed=fixtures/component/src");
    println!("cargo:rerun-if-changed=fixtures/component/Cargo.toml");
    println!("cargo:rerun-if-changed=fixtures/component/Cargo.lock");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target")
        .arg(FIXTURE_TARGET)
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

    let output = command.output().unwrap_or_else(|err| {
        panic!(
            "cannot run {} to build the fixture component: {err}",
            cargo.to_string_lossy()
        )
    });
    if !output.status.success() {
        panic!(
            "building the fixture component ({}) failed with {}; it needs the {FIXTURE_TARGET} \
             target and static glibc (libc6-dev).\n--- cargo stderr ---\n{}",
            manifest.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let built = target_dir
        .join(FIXTURE_TARGET)
        .join("release")
        .join("fixture");
    let dest = out_dir.join("fixture");
    fs::copy(&built, &dest).unwrap_or_else(|err| {
        panic!(
            "cannot copy {} to {}: {err}",
            built.display(),
            dest.display()
        )
    });
}
