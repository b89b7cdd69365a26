//! The local Storage's buckets, tables and files as a client sees them over HTTP, and
//! `jobq load-table` against a running daemon. No Docker engine needed.

mod common;

use common::binary::{fails, succeeds};
use common::{assert_error, Options, TestDaemon};
use hyper::Method;
use jobq::cli::client::Answer;
use serde_json::{json, Value};

async fn post_csv(t: &TestDaemon, path: &str, csv: &str) -> Answer {
    t.send(Method::POST, path, "text/csv", csv).await
}

/// A multipart/form-data body as HTML forms and the public API's clients send it.
fn multipart(fields: &[(&str, &str)], file: (&str, &str, &str)) -> (String, String) {
    let boundary = "----jobq-test-boundary-4b1f";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    let (part, file_name, content) = file;
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{file_name}\"\r\n\
         Content-Type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
    ));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Asserts the Keboola error body with exactly this status, message and context.
fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

/// The bucket object a client sees, its times taken from `seen` (checked to be times).
fn bucket_object(t: &TestDaemon, seen: &Value, id: &str, rows: u64, bytes: u64) -> Value {
    assert!(
        is_time(&seen["created"]) && is_time(&seen["lastChangeDate"]),
        "{seen}"
    );
    let url = format!("http://{}/v2/storage/buckets/{id}", t.addr);
    let (stage, name) = id.split_once('.').unwrap();
    json!({
        "uri": url,
        "id": id,
        "name": name,
        "displayName": name.strip_prefix("c-").unwrap(),
        "idBranch": 456,
        "stage": stage,
        "description": "",
        "tables": format!("{url}/tables"),
        "created": seen["created"],
        "lastChangeDate": seen["lastChangeDate"],
        "isReadOnly": false,
        "dataSizeBytes": bytes,
        "rowsCount": rows,
        "isMaintenance": false,
        "backend": "local",
        "hasExternalSchema": false,
        "path": id,
        "isSnowflakeSharedDatabase": false,
        "isLinkedBucket": false,
        "backendPath": [],
    })
}

/// The table object a client sees (its bucket holding only this table), times from `seen`.
fn table_object(
    t: &TestDaemon,
    seen: &Value,
    id: &str,
    columns: &[&str],
    key: &[&str],
    rows: u64,
    bytes: u64,
) -> Value {
    for field in ["created", "lastImportDate", "lastChangeDate"] {
        assert!(is_time(&seen[field]), "{field}: {seen}");
    }
    let (bucket, name) = id.rsplit_once('.').unwrap();
    json!({
        "uri": format!("http://{}/v2/storage/tables/{id}", t.addr),
        "id": id,
        "name": name,
        "displayName": name,
        "transactional": false,
        "primaryKey": key,
        "indexKey": [],
        "distributionKey": [],
        "syntheticPrimaryKeyEnabled": false,
        "created": seen["created"],
        "lastImportDate": seen["lastImportDate"],
        "lastChangeDate": seen["lastChangeDate"],
        "rowsCount": rows,
        "dataSizeBytes": bytes,
        "isAlias": false,
        "isAliasable": true,
        "isTyped": false,
        "tableType": "table",
        "path": id,
        "columns": columns,
        "columnMetadata": {},
        "attributes": [],
        "metadata": [],
        "bucket": bucket_object(t, &seen["bucket"], bucket, rows, bytes),
    })
}

