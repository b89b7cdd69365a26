//! The JSON a client sees: the Queue API's job object and Storage's event, branch, component,
//! configuration, row, bucket, table and file objects, and the Scheduler API's schedule object.

use serde_json::{json, Map, Value};

use crate::model::Schedule;
use crate::model::{format_time, Event, Job};
use crate::model::{Branch, Configuration, Row};
use crate::model::{Bucket, StoredFile, Table};
use crate::queue::MatchedTask;

/// The job object of docs/queue.md: every field, ids as strings, times ISO 8601.
pub fn job(job: &Job, public_url: &str) -> Value {
    json!({
        "id": job.id.to_string(),
        "runId": job.run_id,
        "parentRunId": job.parent_run_id_str(),
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
        "orchestrationJobId": job.orchestration_job_id.map(|id| id.to_string()),
        "orchestrationTaskId": job.orchestration_task_id,
        "orchestrationPhaseId": job.orchestration_phase_id,
        "previousJobId": job.previous_job_id,
        "onlyOrchestrationTaskIds": (!job.only_orchestration_task_ids.is_empty())
            .then_some(&job.only_orchestration_task_ids),
        "delayedStartTime": job.delayed_start_time.map(format_time),
    })
}

/// The rerun plan of orchestration job `job`: each task of its run and the job it got.
pub fn rerun_plan(job: &Job, tasks: &[MatchedTask]) -> Value {
    let matched: Vec<Value> = tasks
        .iter()
        .map(|task| {
            let got = task.job.as_ref();
            json!({
                "taskId": task.task_id,
                "matched": got.is_some(),
                "jobId": got.map(|j| j.id.to_string()),
                "componentId": got.map(|j| &j.component),
                "configId": got.and_then(|j| j.config.as_ref()),
                "status": got.map(|j| j.status.as_str()),
            })
        })
        .collect();
    json!({"jobId": job.id.to_string(), "configId": job.config, "matchedTasks": matched})
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

/// A dev branch (or the default one); its id is a number, as in the public API.
pub fn branch(branch: &Branch) -> Value {
    json!({
        "id": numeric_id(&branch.id),
        "name": branch.name,
        "description": branch.description,
        "isDefault": branch.is_default,
        "created": format_time(branch.created),
    })
}

/// Which parts of a configuration an answer carries besides its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Include {
    pub configuration: bool,
    pub rows: bool,
    pub state: bool,
}

impl Include {
    /// A configuration's own answers carry everything.
    pub const ALL: Include = Include {
        configuration: true,
        rows: true,
        state: true,
    };
}

/// A registered component with its configurations (in a component listing).
pub fn component(id: &str, configurations: &[&Configuration], include: Include) -> Value {
    json!({
        "id": id,
        "type": "other",
        "name": id,
        "description": "",
        "configurations": configurations
            .iter()
            .map(|c| configuration(c, include))
            .collect::<Vec<_>>(),
    })
}

/// A configuration: always its summary, and the parts `include` asks for.
pub fn configuration(configuration: &Configuration, include: Include) -> Value {
    let mut value = Map::new();
    let mut put = |key: &str, field: Value| {
        value.insert(key.to_string(), field);
    };
    put("id", json!(configuration.id));
    put("name", json!(configuration.name));
    put("description", json!(configuration.description));
    put("created", json!(format_time(configuration.created)));
    put("version", json!(configuration.version));
    put("changeDescription", json!(configuration.change_description));
    put("isDisabled", json!(configuration.is_disabled));
    put("isDeleted", json!(false));
    if include.configuration {
        put("configuration", configuration.configuration.clone());
    }
    if include.rows {
        let order: Vec<&str> = configuration.rows.iter().map(|r| r.id.as_str()).collect();
        put("rowsSortOrder", json!(order));
        put("rows", configuration.rows.iter().map(row).collect());
    }
    if include.state {
        put("state", configuration.state.clone());
    }
    Value::Object(value)
}

/// A configuration row.
pub fn row(row: &Row) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "isDisabled": row.is_disabled,
        "version": row.version,
        "created": format_time(row.created),
        "changeDescription": row.change_description,
        "configuration": row.configuration,
        "state": row.state,
    })
}

