//! The job and event records, their statuses, and the listing query over them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::result::JobResult;
use super::status::{transition, Status, TransitionForbidden};

/// How a job was asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Run,
    ForceRun,
    Debug,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::ForceRun => "forceRun",
            Mode::Debug => "debug",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        [Mode::Run, Mode::ForceRun, Mode::Debug]
            .into_iter()
            .find(|m| m.as_str() == text)
    }

    /// `KBC_COMPONENT_RUN_MODE`: forceRun runs like run.
    pub fn component_run_mode(self) -> &'static str {
        match self {
            Mode::Debug => "debug",
            Mode::Run | Mode::ForceRun => "run",
        }
    }
}

/// What the system wants the job to become: `processing` until someone kills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredStatus {
    Processing,
    Terminating,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Processing => "processing",
            DesiredStatus::Terminating => "terminating",
        }
    }
}

/// The job type; chosen by the system, never by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobType {
    Standard,
    Container,
    OrchestrationContainer,
    PhaseContainer,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Standard => "standard",
            JobType::Container => "container",
            JobType::OrchestrationContainer => "orchestrationContainer",
            JobType::PhaseContainer => "phaseContainer",
        }
    }

    /// Container types run no container of their own: no capacity slot, no engine; they end
    /// when their children have.
    pub fn is_virtual(self) -> bool {
        self != JobType::Standard
    }
}

