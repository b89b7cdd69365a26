//! Record encoding of the job store: one format-version byte, then the bincode (standard config) body.
//!
//! A later change to `Job` or `Event` adds a version here and decodes the older ones into the new
//! shape, so stored records migrate as they are read.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::model::json_text;
use crate::model::Schedule;
use crate::model::{Behavior, JobResult, Parallelism};
use crate::model::{Branch, Configuration};
use crate::model::{Bucket, StoredFile, Table};
use crate::model::{Delivery, Subscription};
use crate::model::{DesiredStatus, JobType, Mode, RunId, Status};
use crate::model::{Event, Job};
use serde_json::Value;

/// The format version written for job records: 3 since jobs know their orchestration (version 1
/// is decoded through `JobV1`, version 2 through `JobV2`).
pub(super) const JOB_VERSION: u8 = 3;
/// The format version written for event records.
pub(super) const EVENT_VERSION: u8 = 1;
/// The format version written for configuration records (rows inside).
pub(super) const CONFIGURATION_VERSION: u8 = 1;
/// The format version written for dev branch records.
pub(super) const BRANCH_VERSION: u8 = 1;
/// The format version written for Storage bucket, table and file records.
pub(super) const STORAGE_VERSION: u8 = 1;
/// The format version written for schedule records.
pub(super) const SCHEDULE_VERSION: u8 = 1;
/// The format version written for subscription and delivery records.
pub(super) const NOTIFICATION_VERSION: u8 = 1;

pub(super) fn encode_job(job: &Job) -> Result<Vec<u8>, StoreError> {
    encode("job record", JOB_VERSION, job)
}

pub(super) fn decode_job(bytes: &[u8]) -> Result<Job, StoreError> {
    let (version, body) = split("job record", bytes, JOB_VERSION)?;
    match version {
        1 => decode_body::<JobV1>("job record", body)?
            .into_job()
            .map_err(|detail| StoreError::Corrupt {
                record: "job record",
                detail,
            }),
        2 => Ok(decode_body::<JobV2>("job record", body)?.into_job()),
        3 => decode_body("job record", body),
        _ => Err(unknown("job record", version, JOB_VERSION)),
    }
}

/// A job record of version 1, field for field in the order and with the types version 1 wrote
/// (JSON values as their text). Frozen: `fixtures/job-v1.bin` checks it.
#[derive(Deserialize)]
struct JobV1 {
    id: u64,
    run_id: String,
    parent_run_id: String,
    project_id: String,
    project_name: String,
    token_id: String,
    token_description: String,
    status: Status,
    desired_status: DesiredStatus,
    mode: Mode,
    component: String,
    config: Option<String>,
    config_data: String,
    config_row_ids: Vec<String>,
    tag: String,
    branch_id: String,
    created_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    result: String,
    usage_data: String,
    variable_values_id: Option<String>,
    variable_values_data: String,
    backend: String,
    metrics: String,
    behavior: String,
    parallelism: Option<String>,
    job_type: JobType,
    container_id: Option<String>,
    outcome: Option<Status>,
    rows_done: u32,
    images_done: u32,
    stdout_base: u64,
    delayed_start_time: Option<i64>,
    revision: u64,
}

impl JobV1 {
    /// The job in today's shape; an error names the field that does not convert.
    fn into_job(self) -> Result<Job, String> {
        fn json<T: DeserializeOwned>(field: &str, text: &str) -> Result<T, String> {
            serde_json::from_str(text).map_err(|error| format!("{field}: {error}"))
        }
        Ok(Job {
            id: self.id,
            run_id: RunId::from(self.run_id),
            // Version 1 wrote "" for a root job.
            parent_run_id: Some(self.parent_run_id)
                .filter(|parent| !parent.is_empty())
                .map(RunId::from),
            project_id: self.project_id,
            project_name: self.project_name,
            token_id: self.token_id,
            token_description: self.token_description,
            status: self.status,
            desired_status: self.desired_status,
            mode: self.mode,
            component: self.component,
            config: self.config,
            config_data: json("configData", &self.config_data)?,
            config_row_ids: self.config_row_ids,
            tag: self.tag,
            branch_id: self.branch_id,
            created_time: self.created_time,
            start_time: self.start_time,
            end_time: self.end_time,
            result: json("result", &self.result)?,
            usage_data: json("usageData", &self.usage_data)?,
            variable_values_id: self.variable_values_id,
            variable_values_data: json("variableValuesData", &self.variable_values_data)?,
            backend: json("backend", &self.backend)?,
            metrics: json("metrics", &self.metrics)?,
            behavior: json("behavior", &self.behavior)?,
            parallelism: self
                .parallelism
                .map(|text| text.parse())
                .transpose()
                .map_err(|error| format!("parallelism: {error}"))?,
            job_type: self.job_type,
            container_id: self.container_id,
            outcome: self.outcome,
            rows_done: self.rows_done,
            images_done: self.images_done,
            stdout_base: self.stdout_base,
            delayed_start_time: self.delayed_start_time,
            revision: self.revision,
            orchestration_job_id: None,
            orchestration_task_id: None,
            orchestration_phase_id: None,
            previous_job_id: None,
            only_orchestration_task_ids: Vec::new(),
        })
    }
}

