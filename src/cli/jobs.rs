//! The operator's commands over the API: `jobq jobs` (a listing), `jobq status` (a job and its
//! child tree), `jobq logs` (events, `-f` live from the event stream), `jobq kill` and
//! `jobq components`; each prints a table for people or JSON for programs.

use std::io::IsTerminal;

use serde_json::Value;

use crate::cli::client::{Answer, ApiClient, ClientError};

/// How a command prints what it found: `table` on a terminal, `json` otherwise, so that a pipe
/// into `jq` always works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// `given`, else the default for where stdout goes.
    pub fn or_default(given: Option<Output>) -> Output {
        given.unwrap_or(match std::io::stdout().is_terminal() {
            true => Output::Table,
            false => Output::Json,
        })
    }
}

/// Why a command failed, and so its exit code: 2 for a refused request, 3 when jobq is not
/// reachable (1, a failed job, is `run`'s).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Unreachable(ClientError),
    #[error("jobq answered {status} to {what}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Refused { .. } => 2,
            CommandError::Unreachable(_) => 3,
        }
    }
}

impl From<ClientError> for CommandError {
    fn from(error: ClientError) -> CommandError {
        CommandError::Unreachable(error)
    }
}

/// What `jobq jobs` selects.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub statuses: Vec<String>,
    pub component: Option<String>,
    pub config: Option<String>,
    /// Jobs created since: `1h`, `2d`, or anything `createdTimeFrom` takes.
    pub since: Option<String>,
    pub limit: u32,
}

/// `jobq jobs`: the newest jobs that `filter` selects.
pub async fn list(client: &ApiClient, filter: &Filter, output: Output) -> Result<(), CommandError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for status in &filter.statuses {
        query.append_pair("status[]", status);
    }
    if let Some(component) = &filter.component {
        query.append_pair("componentId", component);
    }
    if let Some(config) = &filter.config {
        query.append_pair("configId", config);
    }
    if let Some(since) = &filter.since {
        query.append_pair("createdTimeFrom", &since_parameter(since));
    }
    query.append_pair("limit", &filter.limit.to_string());
    let jobs = get(
        client,
        &format!("/search/jobs?{}", query.finish()),
        "the job listing",
    )
    .await?;
    match output {
        Output::Json => println!("{jobs:#}"),
        Output::Table => print!(
            "{}",
            job_table(jobs.as_array().map_or(&[][..], Vec::as_slice))
        ),
    }
    Ok(())
}

/// `jobq status <job>`: the job and, under it, the jobs of its run (children, phases, tasks).
pub async fn status(client: &ApiClient, id: &str, output: Output) -> Result<(), CommandError> {
    let job = get(client, &format!("/jobs/{id}"), &format!("job {id}")).await?;
    let run_id = job["runId"].as_str().unwrap_or(id).to_string();
    let mut tree = vec![job];
    let mut parents = vec![run_id];
    while let Some(parent) = parents.pop() {
        let path = format!("/search/jobs?parentRunId={parent}&sortOrder=asc&limit=500");
        let children = get(client, &path, &format!("the children of run {parent}")).await?;
        for child in children.as_array().into_iter().flatten() {
            parents.extend(child["runId"].as_str().map(str::to_string));
            tree.push(child.clone());
        }
    }
    tree.sort_by_key(run_key);
    match output {
        Output::Json => println!("{}", Value::Array(tree)),
        Output::Table => {
            print!("{}", job_table(&tree));
            if let Some(message) = tree[0]["result"]["message"].as_str() {
                println!("\n{message}");
            }
        }
    }
    Ok(())
}

/// What `jobq logs` shows.
#[derive(Debug, Clone, Default)]
pub struct Logs {
    /// Follow the job live until it ends.
    pub follow: bool,
    /// Only events of these types (`info`, `warn`, `error`); all when empty.
    pub types: Vec<String>,
    /// The events of the jobs under it too.
    pub tree: bool,
}

