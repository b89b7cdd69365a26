//! The Storage configuration API as a client sees it: configurations, rows, state, dev branches,
//! JSON and form bodies, errors, and the real kbcstorage Python client. No Docker engine needed.

mod common;

use common::binary::succeeds;
use common::{
    assert_error, Options, TestDaemon, BUCKET_COMPONENT, COMPONENT, PROCESSOR_ONE,
    PROCESSOR_TAGGED, PROCESSOR_TWO, SMALL_COMPONENT, TOKEN,
};
use hyper::Method;
use jobq::cli::client::Answer;
use serde_json::{json, Value};
use std::process::Command;

/// The default branch's id in the test settings.
const MAIN: u64 = 456;

fn configs_path(component: &str) -> String {
    format!("/v2/storage/components/{component}/configs")
}

/// Asserts that every `created` (also in rows) is an ISO 8601 time, then blanks it out so that
/// the rest compares exactly.
fn settled(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(created) = map.get_mut("created") {
                    let text = created.as_str().unwrap_or_default();
                    assert!(
                        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                        "created is not ISO 8601: {created}"
                    );
                    *created = json!("<time>");
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

async fn created(t: &TestDaemon, path: &str, body: Value) -> Value {
    let answer = t.post(path, &body).await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    answer.json()
}

fn ok(answer: Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.json());
    answer.json()
}

/// A JSON PUT that must answer 200; its body.
async fn put(t: &TestDaemon, path: &str, body: Value) -> Value {
    ok(t.send_json(Method::PUT, path, &body).await)
}

#[tokio::test]
async fn configurations_are_created_from_json_and_from_forms() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let from_json = created(
        &t,
        &configs_path(COMPONENT),
        json!({
            "name": "From JSON",
            "description": "d",
            "changeDescription": "first",
            "configuration": {"parameters": {"a": 1}},
        }),
    )
    .await;
    assert_eq!(
        settled(from_json.clone()),
        json!({
            "id": "1",
            "name": "From JSON",
            "description": "d",
            "created": "<time>",
            "version": 1,
            "changeDescription": "first",
            "isDisabled": false,
            "isDeleted": false,
            "configuration": {"parameters": {"a": 1}},
            "rowsSortOrder": [],
            "rows": [],
            "state": {},
        })
    );

    let form = t
        .send_form(
            Method::POST,
            &format!("/v2/storage/branch/default/components/{COMPONENT}/configs"),
            &[
                ("name", "From a form"),
                ("configurationId", "my-config"),
                ("configuration", r#"{"parameters": {"b": [2]}}"#),
                ("isDisabled", "1"),
                ("state", r#"{"component": {"since": 5}}"#),
            ],
        )
        .await;
    assert_eq!(form.status, 201, "{}", form.json());
    let from_form = form.json();
    assert_eq!(from_form["id"], "my-config");
    assert_eq!(from_form["isDisabled"], true);
    assert_eq!(
        from_form["configuration"],
        json!({"parameters": {"b": [2]}})
    );
    assert_eq!(from_form["state"], json!({"component": {"since": 5}}));
    assert_eq!(
        (
            from_form["version"].clone(),
            from_form["description"].clone()
        ),
        (json!(1), json!(""))
    );

    // The configuration as JSON text, as some clients send it in JSON bodies too.
    let as_text = created(
        &t,
        &configs_path(COMPONENT),
        json!({"name": "Text", "configuration": "{\"parameters\": {}}", "isDisabled": "false"}),
    )
    .await;
    assert_eq!(as_text["id"], "2");
    assert_eq!(as_text["configuration"], json!({"parameters": {}}));

    let listed = ok(t.get(&configs_path(COMPONENT)).await);
    assert_eq!(listed, json!([from_json, as_text, from_form]));
    assert_eq!(ok(t.get(&configs_path(SMALL_COMPONENT)).await), json!([]));
    let detail = ok(t
        .get(&format!("{}/my-config", configs_path(COMPONENT)))
        .await);
    assert_eq!(detail, from_form);
    assert_eq!(
        ok(
            t.get(&format!("{}?isDeleted=true", configs_path(COMPONENT)))
                .await
        ),
        json!([])
    );
}

#[tokio::test]
async fn changes_and_row_changes_raise_the_version_and_state_keeps_it() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let config = format!("{}/cfg", configs_path(COMPONENT));
    let rows = format!("{config}/rows");
    created(
        &t,
        &configs_path(COMPONENT),
        json!({"name": "n", "description": "kept", "configurationId": "cfg", "configuration": {"parameters": {"a": 1}}}),
    )
    .await;

    let renamed = put(&t, &config, json!({"name": "renamed"})).await;
    assert_eq!(
        (
            &renamed["name"],
            &renamed["description"],
            &renamed["version"]
        ),
        (&json!("renamed"), &json!("kept"), &json!(2))
    );
    assert_eq!(renamed["configuration"], json!({"parameters": {"a": 1}}));
    let disabled = t
        .send_form(
            Method::PUT,
            &config,
            &[
                ("isDisabled", "true"),
                ("changeDescription", "off"),
                ("configuration", "{\"parameters\": {\"a\": 2}}"),
            ],
        )
        .await;
    let disabled = ok(disabled);
    assert_eq!(
        (
            &disabled["isDisabled"],
            &disabled["changeDescription"],
            &disabled["version"]
        ),
        (&json!(true), &json!("off"), &json!(3))
    );
    assert_eq!(disabled["configuration"], json!({"parameters": {"a": 2}}));

    // Rows: ids come from the same sequence as configuration ids (none was drawn yet).
    let row = created(
        &t,
        &rows,
        json!({"name": "r", "configuration": {"parameters": {"t": "x"}}}),
    )
    .await;
    assert_eq!(
        settled(row),
        json!({
            "id": "1",
            "name": "r",
            "description": "",
            "isDisabled": false,
            "version": 1,
            "created": "<time>",
            "changeDescription": "",
            "configuration": {"parameters": {"t": "x"}},
            "state": {},
        })
    );
    let after_row = ok(t.get(&config).await);
    assert_eq!(
        (&after_row["version"], &after_row["changeDescription"]),
        (&json!(4), &json!("Row 1 added"))
    );
    let custom = t
        .send_form(
            Method::POST,
            &rows,
            &[("rowId", "custom"), ("name", "c"), ("isDisabled", "0")],
        )
        .await;
    assert_eq!(custom.status, 201, "{}", custom.json());
    assert_eq!(custom.json()["id"], "custom");

    let changed = put(&t, &format!("{rows}/1"), json!({"isDisabled": true})).await;
    assert_eq!(
        (
            &changed["isDisabled"],
            &changed["version"],
            &changed["name"]
        ),
        (&json!(true), &json!(2), &json!("r"))
    );
    let sorted = put(&t, &config, json!({"rowsSortOrder": ["custom", "1"]})).await;
    assert_eq!(sorted["version"], 7);
    assert_eq!(sorted["rowsSortOrder"], json!(["custom", "1"]));
    let listed: Vec<Value> = ok(t.get(&rows).await)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(listed, [json!("custom"), json!("1")]);

    // State: replaced, answered, and no version moves.
    let state = json!({"component": {"cursor": 10}});
    let saved = put(&t, &format!("{config}/state"), json!({"state": state})).await;
    assert_eq!((&saved["state"], &saved["version"]), (&state, &json!(7)));
    let row_state = t
        .send_form(
            Method::PUT,
            &format!("{rows}/1/state"),
            &[("state", r#"{"component": {"row": 1}}"#)],
        )
        .await;
    let row_state = ok(row_state);
    assert_eq!(row_state["state"], json!({"component": {"row": 1}}));
    assert_eq!(
        (&row_state["id"], &row_state["version"]),
        (&json!("1"), &json!(2))
    );
    let detail = ok(t.get(&config).await);
    assert_eq!((&detail["version"], &detail["state"]), (&json!(7), &state));
    assert_eq!(ok(t.get(&format!("{rows}/1")).await), row_state);

    // Deleting answers 204 without a body; what is deleted is 404 after.
    let deleted = t.delete(&format!("{rows}/1")).await;
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    let detail = ok(t.get(&config).await);
    assert_eq!(
        (&detail["version"], &detail["rowsSortOrder"]),
        (&json!(8), &json!(["custom"]))
    );
    assert_error(
        &t.get(&format!("{rows}/1")).await,
        404,
        &format!(
            "Row \"1\" of configuration \"cfg\" of component \"{COMPONENT}\" not found in branch \
             \"456\"."
        ),
        json!({}),
    );
    let deleted = t.delete(&config).await;
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    let gone =
        format!("Configuration \"cfg\" of component \"{COMPONENT}\" not found in branch \"456\".");
    assert_error(&t.get(&config).await, 404, &gone, json!({}));
    assert_error(&t.delete(&config).await, 404, &gone, json!({}));
    assert_error(&t.get(&rows).await, 404, &gone, json!({}));
}

#[tokio::test]
async fn the_same_id_in_the_default_and_a_dev_branch_are_two_configurations() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let branch = created(&t, "/v2/storage/dev-branches", json!({"name": "feature"})).await;
    let dev_id = branch["id"].as_u64().expect("a numeric branch id");
    let main_path = format!("{}/same", configs_path(COMPONENT));
    let dev_path = format!("/v2/storage/branch/{dev_id}/components/{COMPONENT}/configs/same");
    for (branch_path, greeting) in [("default".to_string(), "main"), (dev_id.to_string(), "dev")] {
        created(
            &t,
            &format!("/v2/storage/branch/{branch_path}/components/{COMPONENT}/configs"),
            json!({"name": greeting, "configurationId": "same", "configuration": {"parameters": {"greeting": greeting}}}),
        )
        .await;
    }
    put(&t, &dev_path, json!({"name": "dev, changed"})).await;
    let main = ok(t.get(&main_path).await);
    let dev = ok(t.get(&dev_path).await);
    assert_eq!(
        (&main["name"], &main["version"]),
        (&json!("main"), &json!(1))
    );
    assert_eq!(
        (&dev["name"], &dev["version"]),
        (&json!("dev, changed"), &json!(2))
    );
    assert_eq!(
        dev["configuration"],
        json!({"parameters": {"greeting": "dev"}})
    );
    // The default branch's own id names it too.
    let by_id = ok(t
        .get(&format!(
            "/v2/storage/branch/{MAIN}/components/{COMPONENT}/configs/same"
        ))
        .await);
    assert_eq!(by_id, main);

    // Components: every registered one, configurations summarised unless included.
    let summary = ok(t
        .get(&format!("/v2/storage/branch/{dev_id}/components"))
        .await);
    assert_eq!(
        settled(summary),
        json!([
            {"id": COMPONENT, "type": "other", "name": COMPONENT, "description": "", "configurations": [{
                "id": "same", "name": "dev, changed", "description": "", "created": "<time>", "version": 2,
                "changeDescription": "", "isDisabled": false, "isDeleted": false,
            }]},
            {"id": SMALL_COMPONENT, "type": "other", "name": SMALL_COMPONENT, "description": "", "configurations": []},
            {"id": BUCKET_COMPONENT, "type": "other", "name": BUCKET_COMPONENT, "description": "", "configurations": []},
            {"id": PROCESSOR_ONE, "type": "other", "name": PROCESSOR_ONE, "description": "", "configurations": []},
            {"id": PROCESSOR_TWO, "type": "other", "name": PROCESSOR_TWO, "description": "", "configurations": []},
            {"id": PROCESSOR_TAGGED, "type": "other", "name": PROCESSOR_TAGGED, "description": "", "configurations": []},
        ])
    );
    let included = ok(t
        .get("/v2/storage/components?include=configuration,rows")
        .await);
    let listed = &included[0]["configurations"][0];
    assert_eq!(
        listed["configuration"],
        json!({"parameters": {"greeting": "main"}})
    );
    assert_eq!(
        (&listed["rows"], &listed["rowsSortOrder"]),
        (&json!([]), &json!([]))
    );
    assert_eq!(listed.get("state"), None, "state only with include=state");
    let with_state = ok(t
        .get("/v2/storage/branch/default/components?include=state")
        .await);
    assert_eq!(with_state[0]["configurations"][0]["state"], json!({}));
    assert_eq!(
        with_state[0]["configurations"][0].get("configuration"),
        None
    );

    // Deleting the dev branch deletes its configurations, not the default branch's.
    let deleted = t
        .delete(&format!("/v2/storage/dev-branches/{dev_id}"))
        .await;
    assert_eq!(deleted.status, 204);
    assert_error(
        &t.get(&dev_path).await,
        404,
        &format!("Branch \"{dev_id}\" not found; GET /v2/storage/dev-branches lists the branches."),
        json!({}),
    );
    assert_eq!(ok(t.get(&main_path).await), main);
}

#[tokio::test]
async fn dev_branches_are_listed_read_created_and_deleted() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let main = json!({"id": MAIN, "name": "Main", "description": "", "isDefault": true, "created": "<time>"});
    assert_eq!(
        settled(ok(t.get("/v2/storage/dev-branches").await)),
        json!([main])
    );
    let made = t
        .send_form(
            Method::POST,
            "/v2/storage/dev-branches",
            &[("name", "feature"), ("description", "tries things")],
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.json());
    let made = made.json();
    let id = made["id"].as_u64().expect("a numeric id");
    assert_eq!(
        settled(made.clone()),
        json!({"id": id, "name": "feature", "description": "tries things", "isDefault": false, "created": "<time>"})
    );
    assert_eq!(
        ok(t.get(&format!("/v2/storage/dev-branches/{id}")).await),
        made
    );
    let listed = ok(t.get("/v2/storage/dev-branches").await);
    assert_eq!(settled(listed[0].clone()), main);
    assert_eq!(listed[1], made);
    for default in ["default".to_string(), MAIN.to_string()] {
        assert_eq!(
            settled(ok(t
                .get(&format!("/v2/storage/dev-branches/{default}"))
                .await)),
            main
        );
        assert_error(
            &t.delete(&format!("/v2/storage/dev-branches/{default}"))
                .await,
            400,
            "The default branch cannot be deleted; delete a dev branch instead.",
            json!({}),
        );
    }
    assert_error(
        &t.post("/v2/storage/dev-branches", &json!({"description": "x"}))
            .await,
        400,
        "Field \"name\" is required.",
        json!({}),
    );

    assert_eq!(
        t.delete(&format!("/v2/storage/dev-branches/{id}"))
            .await
            .status,
        204
    );
    let gone =
        format!("Branch \"{id}\" not found; GET /v2/storage/dev-branches lists the branches.");
    assert_error(
        &t.delete(&format!("/v2/storage/dev-branches/{id}")).await,
        404,
        &gone,
        json!({}),
    );
    assert_error(
        &t.get(&format!("/v2/storage/dev-branches/{id}")).await,
        404,
        &gone,
        json!({}),
    );
    assert_eq!(
        ok(t.get("/v2/storage/dev-branches").await)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn unknown_things_and_bad_bodies_are_named() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let configs = configs_path(COMPONENT);
    created(&t, &configs, json!({"name": "n", "configurationId": "cfg"})).await;
    created(&t, &format!("{configs}/cfg/rows"), json!({"rowId": "r"})).await;

    let not_found = [
        (
            "/v2/storage/components/keboola.unknown/configs".to_string(),
            "Component \"keboola.unknown\" is not registered in jobq; add it under [[components]] \
             in the settings file."
                .to_string(),
        ),
        (
            format!("{configs}/nope"),
            format!(
                "Configuration \"nope\" of component \"{COMPONENT}\" not found in branch \"456\"."
            ),
        ),
        (
            format!("{configs}/cfg/rows/nope"),
            format!(
                "Row \"nope\" of configuration \"cfg\" of component \"{COMPONENT}\" not found in \
                 branch \"456\"."
            ),
        ),
        (
            format!("/v2/storage/branch/999/components/{COMPONENT}/configs"),
            "Branch \"999\" not found; GET /v2/storage/dev-branches lists the branches."
                .to_string(),
        ),
        (
            "/v2/storage/branch/999/components".to_string(),
            "Branch \"999\" not found; GET /v2/storage/dev-branches lists the branches."
                .to_string(),
        ),
        (
            "/v2/storage/nowhere".to_string(),
            "Route GET /v2/storage/nowhere not found.".to_string(),
        ),
    ];
    for (path, message) in not_found {
        assert_error(&t.get(&path).await, 404, &message, json!({}));
    }

    let bad = [
        (
            json!({"name": "n", "configuration": "{not json"}),
            "Field \"configuration\" is not valid JSON: key must be a string at line 1 column 2.",
        ),
        (
            json!({"name": "n", "configuration": [1]}),
            "Field \"configuration\" must be a JSON object, [1] given.",
        ),
        (json!({"configuration": {}}), "Field \"name\" is required."),
        (
            json!({"name": "n", "isDisabled": "maybe"}),
            "Field \"isDisabled\" must be true or false (or 1, 0), \"maybe\" given.",
        ),
        (
            json!({"name": "n", "configurationId": "a/b"}),
            "Field \"configurationId\" must be made of letters, digits, '.', '_' and '-', \"a/b\" \
             given.",
        ),
    ];
    for (body, message) in bad {
        assert_error(&t.post(&configs, &body).await, 400, message, json!({}));
    }
    let form = t
        .send_form(
            Method::POST,
            &configs,
            &[("name", "n"), ("configuration", "{\"parameters\":")],
        )
        .await;
    assert_error(
        &form,
        400,
        "Field \"configuration\" is not valid JSON: EOF while parsing a value at line 1 column 14.",
        json!({}),
    );
    let state = t
        .send_json(Method::PUT, &format!("{configs}/cfg/state"), &json!({}))
        .await;
    assert_error(
        &state,
        400,
        "Field \"state\" is required: the new state, an object.",
        json!({}),
    );
    let order = t
        .send_json(
            Method::PUT,
            &format!("{configs}/cfg"),
            &json!({"rowsSortOrder": ["r", "x"]}),
        )
        .await;
    assert_error(
        &order,
        400,
        "Field \"rowsSortOrder\" names row \"x\", which configuration \"cfg\" does not have.",
        json!({}),
    );
    let malformed = t
        .send(Method::POST, &configs, "application/json", "{\"name\"")
        .await;
    assert_error(
        &malformed,
        400,
        "The request body is not valid JSON: EOF while parsing an object at line 1 column 7; send \
         JSON, or a form with Content-Type application/x-www-form-urlencoded.",
        json!({}),
    );

    assert_error(
        &t.post(
            &configs,
            &json!({"name": "again", "configurationId": "cfg"}),
        )
        .await,
        409,
        &format!(
            "Configuration \"cfg\" of component \"{COMPONENT}\" already exists in branch \"456\"; \
             choose another id, or send none to get a new one."
        ),
        json!({}),
    );
    assert_error(
        &t.post(&format!("{configs}/cfg/rows"), &json!({"rowId": "r"}))
            .await,
        409,
        &format!(
            "Row \"r\" already exists in configuration \"cfg\" of component \"{COMPONENT}\" in \
             branch \"456\"; choose another id, or send none to get a new one."
        ),
        json!({}),
    );
    // Nothing of the refused requests was written.
    let detail = ok(t.get(&format!("{configs}/cfg")).await);
    assert_eq!(
        (
            &detail["name"],
            &detail["version"],
            &detail["rowsSortOrder"]
        ),
        (&json!("n"), &json!(2), &json!(["r"]))
    );
    assert_eq!(ok(t.get(&configs).await).as_array().unwrap().len(), 1);

    let not_allowed = [
        (Method::PATCH, configs.clone()),
        (Method::POST, "/v2/storage/components".to_string()),
        (Method::POST, format!("{configs}/cfg")),
        (Method::GET, format!("{configs}/cfg/state")),
        (Method::PUT, "/v2/storage/dev-branches".to_string()),
    ];
    for (method, path) in not_allowed {
        let answer = t.send_json(method.clone(), &path, &json!({})).await;
        let message = format!("Method {method} is not allowed on {path}.");
        assert_error(&answer, 405, &message, json!({}));
    }
}

#[tokio::test]
async fn storage_routes_need_the_token() {
    let t = TestDaemon::start(Options::without_docker()).await;
    for (client, message) in t.clients_without_a_valid_token() {
        for path in [
            "/v2/storage/components",
            "/v2/storage/dev-branches",
            &configs_path(COMPONENT),
        ] {
            assert_error(&client.get(path).await.unwrap(), 401, message, json!({}));
        }
        let answer = client
            .post_json(&configs_path(COMPONENT), &json!({"name": "n"}))
            .await
            .unwrap();
        assert_error(&answer, 401, message, json!({}));
    }
    assert_eq!(ok(t.get(&configs_path(COMPONENT)).await), json!([]));
}

#[tokio::test]
async fn kbcstorage_client_reads_components_and_configurations() {
    let python = common::python::kbcstorage_python();
    let t = TestDaemon::start(Options::without_docker()).await;
    // What tests/kbcstorage_check.py expects to find; the form body is how older clients write.
    let made = t
        .send_form(
            Method::POST,
            &configs_path(COMPONENT),
            &[
                ("name", "Checked by kbcstorage"),
                ("configurationId", "kbc-check"),
                ("configuration", r#"{"parameters": {"greeting": "hi"}}"#),
            ],
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.json());
    created(
        &t,
        &format!("{}/kbc-check/rows", configs_path(COMPONENT)),
        json!({"name": "first row"}),
    )
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kbcstorage_check.py");
    let url = format!("http://{}", t.addr);
    let stdout =
        succeeds(Command::new(&python).args([script, &url, TOKEN, COMPONENT, "kbc-check"]));
    assert_eq!(
        stdout,
        format!("kbcstorage read and wrote {COMPONENT} configurations at {url}\n")
    );
}
