//! The `jobq` command line (the binary's whole body): `serve` runs the daemon, `demo` runs one
//! job end to end, `run`/`debug` run and inspect jobs of a running daemon, `load-table` loads a
//! CSV file into one of its Storage tables. With `main.rs`, the only non-test code using `anyhow`.

pub mod bench_fill;
pub mod client;
pub mod demo;
pub mod jobs;
pub mod replay;
pub mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::cli::client::{ApiClient, ClientError};
use crate::cli::jobs::{CommandError, Output};
use crate::cli::run::RunError;
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
        #[command(flatten)]
        daemon: DaemonArgs,
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
    /// Run a component's configuration (or configData) as a job: prints its id at once, its
    /// events as they come (on stderr), then the job (JSON) or a summary line. Exit code 0 when
    /// it succeeded, 1 when it failed, 2 for a refused request, 3 when jobq is unreachable.
    Run(RunArgs),
    /// List jobs, newest first.
    Jobs {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Only jobs in this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        #[arg(long)]
        component: Option<String>,
        #[arg(long)]
        config: Option<String>,
        /// Only jobs created since: 30m, 1h, 2d, or a time such as 2026-11-01.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, value_enum)]
        output: Option<Output>,
    },
    /// Show a job and the jobs under it (container children, flow phases and tasks).
    Status {
        job: String,
        #[command(flatten)]
        daemon: DaemonArgs,
        #[arg(long, value_enum)]
        output: Option<Output>,
    },
    /// Print a job's events, oldest first; -f follows them live until the job ends.
    Logs {
        job: String,
        #[command(flatten)]
        daemon: DaemonArgs,
        #[arg(short, long)]
        follow: bool,
        /// Only events of this type: info, warn or error (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// The events of the jobs under it too.
        #[arg(long)]
        tree: bool,
        #[arg(long, value_enum)]
        output: Option<Output>,
    },
    /// Kill jobs (and the jobs under them).
    Kill {
        #[arg(required = true)]
        jobs: Vec<String>,
        #[command(flatten)]
        daemon: DaemonArgs,
        #[arg(long, value_enum)]
        output: Option<Output>,
    },
    /// List the components the daemon may run.
    Components {
        #[command(flatten)]
        daemon: DaemonArgs,
        #[arg(long, value_enum)]
        output: Option<Output>,
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

/// What `jobq run` runs and how it waits.
#[derive(clap::Args)]
struct RunArgs {
    /// `component`, `component/config` or `component/config@tag` (as kbc takes them);
    /// or give --component and --config.
    target: Option<String>,
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Run in debug mode and unpack the stage archives into --out.
    #[arg(long)]
    debug: bool,
    /// The component's id (with --image: the id the development component runs as).
    #[arg(long, visible_alias = "component-id")]
    component: Option<String>,
    /// Run this image (`repository:tag`), registered or not, as a development component with
    /// default limits; the daemon must run with `dev_mode = true`.
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
    /// Return once the job is created.
    #[arg(long = "async")]
    no_wait: bool,
    /// Stop following after this many seconds (the job goes on; exit code 1).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The image tag to run.
    #[arg(long)]
    tag: Option<String>,
    /// A dev branch's id.
    #[arg(long)]
    branch: Option<String>,
    /// run, debug or forceRun.
    #[arg(long)]
    mode: Option<String>,
    /// A variable's value, as variableValuesData.
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    variables: Vec<String>,
    #[arg(long, value_enum)]
    output: Option<Output>,
}

/// Where the daemon is and how to talk to it: options, else `JOBQ_URL` and `JOBQ_TOKEN`, else
/// `KBC_STORAGE_API_HOST` and `KBC_STORAGE_API_TOKEN` (as Keboola's own tools read them).
#[derive(clap::Args)]
struct DaemonArgs {
    /// The daemon's address, http or https, with a base path when a proxy serves it under one
    /// [default: http://127.0.0.1:8080].
    #[arg(long, env = "JOBQ_URL")]
    url: Option<String>,
    /// An API token of the daemon.
    #[arg(long, env = "JOBQ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an https URL, besides the usual roots.
    #[arg(long, env = "JOBQ_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl DaemonArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        let fallback = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = self
            .url
            .clone()
            .or_else(|| fallback("KBC_STORAGE_API_HOST"))
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
        let token = self
            .token
            .clone()
            .or_else(|| fallback("KBC_STORAGE_API_TOKEN"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no token: give --token or set JOBQ_TOKEN (or KBC_STORAGE_API_TOKEN)"
                )
            })?;
        Ok(ApiClient::from_url(&url, &token, self.ca_cert.as_deref())?)
    }
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
            if let Some(JobFailed(code)) = error.downcast_ref() {
                return ExitCode::from(*code);
            }
            eprintln!("jobq: {}", crate::error::chain(error.as_ref()));
            ExitCode::from(exit_code(&error))
        }
    }
}