/// A job record of version 2: today's `Job` without the orchestration fields. Frozen:
/// `fixtures/job-v2.bin` checks it.
#[derive(Deserialize)]
struct JobV2 {
    id: u64,
    run_id: RunId,
    parent_run_id: Option<RunId>,
    project_id: String,
    project_name: String,
    token_id: String,
    token_description: String,
    status: Status,
    desired_status: DesiredStatus,
    mode: Mode,
    component: String,
    config: Option<String>,
    #[serde(with = "json_text")]
    config_data: Value,
    config_row_ids: Vec<String>,
    tag: String,
    branch_id: String,
    created_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    #[serde(with = "json_text")]
    result: JobResult,
    #[serde(with = "json_text")]
    usage_data: Value,
    variable_values_id: Option<String>,
    #[serde(with = "json_text")]
    variable_values_data: Value,
    #[serde(with = "json_text")]
    backend: Value,
    #[serde(with = "json_text")]
    metrics: Value,
    behavior: Behavior,
    parallelism: Option<Parallelism>,
    job_type: JobType,
    container_id: Option<String>,
    outcome: Option<Status>,
    rows_done: u32,
    images_done: u32,
    stdout_base: u64,
    delayed_start_time: Option<i64>,
    revision: u64,
}

impl JobV2 {
    /// The job in today's shape: no orchestration.
    fn into_job(self) -> Job {
        Job {
            id: self.id,
            run_id: self.run_id,
            parent_run_id: self.parent_run_id,
            project_id: self.project_id,
            project_name: self.project_name,
            token_id: self.token_id,
            token_description: self.token_description,
            status: self.status,
            desired_status: self.desired_status,
            mode: self.mode,
            component: self.component,
            config: self.config,
            config_data: self.config_data,
            config_row_ids: self.config_row_ids,
            tag: self.tag,
            branch_id: self.branch_id,
            created_time: self.created_time,
            start_time: self.start_time,
            end_time: self.end_time,
            result: self.result,
            usage_data: self.usage_data,
            variable_values_id: self.variable_values_id,
            variable_values_data: self.variable_values_data,
            backend: self.backend,
            metrics: self.metrics,
            behavior: self.behavior,
            parallelism: self.parallelism,
            job_type: self.job_type,
            container_id: self.container_id,
            outcome: self.outcome,
            rows_done: self.rows_done,
            images_done: self.images_done,
            stdout_base: self.stdout_base,
            delayed_start_time: self.delayed_start_time,
            revision: self.revision,
            orchestration_job_id: None,
            orchestration_task_id: None,
            orchestration_phase_id: None,
            previous_job_id: None,
            only_orchestration_task_ids: Vec::new(),
        }
    }
}

pub(super) fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    encode("event record", EVENT_VERSION, event)
}

pub(super) fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    let (version, body) = split("event record", bytes, EVENT_VERSION)?;
    match version {
        1 => decode_body("event record", body),
        _ => Err(unknown("event record", version, EVENT_VERSION)),
    }
}

pub(super) fn encode_configuration(configuration: &Configuration) -> Result<Vec<u8>, StoreError> {
    encode("configuration record", CONFIGURATION_VERSION, configuration)
}

pub(super) fn decode_configuration(bytes: &[u8]) -> Result<Configuration, StoreError> {
    decode_first_version("configuration record", bytes, CONFIGURATION_VERSION)
}

