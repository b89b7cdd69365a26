//! The `jobq` command line (the binary's whole body): `serve` runs the daemon, `demo` runs one
//! job end to end, `run`/`debug` run and inspect jobs of a running daemon, `load-table` loads a
//! CSV file into one of its Storage tables. With `main.rs`, the only non-test code using `anyhow`.

pub mod bench_fill;
pub mod client;
pub mod demo;
pub mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::settings::LogFormat;

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
    },
    /// Run a component's configuration (or configData) as a job, wait for its end, print it.
    Run {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Run in debug mode and unpack the stage archives into --out.
        #[arg(long)]
        debug: bool,
        #[arg(long)]
        component: String,
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
    // `serve` logs as its settings say (from `info`); the other commands print their own
    // progress, which the daemon's log lines would only interleave with.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_log("warn", LogFormat::Text);
    }
    let outcome = run_command(cli.command);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jobq: {}", crate::error::chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Runs a command other than `serve`.
fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
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
        Command::Debug { job, daemon, out } => debug(&daemon, &job, &out),
        Command::Run {
            daemon,
            debug,
            component,
            config,
            config_data,
            rows,
            out,
        } => run_job(&daemon, debug, &component, config, config_data, rows, &out),
        Command::BenchFill {
            jobs,
            events_per_job,
            settings,
        } => crate::settings::Settings::load(&settings)
            .map_err(anyhow::Error::from)
            .and_then(|settings| bench_fill::fill(&settings, jobs, events_per_job)),
    }
}

/// The log on stderr, secrets redacted: `RUST_LOG` or `default_level`, in `format`, coloured
/// only on a terminal.
fn init_log(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let writer = crate::secrets::Redacting::new(std::io::stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let settings = crate::settings::Settings::load(&config)?;
    init_log("info", settings.log_format);
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
        // Under systemd (`Type=notify`), READY once recovery is done and the API answers.
        let ready = |_, _: &str| {
            if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
                tracing::warn!(%error, "cannot tell systemd that jobq is ready");
            }
        };
        crate::daemon::run(settings, ready, shutdown).await
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

fn debug(daemon: &DaemonArgs, job: &str, out: &Path) -> anyhow::Result<()> {
    let client = crate::cli::client::ApiClient::from_url(&daemon.url, &daemon.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let unpacked = runtime.block_on(run::fetch(&client, job, out))?;
    for stage in unpacked {
        println!("{}", stage.folder.display());
    }
    Ok(())
}

fn run_job(
    daemon: &DaemonArgs,
    debug: bool,
    component: &str,
    config: Option<String>,
    config_data: Option<String>,
    rows: Vec<String>,
    out: &Path,
) -> anyhow::Result<()> {
    let client = crate::cli::client::ApiClient::from_url(&daemon.url, &daemon.token)?;
    let mut request = serde_json::json!({"component": component, "configRowIds": rows});
    if let Some(config) = config {
        request["config"] = serde_json::json!(config);
    }
    if let Some(data) = config_data {
        let text = match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {path}; check the --config-data file"))?,
            None => data,
        };
        request["configData"] =
            serde_json::from_str(&text).context("--config-data is not valid JSON")?;
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
