//! Job creation under concurrency: creations that arrive together commit together, each durably
//! before its 201. The real `jobq` binary is SIGKILLed as soon as the last 201 arrives; the next
//! daemon on the same data dir must have every job answered.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::binary::Served;
use common::{COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG, TOKEN};
use hyper::Method;
use serde_json::{json, Value};

const CREATIONS: usize = 200;
const TASKS: usize = 16;
/// Every this many creations one is a job tree: a container job and one child per row.
const TREE_EVERY: usize = 10;

/// `jobq serve` on `settings` (its log in `log`), once it listens.
fn serve(settings: &Path, log: &Path) -> Served {
    Served::start(settings, log, &[]).unwrap_or_else(|ended| panic!("{ended}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_get_distinct_increasing_ids_and_survive_a_kill() {
    let dir = tempfile::Builder::new()
        .prefix("jobq-enqueue-")
        .tempdir()
        .unwrap();
    let settings = dir.path().join("jobq.toml");
    std::fs::write(
        &settings,
        format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
[project]
id = "123"
name = "Test project"
default_branch_id = "456"
[[tokens]]
id = "7"
description = "test token"
token = "{TOKEN}"
[[components]]
id = "{COMPONENT}"
image = "{FIXTURE_IMAGE}"
tag = "{FIXTURE_TAG}"
network = "none"
"#,
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let mut daemon = serve(&settings, &dir.path().join("first.log"));
    let client = daemon.client.clone();

    // A stored configuration with two rows: with parallelism, a tree of three jobs.
    let configs = format!("/v2/storage/components/{COMPONENT}/configs");
    let send = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let answer = client
                .send(Method::POST, &path, &[], Bytes::from(body.to_string()))
                .await
                .unwrap();
            assert!(answer.status < 300, "{path}: {}", answer.json());
        }
    };
    send(
        configs.clone(),
        json!({"configurationId": "tree", "name": "tree", "configuration": {}}),
    )
    .await;
    for row in ["r1", "r2"] {
        send(
            format!("{configs}/tree/rows"),
            json!({"rowId": row, "name": row, "configuration": {}}),
        )
        .await;
    }

    // Jobs delayed by an hour stay `created`: no container runs.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= CREATIONS {
                    return made;
                }
                let tree = n % TREE_EVERY == 0;
                let body = if tree {
                    json!({"component": COMPONENT, "config": "tree", "parallelism": "2", "delay": 3600})
                } else {
                    json!({"component": COMPONENT, "configData": {"parameters": {"n": n}}, "delay": 3600})
                };
                let answer = client.post_json("/jobs", &body).await.unwrap();
                assert_eq!(answer.status, 201, "creation {n}: {}", answer.json());
                let id: u64 = answer.json()["id"].as_str().unwrap().parse().unwrap();
                made.push((id, tree));
            }
        }));
    }
    let mut made = Vec::new();
    for task in tasks {
        let ids = task.await.unwrap();
        // One task's creations follow each other: each commits after the one before.
        assert!(
            ids.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "ids of one task do not increase: {ids:?}"
        );
        made.extend(ids);
    }
    assert_eq!(made.len(), CREATIONS);
    let distinct: BTreeSet<u64> = made.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), CREATIONS, "an id was answered twice");

    // Every 201 meant "on disk": a SIGKILL right after the last one loses nothing.
    daemon.kill_after(Duration::ZERO);
    let mut daemon = serve(&settings, &dir.path().join("second.log"));
    let client = daemon.client.clone();
    for (id, tree) in &made {
        let answer = client.get(&format!("/jobs/{id}")).await.unwrap();
        assert_eq!(answer.status, 200, "job {id} is gone: {}", answer.json());
        assert_eq!(answer.json()["status"], "created");
        if *tree {
            // The tree was stored whole, in one transaction: its children follow it.
            let children = client
                .get(&format!("/search/jobs?parentRunId={id}&sortOrder=asc"))
                .await
                .unwrap()
                .json();
            let children: Vec<u64> = children
                .as_array()
                .unwrap()
                .iter()
                .map(|child| child["id"].as_str().unwrap().parse().unwrap())
                .collect();
            assert_eq!(children, [id + 1, id + 2], "children of job {id}");
        }
    }
    daemon.kill_after(Duration::ZERO);
}
