//! The HTTP API as a client sees it: tokens, errors, listing filters, children, restarts.

mod common;

use bytes::Bytes;
use common::{assert_error, id, Options, TestDaemon, COMPONENT, SMALL_COMPONENT, TOKEN};
use hyper::Method;
use jobq::cli::client::Answer;
use serde_json::{json, Value};

/// The groups of a grouped listing: each group's key and its jobs' ids.
fn groups_of(answer: &Value) -> Vec<(Value, Vec<String>)> {
    let groups = answer.as_array().expect("an array of groups");
    groups
        .iter()
        .map(|g| (g["group"].clone(), ids(&g["jobs"])))
        .collect()
}

fn ids(answer: &Value) -> Vec<String> {
    answer
        .as_array()
        .expect("an array of jobs")
        .iter()
        .map(id)
        .collect()
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_the_error_body() {
    let t = TestDaemon::start(Options::without_docker()).await;
    for (client, message) in t.clients_without_a_valid_token() {
        for path in ["/jobs/1", "/search/jobs", "/v2/storage/tokens/verify"] {
            let answer = client.get(path).await.unwrap();
            assert_error(&answer, 401, message, json!({}));
        }
        let answer = client
            .post_json("/jobs", &json!({"component": COMPONENT}))
            .await
            .unwrap();
        assert_error(&answer, 401, message, json!({}));
        // A path no route has is 404 (and a wrong method 405) before the token is looked at,
        // so a probe needs no secret.
        let answer = client.get("/nowhere").await.unwrap();
        assert_error(&answer, 404, "Route GET /nowhere not found.", json!({}));
        let answer = client
            .send(Method::DELETE, "/jobs/1", &[], Bytes::new())
            .await
            .unwrap();
        assert_error(
            &answer,
            405,
            "Method DELETE is not allowed on /jobs/1.",
            json!({}),
        );
    }
    assert_eq!(
        t.get("/search/jobs").await.json(),
        json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn verify_token_answers_id_description_and_owner() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let answer = t.get("/v2/storage/tokens/verify").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"id": "7", "description": "test token", "owner": {"id": "123", "name": "Test project"}})
    );
    assert!(
        !answer
            .body
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes()),
        "the secret is never answered"
    );
}

#[tokio::test]
async fn bad_create_requests_are_400_naming_the_field() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let cases = [
        (
            json!({"configData": {}}),
            "Field \"component\" is required.",
        ),
        (
            json!({"component": "keboola.unknown"}),
            "Component \"keboola.unknown\" is not registered in jobq's settings.",
        ),
        (
            json!({"component": COMPONENT, "mode": "fast"}),
            "Field \"mode\" must be one of run, forceRun, debug; \"fast\" given.",
        ),
        (
            json!({"component": COMPONENT, "configData": "text"}),
            "Field \"configData\" is not valid JSON: expected ident at line 1 column 2.",
        ),
        (
            json!({"component": COMPONENT, "configRowIds": "1"}),
            "Field \"configRowIds\" must be an array of strings, \"1\" given.",
        ),
        (
            json!({"component": 5}),
            "Field \"component\" must be a string, 5 given.",
        ),
        (
            json!({"component": COMPONENT, "variableValuesId": "1", "variableValuesData": {"values": []}}),
            "Provide either \"variableValuesId\" or \"variableValuesData\", but not both.",
        ),
        (json!([1, 2]), "The request body must be a JSON object."),
    ];
    for (body, message) in cases {
        assert_error(&t.post("/jobs", &body).await, 400, message, json!({}));
    }
    let malformed = t
        .send(
            Method::POST,
            "/jobs",
            "application/json",
            "{\"component\": ",
        )
        .await;
    assert_error(
        &malformed,
        400,
        "The request body is not valid JSON: EOF while parsing a value at line 1 column 14; send \
         JSON, or a form with Content-Type application/x-www-form-urlencoded.",
        json!({}),
    );
    assert_eq!(
        t.get("/search/jobs").await.json(),
        json!([]),
        "no job was created"
    );
}

#[tokio::test]
async fn empty_objects_may_come_as_empty_arrays() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .submit(
            json!({"component": COMPONENT, "configData": [], "backend": [], "mode": "forceRun"}),
        )
        .await;
    assert_eq!(job["configData"], json!({}));
    assert_eq!(job["mode"], "forceRun");
    assert_eq!(
        t.wait_finished(job["id"].as_str().unwrap()).await["status"],
        "success"
    );
}

