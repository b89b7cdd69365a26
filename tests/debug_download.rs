//! `jobq debug` streams each stage archive to a temporary file in `--out` and unpacks it from
//! there: archives uploaded as a debug job's files come back whole, and nothing but the stage
//! folders is left in `--out`.

mod common;

use std::io::{Cursor, Write};

use bytes::Bytes;
use common::{Options, TestDaemon, TOKEN};
use hyper::Method;

/// Uploads `content` as Storage file `name` tagged as a debug archive of job `job`.
async fn upload(t: &TestDaemon, job: &str, name: &str, content: Vec<u8>) {
    let answer = t
        .client
        .send(
            Method::POST,
            &format!("/v2/storage/files?name={name}&tags[]=jobId:{job}&tags[]=debug"),
            &[("Content-Type", "application/octet-stream")],
            Bytes::from(content),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.json());
}

/// `jobq debug <job> --out <out>` against `t`.
fn jobq_debug(t: &TestDaemon, job: &str, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["debug", job, "--out"])
        .arg(out)
        .args(["--url", &format!("http://{}", t.addr), "--token", TOKEN])
        .output()
        .unwrap()
}

#[tokio::test]
async fn jobq_debug_streams_archives_through_a_temporary_file() {
    let t = TestDaemon::start(Options::default()).await;
    // 3 MiB that deflate cannot shrink: the download spans many reads.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let blob: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.add_directory("out/tables/", options).unwrap();
    zip.start_file("in/files/blob.bin", options).unwrap();
    zip.write_all(&blob).unwrap();
    zip.start_file("config.json", options).unwrap();
    zip.write_all(br#"{"parameters": {}}"#).unwrap();
    let archive = zip.finish().unwrap().into_inner();
    upload(&t, "dl-1", "stage_0.zip", archive).await;

    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("debug");
    let output = jobq_debug(&t, "dl-1", &folder);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\n", folder.join("stage_0").display())
    );
    assert!(std::fs::read(folder.join("stage_0/in/files/blob.bin")).unwrap() == blob);
    assert_eq!(
        std::fs::read(folder.join("stage_0/config.json")).unwrap(),
        br#"{"parameters": {}}"#
    );
    assert!(folder.join("stage_0/out/tables").is_dir());
    let left: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["stage_0"], "the temporary file is gone");

    // A damaged archive is refused by name, as before.
    upload(&t, "dl-2", "stage_1.zip", b"not a zip".to_vec()).await;
    let output = jobq_debug(&t, "dl-2", &out.path().join("damaged"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stage_1.zip is not a valid zip archive"),
        "{stderr}"
    );
}