/// `jobq logs <job>`: its events oldest first; with `follow`, live until the job ends.
pub async fn logs(
    client: &ApiClient,
    id: &str,
    logs: &Logs,
    output: Output,
) -> Result<(), CommandError> {
    let print = |event: &Value| {
        let wanted = logs.types.is_empty()
            || logs
                .types
                .iter()
                .any(|t| event["type"].as_str() == Some(t.as_str()));
        if wanted {
            match output {
                Output::Json => println!("{event}"),
                Output::Table => println!("{}", event_line(event)),
            }
        }
    };
    if logs.follow {
        return follow(client, id, logs.tree, print).await.map(drop);
    }
    let tree = if logs.tree { "&tree=1" } else { "" };
    let mut events = Vec::new();
    let mut since = 0u64;
    loop {
        let path = format!("/v2/storage/events?runId={id}{tree}&limit=1000&sinceId={since}");
        let page = get(client, &path, &format!("the events of job {id}")).await?;
        let page = page.as_array().cloned().unwrap_or_default();
        // Newest first: the page's first event is the newest; the next page starts after it.
        let newest = page.first().and_then(event_id);
        let full = page.len() == 1000;
        events.extend(page.into_iter().rev());
        match (full, newest) {
            (true, Some(newest)) => since = newest,
            _ => break,
        }
    }
    events.iter().for_each(print);
    Ok(())
}

/// The line under a followed job's events with the time since following began: drawn on a
/// terminal only (indicatif hides it when stderr is not one). Print events through its
/// `suspend`.
pub fn elapsed_line(id: &str) -> indicatif::ProgressBar {
    let line = indicatif::ProgressBar::new_spinner().with_message(format!("job {id}"));
    line.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} running for {elapsed}")
            .expect("a valid template"),
    );
    line.enable_steady_tick(std::time::Duration::from_millis(200));
    line
}

/// Follows the job's event stream, giving each event to `each`; the job's final status.
pub async fn follow(
    client: &ApiClient,
    id: &str,
    tree: bool,
    mut each: impl FnMut(&Value),
) -> Result<String, CommandError> {
    let tree = if tree { "?tree=1" } else { "" };
    let path = format!("/jobs/{id}/events/stream{tree}");
    let mut stream = client.get_streaming(&path).await?;
    if stream.status != 200 {
        let answer = stream.collect().await?;
        return Err(refused(&format!("the event stream of job {id}"), &answer));
    }
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await? {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let mut kind = None;
            let mut data = Value::Null;
            for line in message.lines() {
                if let Some(event) = line.strip_prefix("event: ") {
                    kind = Some(event.to_string());
                } else if let Some(json) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(json).unwrap_or(Value::Null);
                }
            }
            match kind.as_deref() {
                None if !data.is_null() => each(&data),
                Some("end") => return Ok(data["status"].as_str().unwrap_or_default().to_string()),
                Some("error") => {
                    return Err(CommandError::Refused {
                        what: format!("the event stream of job {id}"),
                        status: 200,
                        message: data["error"].as_str().unwrap_or_default().to_string(),
                    })
                }
                _ => {}
            }
        }
    }
    // The connection ended without `end`: the daemon stopped.
    Err(CommandError::Refused {
        what: format!("the event stream of job {id}"),
        status: 200,
        message: "the stream ended before the job did (did jobq stop?)".to_string(),
    })
}

