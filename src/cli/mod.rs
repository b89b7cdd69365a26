//! The `jobq` command line (the binary's whole body): `serve` runs the daemon, `demo` runs one
//! job end to end, `run`/`debug` run and inspect jobs of a running daemon, `load-table` loads a
//! CSV file into one of its Storage tables. With `main.rs`, the only non-test code using `anyhow`.

pub mod bench_fill;
pub mod client;
pub mod demo;
pub mod replay;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "jobq",
    version,
    about = "Runs Keboola component jobs on one host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon with a settings file (see config.example.toml).
    Serve {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Build the demo component image and run one job through a queue on a temporary store.
    Demo,
    /// Load a CSV file (with a header) into a Storage table of a running daemon, creating the
    /// table (and its bucket) when missing; prints the table.
    LoadTable {
        /// The daemon's address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API token of the daemon.
        #[arg(long)]
        token: String,
        /// The table id, like in.c-main.orders.
        #[arg(long, value_name = "TABLE_ID")]
        table: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Keep the table's rows (with a primary key: replace the rows with the same key).
        #[arg(long)]
        incremental: bool,
        /// The primary key of a new table (an existing table keeps its own).
        #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
        primary_key: Vec<String>,
    },
    /// Download a debug job's stage archives (stage_0.zip, ..., stage_output.zip) and unpack them.
    Debug {
        /// The job's id.
        job: String,
        #[command(flatten)]
        daemon: DaemonArgs,
        /// The folder to unpack into (one sub-folder per stage, and per row).
        #[arg(long, default_value = "debug")]
        out: PathBuf,
        /// Write the job as a keboola/datadirtest test into this folder instead (source/data
        /// from stage 0, expected/data/out from stage_output, expected-code).
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        datadirtest: Option<PathBuf>,
    },
    /// Unpack a debug job's stage and print the exact `docker run` its image ran with (or run it).
    Replay {
        /// The job's id.
        job: String,
        #[command(flatten)]
        daemon: DaemonArgs,
        /// The stage (stage_N: the folder as image N got it).
        #[arg(long, default_value_t = 0)]
        stage: usize,
        /// The row, for a job with several rows.
        #[arg(long)]
        row: Option<String>,
        /// Run the container now (its output on this terminal) instead of printing the command.
        #[arg(long)]
        exec: bool,
        /// The folder to unpack into.
        #[arg(long, default_value = "replay")]
        out: PathBuf,
    },
    /// Run a component's configuration (or configData) as a job, wait for its end, print it.
    Run {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Run in debug mode and unpack the stage archives into --out.
        #[arg(long)]
        debug: bool,
        /// The component's id (with --image: the id the development component runs as).
        #[arg(
            long,
            visible_alias = "component-id",
            required_unless_present = "image"
        )]
        component: Option<String>,
        /// Run this image (`repository:tag`), registered or not, as a development component
        /// with default limits; the daemon must run with `dev_mode = true`.
        #[arg(long, value_name = "REF", conflicts_with = "config")]
        image: Option<String>,
        /// A stored configuration's id.
        #[arg(long)]
        config: Option<String>,
        /// configData as JSON, or @FILE to read it from a file.
        #[arg(long, value_name = "JSON")]
        config_data: Option<String>,
        /// Only these rows.
        #[arg(long = "row", value_name = "ROW_ID")]
        rows: Vec<String>,
        #[arg(long, default_value = "debug")]
        out: PathBuf,
    },
    /// Store finished jobs in the store of a settings file (the store-scale benchmark's fill;
    /// the daemon must not be running).
    #[command(hide = true)]
    BenchFill {
        /// How many jobs (whole job trees: perhaps a few more).
        #[arg(long)]
        jobs: u64,
        /// Events of each job.
        #[arg(long, default_value_t = 2)]
        events_per_job: usize,
        #[arg(long, value_name = "FILE")]
        settings: PathBuf,
    },
}

/// Where the daemon is and how to talk to it.
#[derive(clap::Args)]
struct DaemonArgs {
    /// The daemon's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token of the daemon.
    #[arg(long, env = "JOBQ_TOKEN")]
    token: String,
}

/// Parses the command line, runs the command, and turns its outcome into the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; the daemon's log lines would only interleave with it.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Demo
        | Command::LoadTable { .. }
        | Command::Debug { .. }
        | Command::Replay { .. }
        | Command::Run { .. }
        | Command::BenchFill { .. } => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(crate::secrets::Redacting::new(std::io::stderr))
        .init();
    let outcome = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Demo => demo::run().map(drop),
        Command::LoadTable {
            url,
            token,
            table,
            file,
            incremental,
            primary_key,
        } => load_table(&url, &token, &table, &file, incremental, &primary_key),
        Command::Debug {
            job,
            daemon,
            out,
            datadirtest,
        } => debug(&daemon, &job, &out, datadirtest.as_deref()),
        Command::Replay {
            job,
            daemon,
            stage,
            row,
            exec,
            out,
        } => replay(&daemon, &job, stage, row.as_deref(), exec, &out),
        Command::Run {
            daemon,
            debug,
            component,
            image,
            config,
            config_data,
            rows,
            out,
        } => {
            let job = JobArgs {
                component,
                image,
                config,
                config_data,
                rows,
            };
            run_job(&daemon, debug, job, &out)
        }
        Command::BenchFill {
            jobs,
            events_per_job,
            settings,
        } => crate::settings::Settings::load(&settings)
            .map_err(anyhow::Error::from)
            .and_then(|settings| bench_fill::fill(&settings, jobs, events_per_job)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jobq: {}", crate::error::chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let settings = crate::settings::Settings::load(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            on_signal.cancel();
        });
        crate::daemon::run(settings, |_, _| {}, shutdown).await
    })?;
    Ok(())
}