pub(super) fn encode_branch(branch: &Branch) -> Result<Vec<u8>, StoreError> {
    encode("branch record", BRANCH_VERSION, branch)
}

pub(super) fn decode_branch(bytes: &[u8]) -> Result<Branch, StoreError> {
    decode_first_version("branch record", bytes, BRANCH_VERSION)
}

pub(super) fn encode_bucket(bucket: &Bucket) -> Result<Vec<u8>, StoreError> {
    encode("bucket record", STORAGE_VERSION, bucket)
}

pub(super) fn decode_bucket(bytes: &[u8]) -> Result<Bucket, StoreError> {
    decode_first_version("bucket record", bytes, STORAGE_VERSION)
}

pub(super) fn encode_table(table: &Table) -> Result<Vec<u8>, StoreError> {
    encode("table record", STORAGE_VERSION, table)
}

pub(super) fn decode_table(bytes: &[u8]) -> Result<Table, StoreError> {
    decode_first_version("table record", bytes, STORAGE_VERSION)
}

pub(super) fn encode_file(file: &StoredFile) -> Result<Vec<u8>, StoreError> {
    encode("file record", STORAGE_VERSION, file)
}

pub(super) fn decode_file(bytes: &[u8]) -> Result<StoredFile, StoreError> {
    decode_first_version("file record", bytes, STORAGE_VERSION)
}

pub(super) fn encode_schedule(schedule: &Schedule) -> Result<Vec<u8>, StoreError> {
    encode("schedule record", SCHEDULE_VERSION, schedule)
}

pub(super) fn decode_schedule(bytes: &[u8]) -> Result<Schedule, StoreError> {
    decode_first_version("schedule record", bytes, SCHEDULE_VERSION)
}

pub(super) fn encode_subscription(subscription: &Subscription) -> Result<Vec<u8>, StoreError> {
    encode("subscription record", NOTIFICATION_VERSION, subscription)
}

pub(super) fn decode_subscription(bytes: &[u8]) -> Result<Subscription, StoreError> {
    decode_first_version("subscription record", bytes, NOTIFICATION_VERSION)
}

pub(super) fn encode_delivery(delivery: &Delivery) -> Result<Vec<u8>, StoreError> {
    encode("delivery record", NOTIFICATION_VERSION, delivery)
}

pub(super) fn decode_delivery(bytes: &[u8]) -> Result<Delivery, StoreError> {
    decode_first_version("delivery record", bytes, NOTIFICATION_VERSION)
}

/// Decodes a record whose only format so far is version 1. A record type that gets a second
/// version gets its own decode function with a match over the versions, like `decode_job`.
fn decode_first_version<T: DeserializeOwned>(
    record: &'static str,
    bytes: &[u8],
    known: u8,
) -> Result<T, StoreError> {
    let (version, body) = split(record, bytes, known)?;
    match version {
        1 => decode_body(record, body),
        _ => Err(unknown(record, version, known)),
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize>(
    record: &'static str,
    version: u8,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![version];
    bincode::serde::encode_into_std_write(value, &mut bytes, config()).map_err(|e| {
        StoreError::Encode {
            record,
            detail: e.to_string(),
        }
    })?;
    Ok(bytes)
}

/// Splits off the version byte; a version above `known` is a newer jobq's record.
fn split<'a>(
    record: &'static str,
    bytes: &'a [u8],
    known: u8,
) -> Result<(u8, &'a [u8]), StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt {
            record,
            detail: "the record is empty".to_string(),
        });
    };
    if version > known {
        return Err(unknown(record, version, known));
    }
    Ok((version, body))
}

fn unknown(record: &'static str, version: u8, known: u8) -> StoreError {
    if version > known {
        StoreError::UnknownVersion {
            record,
            version: version.into(),
            known: known.into(),
        }
    } else {
        // No jobq ever wrote this version.
        StoreError::Corrupt {
            record,
            detail: format!("unknown format version {version}"),
        }
    }
}

