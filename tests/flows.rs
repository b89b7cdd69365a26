//! Flows (`keboola.orchestrator`) with real containers: the job tree of an orchestration, phases
//! waiting for the phases they depend on, failures, `continueOnFailure`, kills, overrides and
//! invalid configurations.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::receivers::Receiver;
use common::{assert_error, id, Options, TestDaemon, COMPONENT, FIXTURE_TAG};
use hyper::Method;
use serde_json::{json, Value};

const ORCHESTRATOR: &str = "keboola.orchestrator";

/// Stores configuration `id` of `component` with `configuration` and `rows`.
async fn configure(t: &TestDaemon, component: &str, id: &str, configuration: Value, rows: &[&str]) {
    let base = format!("/v2/storage/components/{component}/configs");
    let body = json!({"configurationId": id, "name": id, "configuration": configuration});
    post(t, &base, &body).await;
    for row in rows {
        let body = json!({"rowId": row, "name": row, "configuration": {"parameters": {}}});
        post(t, &format!("{base}/{id}/rows"), &body).await;
    }
}

async fn post(t: &TestDaemon, path: &str, body: &Value) {
    let headers = [("Content-Type", "application/json")];
    let answer = t
        .client
        .send(Method::POST, path, &headers, Bytes::from(body.to_string()))
        .await
        .unwrap();
    assert!(
        answer.status < 300,
        "{path}: {} {}",
        answer.status,
        answer.json()
    );
}

/// A task of the fixture running inline `parameters`.
fn task(id: u64, phase: &str, parameters: Value) -> Value {
    json!({
        "id": id, "name": format!("t{id}"), "phase": phase, "enabled": true,
        "task": {"componentId": COMPONENT, "configData": {"parameters": parameters}, "mode": "run"}
    })
}

/// Phases A; B and C after A; D after B.
fn four_phases() -> Value {
    json!([
        {"id": "A", "name": "Extract"},
        {"id": "B", "name": "Transform", "dependsOn": ["A"]},
        {"id": "C", "name": "Check", "dependsOn": ["A"]},
        {"id": "D", "name": "Load", "dependsOn": ["B"]}
    ])
}

/// Stores orchestration `config` of `four_phases` and `tasks`, runs it to its end; the job.
async fn run_flow(t: &TestDaemon, config: &str, tasks: Value) -> Value {
    let configuration = json!({"phases": four_phases(), "tasks": tasks});
    configure(t, ORCHESTRATOR, config, configuration, &[]).await;
    t.run(json!({"component": ORCHESTRATOR, "config": config}))
        .await
}

/// The children of run `run_id`, lowest id first.
async fn children(t: &TestDaemon, run_id: &str) -> Vec<Value> {
    let answer = t
        .get(&format!("/search/jobs?parentRunId={run_id}&sortOrder=asc"))
        .await;
    assert_eq!(answer.status, 200);
    answer.json().as_array().cloned().unwrap()
}

