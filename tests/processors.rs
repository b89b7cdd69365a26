//! Processors and debug mode with real containers: images run in order on one data folder,
//! and debug jobs keep a zip of the folder before each image, secrets hidden.

mod common;

use std::io::Read;

use common::binary::{fails, succeeds};
use common::{
    Options, TestDaemon, COMPONENT, PROCESSOR_IMAGE, PROCESSOR_ONE, PROCESSOR_TAG,
    PROCESSOR_TAGGED, PROCESSOR_TWO,
};
use serde_json::{json, Value};

const SECRET: &str = "plain-secret-value-123";

/// Two processors before the component and one after, each printing its name.
fn configuration(main_exit: i64) -> Value {
    json!({
        "parameters": {"print": ["main"], "#password": SECRET, "exit_code": main_exit,
                       "stderr": if main_exit == 1 { json!(["main broke"]) } else { json!([]) }},
        "processors": {
            "before": [
                {"definition": {"component": PROCESSOR_ONE},
                 "parameters": {"print": ["first"], "write_tables": [{"name": "from-first.csv", "content": "a\n1\n"}]}},
                {"definition": {"component": PROCESSOR_TWO}, "parameters": {"print": ["second"]}},
            ],
            "after": [{"definition": {"component": PROCESSOR_ONE}, "parameters": {"print": ["after"]}}],
        },
    })
}

/// A job body running `COMPONENT` in `mode` with `configuration`.
fn in_mode(mode: &str, configuration: Value) -> Value {
    json!({"component": COMPONENT, "mode": mode, "configData": configuration})
}

/// The job's debug archives: name -> (tags, entries as name -> content).
async fn archives(
    t: &TestDaemon,
    job_id: &str,
) -> Vec<(String, Vec<String>, Vec<(String, Vec<u8>)>)> {
    let files = t
        .get(&format!("/v2/storage/files?tags[]=jobId:{job_id}"))
        .await
        .json();
    let mut found = Vec::new();
    for file in files.as_array().unwrap() {
        let download = t
            .get(&format!("/v2/storage/files/{}/download", file["id"]))
            .await;
        assert_eq!(download.status, 200);
        assert!(
            !download
                .body
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes()),
            "secret in {}",
            file["name"]
        );
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(download.body.to_vec())).unwrap();
        let mut entries = Vec::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            entries.push((entry.name().unwrap().to_string(), content));
        }
        let tags = file["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        found.push((file["name"].as_str().unwrap().to_string(), tags, entries));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    entries
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.as_slice())
}

#[tokio::test]
async fn processors_run_in_order_on_one_data_folder() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t.run(in_mode("run", configuration(0))).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = job["id"].as_str().unwrap();
    let images: Vec<&str> = job["result"]["images"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        images.len(),
        4,
        "processors and the component in one row: {images:?}"
    );
    assert_eq!(job["result"]["images"].as_array().unwrap().len(), 1);
    let messages = t.messages(id).await;
    let order: Vec<&str> = messages
        .iter()
        .map(String::as_str)
        .filter(|m| ["first", "second", "main", "after"].contains(m) || m.starts_with("Running "))
        .collect();
    assert_eq!(
        order,
        [
            &format!("Running component {COMPONENT} (row 1 of 1)") as &str,
            &format!("Running processor {PROCESSOR_ONE}"),
            "first",
            &format!("Running processor {PROCESSOR_TWO}"),
            "second",
            "main",
            &format!("Running processor {PROCESSOR_ONE}"),
            "after",
        ]
    );
    // The last image (the after-processor) saw the component's out/ as its in/.
    let echo = t.echo(id);
    assert_eq!(echo["env"]["KBC_COMPONENTID"], PROCESSOR_ONE);
    assert_eq!(
        echo["config"],
        json!({"parameters": {"print": ["after"]}, "image_parameters": {"role": "first processor"}, "action": "run"})
    );
    assert!(
        echo["in"]
            .as_array()
            .unwrap()
            .contains(&json!("files/echo.json")),
        "{}",
        echo["in"]
    );
}