/// A job's run id: its id, after its parent's run id and a dot for a child (`"10.12"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// The run id of root job `id`.
    pub fn root(id: u64) -> RunId {
        RunId(id.to_string())
    }

    /// The run id of job `id` run as a child of this run.
    pub fn child(&self, id: u64) -> RunId {
        RunId(format!("{}.{id}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RunId {
    fn from(text: String) -> RunId {
        RunId(text)
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for RunId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How a container job takes a child that did not succeed (`behavior.onError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Stop,
    Warning,
    Fail,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Stop => "stop",
            OnError::Warning => "warning",
            OnError::Fail => "fail",
        }
    }

    pub fn parse(text: &str) -> Option<OnError> {
        [OnError::Stop, OnError::Warning, OnError::Fail]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// Serde writes `OnError` as its name (`"warning"`), in JSON and in job records.
impl Serialize for OnError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<OnError, D::Error> {
        let text = String::deserialize(deserializer)?;
        OnError::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown onError \"{text}\"")))
    }
}

/// The job's `behavior`, answered as `{"onError": null | "stop" | "warning" | "fail"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    pub on_error: Option<OnError>,
}

/// How many children of a container job run at once: a number 0..=100, or no limit. `0` runs
/// the rows one after another inside the job itself (no container job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    Limit(u8),
    Infinity,
}

impl std::str::FromStr for Parallelism {
    type Err = InvalidParallelism;

    /// `"0"`..`"100"` or `"infinity"`, as the API's `parallelism` and `runtime.parallelism` say it.
    fn from_str(text: &str) -> Result<Parallelism, InvalidParallelism> {
        if text == "infinity" {
            return Ok(Parallelism::Infinity);
        }
        match text.parse::<u32>() {
            Ok(limit) if limit <= 100 => Ok(Parallelism::Limit(limit as u8)),
            _ => Err(InvalidParallelism(text.to_string())),
        }
    }
}

impl std::fmt::Display for Parallelism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parallelism::Limit(limit) => write!(f, "{limit}"),
            Parallelism::Infinity => f.write_str("infinity"),
        }
    }
}

/// A parallelism that is neither `"0"`..`"100"` nor `"infinity"`; the message names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Field \"parallelism\" must be \"0\"..\"100\" or \"infinity\", \"{0}\" given.")]
pub struct InvalidParallelism(pub String);

/// Serde writes a parallelism as the API shows it, a string (`"3"`, `"infinity"`).
impl Serialize for Parallelism {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Parallelism {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Parallelism, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A job as the store keeps it. Times are Unix microseconds (UTC).
///
/// JSON-valued fields are kept as JSON text so that the record encodes with bincode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub run_id: RunId,
    /// The run this job is a child of; `None` for a root job.
    pub parent_run_id: Option<RunId>,
    pub project_id: String,
    pub project_name: String,
    pub token_id: String,
    pub token_description: String,
    pub status: Status,
    pub desired_status: DesiredStatus,
    pub mode: Mode,
    pub component: String,
    pub config: Option<String>,
    #[serde(with = "json_text")]
    pub config_data: Value,
    pub config_row_ids: Vec<String>,
    pub tag: String,
    pub branch_id: String,
    pub created_time: i64,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    #[serde(with = "json_text")]
    pub result: JobResult,
    #[serde(with = "json_text")]
    pub usage_data: Value,
    pub variable_values_id: Option<String>,
    #[serde(with = "json_text")]
    pub variable_values_data: Value,
    #[serde(with = "json_text")]
    pub backend: Value,
    #[serde(with = "json_text")]
    pub metrics: Value,
    pub behavior: Behavior,
    pub parallelism: Option<Parallelism>,
    pub job_type: JobType,
    /// The Docker container running the job; persisted before the container starts.
    pub container_id: Option<String>,
    /// The status the finished container gave the job, stored with `result` before the
    /// container is removed; the job takes it once the container is gone.
    pub outcome: Option<Status>,
    /// Rows (containers) of this job that have finished; a resumed job goes on after them.
    pub rows_done: u32,
    /// Images (processors, the component) of the current row that have finished.
    pub images_done: u32,
    /// Stdout events recorded before the current container started; a re-attached container's
    /// log resumes after `stdout events - stdout_base` lines.
    pub stdout_base: u64,
    /// The job stays `created` until this time (`delay` / `delayedStartTime`).
    pub delayed_start_time: Option<i64>,
    /// Counts the changes of the job; the store bumps it on every update (long polls wait on it).
    pub revision: u64,
    /// The orchestration job this job is a phase or task of (`orchestrationJobId`).
    pub orchestration_job_id: Option<u64>,
    /// The orchestration task this job runs (`orchestrationTaskId`), for a task's job.
    pub orchestration_task_id: Option<String>,
    /// The phase of that task (`orchestrationPhaseId`), for a task's job.
    pub orchestration_phase_id: Option<String>,
    /// The orchestration job an orchestration job reruns tasks of (`previousJobId`).
    pub previous_job_id: Option<String>,
    /// The tasks an orchestration job runs; empty: all (`onlyOrchestrationTaskIds`).
    pub only_orchestration_task_ids: Vec<String>,
}

impl Job {
    /// Moves the job to `to` through the state machine, stamping start and end times.
    pub fn move_to(&mut self, to: Status, now: i64) -> Result<(), TransitionForbidden> {
        self.status = transition(self.status, to)?;
        match to {
            Status::Processing => self.start_time = Some(now),
            // A requeued job starts afresh.
            Status::Created | Status::Waiting => self.start_time = None,
            s if s.is_finished() => self.end_time = Some(now),
            _ => {}
        }
        Ok(())
    }

    /// Seconds spent in `processing`; `None` until the job has both ends.
    pub fn duration_seconds(&self) -> Option<i64> {
        match (self.start_time, self.end_time) {
            (Some(start), Some(end)) => Some((end - start).max(0) / 1_000_000),
            (None, Some(_)) => Some(0),
            _ => None,
        }
    }

    /// The parent's run id as the API and the store's parent index spell it: `""` for a root job.
    pub fn parent_run_id_str(&self) -> &str {
        self.parent_run_id.as_ref().map_or("", RunId::as_str)
    }

    /// The job's `config` id, or `""` for jobs run from `configData` only.
    pub fn config_id(&self) -> &str {
        self.config.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
impl Job {
    /// A plain created root job of component `c`, for tests to adjust with struct update syntax.
    pub(crate) fn example() -> Job {
        use serde_json::json;
        Job {
            id: 1,
            run_id: RunId::root(1),
            parent_run_id: None,
            project_id: "1".into(),
            project_name: "Test".into(),
            token_id: "10".into(),
            token_description: "tester".into(),
            status: Status::Created,
            desired_status: DesiredStatus::Processing,
            mode: Mode::Run,
            component: "c".into(),
            config: None,
            config_data: json!({}),
            config_row_ids: Vec::new(),
            tag: "latest".into(),
            branch_id: "1".into(),
            created_time: 0,
            start_time: None,
            end_time: None,
            result: JobResult::default(),
            usage_data: json!({}),
            variable_values_id: None,
            variable_values_data: json!({"values": []}),
            backend: json!({}),
            metrics: json!({}),
            behavior: Behavior::default(),
            parallelism: None,
            job_type: JobType::Standard,
            container_id: None,
            outcome: None,
            rows_done: 0,
            images_done: 0,
            stdout_base: 0,
            delayed_start_time: None,
            revision: 0,
            orchestration_job_id: None,
            orchestration_task_id: None,
            orchestration_phase_id: None,
            previous_job_id: None,
            only_orchestration_task_ids: Vec::new(),
        }
    }
}

/// The listing keys `sortBy` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    RunId,
    ComponentId,
    ConfigId,
    Status,
    CreatedTime,
    StartTime,
    EndTime,
    DurationSeconds,
}

impl SortKey {
    pub const NAMES: [(&'static str, SortKey); 9] = [
        ("id", SortKey::Id),
        ("runId", SortKey::RunId),
        ("componentId", SortKey::ComponentId),
        ("configId", SortKey::ConfigId),
        ("status", SortKey::Status),
        ("createdTime", SortKey::CreatedTime),
        ("startTime", SortKey::StartTime),
        ("endTime", SortKey::EndTime),
        ("durationSeconds", SortKey::DurationSeconds),
    ];

    pub fn parse(text: &str) -> Option<SortKey> {
        SortKey::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, key)| *key)
    }
}

/// A listing request: every non-empty filter must match; then sort and page.
#[derive(Debug, Clone, PartialEq)]
pub struct JobQuery {
    pub ids: Vec<u64>,
    pub run_ids: Vec<String>,
    pub branch_ids: Vec<String>,
    pub token_ids: Vec<String>,
    pub token_descriptions: Vec<String>,
    pub component_ids: Vec<String>,
    pub config_ids: Vec<String>,
    pub config_row_ids: Vec<String>,
    pub modes: Vec<Mode>,
    pub statuses: Vec<Status>,
    pub job_type: Option<JobType>,
    /// `Some("")` selects root jobs only.
    pub parent_run_id: Option<String>,
    pub created_time: TimeRange,
    pub start_time: TimeRange,
    pub end_time: TimeRange,
    pub duration_from: Option<i64>,
    pub duration_to: Option<i64>,
    pub sort_by: SortKey,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// An inclusive range of Unix microseconds; open where `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeRange {
    fn admits(&self, time: Option<i64>) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(time) = time else { return false };
        self.from.is_none_or(|from| time >= from) && self.to.is_none_or(|to| time <= to)
    }
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            ids: Vec::new(),
            run_ids: Vec::new(),
            branch_ids: Vec::new(),
            token_ids: Vec::new(),
            token_descriptions: Vec::new(),
            component_ids: Vec::new(),
            config_ids: Vec::new(),
            config_row_ids: Vec::new(),
            modes: Vec::new(),
            statuses: Vec::new(),
            job_type: None,
            parent_run_id: None,
            created_time: TimeRange::default(),
            start_time: TimeRange::default(),
            end_time: TimeRange::default(),
            duration_from: None,
            duration_to: None,
            sort_by: SortKey::Id,
            descending: true,
            offset: 0,
            limit: JobQuery::DEFAULT_LIMIT,
        }
    }
}