/// Sends a request head (and, in the background, `body` chunks) over raw TCP and reads the
/// answer: a server refusing a large body answers before the client has sent it all, which
/// general-purpose clients report as a broken pipe instead of the answer.
async fn raw_exchange(addr: std::net::SocketAddr, head: String, chunks: usize) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
        for _ in 0..chunks {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer).await;
    sender.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").unwrap();
        headers.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    Answer {
        status: status.parse().unwrap(),
        headers,
        body: Bytes::from(body.to_string()),
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let head = |framing: &str| {
        format!(
            "POST /jobs HTTP/1.1\r\nHost: jobq\r\nX-StorageApi-Token: {TOKEN}\r\nContent-Type: application/json\r\nConnection: close\r\n{framing}\r\n\r\n"
        )
    };
    // Declared too large: refused before any body byte is read.
    let too_large = "The request body is larger than the limit of 10485760 bytes.";
    let answer = raw_exchange(t.addr, head("Content-Length: 11534336"), 0).await;
    assert_error(&answer, 413, too_large, json!({}));
    // Streamed without a length: refused once the limit (10 MiB) is passed.
    let answer = raw_exchange(t.addr, head("Transfer-Encoding: chunked"), 12).await;
    assert_error(&answer, 413, too_large, json!({}));
    assert_eq!(t.get("/search/jobs").await.json(), json!([]));
}

#[tokio::test]
async fn unknown_job_route_and_method_have_error_bodies() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let not_found = "Job \"999\" not found.";
    assert_error(&t.get("/jobs/999").await, 404, not_found, json!({}));
    assert_error(
        &t.get("/jobs/not-a-number").await,
        404,
        "Job \"not-a-number\" not found.",
        json!({}),
    );
    assert_error(
        &t.get("/nowhere").await,
        404,
        "Route GET /nowhere not found.",
        json!({}),
    );
    assert_error(
        &t.delete("/jobs/1").await,
        405,
        "Method DELETE is not allowed on /jobs/1.",
        json!({}),
    );
    let answer = t.kill("999").await;
    assert_error(&answer, 404, not_found, json!({}));
}

#[tokio::test]
async fn run_id_header_makes_child_jobs_at_any_depth() {
    let t = TestDaemon::start(Options::default()).await;
    let parent = t.create(COMPONENT, json!({})).await;
    let parent_id = parent["id"].as_str().unwrap();
    let child = t
        .client
        .post_with(
            "/jobs",
            &[("X-KBC-RunId", parent_id)],
            &json!({"component": COMPONENT}),
        )
        .await
        .unwrap();
    assert_eq!(child.status, 201);
    let child = child.json();
    let child_id = child["id"].as_str().unwrap();
    assert_eq!(child["runId"], format!("{parent_id}.{child_id}"));
    assert_eq!(child["parentRunId"], parent_id);

    let grandchild = t
        .client
        .post_with(
            "/jobs",
            &[("X-KBC-RunId", child["runId"].as_str().unwrap())],
            &json!({"component": COMPONENT}),
        )
        .await
        .unwrap()
        .json();
    let grandchild_id = grandchild["id"].as_str().unwrap();
    assert_eq!(
        grandchild["runId"],
        format!("{parent_id}.{child_id}.{grandchild_id}")
    );
    assert_eq!(grandchild["parentRunId"], format!("{parent_id}.{child_id}"));

    let roots = t.get("/search/jobs?parentRunId=").await.json();
    assert_eq!(ids(&roots), [parent_id]);
    let children = t
        .get(&format!("/search/jobs?parentRunId={parent_id}"))
        .await
        .json();
    assert_eq!(ids(&children), [child_id]);

    let orphan = t
        .client
        .post_with(
            "/jobs",
            &[("X-KBC-RunId", "424242")],
            &json!({"component": COMPONENT}),
        )
        .await
        .unwrap();
    assert_error(
        &orphan,
        400,
        "Parent run \"424242\" of the X-KBC-RunId header does not exist.",
        json!({}),
    );
    // Let the jobs end, so that no container outlives the test's daemon.
    for id in [parent_id, child_id, grandchild_id] {
        t.wait_finished(id).await;
    }
}

async fn check(t: &TestDaemon, path: &str, expected: &[&str]) {
    let answer = t.get(path).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.json());
    assert_eq!(ids(&answer.json()), expected, "{path}");
}

