//! The Queue API's endpoints: jobs (create, read or long-poll, kill, search, group, stats), their
//! events and token verification; each parses the request, asks the queue, renders the answer.

use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::{blocking, query, render, Services, INDEX_HEADER, RUN_ID_HEADER};
use crate::model::{Job, Mode, SortKey};
use crate::queue::NewJob;
use crate::store::GroupBy;

type Reply = Result<Answer, ApiError>;

/// `POST /jobs`
pub async fn create(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let parent_run_id = match request.headers.get(RUN_ID_HEADER) {
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
    let new = NewJob {
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
        previous_job_id: fields.id("previousJobId")?,
        only_orchestration_task_ids: fields.list("onlyOrchestrationTaskIds")?,
    };
    let job = services.queue.create(new, &request.token).await?;
    let body = render::job(&job, &services.settings.public_url);
    Ok(Answer::json(StatusCode::CREATED, &body))
}

/// `GET /jobs/{id}`; with `wait=<seconds>` (at most 60) and `index=<n>`, a long poll: the answer
/// comes once the job's revision (the `X-Jobq-Index` header) is above `n`, or after `wait`.
pub async fn get(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    let job = match request.query.number("wait")? {
        Some(wait) => {
            let index = request.query.number("index")?.unwrap_or(0);
            let wait = std::time::Duration::from_secs(wait.min(MAX_WAIT_SECONDS));
            services.queue.job_after(id, index, wait).await?
        }
        None => services.queue.job(id)?,
    };
    let body = render::job(&job, &services.settings.public_url);
    Ok(Answer::ok(&body).header(INDEX_HEADER, HeaderValue::from(job.revision)))
}

/// The longest long poll.
const MAX_WAIT_SECONDS: u64 = 60;

/// `POST /jobs/{id}/kill`
pub async fn kill(services: &Services, request: Request) -> Reply {
    let job = blocking(|| services.queue.kill(request.segment("id")))?;
    let body = render::job(&job, &services.settings.public_url);
    Ok(Answer::json(StatusCode::ACCEPTED, &body))
}

/// `GET /orchestration-rerun-plan/{jobId}`
pub async fn rerun_plan(services: &Services, request: Request) -> Reply {
    let (job, tasks) = blocking(|| services.queue.rerun_plan(request.segment("jobId")))?;
    Ok(Answer::ok(&render::rerun_plan(&job, &tasks)))
}

/// `GET /search/jobs` and `GET /jobs`
pub async fn search(services: &Services, request: Request) -> Reply {
    let filter = query::job_query(&request.query)?;
    let public_url = &services.settings.public_url;
    let jobs = blocking(|| services.queue.search(&filter))?;
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|job| render::job(job, public_url))
        .collect();
    Ok(Answer::ok(&Value::Array(jobs)))
}

/// `GET /search/grouped-jobs`: jobs matching the listing filters, grouped by `groupBy[]`
/// (`projectId`, `branchId`, `componentId`, `configId`), at most `jobsPerGroup` (default 5) in
/// each group; groups in the order of their first job, `limit` groups at most. Sorted by id and
/// not by `projectId`, the store groups through its config index (`Store::search_groups`);
/// otherwise every matching job is read and grouped here.
pub async fn grouped(services: &Services, request: Request) -> Reply {
    const FIELDS: [&str; 4] = ["projectId", "branchId", "componentId", "configId"];
    let group_by = request.query.all("groupBy");
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
    let per_group = request.query.number("jobsPerGroup")?.unwrap_or(5) as usize;
    if per_group == 0 {
        return Err(ApiError::bad_request(
            "Parameter \"jobsPerGroup\" must be at least 1.",
        ));
    }
    let mut filter = query::job_query(&request.query)?;
    // Grouped listings sort ascending unless told otherwise.
    filter.descending = request.query.one("sortOrder") == Some("desc");
    let groups_limit = filter.limit;
    let has = |field: &str| group_by.iter().any(|f| f == field);
    let groups = if filter.sort_by == SortKey::Id && !has("projectId") {
        let by = GroupBy {
            component: has("componentId"),
            config: has("configId"),
            branch: has("branchId"),
        };
        blocking(|| {
            services
                .queue
                .search_groups(&filter, by, per_group, groups_limit)
        })?
    } else {
        let jobs = blocking(|| services.queue.search_all(&filter))?;
        group_in_order(jobs, group_by, per_group, groups_limit)
    };
    let public_url = &services.settings.public_url;
    let groups = groups
        .into_iter()
        .map(|jobs| {
            let group = group_key(&jobs[0], group_by);
            let jobs: Vec<Value> = jobs
                .iter()
                .map(|job| render::job(job, public_url))
                .collect();
            json!({"group": group, "jobs": jobs})
        })
        .collect();
    Ok(Answer::ok(&Value::Array(groups)))
}

/// The group of `job`: the `groupBy` fields with its values.
fn group_key(job: &Job, group_by: &[String]) -> Value {
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
    Value::Object(key)
}

/// `jobs` (in listing order) in groups by `group_by`: at most `per_group` in each, groups in
/// the order of their first job, at most `limit` groups.
fn group_in_order(
    jobs: Vec<Job>,
    group_by: &[String],
    per_group: usize,
    limit: usize,
) -> Vec<Vec<Job>> {
    let mut groups: Vec<(Value, Vec<Job>)> = Vec::new();
    for job in jobs {
        let key = group_key(&job, group_by);
        match groups.iter().position(|(group, _)| *group == key) {
            Some(at) if groups[at].1.len() < per_group => groups[at].1.push(job),
            Some(_) => {}
            None if groups.len() < limit => groups.push((key, vec![job])),
            None => {}
        }
    }
    groups.into_iter().map(|(_, jobs)| jobs).collect()
}

/// `GET /stats/project`: the seconds all jobs spent processing.
pub async fn project_stats(services: &Services, _request: Request) -> Reply {
    let sum = blocking(|| services.queue.duration_sum())?;
    let body = json!({"jobs": {"durationSum": sum}});
    Ok(Answer::ok(&body))
}

/// `GET /v2/storage/events?runId=<run id or job id>`: the job's events, newest first; with
/// `tree=1`, its descendants' too (a container job's children, their children...).
pub async fn events(services: &Services, request: Request) -> Reply {
    let query = &request.query;
    let run = query.one("runId").ok_or_else(|| {
        ApiError::bad_request(
            "Parameter \"runId\" is required: the run id (or id) of the job whose events to list.",
        )
    })?;
    let tree = request.query_fields().flag("tree")?.unwrap_or(false);
    let limit = query.number("limit")?.unwrap_or(100).min(1000) as usize;
    let offset = query.number("offset")?.unwrap_or(0) as usize;
    let since_id = query.number("sinceId")?;
    let events = blocking(|| services.queue.events(run, tree, since_id, offset, limit))?;
    let body = Value::Array(events.iter().map(render::event).collect());
    Ok(Answer::ok(&body))
}

/// `GET /v2/storage/tokens/verify`
pub async fn verify_token(services: &Services, request: Request) -> Reply {
    let project = &services.settings.project;
    let body = json!({
        "id": request.token.id,
        "description": request.token.description,
        "owner": {"id": project.id, "name": project.name},
    });
    Ok(Answer::ok(&body))
}