impl JobQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 500;

    /// Whether `job` passes every filter of the query.
    pub fn matches(&self, job: &Job) -> bool {
        fn any<T: PartialEq>(wanted: &[T], value: &T) -> bool {
            wanted.is_empty() || wanted.contains(value)
        }
        let duration = job.duration_seconds();
        any(&self.ids, &job.id)
            && any(&self.run_ids, &job.run_id.to_string())
            && any(&self.branch_ids, &job.branch_id)
            && any(&self.token_ids, &job.token_id)
            && any(&self.token_descriptions, &job.token_description)
            && any(&self.component_ids, &job.component)
            && any(&self.config_ids, &job.config_id().to_string())
            && (self.config_row_ids.is_empty()
                || job
                    .config_row_ids
                    .iter()
                    .any(|row| self.config_row_ids.contains(row)))
            && any(&self.modes, &job.mode)
            && any(&self.statuses, &job.status)
            && self.job_type.is_none_or(|t| t == job.job_type)
            && self
                .parent_run_id
                .as_ref()
                .is_none_or(|parent| parent == job.parent_run_id_str())
            && self.created_time.admits(Some(job.created_time))
            && self.start_time.admits(job.start_time)
            && self.end_time.admits(job.end_time)
            && self
                .duration_from
                .is_none_or(|from| duration.is_some_and(|d| d >= from))
            && self
                .duration_to
                .is_none_or(|to| duration.is_some_and(|d| d <= to))
    }

    /// Sorts `jobs` by the query's key and order (ties by id), then cuts the page.
    pub fn sort_and_page(&self, mut jobs: Vec<Job>) -> Vec<Job> {
        jobs.sort_by(|a, b| self.order(a, b));
        jobs.into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }

    /// Whether `a` comes before `b` in the listing: by the query's key and order, ties by id.
    pub fn order(&self, a: &Job, b: &Job) -> std::cmp::Ordering {
        let ordering = match self.sort_by {
            SortKey::Id => a.id.cmp(&b.id),
            SortKey::RunId => a.run_id.cmp(&b.run_id),
            SortKey::ComponentId => a.component.cmp(&b.component),
            SortKey::ConfigId => a.config_id().cmp(b.config_id()),
            SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
            SortKey::CreatedTime => a.created_time.cmp(&b.created_time),
            SortKey::StartTime => a.start_time.cmp(&b.start_time),
            SortKey::EndTime => a.end_time.cmp(&b.end_time),
            SortKey::DurationSeconds => a.duration_seconds().cmp(&b.duration_seconds()),
        }
        .then(a.id.cmp(&b.id));
        if self.descending {
            ordering.reverse()
        } else {
            ordering
        }
    }
}