#[tokio::test]
async fn search_filters_sorts_and_pages() {
    let t = TestDaemon::start(Options::default()).await;
    let mut created = Vec::new();
    for (component, config, exit) in [
        (COMPONENT, "a", 0),
        (COMPONENT, "b", 1),
        (SMALL_COMPONENT, "a", 0),
        (COMPONENT, "a", 1),
        (SMALL_COMPONENT, "b", 0),
    ] {
        let job = t
            .submit(json!({"component": component, "config": config, "configData": {"parameters": {"exit_code": exit}}}))
            .await;
        created.push(id(&job));
    }
    for id in &created {
        t.wait_finished(id).await;
    }
    let [j1, j2, j3, j4, j5] = [0, 1, 2, 3, 4].map(|i| created[i].as_str());

    check(&t, "/search/jobs", &[j5, j4, j3, j2, j1]).await;
    check(&t, "/jobs", &[j5, j4, j3, j2, j1]).await;
    check(&t, "/search/jobs?sortOrder=asc", &[j1, j2, j3, j4, j5]).await;
    check(&t, "/search/jobs?status=error", &[j4, j2]).await;
    check(
        &t,
        "/search/jobs?status[]=error&status[]=success&limit=2",
        &[j5, j4],
    )
    .await;
    check(
        &t,
        "/search/jobs?status[0]=error&status[1]=success&limit=2&offset=2",
        &[j3, j2],
    )
    .await;
    check(
        &t,
        "/search/jobs?status=error&status=success&offset=4",
        &[j1],
    )
    .await;
    check(
        &t,
        "/search/jobs?componentId=keboola.ex-fixture-small",
        &[j5, j3],
    )
    .await;
    check(
        &t,
        "/search/jobs?component=keboola.ex-fixture&configId=a",
        &[j4, j1],
    )
    .await;
    check(&t, "/search/jobs?config=b", &[j5, j2]).await;
    check(&t, "/search/jobs?configId[]=b&status[]=success", &[j5]).await;
    check(&t, "/search/jobs?runId=3", &[j3]).await;
    check(&t, "/search/jobs?id[]=2&id[]=4&sortOrder=asc", &[j2, j4]).await;
    check(
        &t,
        "/search/jobs?sortBy=componentId&sortOrder=asc&limit=3",
        &[j1, j2, j4],
    )
    .await;
    check(
        &t,
        "/search/jobs?createdTimeFrom=-1%20day",
        &[j5, j4, j3, j2, j1],
    )
    .await;
    check(&t, "/search/jobs?createdTimeTo=-1%20day", &[]).await;

    for (bad, message) in [
        (
            "/search/jobs?limit=501",
            "Parameter \"limit\" must be between 1 and 500, 501 given.",
        ),
        (
            "/search/jobs?sortBy=colour",
            "Parameter \"sortBy\" must be one of id, runId, componentId, configId, status, \
             createdTime, startTime, endTime, durationSeconds, \"colour\" given.",
        ),
        (
            "/search/jobs?status=finished",
            "Parameter \"status\" has an invalid value \"finished\".",
        ),
    ] {
        assert_error(&t.get(bad).await, 400, message, json!({}));
    }
    let answer = t.get("/search/jobs?limit=500").await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn restart_keeps_every_job_with_the_same_fields() {
    let mut t = TestDaemon::start(Options::default()).await;
    let finished = t
        .create(COMPONENT, json!({"print": ["before restart"]}))
        .await;
    let finished_id = finished["id"].as_str().unwrap().to_string();
    t.wait_finished(&finished_id).await;
    let failed = t
        .create(COMPONENT, json!({"exit_code": 1, "stderr": ["bad input"]}))
        .await;
    let failed_id = failed["id"].as_str().unwrap().to_string();
    t.wait_finished(&failed_id).await;
    let before = t.get("/search/jobs").await.json();
    let events_before = t.events(&finished_id).await;

    t.restart();
    let after = t.get("/search/jobs").await.json();
    // Only the url's port changes with the new listener.
    let without_url = |jobs: &Value| -> Vec<Value> {
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|job| {
                let mut job = job.clone();
                job.as_object_mut().unwrap().remove("url");
                job
            })
            .collect()
    };
    assert_eq!(without_url(&after), without_url(&before));
    assert_eq!(after.as_array().unwrap().len(), 2);
    assert_eq!(t.events(&finished_id).await, events_before);

    // New ids continue the sequence.
    let next = t.create(COMPONENT, json!({})).await;
    let next_id: u64 = next["id"].as_str().unwrap().parse().unwrap();
    assert!(next_id > failed_id.parse().unwrap());
    assert_eq!(
        t.wait_finished(&next_id.to_string()).await["status"],
        "success"
    );
}