async fn preview(t: &TestDaemon, path: &str) -> String {
    let answer = t.get(path).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.headers["content-type"], "text/csv; charset=utf-8");
    String::from_utf8(answer.body.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn tables_are_created_previewed_imported_and_deleted() {
    let t = TestDaemon::start(Options::without_docker()).await;
    assert_eq!(t.get("/v2/storage/buckets").await.json(), json!([]));

    let created = post_csv(
        &t,
        "/v2/storage/buckets/in.c-main/tables?name=people&primaryKey=id",
        "id,name,city\n1,Ann,Prague\n2,\"Bob, Jr.\",Brno\n3,Cyd,Prague\n",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json());
    let stored = "\"id\",\"name\",\"city\"\n\"1\",\"Ann\",\"Prague\"\n\"2\",\"Bob, Jr.\",\"Brno\"\n\"3\",\"Cyd\",\"Prague\"\n";
    let bytes = stored.len() as u64;
    let table = created.json();
    let expected = table_object(
        &t,
        &table,
        "in.c-main.people",
        &["id", "name", "city"],
        &["id"],
        3,
        bytes,
    );
    assert_eq!(table, expected);

    let detail = t.get("/v2/storage/tables/in.c-main.people").await;
    assert_eq!((detail.status, detail.json()), (200, expected.clone()));
    let listed = t.get("/v2/storage/buckets/in.c-main/tables").await;
    assert_eq!(
        (listed.status, listed.json()),
        (200, json!([expected.clone()]))
    );
    assert_eq!(t.get("/v2/storage/tables").await.json(), json!([expected]));
    let buckets = t.get("/v2/storage/buckets").await.json();
    assert_eq!(
        buckets,
        json!([bucket_object(&t, &buckets[0], "in.c-main", 3, bytes)])
    );
    let bucket = t.get("/v2/storage/buckets/in.c-main").await;
    assert_eq!((bucket.status, bucket.json()), (200, buckets[0].clone()));

    assert_eq!(
        preview(&t, "/v2/storage/tables/in.c-main.people/data-preview").await,
        stored
    );
    assert_eq!(
        preview(
            &t,
            "/v2/storage/tables/in.c-main.people/data-preview?columns=name,id&whereColumn=city&whereValues[]=Prague&limit=1"
        )
        .await,
        "\"name\",\"id\"\n\"Ann\",\"1\"\n"
    );
    assert_eq!(
        preview(
            &t,
            "/v2/storage/tables/in.c-main.people/data-preview?whereColumn=city&whereValues[]=Prague&whereOperator=ne"
        )
        .await,
        "\"id\",\"name\",\"city\"\n\"2\",\"Bob, Jr.\",\"Brno\"\n"
    );
    assert_eq!(
        preview(
            &t,
            "/v2/storage/tables/in.c-main.people/data-preview?changedSince=%2B1%20day"
        )
        .await,
        "\"id\",\"name\",\"city\"\n"
    );

    // Incremental with the table's primary key: an upsert; a new column is added.
    let imported = post_csv(
        &t,
        "/v2/storage/tables/in.c-main.people/import?incremental=1",
        "city,id,name,age\nOstrava,2,Bob,40\nZlin,4,Dan,22\n",
    )
    .await;
    assert_eq!(imported.status, 200, "{}", imported.json());
    let stored = "\"id\",\"name\",\"city\",\"age\"\n\"1\",\"Ann\",\"Prague\",\"\"\n\"3\",\"Cyd\",\"Prague\",\"\"\n\"2\",\"Bob\",\"Ostrava\",\"40\"\n\"4\",\"Dan\",\"Zlin\",\"22\"\n";
    let table = imported.json();
    let expected = table_object(
        &t,
        &table,
        "in.c-main.people",
        &["id", "name", "city", "age"],
        &["id"],
        4,
        stored.len() as u64,
    );
    assert_eq!(table, expected);
    assert_eq!(
        preview(&t, "/v2/storage/tables/in.c-main.people/data-preview").await,
        stored
    );

    // delete_where, then a full load replacing everything.
    let imported = post_csv(
        &t,
        "/v2/storage/tables/in.c-main.people/import?incremental=1&deleteWhereColumn=city&deleteWhereValues[]=Prague",
        "id,name,city,age\n",
    )
    .await;
    assert_eq!(
        (imported.status, imported.json()["rowsCount"].clone()),
        (200, json!(2))
    );
    let imported = post_csv(
        &t,
        "/v2/storage/tables/in.c-main.people/import",
        "age,city,name,id\n9,X,Y,7\n",
    )
    .await;
    assert_eq!(imported.json()["rowsCount"], 1);
    assert_eq!(
        preview(&t, "/v2/storage/tables/in.c-main.people/data-preview").await,
        "\"id\",\"name\",\"city\",\"age\"\n\"7\",\"Y\",\"X\",\"9\"\n"
    );

    let deleted = t.delete("/v2/storage/tables/in.c-main.people").await;
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    assert_error(
        &t.get("/v2/storage/tables/in.c-main.people").await,
        404,
        "Table \"in.c-main.people\" not found",
        json!({}),
    );
    // The bucket stays, empty.
    assert_eq!(
        t.get("/v2/storage/buckets/in.c-main").await.json()["rowsCount"],
        0
    );
    let deleted = t.delete("/v2/storage/buckets/in.c-main").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(t.get("/v2/storage/buckets").await.json(), json!([]));
}

#[tokio::test]
async fn multipart_uploads_work_as_the_public_clients_send_them() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let (content_type, body) = multipart(
        &[("name", "orders"), ("primaryKey", "id"), ("delimiter", ";")],
        ("data", "orders.csv", "id;total\n1;10\n2;20"),
    );
    let created = t
        .send(
            Method::POST,
            "/v2/storage/buckets/out.c-shop/tables",
            &content_type,
            &body,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    assert_eq!(created.json()["primaryKey"], json!(["id"]));
    assert_eq!(created.json()["columns"], json!(["id", "total"]));
    assert_eq!(
        preview(&t, "/v2/storage/tables/out.c-shop.orders/data-preview").await,
        "\"id\",\"total\"\n\"1\",\"10\"\n\"2\",\"20\"\n"
    );

    let (content_type, body) = multipart(
        &[("incremental", "1")],
        ("data", "more.csv", "id,total\n2,25\n3,30\n"),
    );
    let imported = t
        .send(
            Method::POST,
            "/v2/storage/tables/out.c-shop.orders/import",
            &content_type,
            &body,
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.json());
    assert_eq!(
        preview(&t, "/v2/storage/tables/out.c-shop.orders/data-preview").await,
        "\"id\",\"total\"\n\"1\",\"10\"\n\"2\",\"25\"\n\"3\",\"30\"\n"
    );

    let (content_type, body) = multipart(&[("name", "x")], ("other", "x.csv", "a\n1\n"));
    assert_error(
        &t.send(
            Method::POST,
            "/v2/storage/buckets/out.c-shop/tables",
            &content_type,
            &body,
        )
        .await,
        400,
        "The multipart body has no \"data\" (or \"file\") part with the content.",
        json!({}),
    );
}

#[tokio::test]
async fn files_are_uploaded_listed_by_tags_and_downloaded() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let first = t
        .send(
            Method::POST,
            "/v2/storage/files?name=report%201.txt&tags[]=daily&tags[]=sales",
            "text/plain",
            "first file",
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.json());
    let first = first.json();
    assert!(is_time(&first["created"]), "{first}");
    let id = first["id"].as_u64().expect("a numeric id");
    let url = format!("http://{}/v2/storage/files/{id}/download", t.addr);
    assert_eq!(
        first,
        json!({
            "id": id,
            "name": "report_1.txt",
            "url": url,
            "sizeBytes": 10,
            "tags": ["daily", "sales"],
            "created": first["created"],
            "isPublic": false,
            "isSliced": false,
            "isEncrypted": false,
            "provider": "local",
        })
    );

    let (content_type, body) = multipart(&[("tags[]", "daily")], ("file", "second.bin", "second"));
    let second = t
        .send(Method::POST, "/v2/storage/files", &content_type, &body)
        .await;
    assert_eq!(second.status, 201, "{}", second.json());
    let second = second.json();
    assert_eq!(
        (second["name"].clone(), second["tags"].clone()),
        (json!("second.bin"), json!(["daily"]))
    );

    let ids = |answer: Answer| -> Vec<u64> {
        answer
            .json()
            .as_array()
            .expect("an array")
            .iter()
            .map(|f| f["id"].as_u64().unwrap())
            .collect()
    };
    let second_id = second["id"].as_u64().unwrap();
    assert_eq!(ids(t.get("/v2/storage/files").await), [second_id, id]);
    assert_eq!(
        ids(t.get("/v2/storage/files?tags[]=daily").await),
        [second_id, id]
    );
    assert_eq!(
        ids(t.get("/v2/storage/files?tags[]=daily&tags[]=sales").await),
        [id]
    );
    assert_eq!(
        ids(t.get("/v2/storage/files?tags[]=weekly").await),
        Vec::<u64>::new()
    );
    assert_eq!(ids(t.get("/v2/storage/files?limit=1&offset=1").await), [id]);

    let detail = t.get(&format!("/v2/storage/files/{id}")).await;
    assert_eq!((detail.status, detail.json()), (200, first.clone()));
    let download = t
        .get(url.strip_prefix(&format!("http://{}", t.addr)).unwrap())
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.headers["content-type"], "application/octet-stream");
    assert_eq!(
        download.headers["content-disposition"],
        "attachment; filename=\"report_1.txt\""
    );
    assert_eq!(&download.body[..], b"first file");

    assert_error(
        &t.get("/v2/storage/files/999").await,
        404,
        "File 999 not found",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/files/abc/download").await,
        404,
        "File abc not found",
        json!({}),
    );
    assert_error(
        &t.send(Method::POST, "/v2/storage/files", "text/plain", "x").await,
        400,
        "Parameter \"name\" is required: the file's name (or send a \"file\" part with a file name).",
        json!({}),
    );
}