/// `jobq kill <job>...`: asks for each job's termination; prints each answer.
pub async fn kill(client: &ApiClient, ids: &[String], output: Output) -> Result<(), CommandError> {
    let mut failed = None;
    for id in ids {
        let answer = client
            .post_json(&format!("/jobs/{id}/kill"), &Value::Null)
            .await?;
        if answer.status != 202 {
            let error = refused(&format!("the kill of job {id}"), &answer);
            eprintln!("jobq: {error}");
            failed = Some(error);
            continue;
        }
        let job = answer.json();
        match output {
            Output::Json => println!("{job}"),
            Output::Table => println!(
                "Job {id}: asked to terminate (now {})",
                job["status"].as_str().unwrap_or_default()
            ),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `jobq components`: the components this daemon may run, each with whether the engine has its
/// image (`imagePresent`: null while the engine does not answer).
pub async fn components(client: &ApiClient, output: Output) -> Result<(), CommandError> {
    let mut components = get(client, "/v2/storage/components", "the component listing").await?;
    let status = get(client, "/status", "the daemon's status").await?;
    let missing: Option<Vec<&str>> = status["missingImages"].as_array().map(|missing| {
        missing
            .iter()
            .filter_map(|m| m["component"].as_str())
            .collect()
    });
    for component in components.as_array_mut().into_iter().flatten() {
        let id = component["id"].as_str().unwrap_or_default();
        let present = missing.as_ref().map(|missing| !missing.contains(&id));
        component["imagePresent"] = present.map_or(Value::Null, Value::Bool);
    }
    match output {
        Output::Json => println!("{components:#}"),
        Output::Table => {
            let image = |c: &Value| match c["imagePresent"].as_bool() {
                Some(true) => "present",
                Some(false) => "missing",
                None => "unknown (engine down)",
            };
            let rows: Vec<Vec<String>> = components
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    vec![
                        text(&c["id"]),
                        text(&c["type"]),
                        text(&c["name"]),
                        image(c).to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["COMPONENT", "TYPE", "NAME", "IMAGE"], &rows));
        }
    }
    Ok(())
}

/// The JSON of a 200 answer to `GET path`, else a `Refused` naming `what`.
pub async fn get(client: &ApiClient, path: &str, what: &str) -> Result<Value, CommandError> {
    let answer = client.get(path).await?;
    if answer.status != 200 {
        return Err(refused(what, &answer));
    }
    Ok(answer.json())
}

pub fn refused(what: &str, answer: &Answer) -> CommandError {
    let body = answer.json();
    CommandError::Refused {
        what: what.to_string(),
        status: answer.status,
        message: body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned()),
    }
}

/// `1h`, `30m`, `2d` as `createdTimeFrom`'s `-N unit`; anything else as it is.
fn since_parameter(since: &str) -> String {
    let (number, unit) = since.split_at(since.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
    let unit = match unit {
        "s" => "seconds",
        "m" => "minutes",
        "h" => "hours",
        "d" => "days",
        _ => return since.to_string(),
    };
    match number.is_empty() {
        true => since.to_string(),
        false => format!("-{number} {unit}"),
    }
}

/// Sorts a job tree by run id, numerically part by part: `10`, `10.11`, `10.11.12`, `10.13`.
fn run_key(job: &Value) -> Vec<u64> {
    job["runId"]
        .as_str()
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The jobs as a table: id, run id (indented by depth), component/config, status, age,
/// duration, message.
fn job_table(jobs: &[Value]) -> String {
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let run = text(&job["runId"]);
            let depth = run.matches('.').count();
            let created = job["createdTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let age = created.map_or(String::new(), |t| {
                human_duration((now - t.with_timezone(&chrono::Utc)).num_seconds())
            });
            let duration = job["durationSeconds"]
                .as_i64()
                .map_or(String::new(), human_duration);
            let config = match job["config"].as_str() {
                Some(config) if !config.is_empty() => {
                    format!("{}/{config}", text(&job["component"]))
                }
                _ => text(&job["component"]),
            };
            let message: String = text(&job["result"]["message"]).chars().take(60).collect();
            vec![
                text(&job["id"]),
                format!("{}{run}", "  ".repeat(depth)),
                config,
                text(&job["status"]),
                age,
                duration,
                message,
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "RUN",
            "COMPONENT/CONFIG",
            "STATUS",
            "AGE",
            "DURATION",
            "MESSAGE",
        ],
        &rows,
    )
}

/// One event as a log line: time, type, run id, message.
fn event_line(event: &Value) -> String {
    format!(
        "{} {:<5} {} {}",
        text(&event["created"]),
        text(&event["type"]),
        text(&event["runId"]),
        text(&event["message"])
    )
}

fn event_id(event: &Value) -> Option<u64> {
    event["id"].as_str()?.parse().ok()
}

/// `value` as text: a string as it is, null as nothing.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `75` as `1m15s`, `3700` as `1h1m`, `200000` as `2d7h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Columns padded to their widest cell, two spaces apart, the last one unpadded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut line = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            match i == last {
                true => line.push_str(cell),
                false => line.push_str(&format!("{cell:<width$}  ", width = widths[i])),
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_since_read_as_people_write_them() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(75), "1m15s");
        assert_eq!(human_duration(3700), "1h1m");
        assert_eq!(human_duration(200_000), "2d7h");
        assert_eq!(since_parameter("1h"), "-1 hours");
        assert_eq!(since_parameter("30m"), "-30 minutes");
        assert_eq!(since_parameter("2026-11-01"), "2026-11-01");
        assert_eq!(since_parameter("h"), "h");
    }

    #[test]
    fn a_tree_sorts_by_run_id_numerically() {
        let jobs =
            ["10.11.12", "9", "10", "10.2", "10.11"].map(|run| serde_json::json!({"runId": run}));
        let mut sorted = jobs.to_vec();
        sorted.sort_by_key(run_key);
        let runs: Vec<&str> = sorted
            .iter()
            .map(|j| j["runId"].as_str().unwrap())
            .collect();
        assert_eq!(runs, ["9", "10", "10.2", "10.11", "10.11.12"]);
    }
}