#[tokio::test]
async fn restart_requeues_created_jobs_and_runs_them() {
    let mut t = TestDaemon::start(Options {
        max_concurrent_jobs: 1,
        ..Options::default()
    })
    .await;
    let running = t.create(COMPONENT, json!({"sleep": 2})).await;
    let queued = t.create(COMPONENT, json!({})).await;
    let queued_id = queued["id"].as_str().unwrap().to_string();
    t.wait_status(running["id"].as_str().unwrap(), "processing")
        .await;
    assert_eq!(t.job(&queued_id).await["status"], "created");
    t.restart();
    assert_eq!(t.wait_finished(&queued_id).await["status"], "success");
}

#[tokio::test]
async fn grouped_jobs_and_project_stats() {
    let t = TestDaemon::start(Options::default()).await;
    let mut created = Vec::new();
    for (component, config) in [
        (COMPONENT, "a"),
        (COMPONENT, "b"),
        (COMPONENT, "a"),
        (SMALL_COMPONENT, "a"),
    ] {
        let job = t
            .submit(json!({"component": component, "config": config, "configData": {"parameters": {"sleep": 1}}}))
            .await;
        created.push(id(&job));
    }
    let mut duration_sum = 0;
    for id in &created {
        duration_sum += t.wait_finished(id).await["durationSeconds"]
            .as_i64()
            .unwrap();
    }

    let grouped = t
        .get("/search/grouped-jobs?groupBy[]=componentId&groupBy[]=configId&jobsPerGroup=1")
        .await;
    assert_eq!(grouped.status, 200, "{}", grouped.json());
    let groups = groups_of(&grouped.json());
    assert_eq!(
        groups,
        [
            (
                json!({"componentId": COMPONENT, "configId": "a"}),
                vec![created[0].clone()]
            ),
            (
                json!({"componentId": COMPONENT, "configId": "b"}),
                vec![created[1].clone()]
            ),
            (
                json!({"componentId": SMALL_COMPONENT, "configId": "a"}),
                vec![created[3].clone()]
            ),
        ]
    );
    let by_component = t
        .get("/search/grouped-jobs?groupBy=componentId&sortOrder=desc&limit=1")
        .await
        .json();
    assert_eq!(by_component.as_array().unwrap().len(), 1);
    assert_eq!(
        by_component[0]["group"],
        json!({"componentId": SMALL_COMPONENT})
    );
    // By config over the components, newest first: groups by their newest job.
    let by_config = t
        .get("/search/grouped-jobs?groupBy=configId&status=success&sortOrder=desc&jobsPerGroup=2")
        .await
        .json();
    let groups = groups_of(&by_config);
    assert_eq!(
        groups,
        [
            (
                json!({"configId": "a"}),
                vec![created[3].clone(), created[2].clone()]
            ),
            (json!({"configId": "b"}), vec![created[1].clone()]),
        ]
    );
    // Grouped by projectId too (every matching job read and grouped): the same grouping.
    let with_project = t
        .get("/search/grouped-jobs?groupBy=configId&groupBy=projectId&status=success&sortOrder=desc&jobsPerGroup=2")
        .await
        .json();
    let jobs = |groups: Vec<(Value, Vec<String>)>| -> Vec<Vec<String>> {
        groups.into_iter().map(|(_, jobs)| jobs).collect()
    };
    assert_eq!(jobs(groups_of(&with_project)), jobs(groups));
    assert_eq!(with_project[0]["group"]["projectId"], json!("123"));
    let group_by = "Parameter \"groupBy\" must list one or more of projectId, branchId, \
                    componentId, configId.";
    for (bad, message) in [
        ("/search/grouped-jobs", group_by),
        ("/search/grouped-jobs?groupBy=color", group_by),
        (
            "/search/grouped-jobs?groupBy=configId&jobsPerGroup=0",
            "Parameter \"jobsPerGroup\" must be at least 1.",
        ),
    ] {
        assert_error(&t.get(bad).await, 400, message, json!({}));
    }

    let stats = t.get("/stats/project").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json(), json!({"jobs": {"durationSum": duration_sum}}));
}
