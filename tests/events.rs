//! Events of a job tree: a job's events by its run id, and a parent's events with its
//! descendants' (`tree=1`), merged newest first.

mod common;

use common::{assert_error, Options, TestDaemon, COMPONENT};
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
    assert_error(&unknown, 404, "Job \"424242.1\" not found.", json!({}));
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

/// One message of a server-sent event stream: its `event` type (`None`: a job event), `id`
/// and `data`.
#[derive(Debug)]
struct Sse {
    event: Option<String>,
    id: Option<u64>,
    data: Value,
}

/// Reads `stream` (the events of job `id`) to its end; with each job event as it arrives,
/// the job's status at that moment.
async fn read_stream(
    t: &TestDaemon,
    id: &str,
    mut stream: jobq::cli::client::Streaming,
) -> Vec<(Sse, String)> {
    let mut text = String::new();
    let mut messages = Vec::new();
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(60), stream.chunk())
        .await
        .expect("the stream goes on or ends within 60 s")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.starts_with(':') {
                continue; // a keep-alive comment
            }
            let mut sse = Sse {
                event: None,
                id: None,
                data: Value::Null,
            };
            for line in block.lines().filter(|line| !line.is_empty()) {
                match line.split_once(": ") {
                    Some(("event", event)) => sse.event = Some(event.to_string()),
                    Some(("id", value)) => sse.id = Some(value.parse().unwrap()),
                    Some(("data", data)) => sse.data = serde_json::from_str(data).unwrap(),
                    _ => panic!("an unexpected line {line:?} in {block:?}"),
                }
            }
            let status = t.job(id).await["status"].as_str().unwrap().to_string();
            messages.push((sse, status));
        }
    }
    assert!(
        text.is_empty(),
        "the stream ends after a whole message: {text:?}"
    );
    messages
}

#[tokio::test]
async fn the_event_stream_is_live_ends_with_the_job_and_resumes_after_last_event_id() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .create(
            COMPONENT,
            json!({"print": ["before the pause"], "sleep": 2, "print_after_sleep": ["after the pause"]}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/jobs/{id}/events/stream");
    let stream = t.client.get_streaming(&path).await.unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let messages = read_stream(&t, &id, stream).await;

    // Every stored event once, oldest first, then `end` with the final status.
    let (last, rest) = messages.split_last().unwrap();
    assert_eq!(last.0.event.as_deref(), Some("end"));
    assert_eq!(last.0.data, json!({"id": id, "status": "success"}));
    let mut stored = ids(&listed(&t, &format!("runId={id}&limit=1000")).await);
    stored.reverse();
    let streamed: Vec<u64> = rest.iter().map(|(sse, _)| sse.id.unwrap()).collect();
    assert_eq!(streamed, stored);
    for (sse, _) in rest {
        assert_eq!(sse.event, None);
        assert_eq!(sse.data["id"], sse.id.unwrap().to_string());
        assert_eq!(sse.data["runId"], job["runId"]);
    }
    // Live: the line printed before the pause arrived while the job was still running.
    let before = rest
        .iter()
        .find(|(sse, _)| sse.data["message"] == "before the pause")
        .expect("the first line streamed");
    assert_eq!(before.1, "processing", "{messages:?}");
    assert!(rest
        .iter()
        .any(|(sse, _)| sse.data["message"] == "after the pause"));

    // Resuming after an event sends only the later ones (the job has ended: then `end`).
    let resume_after = before.0.id.unwrap().to_string();
    let stream = t
        .client
        .send_streaming(
            hyper::Method::GET,
            &path,
            &[("Last-Event-ID", resume_after.as_str())],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    let resumed: Vec<Option<u64>> = read_stream(&t, &id, stream)
        .await
        .iter()
        .map(|(sse, _)| sse.id)
        .collect();
    let later: Vec<Option<u64>> = streamed
        .iter()
        .filter(|&&event| event > before.0.id.unwrap())
        .map(|&event| Some(event))
        .chain([None])
        .collect();
    assert_eq!(resumed, later);

    // An unknown job, a bad Last-Event-ID, no token.
    assert_error(
        &t.get("/jobs/999999/events/stream").await,
        404,
        "Job \"999999\" not found.",
        json!({}),
    );
    let bad = t
        .client
        .send(
            hyper::Method::GET,
            &path,
            &[("Last-Event-ID", "x")],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_error(
        &bad,
        400,
        "Header \"Last-Event-ID\" must be the id of an event, not \"x\".",
        json!({}),
    );
    let [(anonymous, message), _] = t.clients_without_a_valid_token();
    assert_error(
        &anonymous.get(&path).await.unwrap(),
        401,
        message,
        json!({}),
    );
}

#[tokio::test]
async fn the_tree_event_stream_has_the_childrens_events() {
    let t = TestDaemon::start(Options::default()).await;
    let [parent_run, child_a, child_b] = family(&t).await;
    let stream = t
        .client
        .get_streaming(&format!("/jobs/{parent_run}/events/stream?tree=1"))
        .await
        .unwrap();
    let messages = read_stream(&t, &parent_run, stream).await;
    let runs: std::collections::BTreeSet<&str> = messages
        .iter()
        .filter_map(|(sse, _)| sse.data["runId"].as_str())
        .collect();
    assert_eq!(
        runs,
        [parent_run.as_str(), child_a.as_str(), child_b.as_str()].into()
    );
    let streamed: Vec<u64> = messages.iter().filter_map(|(sse, _)| sse.id).collect();
    let mut stored = ids(&listed(&t, &format!("runId={parent_run}&tree=1&limit=1000")).await);
    stored.reverse();
    assert_eq!(streamed, stored);
}