#[tokio::test]
async fn errors_answer_the_keboola_error_body() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let created = post_csv(
        &t,
        "/v2/storage/buckets/in.c-e/tables?name=t",
        "id,name\n1,a\n",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json());

    assert_error(
        &post_csv(&t, "/v2/storage/buckets/in.c-e/tables?name=t", "id\n1\n").await,
        400,
        "Table \"in.c-e.t\" already exists; import into it with POST /v2/storage/tables/in.c-e.t/import, or delete it first.",
        json!({"stringCode": "storage.tables.alreadyExists"}),
    );
    assert_error(
        &post_csv(&t, "/v2/storage/tables/in.c-e.t/import?incremental=1", "id\n2\n").await,
        400,
        "Some columns are missing in the data of table \"in.c-e.t\". Missing columns: name. Expected columns: id,name. Check the header and the delimiter of the data.",
        json!({}),
    );
    assert_error(
        &post_csv(&t, "/v2/storage/tables/in.c-e.t/import", "id,name\n2,b,c\n").await,
        400,
        "the uploaded data is not valid CSV: line 2 has 3 values, but there are 2 columns (id,name)",
        json!({}),
    );
    assert_error(
        &post_csv(&t, "/v2/storage/buckets/in.c-e/tables", "a\n1\n").await,
        400,
        "Parameter \"name\" is required: the name of the new table.",
        json!({}),
    );
    assert_error(
        &post_csv(&t, "/v2/storage/buckets/in.c-e/tables?name=..%2Fx", "a\n1\n").await,
        400,
        "\"in.c-e.../x\" is not a table id: use <bucket>.<name> (like in.c-main.orders), the name made of letters, digits, '_' and '-' (at most 96 characters)",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/buckets/in.c-..").await,
        400,
        "\"in.c-..\" is not a bucket id: use in.c-<name> or out.c-<name>, the name made of letters, digits, '_' and '-' (at most 96 characters)",
        json!({}),
    );
    assert_error(
        &post_csv(&t, "/v2/storage/tables/in.c-e.nope/import", "a\n1\n").await,
        404,
        "Table \"in.c-e.nope\" not found",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/buckets/out.c-none/tables").await,
        404,
        "Bucket \"out.c-none\" not found",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/tables/in.c-e.t/data-preview?columns=nope").await,
        400,
        "The export of table \"in.c-e.t\" names column \"nope\", which the table does not have; its columns are id,name",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/tables/in.c-e.t/data-preview?whereColumn=id&whereOperator=gt")
            .await,
        400,
        "Parameter \"whereOperator\" must be eq or ne, \"gt\" given.",
        json!({}),
    );
    assert_error(
        &t.delete("/v2/storage/buckets/in.c-e").await,
        400,
        "Bucket \"in.c-e\" is not empty: it has 1 table(s); delete them first, or delete the bucket with force",
        json!({"stringCode": "storage.buckets.notEmpty"}),
    );
    assert_eq!(
        t.delete("/v2/storage/buckets/in.c-e?force=true")
            .await
            .status,
        204
    );
    assert_error(
        &t.delete("/v2/storage/buckets/in.c-e").await,
        404,
        "Bucket \"in.c-e\" not found",
        json!({}),
    );
    assert_error(
        &t.get("/v2/storage/tables/a/b/c").await,
        404,
        "Route GET /v2/storage/tables/a/b/c not found.",
        json!({}),
    );
    assert_error(
        &t.send(Method::PUT, "/v2/storage/tables/in.c-e.t", "text/csv", "")
            .await,
        405,
        "Method PUT is not allowed on /v2/storage/tables/in.c-e.t.",
        json!({}),
    );
    for (client, message) in t.clients_without_a_valid_token() {
        let answer = client.get("/v2/storage/buckets").await.expect("answers");
        assert_error(&answer, 401, message, json!({}));
    }
}