fn decode_body<T: DeserializeOwned>(record: &'static str, body: &[u8]) -> Result<T, StoreError> {
    let (value, read) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| StoreError::Corrupt {
            record,
            detail: e.to_string(),
        })?;
    if read != body.len() {
        return Err(StoreError::Corrupt {
            record,
            detail: format!("{} bytes left over after the record", body.len() - read),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Behavior, DesiredStatus, ErrorKind, EventType, JobResult, JobType, MappedTables, Mode,
        OnError, Parallelism, ResultError, Status, Variable,
    };
    use serde_json::{json, Value};

    fn job() -> Job {
        Job {
            id: 7,
            run_id: RunId::root(3).child(7),
            parent_run_id: Some(RunId::root(3)),
            project_id: "1".to_string(),
            project_name: "Project".to_string(),
            token_id: "42".to_string(),
            token_description: "me".to_string(),
            status: Status::Processing,
            desired_status: DesiredStatus::Processing,
            mode: Mode::ForceRun,
            component: "keboola.ex-db".to_string(),
            config: Some("123".to_string()),
            config_data: json!({"parameters": {"a": [1, 2.5, null, "x"]}}),
            config_row_ids: vec!["r1".to_string(), "r2".to_string()],
            tag: "1.2.3".to_string(),
            branch_id: "default".to_string(),
            created_time: -5,
            start_time: Some(1_700_000_000_000_000),
            end_time: None,
            result: serde_json::from_value(json!({"message": "m", "fromNewerJobq": [1]}))
                .expect("a result"),
            usage_data: json!(null),
            variable_values_id: None,
            variable_values_data: json!({"values": [{"name": "v", "value": "1"}]}),
            backend: json!({"type": "small"}),
            metrics: json!(null),
            behavior: Behavior {
                on_error: Some(OnError::Stop),
            },
            parallelism: Some(Parallelism::Limit(5)),
            job_type: JobType::Container,
            container_id: Some("abc".to_string()),
            outcome: Some(Status::Success),
            rows_done: 2,
            images_done: 1,
            stdout_base: 17,
            delayed_start_time: Some(1_700_000_100_000_000),
            revision: 3,
            orchestration_job_id: Some(3),
            orchestration_task_id: Some("task 1".to_string()),
            orchestration_phase_id: Some("p".to_string()),
            previous_job_id: None,
            only_orchestration_task_ids: Vec::new(),
        }
    }

    /// The job `fixtures/job-v1.bin` and `fixtures/job-v2.bin` hold: a child run, `onError:
    /// warning`, parallelism "3", and a recorded result with message, error, images, tables,
    /// configVersion and variables. Every field differs from its neighbours of the same type,
    /// so that a swapped field cannot decode into the same job. Each fixture was written once,
    /// by `encode_job` of this job while its version was the one written, and is frozen: a
    /// change to `Job`'s layout needs a new version, not a new fixture.
    fn fixture_job() -> Job {
        Job {
            id: 12,
            run_id: RunId::root(10).child(12),
            parent_run_id: Some(RunId::root(10)),
            project_id: "123".to_string(),
            project_name: "Test project".to_string(),
            token_id: "7".to_string(),
            token_description: "test token".to_string(),
            status: Status::Processing,
            desired_status: DesiredStatus::Processing,
            mode: Mode::ForceRun,
            component: "keboola.ex-db".to_string(),
            config: Some("cfg".to_string()),
            config_data: json!({"parameters": {"#password": "KBC::ProjectSecure::x", "n": [1, 2.5, null]}}),
            config_row_ids: vec!["r1".to_string()],
            tag: "1.0.0".to_string(),
            branch_id: "456".to_string(),
            created_time: 1_700_000_000_000_000,
            start_time: Some(1_700_000_001_000_000),
            end_time: None,
            result: JobResult {
                message: Some("Table \"x\" is missing.".to_string()),
                error: Some(ResultError {
                    kind: ErrorKind::User,
                    exception_id: "exception-000000000000000000000000000000ab".to_string(),
                }),
                images: Some(vec![vec![
                    json!({"id": "local/processor:1.0.0", "digests": ["sha256:01"]}),
                    json!({"id": "local/jobq-fixture:1.0.0", "digests": ["local/jobq-fixture@sha256:02"]}),
                ]]),
                input: Some(MappedTables {
                    tables: vec![orders_table()],
                }),
                output: Some(MappedTables::default()),
                config_version: Some("4".to_string()),
                variables: Some(vec![Variable {
                    name: "who".to_string(),
                    value: "you".to_string(),
                }]),
                other: Default::default(),
            },
            usage_data: json!([{"metric": "rows", "value": 2}]),
            variable_values_id: Some("v1".to_string()),
            variable_values_data: json!({"values": []}),
            backend: json!({"type": "small"}),
            metrics: json!({"storage": {"inputTablesBytesSum": 40, "outputTablesBytesSum": 0}}),
            behavior: Behavior {
                on_error: Some(OnError::Warning),
            },
            parallelism: Some(Parallelism::Limit(3)),
            job_type: JobType::Standard,
            container_id: Some("c0ffee".to_string()),
            outcome: Some(Status::Error),
            rows_done: 1,
            images_done: 2,
            stdout_base: 17,
            delayed_start_time: Some(1_699_999_999_000_000),
            revision: 9,
            orchestration_job_id: None,
            orchestration_task_id: None,
            orchestration_phase_id: None,
            previous_job_id: None,
            only_orchestration_task_ids: Vec::new(),
        }
    }

    fn orders_table() -> Value {
        json!({
            "id": "in.c-main.orders",
            "name": "orders",
            "displayName": "orders",
            "columns": [{"name": "id"}, {"name": "total"}]
        })
    }

    /// The frozen bytes of a version 1 job record decode into the job they were made from, in
    /// today's shape, and its result answers the JSON version 1 stored.
    #[test]
    fn frozen_v1_job_record_decodes() {
        let bytes = include_bytes!("fixtures/job-v1.bin");
        assert_eq!(bytes[0], 1);
        let job = decode_job(bytes).expect("decode");
        assert_eq!(job, fixture_job());
        let stored_as = json!({
            "message": "Table \"x\" is missing.",
            "error": {"type": "user", "exceptionId": "exception-000000000000000000000000000000ab"},
            "images": [[
                {"id": "local/processor:1.0.0", "digests": ["sha256:01"]},
                {"id": "local/jobq-fixture:1.0.0", "digests": ["local/jobq-fixture@sha256:02"]}
            ]],
            "input": {"tables": [orders_table()]},
            "output": {"tables": []},
            "configVersion": "4",
            "variables": [{"name": "who", "value": "you"}]
        });
        assert_eq!(json!(job.result), stored_as);
        assert_eq!(json!(job.behavior), json!({"onError": "warning"}));
        assert_eq!(json!(job.parallelism), json!("3"));
    }

    /// The frozen bytes of a version 2 job record decode into the job they were made from.
    #[test]
    fn frozen_v2_job_record_decodes() {
        let bytes = include_bytes!("fixtures/job-v2.bin");
        assert_eq!(bytes[0], 2);
        assert_eq!(decode_job(bytes).expect("decode"), fixture_job());
    }

    /// Version 1 wrote `""` for a root job's parent run id: it decodes as no parent.
    #[test]
    fn a_v1_root_job_has_no_parent() {
        let fixture = include_bytes!("fixtures/job-v1.bin");
        // Version byte, id 12, run id "10.12", then the parent "10" as its length and bytes.
        let (head, parent) = (&fixture[..8], &fixture[8..11]);
        assert_eq!(parent, b"\x0210");
        let root = [head, b"\x00", &fixture[11..]].concat();
        let job = decode_job(&root).expect("decode");
        assert_eq!(job.parent_run_id, None);
        assert_eq!(job.parent_run_id_str(), "");
        assert_eq!(job.project_id, "123");
    }

    /// The job `fixtures/job-v3.bin` holds: the fixture job with every orchestration field set.
    fn fixture_task_job() -> Job {
        Job {
            orchestration_job_id: Some(10),
            orchestration_task_id: Some("7001".to_string()),
            orchestration_phase_id: Some("70".to_string()),
            previous_job_id: Some("8".to_string()),
            only_orchestration_task_ids: vec!["7001".to_string(), "7002".to_string()],
            ..fixture_job()
        }
    }

    /// The frozen bytes of a version 3 job record decode into the job they were made from.
    #[test]
    fn frozen_v3_job_record_decodes() {
        let bytes = include_bytes!("fixtures/job-v3.bin");
        assert_eq!(bytes[0], 3);
        assert_eq!(decode_job(bytes).expect("decode"), fixture_task_job());
    }

    #[test]
    fn job_round_trips_as_version_3() {
        for job in [job(), fixture_job(), fixture_task_job(), Job::example()] {
            let bytes = encode_job(&job).expect("encode");
            assert_eq!(bytes[0], 3);
            assert_eq!(decode_job(&bytes).expect("decode"), job);
        }
    }

    #[test]
    fn event_round_trips() {
        let event = Event {
            id: 9,
            job_id: 7,
            event_type: EventType::Warn,
            source: crate::model::EventSource::Stderr,
            message: "héllo\nworld".to_string(),
            created: 12,
            run_id: "7".to_string(),
            component: "c".to_string(),
        };
        let bytes = encode_event(&event).expect("encode");
        assert_eq!(bytes[0], EVENT_VERSION);
        assert_eq!(decode_event(&bytes).expect("decode"), event);
    }

    #[test]
    fn newer_version_says_jobq_is_too_old() {
        let mut bytes = encode_job(&job()).expect("encode");
        bytes[0] = 200;
        let error = decode_job(&bytes).expect_err("must refuse");
        assert!(
            matches!(
                error,
                StoreError::UnknownVersion {
                    version: 200,
                    known: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("version 200"), "{message}");
        assert!(message.contains("too old"), "{message}");
    }

    #[test]
    fn damaged_records_are_corrupt() {
        assert!(matches!(decode_job(&[]), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            decode_job(&[0, 1]),
            Err(StoreError::Corrupt { .. })
        ));
        let bytes = encode_job(&job()).expect("encode");
        assert!(matches!(
            decode_job(&bytes[..bytes.len() / 2]),
            Err(StoreError::Corrupt { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_job(&longer),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn configuration_and_branch_round_trip() {
        let row = crate::model::Row {
            id: "r1".to_string(),
            name: "row".to_string(),
            description: String::new(),
            change_description: "added".to_string(),
            version: 2,
            is_disabled: true,
            configuration: json!({"parameters": {"n": [1, 2.5, null]}}),
            state: json!({"component": {"last": "x"}}),
            created: 5,
        };
        let configuration = Configuration {
            component: "keboola.ex-db".to_string(),
            branch_id: "1".to_string(),
            id: "12".to_string(),
            name: "ünï".to_string(),
            description: "d".to_string(),
            change_description: String::new(),
            version: 3,
            is_disabled: false,
            configuration: json!({"parameters": {"#secret": "KBC::x"}, "storage": {}}),
            state: json!({}),
            rows: vec![row],
            created: -1,
        };
        let bytes = encode_configuration(&configuration).expect("encode");
        assert_eq!(bytes[0], CONFIGURATION_VERSION);
        assert_eq!(decode_configuration(&bytes).expect("decode"), configuration);

        let branch = Branch {
            id: "9".to_string(),
            name: "feature".to_string(),
            description: "try things".to_string(),
            is_default: false,
            created: 7,
        };
        let bytes = encode_branch(&branch).expect("encode");
        assert_eq!(bytes[0], BRANCH_VERSION);
        assert_eq!(decode_branch(&bytes).expect("decode"), branch);
        let mut newer = bytes.clone();
        newer[0] = BRANCH_VERSION + 1;
        assert!(matches!(
            decode_branch(&newer),
            Err(StoreError::UnknownVersion { version: 2, .. })
        ));
    }

    #[test]
    fn storage_records_round_trip_and_newer_ones_are_refused() {
        let bucket = Bucket {
            id: "in.c-main".to_string(),
            created: 5,
        };
        let bytes = encode_bucket(&bucket).expect("encode");
        assert_eq!(bytes[0], STORAGE_VERSION);
        assert_eq!(decode_bucket(&bytes).expect("decode"), bucket);

        let table = Table {
            id: "in.c-main.orders".to_string(),
            columns: vec!["id".to_string(), "total".to_string()],
            primary_key: vec!["id".to_string()],
            rows_count: 3,
            data_size_bytes: 40,
            created: 5,
            last_import: 6,
            data_version: 2,
        };
        let bytes = encode_table(&table).expect("encode");
        assert_eq!(decode_table(&bytes).expect("decode"), table);

        let file = StoredFile {
            id: 4,
            name: "a.zip".to_string(),
            size_bytes: 9,
            tags: vec!["debug".to_string()],
            created: 7,
        };
        let mut bytes = encode_file(&file).expect("encode");
        assert_eq!(decode_file(&bytes).expect("decode"), file);
        bytes[0] = STORAGE_VERSION + 1;
        assert!(matches!(
            decode_file(&bytes),
            Err(StoreError::UnknownVersion { version: 2, .. })
        ));
    }
}
