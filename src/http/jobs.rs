//! The Queue API's endpoints: jobs (create, read or long-poll, kill, search, group, stats), their
//! events and token verification; each parses the request, asks the queue, renders the answer.

use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::query::{self, Query};
use crate::http::{render, RUN_ID_HEADER};
use crate::model::Mode;
use crate::queue::{NewJob, Queue};
use crate::settings::Token;

/// What every handler may look at.
pub struct Context<'a> {
    pub queue: &'a Queue,
    pub token: &'a Token,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
}

type Answer = Result<(StatusCode, Value), ApiError>;

/// `POST /jobs`
pub fn create_job(context: &Context<'_>, body: &[u8]) -> Answer {
    let fields = Fields::from_body(context.headers, body)?;
    let parent_run_id = match context.headers.get(RUN_ID_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("The X-KBC-RunId header is not valid text."))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let mode = match fields.text("mode")? {
        None => None,
        Some(text) => Some(Mode::parse(&text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Field \"mode\" must be one of run, forceRun, debug; \"{text}\" given."
            ))
        })?),
    };
    let request = NewJob {
        component: fields
            .text("component")?
            .ok_or_else(|| ApiError::bad_request("Field \"component\" is required."))?,
        mode,
        config: fields.id("config")?,
        config_data: fields.object("configData")?.unwrap_or_else(|| json!({})),
        config_row_ids: fields.list("configRowIds")?.unwrap_or_default(),
        branch_id: fields.id("branchId")?,
        tag: fields.text("tag")?,
        variable_values_id: fields.id("variableValuesId")?,
        variable_values_data: fields.object("variableValuesData")?,
        backend: fields.object("backend")?,
        parallelism: fields.id("parallelism")?,
        behavior: fields.object("behavior")?,
        delay: fields.seconds("delay")?,
        delayed_start_time: fields.text("delayedStartTime")?,
        parent_run_id,
    };
    let job = tokio::task::block_in_place(|| context.queue.create(request, context.token))?;
    Ok((
        StatusCode::CREATED,
        render::job(&job, &context.queue.settings().public_url),
    ))
}

/// `GET /jobs/{id}`; with `wait=<seconds>` (at most 60) and `index=<n>`, a long poll: the answer
/// comes once the job's revision (the `X-Jobq-Index` header) is above `n`, or after `wait`.
pub async fn get_job(
    context: &Context<'_>,
    id: &str,
) -> Result<(StatusCode, Value, u64), ApiError> {
    let job = match context.query.number("wait")? {
        Some(wait) => {
            let index = context.query.number("index")?.unwrap_or(0);
            let wait = std::time::Duration::from_secs(wait.min(MAX_WAIT_SECONDS));
            context.queue.job_after(id, index, wait).await?
        }
        None => context.queue.job(id)?,
    };
    let body = render::job(&job, &context.queue.settings().public_url);
    Ok((StatusCode::OK, body, job.revision))
}

/// The longest long poll.
const MAX_WAIT_SECONDS: u64 = 60;

/// `POST /jobs/{id}/kill`
pub fn kill_job(context: &Context<'_>, id: &str) -> Answer {
    let job = tokio::task::block_in_place(|| context.queue.kill(id))?;
    Ok((
        StatusCode::ACCEPTED,
        render::job(&job, &context.queue.settings().public_url),
    ))
}

/// `GET /search/jobs` and `GET /jobs`
pub fn search_jobs(context: &Context<'_>) -> Answer {
    let filter = query::job_query(context.query)?;
    let public_url = &context.queue.settings().public_url;
    let jobs = context.queue.search(&filter)?;
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|job| render::job(job, public_url))
        .collect();
    Ok((StatusCode::OK, Value::Array(jobs)))
}

/// `GET /search/grouped-jobs`: jobs matching the listing filters, grouped by `groupBy[]`
/// (`projectId`, `branchId`, `componentId`, `configId`), at most `jobsPerGroup` (default 5) in
/// each group; groups in the order of their first job, `limit` groups at most.
pub fn grouped_jobs(context: &Context<'_>) -> Answer {
    const FIELDS: [&str; 4] = ["projectId", "branchId", "componentId", "configId"];
    let group_by = context.query.all("groupBy");
    if group_by.is_empty()
        || group_by
            .iter()
            .any(|field| !FIELDS.contains(&field.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Parameter \"groupBy\" must list one or more of {}.",
            FIELDS.join(", ")
        )));
    }
    let per_group = context.query.number("jobsPerGroup")?.unwrap_or(5) as usize;
    if per_group == 0 {
        return Err(ApiError::bad_request(
            "Parameter \"jobsPerGroup\" must be at least 1.",
        ));
    }
    let mut filter = query::job_query(context.query)?;
    // Grouped listings sort ascending unless told otherwise.
    filter.descending = context.query.one("sortOrder") == Some("desc");
    let groups_limit = filter.limit;
    let public_url = &context.queue.settings().public_url;
    let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
    for job in context.queue.search_all(&filter)? {
        let key: serde_json::Map<String, Value> = group_by
            .iter()
            .map(|field| {
                let value = match field.as_str() {
                    "projectId" => json!(job.project_id),
                    "branchId" => json!(job.branch_id),
                    "componentId" => json!(job.component),
                    _ => json!(job.config),
                };
                (field.clone(), value)
            })
            .collect();
        let key = Value::Object(key);
        match groups.iter().position(|(group, _)| *group == key) {
            Some(at) if groups[at].1.len() < per_group => {
                groups[at].1.push(render::job(&job, public_url))
            }
            Some(_) => {}
            None if groups.len() < groups_limit => {
                groups.push((key, vec![render::job(&job, public_url)]))
            }
            None => {}
        }
    }
    let groups = groups
        .into_iter()
        .map(|(group, jobs)| json!({"group": group, "jobs": jobs}))
        .collect();
    Ok((StatusCode::OK, Value::Array(groups)))
}

/// `GET /stats/project`: the seconds all jobs spent processing.
pub fn project_stats(context: &Context<'_>) -> Answer {
    let sum: i64 = context
        .queue
        .search_all(&crate::model::JobQuery::default())?
        .iter()
        .filter_map(|job| job.duration_seconds())
        .sum();
    Ok((StatusCode::OK, json!({"jobs": {"durationSum": sum}})))
}

/// `GET /v2/storage/events?runId=<job id>`: the job's events, newest first.
pub fn events(context: &Context<'_>) -> Answer {
    let query = context.query;
    let run_id = query.one("runId").ok_or_else(|| {
        ApiError::bad_request(
            "Parameter \"runId\" is required: the id of the job whose events to list.",
        )
    })?;
    let limit = query.number("limit")?.unwrap_or(100).min(1000) as usize;
    let offset = query.number("offset")?.unwrap_or(0) as usize;
    let since_id = query.number("sinceId")?;
    let events = context.queue.events(run_id, since_id, offset, limit)?;
    Ok((
        StatusCode::OK,
        Value::Array(events.iter().map(render::event).collect()),
    ))
}

/// `GET /v2/storage/tokens/verify`
pub fn verify_token(context: &Context<'_>) -> (StatusCode, Value) {
    let project = &context.queue.settings().project;
    (
        StatusCode::OK,
        json!({
            "id": context.token.id,
            "description": context.token.description,
            "owner": {"id": project.id, "name": project.name},
        }),
    )
}
