//! The JSON a client sees: the Queue API's job object and Storage's event object.

use serde_json::{json, Value};

use crate::job::{format_time, Event, Job};

/// The job object of spec/queue.md: every field, ids as strings, times ISO 8601.
pub fn job(job: &Job, public_url: &str) -> Value {
    json!({
        "id": job.id.to_string(),
        "runId": job.run_id,
        "parentRunId": job.parent_run_id,
        "project": {"id": job.project_id, "name": job.project_name},
        "token": {"id": job.token_id, "description": job.token_description},
        "status": job.status.as_str(),
        "desiredStatus": job.desired_status.as_str(),
        "mode": job.mode.as_str(),
        "component": job.component,
        "config": job.config,
        "configData": job.config_data,
        "configRowIds": job.config_row_ids,
        "tag": job.tag,
        "createdTime": format_time(job.created_time),
        "startTime": job.start_time.map(format_time),
        "endTime": job.end_time.map(format_time),
        "durationSeconds": job.duration_seconds(),
        "result": job.result,
        "usageData": job.usage_data,
        "isFinished": job.status.is_finished(),
        "url": format!("{public_url}/jobs/{}", job.id),
        "branchId": job.branch_id,
        "variableValuesId": job.variable_values_id,
        "variableValuesData": job.variable_values_data,
        "backend": job.backend,
        "metrics": job.metrics,
        "behavior": job.behavior,
        "parallelism": job.parallelism,
        "type": job.job_type.as_str(),
        "delayedStartTime": job.delayed_start_time.map(format_time),
    })
}

/// A Storage event of a job.
pub fn event(event: &Event) -> Value {
    json!({
        "id": event.id.to_string(),
        "type": event.event_type.as_str(),
        "message": event.message,
        "created": format_time(event.created),
        "runId": event.run_id,
        "component": event.component,
    })
}