/// A Storage bucket; its size, row count and last change are those of its `tables`.
pub fn bucket(bucket: &Bucket, tables: &[&Table], public_url: &str, branch_id: &str) -> Value {
    let uri = format!("{public_url}/v2/storage/buckets/{}", bucket.id);
    let last_change = tables
        .iter()
        .map(|table| table.last_import)
        .max()
        .unwrap_or(bucket.created);
    json!({
        "uri": uri,
        "id": bucket.id,
        "name": bucket.name(),
        "displayName": bucket.display_name(),
        "idBranch": numeric_id(branch_id),
        "stage": bucket.stage(),
        "description": "",
        "tables": format!("{uri}/tables"),
        "created": format_time(bucket.created),
        "lastChangeDate": format_time(last_change),
        "isReadOnly": false,
        "dataSizeBytes": tables.iter().map(|table| table.data_size_bytes).sum::<u64>(),
        "rowsCount": tables.iter().map(|table| table.rows_count).sum::<u64>(),
        "isMaintenance": false,
        "backend": "local",
        "hasExternalSchema": false,
        "path": bucket.id,
        "isSnowflakeSharedDatabase": false,
        "isLinkedBucket": false,
        "backendPath": [],
    })
}

/// A Storage table with its `bucket` object.
pub fn table(table: &Table, bucket: Value, public_url: &str) -> Value {
    json!({
        "uri": format!("{public_url}/v2/storage/tables/{}", table.id),
        "id": table.id,
        "name": table.name(),
        "displayName": table.name(),
        "transactional": false,
        "primaryKey": table.primary_key,
        "indexKey": [],
        "distributionKey": [],
        "syntheticPrimaryKeyEnabled": false,
        "created": format_time(table.created),
        "lastImportDate": format_time(table.last_import),
        "lastChangeDate": format_time(table.last_import),
        "rowsCount": table.rows_count,
        "dataSizeBytes": table.data_size_bytes,
        "isAlias": false,
        "isAliasable": true,
        "isTyped": false,
        "tableType": "table",
        "path": table.id,
        "columns": table.columns,
        "columnMetadata": {},
        "attributes": [],
        "metadata": [],
        "bucket": bucket,
    })
}

/// A Storage file; its `url` downloads the content from jobq (with the token header).
pub fn file(file: &StoredFile, public_url: &str) -> Value {
    json!({
        "id": file.id,
        "name": file.name,
        "url": format!("{public_url}/v2/storage/files/{}/download", file.id),
        "sizeBytes": file.size_bytes,
        "tags": file.tags,
        "created": format_time(file.created),
        "isPublic": false,
        "isSliced": false,
        "isEncrypted": false,
        "provider": "local",
    })
}

/// The Scheduler API's `Schedule` object: ids as strings, the pinned version's definition,
/// recent `executions` (newest first) with their job ids and due times.
pub fn schedule(schedule: &Schedule) -> Value {
    let definition = &schedule.definition;
    let target = &definition.target;
    let executions = schedule.executions.iter().rev().map(|execution| {
        json!({
            "jobId": execution.job_id.to_string(),
            "executionTime": format_time(execution.execution_time),
        })
    });
    json!({
        "id": schedule.id.to_string(),
        "tokenId": schedule.token_id,
        "configurationId": schedule.configuration_id,
        "configurationVersionId": schedule.configuration_version_id.to_string(),
        "schedule": {
            "cronTab": definition.cron_tab,
            "timezone": definition.timezone,
            "state": if definition.enabled { "enabled" } else { "disabled" },
        },
        "target": {
            "componentId": target.component_id,
            "configurationId": target.configuration_id,
            "configurationRowIds": target.configuration_row_ids,
            "mode": target.mode.as_str(),
            "tag": target.tag,
        },
        "executions": executions.collect::<Vec<_>>(),
    })
}

/// An id that is a number answers as one; any other stays a string.
fn numeric_id(id: &str) -> Value {
    id.parse::<u64>()
        .map_or_else(|_| json!(id), |number| json!(number))
}
