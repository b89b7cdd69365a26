//! `GET /openapi.json` against Keboola's public Job Queue API document (tests/public): the
//! paths both have take the same methods and parameters, and jobq's job and error answers fit
//! the public `Job` and `Error` schemas.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{id, Options, TestDaemon, COMPONENT};
use serde_json::{json, Value};

/// The public document, as vendored.
fn public_document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/public/queue-api.json");
    serde_json::from_slice(&std::fs::read(path).expect("tests/public/queue-api.json"))
        .expect("valid JSON")
}

/// `/jobs/{jobId}/kill` -> `/jobs/{}/kill`: parameter names differ between the two documents.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { "{}" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

/// Each operation of a document by path shape and method: its query and path parameter names.
fn operations(document: &Value) -> BTreeMap<(String, String), (BTreeSet<String>, usize)> {
    let mut found = BTreeMap::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let named = |location: &str| {
                parameters
                    .iter()
                    .filter(|p| p["in"] == location)
                    .map(|p| {
                        p["name"]
                            .as_str()
                            .unwrap()
                            .trim_end_matches("[]")
                            .to_string()
                    })
                    .collect::<BTreeSet<_>>()
            };
            let in_path = named("path").len();
            found.insert((shape(path), method.clone()), (named("query"), in_path));
        }
    }
    found
}

/// Per operation: the public query parameters jobq does not read, and jobq's own.
type Gaps<'a> = BTreeMap<(&'a str, &'a str), (BTreeSet<String>, BTreeSet<String>)>;

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn openapi_matches_the_public_queue_api_where_both_have_a_path() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let (anonymous, _) = t
        .clients_without_a_valid_token()
        .into_iter()
        .next()
        .unwrap();
    let answer = anonymous.get("/openapi.json").await.unwrap();
    assert_eq!(answer.status, 200, "served without a token");
    let ours = operations(&answer.json());
    let public = operations(&public_document());
    assert_eq!(answer.json()["openapi"], "3.0.3");

    let our_paths: BTreeSet<&String> = ours.keys().map(|(path, _)| path).collect();
    let public_paths: BTreeSet<&String> = public.keys().map(|(path, _)| path).collect();
    let not_served: Vec<&str> = public_paths
        .difference(&our_paths)
        .map(|path| path.as_str())
        .collect();
    assert_eq!(
        not_served,
        [
            "/configurations-jobs",
            "/jobs/{}/open-api-lineage",
            "/latest-configurations-jobs"
        ],
        "docs/queue.md lists these as not served"
    );

    // The public parameters jobq does not read, and jobq's own additions, per operation.
    let gaps: Gaps = BTreeMap::from([
        (
            ("/jobs", "get"),
            (
                names(&["componentProps"]),
                names(&["componentId", "configId", "parentRunId"]),
            ),
        ),
        (
            ("/search/jobs", "get"),
            (names(&["componentProps"]), names(&["parentRunId"])),
        ),
        (("/jobs", "post"), (BTreeSet::new(), BTreeSet::new())),
    ]);
    let mut compared = 0;
    for ((path, method), (public_query, public_in_path)) in &public {
        if !our_paths.contains(path) {
            continue;
        }
        let (our_query, our_in_path) = ours
            .get(&(path.clone(), method.clone()))
            .unwrap_or_else(|| panic!("jobq serves {path} but not {method} on it"));
        assert_eq!(
            our_in_path, public_in_path,
            "{method} {path}: path parameters"
        );
        if let Some((unread, added)) = gaps.get(&(path.as_str(), method.as_str())) {
            let missing: BTreeSet<String> = public_query.difference(our_query).cloned().collect();
            let extra: BTreeSet<String> = our_query.difference(public_query).cloned().collect();
            assert_eq!(
                &missing, unread,
                "{method} {path}: public parameters jobq ignores"
            );
            assert_eq!(&extra, added, "{method} {path}: jobq's own parameters");
        }
        compared += 1;
    }
    for (path, method) in ours.keys() {
        if public_paths.contains(path) {
            assert!(
                public.contains_key(&(path.clone(), method.clone())),
                "jobq serves {method} {path}, which the public API does not have"
            );
        }
    }
    assert_eq!(compared, 8, "operations both documents have");
}

#[tokio::test]
async fn job_and_error_answers_fit_the_public_schemas() {
    let t = TestDaemon::start(Options::default()).await;
    let document = public_document();
    let schemas = &document["components"]["schemas"];
    let ok = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {}}}))
        .await;
    let failed = t
        .run(json!({"component": COMPONENT, "configData": {"parameters": {"exit_code": 1}}}))
        .await;
    let stored = t
        .post(
            &format!("/v2/storage/components/{COMPONENT}/configs"),
            &json!({"configurationId": "c1", "name": "c1", "configuration": {"parameters": {}}}),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.json());
    let configured = t.run(json!({"component": COMPONENT, "config": "c1"})).await;
    let statuses = [&ok, &failed, &configured].map(|job| job["status"].clone());
    assert_eq!(
        statuses,
        [json!("success"), json!("error"), json!("success")]
    );
    for job in [&ok, &failed, &configured, &t.job(&id(&ok)).await] {
        conforms(job, &schemas["Job"], &document, "Job");
    }
    let listed = t.get("/search/jobs").await.json();
    for job in listed.as_array().unwrap() {
        conforms(job, &schemas["Job"], &document, "Job");
    }
    let missing = t.get("/jobs/999999").await;
    assert_eq!(missing.status, 404);
    conforms(&missing.json(), &schemas["Error"], &document, "Error");
}

/// Where jobq answers as the platform writes jobs, not as the public schema has it
/// (docs/queue.md, "The job object"): `result.images` holds one list of images per row, and
/// `result.configVersion` is a string, as the platform's own job client types it
/// (https://github.com/keboola/job-queue-internal-api-php-client, `src/Result/JobResult.php`).
const PLATFORM_OVER_SCHEMA: [&str; 2] = ["Job.result.images", "Job.result.configVersion"];

/// Panics naming the first place where `value` breaks `schema` (the OpenAPI 3.0 subset the public
/// document uses: `$ref`, `type`, `nullable`, `enum`, `required`, `properties`, `items`).
fn conforms(value: &Value, schema: &Value, document: &Value, at: &str) {
    if PLATFORM_OVER_SCHEMA.contains(&at) {
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(
            value,
            &document["components"]["schemas"][name],
            document,
            at,
        );
    }
    if value.is_null() {
        assert!(
            schema["nullable"] == true || schema.get("type").is_none(),
            "{at} is null, which the public schema does not allow"
        );
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at} = {value} is none of {allowed:?}"
        );
    }
    let fits = match schema["type"].as_str() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ => true,
    };
    assert!(fits, "{at} = {value} is not of type {}", schema["type"]);
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        assert!(
            value.get(name).is_some(),
            "{at} lacks the required field {name}"
        );
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            if let Some(field) = value.get(name) {
                conforms(field, property, document, &format!("{at}.{name}"));
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            conforms(item, items, document, &format!("{at}[{i}]"));
        }
    }
}
