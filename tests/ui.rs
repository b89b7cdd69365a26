//! The web page at `/ui/`: its files without a token, the login's cookie (flags, no cookie for
//! a wrong token), the page's API by cookie only (and changes only with the page's header),
//! logout, `GET /status`; then the page itself in a real browser (Debian's chromium driven by
//! Playwright: tests/ui_browser.py) against real jobs in the real engine, with a screenshot of
//! each page under `target/ui-screenshots/`.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{assert_error, id, Api, Options, TestDaemon, COMPONENT, TOKEN};
use hyper::Method;
use jobq::cli::client::{Answer, ApiClient};
use serde_json::{json, Value};

/// A client of `api`'s daemon that sends no token.
fn anonymous(api: &Api) -> ApiClient {
    api.client.with_token(None)
}

async fn send(client: &ApiClient, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    client
        .send(method, path, headers, Bytes::new())
        .await
        .expect("the daemon answers")
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Logs in with `token`: the answer.
async fn log_in(client: &ApiClient, token: &str) -> Answer {
    send(
        client,
        Method::POST,
        "/ui/session",
        &[("X-StorageApi-Token", token)],
    )
    .await
}

#[tokio::test]
async fn the_login_sets_a_strict_http_only_cookie_that_only_the_pages_api_takes() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let page = anonymous(&t);

    // A wrong token, or none, gets the API's 401 and no cookie.
    for (token, message) in [
        (Some("not-the-token"), "Invalid access token."),
        (
            None,
            "Access token must be set in the X-StorageApi-Token header.",
        ),
    ] {
        let answer = match token {
            Some(token) => log_in(&page, token).await,
            None => send(&page, Method::POST, "/ui/session", &[]).await,
        };
        assert_eq!(header(&answer, "set-cookie"), None);
        assert_error(&answer, 401, message, json!({}));
    }

    let answer = log_in(&page, TOKEN).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"token": {"id": "7", "description": "test token"}})
    );
    let set_cookie = header(&answer, "set-cookie").expect("a cookie").to_string();
    let (pair, flags) = set_cookie.split_once("; ").unwrap();
    assert_eq!(flags, "Path=/ui; Max-Age=28800; HttpOnly; SameSite=Strict");
    let session = pair.strip_prefix("jobq_session=").unwrap();
    assert_eq!(session.len(), 64);
    assert!(session.chars().all(|c| c.is_ascii_hexdigit()), "{session}");
    assert!(!set_cookie.contains(TOKEN));
    let cookie = format!("jobq_session={session}");

    // The page's API takes the cookie; the API itself never does, and the page's API never
    // takes a token.
    let job = t.create(COMPONENT, json!({})).await;
    let listed = send(
        &page,
        Method::GET,
        "/ui/api/search/jobs",
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.json());
    assert_eq!(listed.json()[0]["id"], job["id"]);
    let api_by_cookie = send(&page, Method::GET, "/search/jobs", &[("Cookie", &cookie)]).await;
    assert_error(
        &api_by_cookie,
        401,
        "Access token must be set in the X-StorageApi-Token header.",
        json!({}),
    );
    let page_by_token = send(
        &page,
        Method::GET,
        "/ui/api/search/jobs",
        &[("X-StorageApi-Token", TOKEN)],
    )
    .await;
    assert_error(
        &page_by_token,
        401,
        "No session: log in on the page with an API token.",
        json!({}),
    );
    // Unknown routes are 404 before the session is looked at.
    let missing = send(&page, Method::GET, "/ui/api/nowhere", &[]).await;
    assert_error(&missing, 404, "Route GET /nowhere not found.", json!({}));

    // A change by cookie needs the page's header, which another site cannot send.
    let kill = format!("/ui/api/jobs/{}/kill", id(&job));
    let forged = send(&page, Method::POST, &kill, &[("Cookie", &cookie)]).await;
    assert_error(
        &forged,
        403,
        "A request that changes something must carry the X-Jobq-Page header.",
        json!({}),
    );
    assert_eq!(t.job(&id(&job)).await["desiredStatus"], "processing");
    let killed = send(
        &page,
        Method::POST,
        &kill,
        &[("Cookie", &cookie), ("X-Jobq-Page", "1")],
    )
    .await;
    assert_eq!(killed.status, 202, "{}", killed.json());
    assert_eq!(t.job(&id(&job)).await["desiredStatus"], "terminating");

    // The status strip's overview: no engine here.
    let status = send(&page, Method::GET, "/ui/api/status", &[("Cookie", &cookie)]).await;
    assert_eq!(
        status.json(),
        json!({"slots": {"used": 0, "max": 4}, "engine": {"up": false}, "missingImages": null})
    );

    // Logging out needs the page's header too, ends the session and removes the cookie.
    let refused = send(&page, Method::POST, "/ui/logout", &[("Cookie", &cookie)]).await;
    assert_eq!(refused.status, 403);
    let out = send(
        &page,
        Method::POST,
        "/ui/logout",
        &[("Cookie", &cookie), ("X-Jobq-Page", "1")],
    )
    .await;
    assert_eq!(out.status, 204);
    assert_eq!(
        header(&out, "set-cookie"),
        Some("jobq_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
    );
    let after = send(
        &page,
        Method::GET,
        "/ui/api/search/jobs",
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(after.status, 401);
}

#[tokio::test]
async fn the_pages_files_need_no_token_and_are_locked_down() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let page = anonymous(&t);
    // `/ui` redirects to `/ui/` (the client follows it).
    let root = send(&page, Method::GET, "/ui", &[]).await;
    assert_eq!(root.status, 200);
    assert!(String::from_utf8_lossy(&root.body).starts_with("<!doctype html>"));
    for (path, content_type, start) in [
        ("/ui/", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "// jobq's web page",
        ),
        (
            "/ui/style.css",
            "text/css; charset=utf-8",
            "/* jobq's web page",
        ),
    ] {
        let answer = send(&page, Method::GET, path, &[]).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(
            header(&answer, "content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(
            header(&answer, "content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        );
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
        assert!(
            String::from_utf8_lossy(&answer.body).starts_with(start),
            "{path}"
        );
    }
    let missing = send(&page, Method::GET, "/ui/nothing.js", &[]).await;
    assert_error(
        &missing,
        404,
        "No such page: the web page is at /ui/.",
        json!({}),
    );
    let posted = send(&page, Method::POST, "/ui/", &[]).await;
    assert_error(
        &posted,
        405,
        "Method POST is not allowed here; use GET.",
        json!({}),
    );
    let get_session = send(&page, Method::GET, "/ui/session", &[]).await;
    assert_eq!(get_session.status, 405);
}

/// The folder of the page's screenshots: `target/ui-screenshots` (a CI artifact).
fn screenshots() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder");
    let folder = target.join("ui-screenshots");
    std::fs::create_dir_all(&folder).expect("the screenshot folder");
    folder
}

/// A component registered with an image the engine does not have.
const MISSING: &str = r#"
[[components]]
id = "keboola.ex-missing"
image = "local/jobq-ui-test-missing"
tag = "0.0.1"
"#;

#[tokio::test]
async fn the_page_in_a_real_browser() {
    common::tools::ensure(&["chromium", "--version"], "chromium");
    let python = common::python::playwright_python();
    let t = TestDaemon::start_with(Options::default(), "", MISSING).await;

    // Finished jobs: one with a secret and an output table, one that failed, a debug job of
    // a stored configuration.
    let table = json!({"storage": {"output": {"tables": [
        {"source": "result.csv", "destination": "out.c-ui.result"}
    ]}}, "parameters": {
        "#password": "pl41n-s3cret",
        "print": ["hello from the fixture"],
        "write_tables": [{"name": "result.csv", "content": "id,name\n1,one\n"}],
    }});
    let succeeded = t
        .run(json!({"component": COMPONENT, "configData": table}))
        .await;
    assert_eq!(succeeded["status"], "success", "{succeeded:#}");
    let failed = t
        .run(
            json!({"component": COMPONENT, "configData": {"parameters": {
                "print": ["going to fail"], "exit_code": 1,
            }}}),
        )
        .await;
    assert_eq!(failed["status"], "error", "{failed:#}");
    let configs = format!("/v2/storage/components/{COMPONENT}/configs");
    let created = t
        .post(
            &configs,
            &json!({"configurationId": "ui-config", "name": "ui", "configuration": {
                "parameters": {"print": ["debugging"]}
            }}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    let debugged = t
        .run(json!({"component": COMPONENT, "config": "ui-config", "mode": "debug"}))
        .await;
    assert_eq!(debugged["status"], "success", "{debugged:#}");

    // A container job with a child job per row.
    let rows = format!("{configs}/ui-rows/rows");
    let created = t
        .post(
            &configs,
            &json!({"configurationId": "ui-rows", "name": "rows"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    for row in ["first", "second"] {
        let configuration = json!({"parameters": {"print": [format!("row {row}")]}});
        let body = json!({"rowId": row, "name": row, "configuration": configuration});
        let created = t.post(&rows, &body).await;
        assert_eq!(created.status, 201, "{}", created.json());
    }
    let container = t
        .run(json!({"component": COMPONENT, "config": "ui-rows", "parallelism": "2"}))
        .await;
    assert_eq!(container["status"], "success", "{container:#}");
    let children = t
        .get(&format!(
            "/search/jobs?parentRunId={}&sortOrder=asc",
            container["runId"].as_str().unwrap()
        ))
        .await
        .json();
    let children: Vec<String> = children.as_array().unwrap().iter().map(id).collect();
    assert_eq!(children.len(), 2, "{children:?}");

    // A running job to kill (the page makes one more, whose lines it watches come).
    let to_kill = t.create(COMPONENT, json!({"sleep": 300})).await;
    t.wait_status(&id(&to_kill), "processing").await;

    let downloads = tempfile::tempdir().unwrap();
    let spec = json!({
        "url": t.client.url("/ui/"),
        "token": TOKEN,
        "chromium": "/usr/bin/chromium",
        "screenshots": screenshots(),
        "downloads": downloads.path(),
        "jobs": {
            "succeeded": id(&succeeded),
            "failed": id(&failed),
            "debugged": id(&debugged),
            "kill": id(&to_kill),
            "container": id(&container),
        },
        "children": children,
        "component": COMPONENT,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui_browser.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(spec.to_string())
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.ends_with("all pages checked\n"), "{stdout}");

    // What the page did, seen through the API: the kill, and the archive it downloaded is
    // the stored one.
    assert_eq!(t.job(&id(&to_kill)).await["status"], "terminated");
    let files = t
        .get(&format!(
            "/v2/storage/files?tags[]=jobId:{}&tags[]=debug",
            id(&debugged)
        ))
        .await
        .json();
    let stage_0: &Value = files
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["name"] == "stage_0.zip")
        .expect("a stage_0.zip");
    let stored = t
        .get(&format!("/v2/storage/files/{}/download", stage_0["id"]))
        .await;
    let downloaded = std::fs::read(downloads.path().join("stage_0.zip")).unwrap();
    assert!(downloaded == stored.body.as_ref(), "the download differs");
}

#[tokio::test]
async fn behind_https_the_cookie_is_secure() {
    let top = r#"public_url = "https://jobq.example.com""#;
    let t = TestDaemon::start_with(Options::without_docker(), top, "").await;
    let answer = log_in(&anonymous(&t), TOKEN).await;
    assert_eq!(answer.status, 200);
    let set_cookie = header(&answer, "set-cookie").expect("a cookie");
    assert_eq!(
        set_cookie.split_once("; ").unwrap().1,
        "Path=/ui; Max-Age=28800; HttpOnly; SameSite=Strict; Secure"
    );
}