/// A job `jobq run` followed did not succeed (it printed why): the exit code to end with.
#[derive(Debug, thiserror::Error)]
#[error("the job did not succeed")]
struct JobFailed(u8);

/// 2 for a request jobq refused, 3 when jobq is unreachable, else 1.
fn exit_code(error: &anyhow::Error) -> u8 {
    let command = match error.downcast_ref() {
        Some(RunError::Command(command)) => Some(command),
        _ => error.downcast_ref::<CommandError>(),
    };
    match (command, error.downcast_ref::<ClientError>()) {
        (Some(command), _) => command.exit_code(),
        (None, Some(ClientError::Url { .. })) => 2,
        (None, Some(_)) => 3,
        (None, None) => 1,
    }
}

/// Runs `work` to its end on a runtime of its own.
fn block_on<F: std::future::Future<Output = Result<(), CommandError>>>(
    work: F,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work)?)
}

/// Runs a command other than `serve`.
fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config),
        Command::Demo => demo::run().map(drop),
        Command::LoadTable {
            daemon,
            table,
            file,
            incremental,
            primary_key,
        } => load_table(&daemon, &table, &file, incremental, &primary_key),
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
        Command::Run(args) => run_job(args),
        Command::Jobs {
            daemon,
            status,
            component,
            config,
            since,
            limit,
            output,
        } => {
            let filter = jobs::Filter {
                statuses: status,
                component,
                config,
                since,
                limit,
            };
            let client = daemon.client()?;
            block_on(async move { jobs::list(&client, &filter, Output::or_default(output)).await })
        }
        Command::Status {
            job,
            daemon,
            output,
        } => {
            let client = daemon.client()?;
            block_on(async move { jobs::status(&client, &job, Output::or_default(output)).await })
        }
        Command::Logs {
            job,
            daemon,
            follow,
            types,
            tree,
            output,
        } => {
            let logs = jobs::Logs {
                follow,
                types,
                tree,
            };
            let client = daemon.client()?;
            block_on(
                async move { jobs::logs(&client, &job, &logs, Output::or_default(output)).await },
            )
        }
        Command::Kill {
            jobs: ids,
            daemon,
            output,
        } => {
            let client = daemon.client()?;
            block_on(async move { jobs::kill(&client, &ids, Output::or_default(output)).await })
        }
        Command::Components { daemon, output } => {
            let client = daemon.client()?;
            block_on(async move { jobs::components(&client, Output::or_default(output)).await })
        }
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
    daemon: &DaemonArgs,
    table: &str,
    file: &Path,
    incremental: bool,
    primary_key: &[String],
) -> anyhow::Result<()> {
    let csv = std::fs::read(file)
        .with_context(|| format!("cannot read {}; check the --file path", file.display()))?;
    let client = daemon.client()?;
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
    let client = daemon.client()?;
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
    let client = daemon.client()?;
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

/// The component id of `jobq run --image` without `--component`.
const DEVELOPMENT_COMPONENT: &str = "jobq.dev-component";

/// `jobq run`: creates the job, follows it to its end (events on stderr), prints it.
fn run_job(args: RunArgs) -> anyhow::Result<()> {
    let client = args.daemon.client()?;
    let output = Output::or_default(args.output);
    let request = run_request(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let job = run::create(&client, &request).await?;
        let id = job["id"].as_str().unwrap_or_default().to_string();
        eprintln!(
            "Created job {id} ({})",
            job["url"].as_str().unwrap_or_default()
        );
        if args.no_wait {
            match output {
                Output::Json => println!("{job:#}"),
                Output::Table => println!("{id}"),
            }
            return Ok(());
        }
        let started = std::time::Instant::now();
        let progress = jobs::elapsed_line(&id);
        let followed = jobs::follow(&client, &id, true, |event| {
            let elapsed = jobs::human_duration(started.elapsed().as_secs() as i64);
            progress.suspend(|| {
                eprintln!(
                    "[{elapsed:>6}] {:<5} {}",
                    event["type"].as_str().unwrap_or_default(),
                    event["message"].as_str().unwrap_or_default()
                )
            });
        });
        let limit = std::time::Duration::from_secs(args.timeout.unwrap_or(u64::MAX / 4));
        let ended = tokio::select! {
            followed = followed => Ok(followed?),
            _ = tokio::signal::ctrl_c() => Err(None),
            () = tokio::time::sleep(limit) => Err(Some(limit)),
        };
        progress.finish_and_clear();
        match ended {
            Ok(_) => {}
            Err(None) => {
                eprintln!(
                    "Stopped following job {id}: it keeps running. Kill it with: jobq kill {id}"
                );
                return Err(JobFailed(130).into());
            }
            Err(Some(limit)) => {
                eprintln!(
                    "Stopped following job {id} after {}s (--timeout): it keeps running. Kill it \
                     with: jobq kill {id}",
                    limit.as_secs()
                );
                return Err(JobFailed(1).into());
            }
        }
        let job = jobs::get(&client, &format!("/jobs/{id}"), &format!("job {id}")).await?;
        if args.debug {
            for stage in run::fetch(&client, &id, &args.out).await? {
                println!("{}", stage.folder.display());
            }
        }
        let status = job["status"].as_str().unwrap_or_default();
        let summary = format!(
            "Job {id} ended {status} after {}: {}",
            jobs::human_duration(job["durationSeconds"].as_i64().unwrap_or(0)),
            job["result"]["message"].as_str().unwrap_or_default()
        );
        match output {
            Output::Json => {
                eprintln!("{summary}");
                println!("{}", serde_json::to_string_pretty(&job)?);
            }
            Output::Table => println!("{summary}"),
        }
        match status {
            "success" | "warning" => Ok(()),
            _ => Err(JobFailed(1).into()),
        }
    })
}