/// Serde adapter that keeps a JSON value (or a `JobResult`) as its JSON text: bincode cannot
/// decode `Value` directly, nor a struct with flattened or skipped fields.
pub(crate) mod json_text {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parallelism_is_0_to_100_or_infinity_and_says_so_otherwise() {
        assert_eq!("0".parse(), Ok(Parallelism::Limit(0)));
        assert_eq!("100".parse(), Ok(Parallelism::Limit(100)));
        assert_eq!("infinity".parse(), Ok(Parallelism::Infinity));
        for bad in ["101", "-1", "", "2.5", "Infinity", "4294967296"] {
            assert_eq!(
                bad.parse::<Parallelism>().unwrap_err().to_string(),
                format!(
                    "Field \"parallelism\" must be \"0\"..\"100\" or \"infinity\", \"{bad}\" given."
                )
            );
        }
    }

    #[test]
    fn run_ids_of_children_follow_their_parents() {
        let root = RunId::root(10);
        assert_eq!(root, "10");
        assert_eq!(root.child(12), "10.12");
        assert_eq!(root.child(12).child(14).to_string(), "10.12.14");
        assert_eq!(json!(root.child(12)), json!("10.12"));
        let child = Job {
            parent_run_id: Some(root),
            ..Job::example()
        };
        assert_eq!(child.parent_run_id_str(), "10");
        assert_eq!(Job::example().parent_run_id_str(), "");
    }

    #[test]
    fn behavior_is_answered_with_on_error_null_or_its_name() {
        assert_eq!(json!(Behavior::default()), json!({"onError": null}));
        let warning = Behavior {
            on_error: Some(OnError::Warning),
        };
        assert_eq!(json!(warning), json!({"onError": "warning"}));
        for on_error in [OnError::Stop, OnError::Warning, OnError::Fail] {
            assert_eq!(OnError::parse(on_error.as_str()), Some(on_error));
        }
        assert_eq!(OnError::parse("ignore"), None);
        let back: Behavior = serde_json::from_value(json!({"onError": "fail"})).unwrap();
        assert_eq!(back.on_error, Some(OnError::Fail));
    }

    #[test]
    fn parallelism_is_a_string_in_json() {
        assert_eq!(json!(Parallelism::Limit(3)), json!("3"));
        assert_eq!(json!(Parallelism::Infinity), json!("infinity"));
        let back: Parallelism = serde_json::from_value(json!("7")).unwrap();
        assert_eq!(back, Parallelism::Limit(7));
        assert!(serde_json::from_value::<Parallelism>(json!("x")).is_err());
    }
}