fn load_table(
    url: &str,
    token: &str,
    table: &str,
    file: &Path,
    incremental: bool,
    primary_key: &[String],
) -> anyhow::Result<()> {
    let csv = std::fs::read(file)
        .with_context(|| format!("cannot read {}; check the --file path", file.display()))?;
    let client = crate::cli::client::ApiClient::from_url(url, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(client.load_table(
        table,
        bytes::Bytes::from(csv),
        incremental,
        primary_key,
    ))?;
    let body = answer.json();
    if !(200..300).contains(&answer.status) {
        let message = body["error"].as_str().map_or_else(
            || String::from_utf8_lossy(&answer.body).into_owned(),
            str::to_string,
        );
        anyhow::bail!("jobq answered {}: {message}", answer.status);
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

fn debug(
    daemon: &DaemonArgs,
    job: &str,
    out: &Path,
    datadirtest: Option<&Path>,
) -> anyhow::Result<()> {
    let client = crate::cli::client::ApiClient::from_url(&daemon.url, &daemon.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let folders = match datadirtest {
        Some(dir) => runtime.block_on(replay::datadirtest(&client, job, dir))?,
        None => runtime
            .block_on(run::fetch(&client, job, out))?
            .into_iter()
            .map(|stage| stage.folder)
            .collect(),
    };
    for folder in folders {
        println!("{}", folder.display());
    }
    Ok(())
}

fn replay(
    daemon: &DaemonArgs,
    job: &str,
    stage: usize,
    row: Option<&str>,
    exec: bool,
    out: &Path,
) -> anyhow::Result<()> {
    let client = crate::cli::client::ApiClient::from_url(&daemon.url, &daemon.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let replay = runtime.block_on(replay::replay(&client, job, stage, row, out))?;
    let note = format!(
        "# The `#` values of {}/config.json are [hidden] (secrets never leave jobq): put the \
         real values there first.",
        replay.folder.display()
    );
    let line = replay::shell_line("docker", &replay.args);
    if !exec {
        println!("{note}\n{line}");
        return Ok(());
    }
    eprintln!("{note}\n{line}");
    let status = std::process::Command::new("docker")
        .args(&replay.args)
        .status()
        .context("cannot start the docker command; is the Docker CLI installed?")?;
    if !status.success() {
        anyhow::bail!("the replayed container ended with {status}");
    }
    Ok(())
}

/// What `jobq run` runs.
struct JobArgs {
    component: Option<String>,
    image: Option<String>,
    config: Option<String>,
    config_data: Option<String>,
    rows: Vec<String>,
}

/// The component id of `jobq run --image` without `--component`.
const DEVELOPMENT_COMPONENT: &str = "jobq.dev-component";

fn run_job(daemon: &DaemonArgs, debug: bool, job: JobArgs, out: &Path) -> anyhow::Result<()> {
    let client = crate::cli::client::ApiClient::from_url(&daemon.url, &daemon.token)?;
    let component = job
        .component
        .unwrap_or_else(|| DEVELOPMENT_COMPONENT.to_string());
    let mut request = serde_json::json!({"component": component, "configRowIds": job.rows});
    if let Some(config) = job.config {
        request["config"] = serde_json::json!(config);
    }
    if let Some(data) = job.config_data {
        let text = match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {path}; check the --config-data file"))?,
            None => data,
        };
        request["configData"] =
            serde_json::from_str(&text).context("--config-data is not valid JSON")?;
    }
    if let Some(image) = job.image {
        // jobq's extension of the Queue API: the image of an unregistered component.
        if !request["configData"].is_object() {
            request["configData"] = serde_json::json!({});
        }
        let runtime = &mut request["configData"]["runtime"];
        if !(runtime.is_object() || runtime.is_null()) {
            anyhow::bail!("--config-data: `runtime` must be an object to take --image");
        }
        runtime["image"] = serde_json::json!(image);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let job = if debug {
        let (job, unpacked) = runtime.block_on(run::run_debug(&client, request, out))?;
        for stage in unpacked {
            println!("{}", stage.folder.display());
        }
        job
    } else {
        runtime.block_on(run::run_to_end(&client, &request))?
    };
    println!("{}", serde_json::to_string_pretty(&job)?);
    if job["status"] != "success" {
        anyhow::bail!(
            "{}",
            job["result"]["message"]
                .as_str()
                .unwrap_or("the job failed")
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