/// The `POST /jobs` body of `jobq run`'s arguments.
fn run_request(args: &RunArgs) -> anyhow::Result<serde_json::Value> {
    let (mut component, mut config, mut tag) = (
        args.component.clone(),
        args.config.clone(),
        args.tag.clone(),
    );
    if let Some(target) = &args.target {
        let (rest, target_tag) = match target.split_once('@') {
            Some((rest, tag)) => (rest, Some(tag.to_string())),
            None => (target.as_str(), None),
        };
        let (target_component, target_config) = match rest.split_once('/') {
            Some((component, config)) => (component, Some(config.to_string())),
            None => (rest, None),
        };
        component = Some(target_component.to_string());
        config = target_config.or(config);
        tag = target_tag.or(tag);
    }
    let component = match (component, &args.image) {
        (Some(component), _) => component,
        (None, Some(_)) => DEVELOPMENT_COMPONENT.to_string(),
        (None, None) => anyhow::bail!(
            "name the component: jobq run <component>[/<config>[@<tag>]], --component or --image"
        ),
    };
    let mut request = serde_json::json!({"component": component, "configRowIds": args.rows});
    let mode = match (args.debug, &args.mode) {
        (true, _) => Some("debug".to_string()),
        (false, mode) => mode.clone(),
    };
    for (key, value) in [
        ("config", config),
        ("tag", tag),
        ("branchId", args.branch.clone()),
        ("mode", mode),
    ] {
        if let Some(value) = value {
            request[key] = serde_json::json!(value);
        }
    }
    if let Some(data) = &args.config_data {
        let text = match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {path}; check the --config-data file"))?,
            None => data.clone(),
        };
        request["configData"] =
            serde_json::from_str(&text).context("--config-data is not valid JSON")?;
    }
    if let Some(image) = &args.image {
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
    if !args.variables.is_empty() {
        let values = args
            .variables
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => Ok(serde_json::json!({"name": name, "value": value})),
                None => Err(anyhow::anyhow!("--variable {pair}: give name=value")),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        request["variableValuesData"] = serde_json::json!({"values": values});
    }
    Ok(request)
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