#[tokio::test]
async fn load_table_command_creates_then_imports() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let dir = tempfile::tempdir().expect("a temporary dir");
    let load = |table: &str, csv: &str, extra: &[&str]| {
        let file = dir.path().join("data.csv");
        std::fs::write(&file, csv).expect("write");
        let file = file.display().to_string();
        let mut command = t.jobq(["load-table", "--table", table, "--file", &file]);
        command.args(extra);
        command
    };

    let stdout = succeeds(&mut load(
        "in.c-cli.t",
        "id,v\n1,a\n2,b\n",
        &["--primary-key", "id"],
    ));
    let table: Value = serde_json::from_str(&stdout).expect("the table as JSON");
    assert_eq!(
        (
            table["id"].clone(),
            table["primaryKey"].clone(),
            table["rowsCount"].clone()
        ),
        (json!("in.c-cli.t"), json!(["id"]), json!(2))
    );

    let stdout = succeeds(&mut load(
        "in.c-cli.t",
        "id,v\n2,B\n3,c\n",
        &["--incremental"],
    ));
    let table: Value = serde_json::from_str(&stdout).expect("the table as JSON");
    assert_eq!(table, t.get("/v2/storage/tables/in.c-cli.t").await.json());
    assert_eq!(
        preview(&t, "/v2/storage/tables/in.c-cli.t/data-preview").await,
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"B\"\n\"3\",\"c\"\n"
    );

    assert_eq!(
        fails(&mut load("in.c-cli.t", "id\n4\n", &[])),
        "jobq: jobq answered 400: Some columns are missing in the data of table \"in.c-cli.t\". Missing columns: v. Expected columns: id,v. Check the header and the delimiter of the data.\n"
    );
    assert_eq!(
        fails(&mut load("in.c-cli", "id\n4\n", &[])),
        "jobq: jobq answered 400: \"in.c-cli\" is not a table id: use <bucket>.<name> (like \
         in.c-main.orders), the name made of letters, digits, '_' and '-' (at most 96 \
         characters)\n"
    );
}
