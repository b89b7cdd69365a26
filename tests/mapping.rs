//! Input and output mapping with real containers: what a component writes to `out/` lands in
//! local Storage, and the next component finds it in `in/`; nothing escapes the job folder.

mod common;

use common::{assert_error, Options, TestDaemon, BUCKET_COMPONENT, COMPONENT};
use serde_json::{json, Value};

/// A job body running `COMPONENT` with `configuration`.
fn with(configuration: Value) -> Value {
    json!({"component": COMPONENT, "configData": configuration})
}

async fn table(t: &TestDaemon, id: &str) -> Value {
    let answer = t.get(&format!("/v2/storage/tables/{id}")).await;
    assert_eq!(answer.status, 200, "{id}: {}", answer.json());
    answer.json()
}

fn read(t: &TestDaemon, job: &Value, path: &str) -> String {
    let path = t
        .data_dir
        .path()
        .join(format!("jobs/{}/data/{path}", job["id"].as_str().unwrap()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `id`s of a result's table list.
fn table_ids(tables: &Value) -> Vec<&str> {
    tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect()
}

/// The extractor-like job of the round-trip test: four kinds of output.
fn extractor() -> Value {
    json!({"parameters": {
        "write_tables": [
            {"name": "legacy.csv", "content": "id,name\n1,alpha\n2,\"be,ta\"\n",
             "manifest": {"destination": "out.c-main.legacy", "primary_key": ["id"]}},
            {"name": "modern.csv", "content": "1;x\n2;y\n",
             "manifest": {"manifest_type": "out", "destination": "out.c-main.modern", "has_header": false,
                          "delimiter": ";", "schema": [{"name": "key", "primary_key": true}, {"name": "value"}]}},
            {"name": "sliced/part-1", "content": "1,a\n2,b\n"},
            {"name": "sliced/part-2", "content": "3,c\n"},
            {"name": "sliced.manifest", "content": "{\"destination\": \"out.c-main.sliced\", \"columns\": [\"n\", \"letter\"]}"},
        ],
        "write_files": [
            {"name": "report.txt", "content": "hello file", "manifest": {"tags": ["report", "daily"]}},
        ],
    }})
}

#[tokio::test]
async fn outputs_land_in_storage_and_come_back_as_inputs_byte_for_byte() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t.run(with(extractor())).await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = job["id"].as_str().unwrap();
    assert!(t
        .messages(id)
        .await
        .contains(&"Output mapping done.".to_string()));
    let outputs = table_ids(&job["result"]["output"]["tables"]);
    assert_eq!(
        outputs,
        [
            "out.c-main.legacy",
            "out.c-main.modern",
            "out.c-main.sliced"
        ]
    );
    assert_eq!(
        job["result"]["output"]["tables"][0],
        json!({"id": "out.c-main.legacy", "name": "legacy", "displayName": "legacy", "columns": [{"name": "id"}, {"name": "name"}]})
    );
    assert!(
        job["metrics"]["storage"]["outputTablesBytesSum"]
            .as_u64()
            .unwrap()
            > 0
    );

    let legacy = table(&t, "out.c-main.legacy").await;
    assert_eq!(legacy["columns"], json!(["id", "name"]));
    assert_eq!(legacy["primaryKey"], json!(["id"]));
    assert_eq!(legacy["rowsCount"], 2);
    let modern = table(&t, "out.c-main.modern").await;
    assert_eq!(modern["columns"], json!(["key", "value"]));
    assert_eq!(modern["primaryKey"], json!(["key"]));
    assert_eq!(table(&t, "out.c-main.sliced").await["rowsCount"], 3);
    let files = t.get("/v2/storage/files?tags[]=report").await.json();
    assert_eq!(files.as_array().unwrap().len(), 1, "{files}");
    assert_eq!(files[0]["tags"], json!(["report", "daily"]));

    let reader = t.run(with(json!({"storage": {"input": {
            "tables": [
                {"source": "out.c-main.legacy", "destination": "legacy.csv"},
                {"source": "out.c-main.sliced", "destination": "sliced.csv", "columns": ["letter"], "where_column": "n", "where_values": ["1", "3"]},
                {"source": "out.c-main.modern", "destination": "modern.csv", "limit": 1},
            ],
            "files": [{"tags": ["report"]}],
        }}}),
    ))
    .await;
    assert_eq!(reader["status"], "success", "{reader:#}");
    assert_eq!(
        read(&t, &reader, "in/tables/legacy.csv"),
        "\"id\",\"name\"\n\"1\",\"alpha\"\n\"2\",\"be,ta\"\n"
    );
    assert_eq!(
        read(&t, &reader, "in/tables/sliced.csv"),
        "\"letter\"\n\"a\"\n\"c\"\n"
    );
    assert_eq!(
        read(&t, &reader, "in/tables/modern.csv"),
        "\"key\",\"value\"\n\"1\",\"x\"\n"
    );
    let manifest: Value =
        serde_json::from_str(&read(&t, &reader, "in/tables/legacy.csv.manifest")).unwrap();
    assert_eq!(manifest["id"], "out.c-main.legacy");
    assert_eq!(manifest["columns"], json!(["id", "name"]));
    assert_eq!(manifest["primary_key"], json!(["id"]));
    assert_eq!(manifest["rows_count"], 2);
    let file_id = files[0]["id"].to_string();
    assert_eq!(
        read(&t, &reader, &format!("in/files/{file_id}_report.txt")),
        "hello file"
    );
    let file_manifest: Value = serde_json::from_str(&read(
        &t,
        &reader,
        &format!("in/files/{file_id}_report.txt.manifest"),
    ))
    .unwrap();
    assert_eq!(file_manifest["tags"], json!(["report", "daily"]));
    let inputs = table_ids(&reader["result"]["input"]["tables"]);
    assert_eq!(
        inputs,
        [
            "out.c-main.legacy",
            "out.c-main.sliced",
            "out.c-main.modern"
        ]
    );
    assert!(
        reader["metrics"]["storage"]["inputTablesBytesSum"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn incremental_load_with_a_primary_key_upserts() {
    let t = TestDaemon::start(Options::default()).await;
    let write = |content: &str| {
        json!({"parameters": {"write_tables": [{"name": "t.csv", "content": content,
            "manifest": {"destination": "in.c-up.t", "incremental": true, "primary_key": ["id"]}}]}})
    };
    assert_eq!(
        t.run(with(write("id,v\n1,old\n2,keep\n"))).await["status"],
        "success"
    );
    assert_eq!(
        t.run(with(write("id,v\n1,new\n3,added\n"))).await["status"],
        "success"
    );
    let preview = t.get("/v2/storage/tables/in.c-up.t/data-preview").await;
    assert_eq!(preview.status, 200);
    let text = String::from_utf8_lossy(&preview.body).into_owned();
    let mut lines: Vec<&str> = text.lines().skip(1).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["\"1\",\"new\"", "\"2\",\"keep\"", "\"3\",\"added\""]
    );
}

#[tokio::test]
async fn default_bucket_names_tables_after_component_and_configuration() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .run(json!({"component": BUCKET_COMPONENT, "config": "cfg-7",
                    "configData": {"parameters": {"write_tables": [{"name": "orders.csv", "content": "id\n1\n"}]}}}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(
        table(&t, "in.c-keboola-ex-fixture-bucket-cfg-7.orders").await["rowsCount"],
        1
    );
}

#[tokio::test]
async fn a_failed_component_loads_only_write_always_tables() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t.run(with(json!({"parameters": {"exit_code": 1, "stderr": ["broke"], "write_tables": [
            {"name": "out.c-f.always.csv", "content": "a\n1\n", "manifest": {"write_always": true}},
            {"name": "out.c-f.never.csv", "content": "a\n1\n"},
        ]}}),
    ))
    .await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["result"]["message"], "broke");
    assert_eq!(table(&t, "out.c-f.always").await["rowsCount"], 1);
    assert_error(
        &t.get("/v2/storage/tables/out.c-f.never").await,
        404,
        "Table \"out.c-f.never\" not found",
        json!({}),
    );
}

#[tokio::test]
async fn a_table_without_a_destination_fails_naming_the_file() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .run(with(
            json!({"parameters": {"write_tables": [{"name": "plain.csv", "content": "a\n1\n"}]}}),
        ))
        .await;
    assert_eq!(job["status"], "error");
    assert!(
        job["result"]["message"]
            .as_str()
            .unwrap()
            .contains("out/tables/plain.csv"),
        "{job:#}"
    );
    assert_eq!(job["result"]["error"]["type"], "user");
}

#[tokio::test]
async fn a_missing_input_table_fails_naming_it() {
    let t = TestDaemon::start(Options::default()).await;
    let job = t
        .run(with(
            json!({"storage": {"input": {"tables": [{"source": "in.c-none.gone"}]}}}),
        ))
        .await;
    assert_eq!(job["status"], "error");
    assert_eq!(
        job["result"]["message"],
        "Table \"in.c-none.gone\" of the input mapping does not exist in Storage."
    );
}

#[tokio::test]
async fn escape_attempts_are_refused_and_the_daemon_keeps_serving() {
    let t = TestDaemon::start(Options::default()).await;
    let cases = [
        (
            json!({"links": [{"name": "out/tables/out.c-x.link.csv", "target": "/etc/passwd"}]}),
            "\"out/tables/out.c-x.link.csv\" is a symbolic link",
        ),
        (
            json!({"links": [{"name": "out/tables/out.c-x.dir", "target": "/etc"}]}),
            "\"out/tables/out.c-x.dir\" is a symbolic link",
        ),
        (
            json!({"fifos": ["out/tables/out.c-x.pipe.csv"]}),
            "\"out/tables/out.c-x.pipe.csv\" is not a plain file",
        ),
        (
            json!({"sparse": [{"name": "out/tables/out.c-x.big.csv", "bytes": 10_000_000_000u64}]}),
            "\"out/tables/out.c-x.big.csv\" is a sparse file",
        ),
        (
            json!({"write_tables": [{"name": "t.csv", "content": "a\n1\n", "manifest": {"destination": "../../etc/t"}}]}),
            "../../etc/t",
        ),
        (
            json!({"write_tables": [{"name": "t.csv", "content": "a\n1\n"}],
                   "links": [{"name": "out/tables/t.csv.manifest", "target": "/etc/passwd"}]}),
            "\"out/tables/t.csv.manifest\" is a symbolic link",
        ),
    ];
    for (parameters, expected) in cases {
        let job = t.run(with(json!({"parameters": parameters}))).await;
        assert_eq!(job["status"], "error", "{parameters}: {job:#}");
        let message = job["result"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{parameters}: {message}");
        assert_eq!(job["result"]["error"]["type"], "user");
    }
    let job = t.run(with(json!({"storage": {"input": {"tables": [{"source": "out.c-x.t", "destination": "../../escape.csv"}]}}}))).await;
    assert!(
        job["result"]["message"]
            .as_str()
            .unwrap()
            .contains("not a plain relative name"),
        "{job:#}"
    );
    assert_eq!(
        t.get("/v2/storage/tokens/verify").await.status,
        200,
        "the daemon keeps serving"
    );
    assert_eq!(
        t.get("/v2/storage/buckets").await.json(),
        json!([]),
        "nothing was loaded"
    );
}
