//! `jobq demo`: builds the demo component image, runs one job through a real queue, shows it live.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::client::ApiClient;
use crate::cli::jobs;
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

/// Follows the job to its end, printing each event (and the elapsed time on a terminal); the
/// finished job.
async fn follow(client: &ApiClient, id: &str) -> anyhow::Result<Value> {
    let progress = jobs::elapsed_line(id);
    let followed = jobs::follow(client, id, false, |event| {
        progress.suspend(|| {
            println!(
                "  [{}] {}",
                event["type"].as_str().unwrap_or(""),
                event["message"].as_str().unwrap_or("")
            )
        })
    })
    .await;
    progress.finish_and_clear();
    followed?;
    Ok(jobs::get(client, &format!("/jobs/{id}"), &format!("job {id}")).await?)
}