/// Polls until the children of `run_id` satisfy `done`.
async fn wait_children(
    t: &TestDaemon,
    run_id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = children(t, run_id).await;
        if done(&jobs) {
            return jobs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "children of {run_id}: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn statuses(jobs: &[Value]) -> Vec<&str> {
    jobs.iter().map(|j| j["status"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_its_phases_after_their_dependencies_as_a_job_tree() {
    let t = TestDaemon::start(Options::default()).await;
    let tasks = json!([
        task(11, "A", json!({"sleep": 2})),
        task(12, "A", json!({"sleep": 2})),
        task(21, "B", json!({})),
        task(31, "C", json!({})),
        task(41, "D", json!({})),
        {"id": 42, "name": "off", "phase": "D", "enabled": false, "task": {"componentId": COMPONENT, "configId": ""}}
    ]);
    configure(
        &t,
        ORCHESTRATOR,
        "flow",
        json!({"phases": four_phases(), "tasks": tasks}),
        &[],
    )
    .await;
    let flow = t
        .submit(json!({"component": ORCHESTRATOR, "config": "flow"}))
        .await;
    assert_eq!(flow["type"], "orchestrationContainer");
    assert_eq!(flow["orchestrationJobId"], Value::Null);
    let o = id(&flow);

    // While A's two tasks run at the same time, B, C and D wait.
    let phases = wait_children(&t, &o, |p| {
        p.len() == 4 && statuses(p) == ["processing", "waiting", "waiting", "waiting"]
    })
    .await;
    let a_tasks = wait_children(&t, phases[0]["runId"].as_str().unwrap(), |j| {
        statuses(j) == ["processing", "processing"]
    })
    .await;
    assert_eq!(a_tasks.len(), 2);
    for (phase, (phase_id, deps)) in phases.iter().zip([
        ("A", json!([])),
        ("B", json!(["A"])),
        ("C", json!(["A"])),
        ("D", json!(["B"])),
    ]) {
        let p = id(phase);
        assert_eq!(phase["type"], "phaseContainer");
        assert_eq!(phase["runId"], format!("{o}.{p}"));
        assert_eq!(phase["parentRunId"], o);
        assert_eq!(phase["component"], ORCHESTRATOR);
        assert_eq!(phase["config"], "flow");
        assert_eq!(phase["orchestrationJobId"], o);
        assert_eq!(phase["orchestrationTaskId"], Value::Null);
        assert_eq!(phase["configData"]["phaseId"], phase_id);
        assert_eq!(phase["configData"]["dependsOn"], deps);
        assert_eq!(phase["configData"]["orchestrationJobId"], o);
    }
    let b_waits = t.messages(&id(&phases[1])).await;
    assert_eq!(b_waits, ["Waiting for phase \"A\" to finish successfully."]);
    assert_eq!(
        phases[3]["configData"]["tasks"].as_array().unwrap().len(),
        2
    );

    let flow = t.wait_finished(&o).await;
    assert_eq!(flow["status"], "success", "{flow:#}");
    let phases = children(&t, &o).await;
    assert_eq!(statuses(&phases), ["success"; 4]);
    let mut task_jobs = Vec::new();
    for phase in &phases {
        let p = id(phase);
        for task_job in children(&t, phase["runId"].as_str().unwrap()).await {
            assert_eq!(task_job["type"], "standard");
            assert_eq!(task_job["runId"], format!("{o}.{p}.{}", id(&task_job)));
            assert_eq!(task_job["parentRunId"], format!("{o}.{p}"));
            assert_eq!(task_job["orchestrationJobId"], o);
            assert_eq!(
                task_job["orchestrationPhaseId"],
                phase["configData"]["phaseId"]
            );
            assert_eq!(task_job["component"], COMPONENT);
            assert_eq!(task_job["status"], "success");
            assert_eq!(task_job["token"], flow["token"]);
            task_jobs.push(task_job);
        }
    }
    let task_ids: Vec<&str> = task_jobs
        .iter()
        .map(|j| j["orchestrationTaskId"].as_str().unwrap())
        .collect();
    assert_eq!(
        task_ids,
        ["11", "12", "21", "31", "41"],
        "the disabled task made no job"
    );

    let result = &flow["result"];
    assert_eq!(result["message"], "All phases finished successfully.");
    let result_phases: Vec<(&str, &str, &str)> = result["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        result_phases,
        [
            ("A", "Extract", "success"),
            ("B", "Transform", "success"),
            ("C", "Check", "success"),
            ("D", "Load", "success")
        ]
    );
    assert_eq!(result["phases"][0]["jobId"], id(&phases[0]));
    let first = &result["tasks"][0];
    assert_eq!(first["id"], "11");
    assert_eq!(first["name"], "t11");
    assert_eq!(first["phase"], "A");
    assert_eq!(first["jobId"], id(&task_jobs[0]));
    assert_eq!(first["component"], COMPONENT);
    assert_eq!(first["status"], "success");
    assert!(
        first["duration"].is_u64() && first["startTime"].is_string(),
        "{first}"
    );
    assert_eq!(result["tasks"].as_array().unwrap().len(), 5);

    let messages = t.messages(&o).await;
    let (a, b) = (id(&phases[0]), id(&phases[1]));
    assert_eq!(
        messages[0],
        format!("Orchestration started with phases \"Extract\" (job {a}), \"Transform\" (job {b}), \"Check\" (job {}), \"Load\" (job {}).", id(&phases[2]), id(&phases[3]))
    );
    assert_eq!(
        messages[1],
        format!(
            "Phase \"A\" started tasks \"t11\" (job {}), \"t12\" (job {}).",
            id(&task_jobs[0]),
            id(&task_jobs[1])
        )
    );
    assert!(
        messages.contains(&format!(
            "Task \"11\" (job {}) ended success.",
            id(&task_jobs[0])
        )),
        "{messages:#?}"
    );
    assert!(
        messages.contains(&format!("Phase \"A\" (job {a}) ended success.")),
        "{messages:#?}"
    );
    assert_eq!(messages.len(), 1 + 4 + 5 + 4, "{messages:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_stops_the_phases_after_it_unless_it_may_fail_and_reruns_run_only_some_tasks(
) {
    let t = TestDaemon::start(Options::default()).await;
    let mut may_fail = task(21, "B", json!({"exit_code": 1}));
    may_fail["continueOnFailure"] = json!("true");
    let tasks = json!([
        task(11, "A", json!({})),
        may_fail,
        task(31, "C", json!({"exit_code": 1})),
        task(41, "D", json!({}))
    ]);
    let flow = run_flow(&t, "flow", tasks).await;
    let o = id(&flow);
    let phases = children(&t, &o).await;
    // B's failure may happen: B warns and D runs; C fails the flow.
    assert_eq!(
        statuses(&phases),
        ["success", "warning", "error", "success"]
    );
    assert_eq!(flow["status"], "error");
    assert_eq!(
        flow["result"]["message"],
        format!(
            "Phases did not succeed: {} (warning), {} (error).",
            id(&phases[1]),
            id(&phases[2])
        )
    );
    assert_eq!(flow["result"]["error"]["type"], "user");
    let c_task = &children(&t, phases[2]["runId"].as_str().unwrap()).await[0];
    assert_eq!(
        phases[2]["result"]["message"],
        format!("Tasks did not succeed: {} (error).", id(c_task))
    );

    // Without continueOnFailure, A's failure cancels B, C and D.
    let tasks = json!([
        task(11, "A", json!({"exit_code": 1})),
        task(21, "B", json!({})),
        task(31, "C", json!({})),
        task(41, "D", json!({}))
    ]);
    let flow = run_flow(&t, "stops", tasks).await;
    assert_eq!(flow["status"], "error");
    let phases = children(&t, &id(&flow)).await;
    assert_eq!(
        statuses(&phases),
        ["error", "cancelled", "cancelled", "cancelled"]
    );
    for phase in &phases[1..] {
        assert_eq!(
            children(&t, phase["runId"].as_str().unwrap()).await,
            Vec::<Value>::new()
        );
    }
    let messages = t.messages(&id(&phases[3])).await;
    assert_eq!(
        messages.last().unwrap(),
        "Job was cancelled before it started."
    );
    assert!(
        messages.contains(
            &"Phase \"D\" does not run: phase \"B\", which it depends on, ended cancelled."
                .to_string()
        ),
        "{messages:?}"
    );
    let messages = t.messages(&id(&phases[1])).await;
    assert!(
        messages.contains(
            &"Phase \"B\" does not run: phase \"A\", which it depends on, ended error.".to_string()
        ),
        "{messages:?}"
    );

    // The rerun plan pairs each task of the run with its job; a rerun of B and D runs their
    // phases only, B no longer waiting for A.
    let stopped = id(&flow);
    let plan = t.get(&format!("/orchestration-rerun-plan/{stopped}")).await;
    assert_eq!(plan.status, 200);
    let a_task = &children(&t, phases[0]["runId"].as_str().unwrap()).await[0];
    let unmatched = |task: &str| json!({"taskId": task, "matched": false, "jobId": null, "componentId": null, "configId": null, "status": null});
    assert_eq!(
        plan.json(),
        json!({"jobId": stopped, "configId": "stops", "matchedTasks": [
            {"taskId": "11", "matched": true, "jobId": id(a_task), "componentId": COMPONENT, "configId": null, "status": "error"},
            unmatched("21"), unmatched("31"), unmatched("41")
        ]})
    );
    let rerun = t
        .run(json!({"component": ORCHESTRATOR, "config": "stops", "onlyOrchestrationTaskIds": ["21", 41], "previousJobId": stopped}))
        .await;
    assert_eq!(rerun["status"], "success", "{rerun:#}");
    assert_eq!(rerun["previousJobId"], stopped);
    assert_eq!(rerun["onlyOrchestrationTaskIds"], json!(["21", "41"]));
    let phases = children(&t, &id(&rerun)).await;
    let shape: Vec<(Value, Value)> = phases
        .iter()
        .map(|p| {
            (
                p["configData"]["phaseId"].clone(),
                p["configData"]["dependsOn"].clone(),
            )
        })
        .collect();
    assert_eq!(shape, [(json!("B"), json!([])), (json!("D"), json!(["B"]))]);
    let refused = [
        (json!({"component": ORCHESTRATOR, "config": "stops", "onlyOrchestrationTaskIds": ["99"]}), "Field \"onlyOrchestrationTaskIds\" names \"99\", which the orchestration does not have; give ids of its tasks."),
        (json!({"component": ORCHESTRATOR, "config": "stops", "onlyOrchestrationTaskIds": []}), "Field \"onlyOrchestrationTaskIds\" must list at least one task id."),
        (json!({"component": ORCHESTRATOR, "config": "stops", "previousJobId": "999"}), "Job \"999\" of \"previousJobId\" does not exist; give the id of an earlier orchestration job."),
        (json!({"component": COMPONENT, "configData": {}, "onlyOrchestrationTaskIds": ["1"]}), "Fields \"onlyOrchestrationTaskIds\" and \"previousJobId\" rerun tasks of keboola.orchestrator jobs only; leave them out."),
    ];
    for (body, message) in refused {
        assert_error(&t.post("/jobs", &body).await, 400, message, json!({}));
    }
    let plan = t
        .get(&format!("/orchestration-rerun-plan/{}", id(a_task)))
        .await;
    let message = format!("Job \"{}\" is a standard job, not an orchestration; ask for the rerun plan of a keboola.orchestrator job.", id(a_task));
    assert_error(&plan, 400, &message, json!({}));

    // Only continueOnFailure failures: the flow warns.
    let mut may_fail = task(11, "A", json!({"exit_code": 1}));
    may_fail["continueOnFailure"] = json!(true);
    let tasks = json!([may_fail, task(21, "B", json!({}))]);
    let two = json!([{"id": "A"}, {"id": "B", "dependsOn": ["A"]}]);
    configure(
        &t,
        ORCHESTRATOR,
        "warns",
        json!({"phases": two, "tasks": tasks}),
        &[],
    )
    .await;
    let flow = t
        .run(json!({"component": ORCHESTRATOR, "config": "warns"}))
        .await;
    assert_eq!(flow["status"], "warning");
    assert_eq!(flow["result"]["error"], Value::Null);
    assert_eq!(
        statuses(&children(&t, &id(&flow)).await),
        ["warning", "success"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_flow_ends_terminated_and_starts_no_further_phase() {
    let t = TestDaemon::start(Options::default()).await;
    let tasks = json!([
        task(11, "A", json!({"sleep": 60})),
        task(12, "A", json!({"sleep": 60})),
        task(21, "B", json!({})),
        task(31, "C", json!({})),
        task(41, "D", json!({}))
    ]);
    configure(
        &t,
        ORCHESTRATOR,
        "flow",
        json!({"phases": four_phases(), "tasks": tasks}),
        &[],
    )
    .await;
    let o = id(&t
        .submit(json!({"component": ORCHESTRATOR, "config": "flow"}))
        .await);
    let phases = wait_children(&t, &o, |p| p.len() == 4 && p[0]["status"] == "processing").await;
    let a_run = phases[0]["runId"].as_str().unwrap().to_string();
    wait_children(&t, &a_run, |j| statuses(j) == ["processing", "processing"]).await;
    assert_eq!(t.kill(&o).await.status, 202);
    let flow = t.wait_finished(&o).await;
    assert_eq!(flow["status"], "terminated");
    let phases = children(&t, &o).await;
    assert_eq!(
        statuses(&phases),
        ["terminated", "cancelled", "cancelled", "cancelled"]
    );
    assert_eq!(
        statuses(&children(&t, &a_run).await),
        ["terminated", "terminated"]
    );
    for phase in &phases[1..] {
        assert_eq!(
            children(&t, phase["runId"].as_str().unwrap()).await,
            Vec::<Value>::new()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_and_backend_of_the_flow_reach_its_task_jobs_but_not_its_tag() {
    let t = TestDaemon::start(Options::without_docker()).await;
    configure(
        &t,
        COMPONENT,
        "rows",
        json!({"parameters": {}}),
        &["r1", "r2"],
    )
    .await;
    let tasks = json!([
        {"id": "1", "name": "rows", "phase": 1, "task": {"componentId": COMPONENT, "configId": "rows"}},
        {"id": "2", "name": "tagged", "phase": 1, "task": {"componentId": COMPONENT, "configData": {}, "tag": "9.9.9"}}
    ]);
    configure(
        &t,
        ORCHESTRATOR,
        "flow",
        json!({"phases": [{"id": 1}], "tasks": tasks}),
        &[],
    )
    .await;
    let flow = t
        .submit(json!({"component": ORCHESTRATOR, "config": "flow", "parallelism": "2", "backend": {"type": "large"}, "tag": "1.2.3"}))
        .await;
    let o = id(&flow);
    let phase = &wait_children(&t, &o, |p| p.len() == 1 && p[0]["status"] == "processing").await[0];
    let tasks = children(&t, phase["runId"].as_str().unwrap()).await;
    assert_eq!(tasks.len(), 2);
    let (rows, tagged) = (&tasks[0], &tasks[1]);
    assert_eq!(rows["type"], "container");
    assert_eq!(rows["parallelism"], "2");
    assert_eq!(rows["backend"], json!({"type": "large"}));
    assert_eq!(rows["orchestrationTaskId"], "1");
    assert_eq!(rows["tag"], FIXTURE_TAG);
    let row_jobs = children(&t, rows["runId"].as_str().unwrap()).await;
    assert_eq!(row_jobs.len(), 2);
    assert_eq!(row_jobs[0]["orchestrationTaskId"], Value::Null);
    assert_eq!(tagged["type"], "standard");
    assert_eq!(tagged["parallelism"], "2");
    assert_eq!(tagged["backend"], json!({"type": "large"}));
    assert_eq!(tagged["tag"], "9.9.9");

    // A second run of the same orchestration waits for the first (configuration lock).
    let second = t
        .submit(json!({"component": ORCHESTRATOR, "config": "flow"}))
        .await;
    t.wait_status(&id(&second), "waiting").await;
    assert_eq!(children(&t, &id(&second)).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_flows_are_refused_before_any_job_exists() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let ok_task = |phase: Value| json!({"id": 5, "name": "load", "phase": phase, "task": {"componentId": COMPONENT, "configData": {}}});
    configure(
        &t,
        ORCHESTRATOR,
        "inner",
        json!({"phases": [{"id": 1}], "tasks": [ok_task(json!(1))]}),
        &[],
    )
    .await;
    let runs = |config: &str| json!({"id": 7, "name": "nested", "phase": 1, "task": {"componentId": ORCHESTRATOR, "configId": config}});
    configure(
        &t,
        ORCHESTRATOR,
        "middle",
        json!({"phases": [{"id": 1}], "tasks": [runs("inner")]}),
        &[],
    )
    .await;
    configure(
        &t,
        ORCHESTRATOR,
        "outer",
        json!({"phases": [{"id": 1}], "tasks": [runs("middle")]}),
        &[],
    )
    .await;
    let cases = [
        (json!({"phases": [{"id": 1}], "tasks": [ok_task(json!(2))]}), "Task \"5\" belongs to phase \"2\", which does not exist; set its \"phase\" to the id of one of the phases."),
        (json!({"phases": [{"id": 1, "dependsOn": [2]}, {"id": 2, "dependsOn": [1]}], "tasks": []}), "Phases \"1\", \"2\" depend on each other in a cycle; remove one of their \"dependsOn\" entries."),
        (
            json!({"phases": [{"id": 1}], "tasks": [{"id": 5, "name": "load", "phase": 1, "task": {"componentId": "keboola.unknown", "configData": {}}}]}),
            "Task \"load\" (5) cannot run: Component \"keboola.unknown\" is not registered in jobq's settings.",
        ),
        (
            json!({"phases": [{"id": 1}], "tasks": [{"id": 5, "name": "load", "phase": 1, "task": {"componentId": COMPONENT, "configId": "missing"}}]}),
            "Task \"load\" (5) cannot run: Configuration \"missing\" of component \"keboola.ex-fixture\" not found in branch \"456\".",
        ),
    ];
    for (configuration, message) in cases {
        let answer = t
            .post(
                "/jobs",
                &json!({"component": ORCHESTRATOR, "configData": configuration}),
            )
            .await;
        assert_error(&answer, 400, message, json!({}));
    }
    // Two levels run; a third is refused.
    t.submit(json!({"component": ORCHESTRATOR, "config": "middle"}))
        .await;
    let answer = t
        .post(
            "/jobs",
            &json!({"component": ORCHESTRATOR, "config": "outer"}),
        )
        .await;
    assert_error(
        &answer,
        400,
        "Task \"nested\" (7) cannot run: Task \"nested\" (7) cannot run: Orchestrations may run orchestrations 2 levels deep at most; run the inner orchestration on its own.",
        json!({}),
    );
    assert_eq!(
        t.get("/search/jobs?parentRunId=")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

const FLOW: &str = "keboola.flow";

/// A `keboola.flow` job task of the fixture running inline `parameters`.
fn flow_task(id: &str, phase: &str, parameters: Value) -> Value {
    json!({
        "id": id, "name": format!("task {id}"), "phase": phase,
        "task": {"type": "job", "componentId": COMPONENT, "configData": {"parameters": parameters}, "mode": "run"}
    })
}

/// `{"type": "operator", ...}` comparing `left` with the constant `right`.
fn compare(operator: &str, left: Value, right: &str) -> Value {
    json!({"type": "operator", "operator": operator, "operands": [left, {"type": "const", "value": right}]})
}

/// `value` without what changes from run to run: times, durations, task jobs' own results and
/// the configuration copied into the record.
fn stable(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| {
                    ![
                        "startTime",
                        "duration",
                        "started",
                        "ended",
                        "result",
                        "configuration",
                    ]
                    .contains(&key.as_str())
                })
                .map(|(key, value)| (key.clone(), stable(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(stable).collect()),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_flow_notifies_sets_variables_and_follows_its_conditions() {
    let mut t = TestDaemon::start(Options::default()).await;
    // Variables need their component registered to be stored.
    t.restart_with_tables(&format!(
        "[[components]]\nid = \"keboola.variables\"\nimage = \"{}\"\ntag = \"{FIXTURE_TAG}\"\nnetwork = \"none\"",
        common::FIXTURE_IMAGE
    ));
    configure(
        &t,
        "keboola.variables",
        "vars",
        json!({"variables": [{"name": "env", "type": "string"}]}),
        &[],
    )
    .await;
    post(
        &t,
        "/v2/storage/components/keboola.variables/configs/vars/rows",
        &json!({"rowId": "values", "name": "values", "configuration": {"values": [{"name": "env", "value": "dev"}]}}),
    )
    .await;
    configure(
        &t,
        COMPONENT,
        "printer",
        json!({"variables_id": "vars", "variables_values_id": "values", "parameters": {"print": ["env is {{env}}"]}}),
        &[],
    )
    .await;
    let hooks = Receiver::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let url = hooks.url.clone();
    let task_status = |task: &str| json!({"type": "task", "task": task, "value": "status"});
    let configuration = json!({
        "phases": [
            {"id": "A", "name": "Extract", "next": [
                {"id": "a-failed", "name": "A failed", "goto": "C", "condition": compare("NOT_EQUALS", task_status("a1"), "success")},
                {"id": "a-done", "goto": "B"}
            ]},
            {"id": "B", "name": "Transform", "next": [
                {"id": "b-user-error", "goto": "D", "condition": compare("EQUALS", json!({"type": "phase", "phase": "B", "value": "status"}), "user_error")},
                {"id": "b-end", "goto": null}
            ]},
            {"id": "C", "name": "Cleanup", "next": [{"id": "c-end", "goto": null}]},
            {"id": "D", "name": "Report", "next": [{"id": "d-end", "goto": null}]}
        ],
        "tasks": [
            {"id": "a1", "name": "print", "phase": "A", "task": {"type": "job", "componentId": COMPONENT, "configId": "printer", "mode": "run"}},
            flow_task("a2", "A", json!({"sleep": 1})),
            {"id": "n1", "name": "hello", "phase": "A", "task": {"type": "notification", "title": "Flow started", "message": "Extracting",
                "recipients": [{"channel": "webhook", "address": url}, {"channel": "email", "address": "ops@example.com"}]}},
            {"id": "v1", "name": "environment", "phase": "A", "task": {"type": "variable", "name": "env", "value": "prod"}},
            flow_task("b1", "B", json!({"exit_code": 1, "stderr": ["bad input"]})),
            flow_task("c1", "C", json!({})),
            flow_task("d1", "D", json!({}))
        ]
    });
    configure(&t, FLOW, "cond", configuration, &[]).await;
    let flow = t.run(json!({"component": FLOW, "config": "cond"})).await;
    let f = id(&flow);
    assert_eq!(flow["type"], "orchestrationContainer");
    assert_eq!(flow["status"], "warning", "{flow:#}");

    // The task jobs are the flow's direct children; C's task never ran.
    let jobs = children(&t, &f).await;
    let tasks: Vec<&str> = jobs
        .iter()
        .map(|j| j["orchestrationTaskId"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["a1", "a2", "b1", "d1"]);
    assert_eq!(statuses(&jobs), ["success", "success", "error", "success"]);
    for (job, phase) in jobs.iter().zip(["A", "A", "B", "D"]) {
        assert_eq!(job["type"], "standard");
        assert_eq!(job["runId"], format!("{f}.{}", id(job)));
        assert_eq!(job["parentRunId"], f);
        assert_eq!(job["orchestrationJobId"], f);
        assert_eq!(job["orchestrationPhaseId"], phase);
        assert_eq!(job["token"], flow["token"]);
    }
    // The flow variable replaced the value of the variable the task's configuration defines.
    let a1 = &jobs[0];
    assert_eq!(
        a1["result"]["variables"],
        json!([{"name": "env", "value": "prod"}])
    );
    assert!(t
        .messages(&id(a1))
        .await
        .contains(&"env is prod".to_string()));

    // The webhook got the notification.
    let bodies = hooks.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(
        bodies[0],
        json!({"title": "Flow started", "message": "Extracting",
               "job": {"id": f, "component": FLOW, "config": "cond", "url": null},
               "project": {"id": "123", "name": "Test project"},
               "flow": {"phase": "A", "task": "n1"}})
    );

    let ids: Vec<String> = jobs.iter().map(id).collect();
    let result = stable(&flow["result"]);
    let transition = |id: &str, name: Value, goto: Value, matched: bool, reason: &str| json!({"id": id, "name": name, "goto": goto, "match": matched, "reason": reason});
    let a_conditions = json!([
        transition(
            "a-failed",
            json!("A failed"),
            json!("C"),
            false,
            "The condition does not hold (false)."
        ),
        transition(
            "a-done",
            Value::Null,
            json!("B"),
            true,
            "No condition: taken."
        )
    ]);
    let b_conditions = json!([transition(
        "b-user-error",
        Value::Null,
        json!("D"),
        true,
        "The condition holds."
    )]);
    let d_conditions = json!([transition(
        "d-end",
        Value::Null,
        Value::Null,
        true,
        "No condition: taken."
    )]);
    let job_entry = |task: &str, name: &str, phase: &str, job: &Value| {
        json!({"id": task, "name": name, "type": "job", "phase": phase, "jobId": id(job),
               "component": COMPONENT, "config": job["config"], "status": job["status"],
               "results": [{"jobId": id(job), "status": job["status"]}]})
    };
    let sent = format!("Sent to {url}, ops@example.com.");
    assert_eq!(
        result,
        json!({
            "message": "The flow ended; some of its phases or tasks did not succeed.",
            "tasks": [
                {"id": "n1", "name": "hello", "type": "notification", "phase": "A", "status": "success", "message": sent},
                {"id": "v1", "name": "environment", "type": "variable", "phase": "A", "status": "success", "message": "Variable \"env\" set to \"prod\"."},
                job_entry("a1", "print", "A", &jobs[0]),
                job_entry("a2", "task a2", "A", &jobs[1]),
                job_entry("b1", "task b1", "B", &jobs[2]),
                job_entry("d1", "task d1", "D", &jobs[3])
            ],
            "phases": [
                {"id": "A", "name": "Extract", "status": "success", "conditions": a_conditions},
                {"id": "B", "name": "Transform", "status": "error", "conditions": b_conditions},
                {"id": "D", "name": "Report", "status": "success", "conditions": d_conditions}
            ],
            "flow": {
                "phaseRuns": [
                    {"id": "A", "stage": "ended", "attempts": {"a1": 1, "a2": 1}, "status": "success", "conditions": a_conditions,
                     "notes": [{"task": "n1", "status": "success", "message": sent},
                               {"task": "v1", "status": "success", "message": "Variable \"env\" set to \"prod\"."}]},
                    {"id": "B", "stage": "ended", "attempts": {"b1": 1}, "status": "error", "conditions": b_conditions, "notes": []},
                    {"id": "D", "stage": "ended", "attempts": {"d1": 1}, "status": "success", "conditions": d_conditions, "notes": []}
                ],
                "variables": {"env": "prod"},
                "status": "warning",
                "message": "The flow ended; some of its phases or tasks did not succeed."
            }
        }),
        "{:#}",
        flow["result"]
    );
    assert_eq!(
        flow["result"]["tasks"][2]["results"][0]["result"],
        jobs[0]["result"]
    );

    let messages = t.messages(&f).await;
    for expected in [
        "Flow started.".to_string(),
        "Phase \"Extract\" (A) started.".to_string(),
        format!("Notification \"Flow started\" of task \"hello\" sent to {url} (HTTP 200)."),
        format!("Notification \"Flow started\" of task \"hello\" for ops@example.com recorded, {}.", jobq::model::NO_SMTP),
        "Variable \"env\" set to \"prod\".".to_string(),
        format!("Task \"print\" started as job {}.", ids[0]),
        format!("Task \"a1\" (job {}) ended success.", ids[0]),
        "Phase \"Extract\" (A) ended success.".to_string(),
        "Transition \"A failed\" of phase \"A\" to phase \"C\" not taken: The condition does not hold (false).".to_string(),
        "Transition \"a-done\" of phase \"A\" to phase \"B\" taken: No condition: taken.".to_string(),
        "Phase \"Transform\" (B) ended error.".to_string(),
        "Transition \"b-user-error\" of phase \"B\" to phase \"D\" taken: The condition holds.".to_string(),
        "Flow ended warning: The flow ended; some of its phases or tasks did not succeed.".to_string(),
    ] {
        assert!(messages.contains(&expected), "{expected}: {messages:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_retries_a_failed_task_job() {
    let t = TestDaemon::start(Options::default()).await;
    let failing = json!({"parameters": {"exit_code": 1, "stderr": ["Temporary outage"]}});
    configure(&t, COMPONENT, "flaky", failing, &[]).await;
    let configuration = json!({
        "phases": [{"id": "R", "name": "Retried",
                    "retry": {"strategy": "linear", "strategyParams": {"maxRetries": 2, "delay": 3}, "retryOn": [{"type": "errorMessageContains", "value": "OUTAGE"}]},
                    "next": [{"id": "end", "goto": null}]}],
        "tasks": [{"id": "r1", "name": "flaky", "phase": "R", "task": {"type": "job", "componentId": COMPONENT, "configId": "flaky", "mode": "run"}}]
    });
    configure(&t, FLOW, "retry", configuration, &[]).await;
    let f = id(&t
        .submit(json!({"component": FLOW, "config": "retry"}))
        .await);
    // The first job fails; during the retry's delay the configuration is fixed.
    let jobs = wait_children(&t, &f, |j| j.len() == 2).await;
    assert_eq!(jobs[0]["status"], "error");
    assert_eq!(jobs[1]["status"], "created");
    assert!(jobs[1]["delayedStartTime"].is_string(), "{:#}", jobs[1]);
    let fixed = t
        .send_json(
            Method::PUT,
            &format!("/v2/storage/components/{COMPONENT}/configs/flaky"),
            &json!({"configuration": {"parameters": {}}}),
        )
        .await;
    assert_eq!(fixed.status, 200);
    let flow = t.wait_finished(&f).await;
    assert_eq!(flow["status"], "success", "{flow:#}");
    let jobs = children(&t, &f).await;
    assert_eq!(statuses(&jobs), ["error", "success"]);
    let task = &flow["result"]["tasks"][0];
    assert_eq!(task["jobId"], id(&jobs[1]));
    assert_eq!(task["retry"], 1);
    let attempts: Vec<(&str, &str)> = task["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["jobId"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        attempts,
        [
            (id(&jobs[0]).as_str(), "error"),
            (id(&jobs[1]).as_str(), "success")
        ]
    );
    let messages = t.messages(&f).await;
    let retried = format!(
        "Task \"flaky\" (job {}) failed; retry 1 of 2 in 3 s.",
        id(&jobs[0])
    );
    assert!(messages.contains(&retried), "{messages:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_conditional_flow_ends_terminated_and_starts_nothing_more() {
    let t = TestDaemon::start(Options::default()).await;
    let configuration = json!({
        "phases": [{"id": "A", "next": [{"id": "on", "goto": "B"}]}, {"id": "B"}],
        "tasks": [flow_task("a1", "A", json!({"sleep": 60})), flow_task("b1", "B", json!({}))]
    });
    configure(&t, FLOW, "long", configuration, &[]).await;
    let f = id(&t.submit(json!({"component": FLOW, "config": "long"})).await);
    wait_children(&t, &f, |j| statuses(j) == ["processing"]).await;
    assert_eq!(t.kill(&f).await.status, 202);
    let flow = t.wait_finished(&f).await;
    assert_eq!(flow["status"], "terminated");
    let jobs = children(&t, &f).await;
    assert_eq!(statuses(&jobs), ["terminated"], "B's task never got a job");
    assert_eq!(flow["result"]["message"], "The flow was killed.");
    assert_eq!(flow["result"]["phases"][0]["status"], "processing");
    assert_eq!(flow["result"]["tasks"][0]["status"], "terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_conditional_flows_are_refused_naming_the_unsupported_part() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let phases = |next: Value| json!([{"id": "A", "next": next}, {"id": "B"}]);
    let job = flow_task("a1", "A", json!({}));
    let xor = json!({"type": "operator", "operator": "XOR", "operands": []});
    let cases = [
        (
            json!({"phases": phases(json!([{"id": "t", "goto": "B", "condition": xor}])), "tasks": [job.clone()]}),
            "Phase \"A\", transition #1 (\"t\"), condition: jobq does not support operator \"XOR\"; use one of AND, OR, EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN, INCLUDES, CONTAINS, ALL_TASKS_IN_PHASE, ANY_TASKS_IN_PHASE.",
        ),
        (
            json!({"phases": phases(json!([{"id": "t", "goto": "Z"}])), "tasks": [job.clone()]}),
            "Phase \"A\", transition \"t\" (#1): it goes to phase \"Z\", which the flow does not have; set \"goto\" to a phase id or null.",
        ),
        (
            json!({"phases": phases(json!([{"id": "t", "goto": null, "condition": compare("EQUALS", json!({"type": "task", "task": "zz", "value": "status"}), "success")}])), "tasks": [job.clone()]}),
            "Phase \"A\", transition \"t\" (#1): it names task \"zz\", which the flow does not have; fix the condition.",
        ),
        (
            json!({"phases": phases(json!(null)), "tasks": [{"id": "n", "phase": "A", "task": {"type": "notification", "title": "x", "recipients": [{"channel": "webhook", "address": "ftp://example.com/hook"}]}}]}),
            "Task \"n\", recipient #1: jobq does not support webhook address \"ftp://example.com/hook\"; use one of an http:// or https:// URL.",
        ),
        (
            json!({"phases": phases(json!(null)), "tasks": [{"id": "u", "name": "unknown", "phase": "A", "task": {"type": "job", "componentId": "keboola.unknown", "configData": {}, "mode": "run"}}]}),
            "Task \"unknown\" (u) cannot run: Component \"keboola.unknown\" is not registered in jobq's settings.",
        ),
    ];
    for (configuration, message) in cases {
        let answer = t
            .post(
                "/jobs",
                &json!({"component": FLOW, "configData": configuration}),
            )
            .await;
        assert_error(&answer, 400, message, json!({}));
    }
    assert_eq!(
        t.get("/search/jobs").await.json(),
        json!([]),
        "no job exists"
    );
}