#[tokio::test]
async fn a_failing_processor_fails_the_job_with_its_own_error() {
    let t = TestDaemon::start(Options::default()).await;
    let mut config = configuration(0);
    config["processors"]["before"][1]["parameters"] =
        json!({"exit_code": 1, "stderr": ["processor broke"]});
    let job = t.run(in_mode("run", config)).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["result"]["message"], "processor broke");
    assert_eq!(job["result"]["error"]["type"], "user");
    let messages = t.messages(job["id"].as_str().unwrap()).await;
    assert!(
        !messages.contains(&"main".to_string()),
        "the component never ran"
    );
}

#[tokio::test]
async fn debug_mode_keeps_a_snapshot_before_each_image_and_after_the_last() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t.run(in_mode("debug", configuration(0))).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = job["id"].as_str().unwrap();
    let archives = archives(&t, id).await;
    let names: Vec<&str> = archives.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "stage_0.zip",
            "stage_1.zip",
            "stage_2.zip",
            "stage_3.zip",
            "stage_output.zip"
        ]
    );
    let components = [
        PROCESSOR_ONE,
        PROCESSOR_TWO,
        COMPONENT,
        PROCESSOR_ONE,
        COMPONENT,
    ];
    for ((name, tags, _), component) in archives.iter().zip(components) {
        let mut expected = vec![
            "debug".to_string(),
            component.to_string(),
            format!("jobId:{id}"),
            "rowId:".to_string(),
        ];
        expected.dedup();
        assert_eq!(tags, &expected, "{name}");
    }
    // Stage 0: the first processor's config.json; the folder as the processor found it.
    let stage_0 = &archives[0].2;
    let config: Value = serde_json::from_slice(entry(stage_0, "config.json").unwrap()).unwrap();
    assert_eq!(config["parameters"]["print"], json!(["first"]));
    assert!(
        entry(stage_0, "out/tables/").is_some() && entry(stage_0, "in/user/").is_some(),
        "empty folders go in"
    );
    // Stage 1: what the first processor wrote is now in/.
    assert_eq!(
        entry(&archives[1].2, "in/tables/from-first.csv"),
        Some(&b"a\n1\n"[..])
    );
    // Stage 2: the component's own config.json with its secret hidden.
    let main: Value =
        serde_json::from_slice(entry(&archives[2].2, "config.json").unwrap()).unwrap();
    assert_eq!(main["parameters"]["#password"], "[hidden]");
    assert_eq!(main["parameters"]["print"], json!(["main"]));
    // After the last image: its output.
    assert!(entry(&archives[4].2, "out/files/echo.json").is_some());
    assert!(entry(&archives[4].2, "out/state.json").is_none());
}

#[tokio::test]
async fn a_debug_job_failing_at_the_component_keeps_the_earlier_stages_and_its_failed_output() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t.run(in_mode("debug", configuration(1))).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["result"]["message"], "main broke");
    let id = job["id"].as_str().unwrap();
    let archives = archives(&t, id).await;
    let names: Vec<&str> = archives.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "stage_0.zip",
            "stage_1.zip",
            "stage_2.zip",
            "stage_output.zip"
        ]
    );
    // What the folder held when the component failed, marked failed; the processors after it
    // never ran.
    let jobs_tag = format!("jobId:{id}");
    assert_eq!(
        archives[3].1,
        ["debug", COMPONENT, jobs_tag.as_str(), "rowId:", "failed"]
    );
    assert!(!archives[2].1.contains(&"failed".to_string()));
}

