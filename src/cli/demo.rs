//! `jobq demo`: builds the demo component image, runs one job through a real queue, shows it live.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::client::ApiClient;
use crate::daemon::Daemon;
use crate::runner::Runner;
use crate::settings::Settings;

/// The demo component's image, built locally from the fixture binary.
pub const DEMO_IMAGE: &str = "local/jobq-demo";
pub const DEMO_TAG: &str = "1.0.0";
pub const DEMO_COMPONENT: &str = "keboola.ex-demo";

/// Runs the demo; returns the final job JSON.
pub fn run() -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = tempfile::Builder::new()
        .prefix("jobq-demo-")
        .tempdir()
        .context("cannot create a temporary data folder")?;

    println!("Building the demo component image {DEMO_IMAGE}:{DEMO_TAG} locally...");
    let runner = Runner::new(None, "demo")?;
    runtime
        .block_on(runner.ensure_fixture_image(&format!("{DEMO_IMAGE}:{DEMO_TAG}")))
        .context("cannot build the demo image; is the Docker engine running?")?;

    let token = format!("demo-{:016x}", rand::random::<u64>());
    let settings = Settings::parse(&format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
[[tokens]]
id = "1"
description = "demo"
token = "{token}"
[[components]]
id = "{DEMO_COMPONENT}"
image = "{DEMO_IMAGE}"
tag = "{DEMO_TAG}"
memory = "64m"
process_timeout = 120
network = "none"
"#,
        data_dir = data_dir.path().display()
    ))?;
    let daemon = Daemon::start(settings)?;
    println!(
        "jobq listens on http://{} (store: {})",
        daemon.addr(),
        data_dir.path().join("jobq.redb").display()
    );

    let client = ApiClient::new(daemon.addr(), &token);
    let job = runtime.block_on(async {
        let created = client
            .post_json(
                "/jobs",
                &json!({
                    "component": DEMO_COMPONENT,
                    "mode": "run",
                    "configData": {"parameters": {
                        "print": ["Hello from the demo component.", "Writing a table..."],
                        "write_tables": [{"name": "out.c-demo.greetings.csv", "content": "id,greeting\n1,hello\n2,ahoj\n"}],
                        "sleep": 2,
                        "usage": [{"metric": "demo_rows", "value": 2}],
                    }},
                }),
            )
            .await?;
        if created.status != 201 {
            bail!("creating the job failed ({}): {}", created.status, created.json());
        }
        let id = created.json()["id"].as_str().unwrap_or_default().to_string();
        println!("Created job {id}; following it:");
        follow(&client, &id).await
    })?;
    daemon.stop()?;
    println!("\nFinal job:\n{}", serde_json::to_string_pretty(&job)?);
    if job["status"] != "success" {
        bail!("the demo job ended {}", job["status"]);
    }
    print!("{}", next_steps());
    Ok(job)
}

/// What to do after the demo: a daemon of one's own that runs the demo's image.
fn next_steps() -> String {
    format!(
        r#"
Next steps: the image {DEMO_IMAGE}:{DEMO_TAG} stays in your engine. To run it from a daemon of
your own, add it to a settings file (config.example.toml documents every key):

    [[tokens]]
    id = "1"
    description = "me"
    token = "<a long random token>"

    [[components]]
    id = "{DEMO_COMPONENT}"
    image = "{DEMO_IMAGE}"
    tag = "{DEMO_TAG}"

then start it and create a job:

    jobq serve --config jobq.toml
    curl -s -X POST http://127.0.0.1:8080/jobs -H 'X-StorageApi-Token: <token>' \
        -H 'Content-Type: application/json' \
        -d '{{"component": "{DEMO_COMPONENT}", "configData": {{"parameters": {{"print": ["hi"]}}}}}}'
"#
    )
}

/// Polls the job to its end, printing a progress line and each new event once.
async fn follow(client: &ApiClient, id: &str) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut last_event: Option<u64> = None;
    loop {
        let job = client.get(&format!("/jobs/{id}")).await?.json();
        let since = last_event
            .map(|id| format!("&sinceId={id}"))
            .unwrap_or_default();
        let events = client
            .get(&format!("/v2/storage/events?runId={id}{since}&limit=1000"))
            .await?
            .json();
        let mut events: Vec<Value> = events.as_array().cloned().unwrap_or_default();
        events.reverse();
        for event in &events {
            print!("\r\x1b[2K");
            println!(
                "  [{}] {}",
                event["type"].as_str().unwrap_or(""),
                event["message"].as_str().unwrap_or("")
            );
            last_event = event["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .or(last_event);
        }
        print!(
            "\r\x1b[2K  {:>5.1}s  job {id}: {}",
            started.elapsed().as_secs_f64(),
            job["status"].as_str().unwrap_or("?")
        );
        std::io::stdout().flush().ok();
        if job["isFinished"] == true {
            println!();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
