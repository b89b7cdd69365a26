//! Events of a job tree: a job's events by its run id, and a parent's events with its
//! descendants' (`tree=1`), merged newest first.

mod common;

use common::{Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

/// The events `query` lists (newest first), asserting 200.
async fn listed(t: &TestDaemon, query: &str) -> Vec<Value> {
    let answer = t.get(&format!("/v2/storage/events?{query}")).await;
    assert_eq!(answer.status, 200, "{query}: {}", answer.json());
    answer
        .json()
        .as_array()
        .cloned()
        .expect("an array of events")
}

fn ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Starts a parent job and two children (`X-KBC-RunId`), waits for all three to finish and
/// returns their run ids, parent first.
async fn family(t: &TestDaemon) -> [String; 3] {
    let parent = t.create(COMPONENT, json!({})).await;
    let parent_run = parent["runId"].as_str().unwrap().to_string();
    let mut runs = vec![parent_run.clone()];
    for _ in 0..2 {
        let child = t
            .client
            .post_with(
                "/jobs",
                &[("X-KBC-RunId", parent_run.as_str())],
                &json!({"component": COMPONENT, "configData": {"parameters": {}}}),
            )
            .await
            .unwrap();
        assert_eq!(child.status, 201, "{}", child.json());
        runs.push(child.json()["runId"].as_str().unwrap().to_string());
    }
    for run in &runs {
        let id = run.rsplit('.').next().unwrap();
        t.wait_finished(id).await;
    }
    runs.try_into().unwrap()
}

#[tokio::test]
async fn a_childs_events_are_found_by_its_run_id() {
    let t = TestDaemon::start(Options::default()).await;
    let [_, child_run, _] = family(&t).await;
    let child_id = child_run.rsplit('.').next().unwrap();
    let by_run = listed(&t, &format!("runId={child_run}")).await;
    assert!(!by_run.is_empty());
    assert!(by_run.iter().all(|e| e["runId"] == child_run.as_str()));
    // The run id and the job id name the same job.
    assert_eq!(by_run, listed(&t, &format!("runId={child_id}")).await);
    let unknown = t.get("/v2/storage/events?runId=424242.1").await;
    assert_eq!(unknown.status, 404, "{}", unknown.json());
}

#[tokio::test]
async fn a_parents_tree_lists_its_childrens_events_too() {
    let t = TestDaemon::start(Options::default()).await;
    let runs = family(&t).await;
    let mut own = Vec::new();
    for run in &runs {
        own.extend(listed(&t, &format!("runId={run}&limit=1000")).await);
    }
    own.sort_by_key(|e| std::cmp::Reverse(e["id"].as_str().unwrap().parse::<u64>().unwrap()));

    let tree = listed(&t, &format!("runId={}&tree=1&limit=1000", runs[0])).await;
    assert_eq!(tree, own, "the three jobs' events, newest first");
    assert!(tree.len() >= 5, "enough events to page through: {tree:#?}");
    let seen: Vec<&str> = runs.iter().map(String::as_str).collect();
    for run in seen {
        assert!(tree.iter().any(|e| e["runId"] == run), "{run} has events");
    }

    // Without the tree, only the parent's own.
    let parent = listed(&t, &format!("runId={}&limit=1000", runs[0])).await;
    assert!(parent.len() < tree.len());
    assert!(parent.iter().all(|e| e["runId"] == runs[0].as_str()));

    // Paging and sinceId apply to the merged list.
    let page = listed(&t, &format!("runId={}&tree=true&offset=2&limit=3", runs[0])).await;
    assert_eq!(ids(&page), ids(&tree[2..5]));
    let since = ids(&tree)[4];
    let newer = listed(&t, &format!("runId={}&tree=1&sinceId={since}", runs[0])).await;
    assert_eq!(ids(&newer), ids(&tree[..4]));
}