#[tokio::test]
async fn debug_with_rows_repeats_the_sequence_per_row() {
    let t = TestDaemon::start(Options::default()).await;
    let configs = format!("/v2/storage/components/{COMPONENT}/configs");
    let created = t.post(&configs, &json!({"configurationId": "dbg", "name": "dbg", "configuration": {"parameters": {"#password": SECRET}}})).await;
    assert_eq!(created.status, 201, "{}", created.json());
    for row in ["r1", "r2"] {
        let answer = t
            .post(
                &format!("{configs}/dbg/rows"),
                &json!({"rowId": row, "configuration": {"parameters": {"print": [row]}}}),
            )
            .await;
        assert_eq!(answer.status, 201);
    }
    let job = t
        .run(json!({"component": COMPONENT, "config": "dbg", "mode": "debug"}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    let archives = archives(&t, job["id"].as_str().unwrap()).await;
    let mut per_row: Vec<(String, String)> = archives
        .iter()
        .map(|(name, tags, _)| {
            (
                tags.iter()
                    .find(|t| t.starts_with("rowId:"))
                    .unwrap()
                    .clone(),
                name.clone(),
            )
        })
        .collect();
    per_row.sort();
    assert_eq!(
        per_row,
        [
            ("rowId:r1".to_string(), "stage_0.zip".to_string()),
            ("rowId:r1".to_string(), "stage_output.zip".to_string()),
            ("rowId:r2".to_string(), "stage_0.zip".to_string()),
            ("rowId:r2".to_string(), "stage_output.zip".to_string()),
        ]
    );
}

#[tokio::test]
async fn jobq_run_debug_and_jobq_debug_unpack_the_stages_into_a_folder() {
    let t = TestDaemon::start(Options::default()).await;
    let out = tempfile::tempdir().unwrap();
    let folder = |name: &str| out.path().join(name).display().to_string();
    let config = configuration(0).to_string();
    let stages = ["stage_0", "stage_1", "stage_2", "stage_3", "stage_output"];
    let listed = |name: &str| -> String {
        let folder = folder(name);
        stages.iter().map(|s| format!("{folder}/{s}\n")).collect()
    };
    let stdout = succeeds(&mut t.jobq([
        "run",
        "--debug",
        "--component",
        COMPONENT,
        "--config-data",
        &config,
        "--out",
        &folder("run"),
    ]));
    let (unpacked, job) = stdout.split_at(stdout.find('{').unwrap());
    assert_eq!(unpacked, listed("run"));
    let job: Value = serde_json::from_str(job).unwrap();
    assert_eq!(job["status"], "success");
    assert_eq!(job["mode"], "debug");
    for stage in stages {
        assert!(
            out.path()
                .join("run")
                .join(stage)
                .join("config.json")
                .is_file(),
            "{stage}"
        );
    }
    let main: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("run/stage_2/config.json")).unwrap())
            .unwrap();
    assert_eq!(main["parameters"]["#password"], "[hidden]");
    assert!(out
        .path()
        .join("run/stage_output/out/files/echo.json")
        .is_file());
    assert!(
        out.path().join("run/stage_0/out/tables").is_dir(),
        "empty folders come back"
    );

    let stdout = succeeds(&mut t.jobq([
        "debug",
        job["id"].as_str().unwrap(),
        "--out",
        &folder("again"),
    ]));
    assert_eq!(stdout, listed("again"));
    assert_eq!(
        std::fs::read(out.path().join("again/stage_1/in/tables/from-first.csv")).unwrap(),
        b"a\n1\n"
    );
    assert_eq!(
        fails(&mut t.jobq(["debug", "999", "--out", &folder("none")])),
        "jobq: job 999 has no debug archives: run it with mode \"debug\" (jobq run --debug)\n"
    );
}

#[tokio::test]
async fn the_component_state_is_stored_even_with_processors_after_it() {
    let t = TestDaemon::start(Options::default()).await;
    let path = format!("/v2/storage/components/{COMPONENT}/configs");
    let mut configuration = configuration(0);
    configuration["parameters"]["state"] = json!({"cursor": 42, "#token": SECRET});
    let created = t
        .post(
            &path,
            &json!({"configurationId": "p", "name": "p", "configuration": configuration}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    let job = t.run(json!({"component": COMPONENT, "config": "p"})).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let stored = t.get(&format!("{path}/p")).await.json();
    let state = &stored["state"]["component"];
    assert_eq!(state["cursor"], 42, "{stored:#}");
    assert!(
        state["#token"]
            .as_str()
            .unwrap()
            .starts_with("KBC::ProjectSecure::"),
        "{state}"
    );
}

#[tokio::test]
async fn a_processor_runs_its_own_image_tag_not_the_jobs() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .run(json!({"component": COMPONENT, "configData": {
            "parameters": {"print": ["main"]},
            "processors": {"before": [{"definition": {"component": PROCESSOR_TAGGED},
                                       "parameters": {"print": ["tagged"]}}]},
        }}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(
        job["result"]["images"][0][0]["id"],
        format!("{PROCESSOR_IMAGE}:{PROCESSOR_TAG}"),
        "{job:#}"
    );
    assert_eq!(job["tag"], "1.0.0");
}
