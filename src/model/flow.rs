//! `keboola.flow` configurations (conditional flows) parsed and validated, the progress record
//! of a flow run, the pure step that decides what a run does next (notify, set variables, create
//! task jobs, retry them, take a transition, end), and the run's result document.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

use super::condition::{Condition, Facts, PartError, Reference};
use super::event::EventType;
use super::notification::{Channel, Recipient};
use super::orchestration::{bool_of, id_of, text_of, OrchestrationError, Task};
use super::status::Status;

/// The component id of conditional flows; jobq runs its jobs itself.
pub const FLOW: &str = "keboola.flow";

/// How many phase runs one flow run may have: a `goto` loop ends there, as an error.
pub const MAX_PHASE_RUNS: usize = 100;

/// A parsed `keboola.flow` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub phases: Vec<FlowPhase>,
    pub tasks: Vec<FlowTask>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowPhase {
    pub id: String,
    pub name: String,
    /// The transitions after the phase; `None`: on to the next phase in order (the end after
    /// the last).
    pub next: Option<Vec<Transition>>,
    /// The retry of its job tasks that have none of their own.
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub id: String,
    pub name: Option<String>,
    /// The phase it goes to; `None` ends the flow.
    pub goto: Option<String>,
    /// `None`: always taken (after a phase that succeeded).
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowTask {
    pub id: String,
    pub name: String,
    pub phase: String,
    pub enabled: bool,
    pub kind: TaskKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// Runs a job: `task.job` is its body (`componentId`, `configId`...), as for
    /// `keboola.orchestrator`.
    Job {
        task: Task,
        delay: Option<u64>,
        retry: Option<Retry>,
        /// The flow variables it takes: `None` all, else those named.
        variable_overrides: Option<Vec<String>>,
    },
    Notification {
        title: String,
        message: Option<String>,
        recipients: Vec<Recipient>,
    },
    /// Sets flow variable `name` to the value of `source`.
    Variable { name: String, source: Condition },
}

/// A linear retry: up to `max_retries` more jobs, each `delay` seconds after the failure, for
/// failures whose message `retry_on` accepts (any, when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub max_retries: u32,
    pub delay: u64,
    pub retry_on: Vec<RetryOn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOn {
    /// `errorMessageContains`, case-insensitive.
    Contains(String),
    /// `errorMessageExact`.
    Exact(String),
}

/// Why a flow configuration cannot run; each message names the phase, task or transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Shape(#[from] OrchestrationError),
    #[error(transparent)]
    Part(#[from] PartError),
}

impl Flow {
    /// Parses and validates a stored `keboola.flow` configuration: unique ids, known phases,
    /// `goto` targets and condition references, supported task types, channels, retry
    /// strategies and condition operators.
    pub fn parse(configuration: &Value) -> Result<Flow, FlowError> {
        let list = |key: &'static str| match configuration.get(key) {
            Some(Value::Array(items)) => Ok(items.as_slice()),
            _ => Err(OrchestrationError::NotAList(key)),
        };
        let mut phases = Vec::new();
        for (index, phase) in list("phases")?.iter().enumerate() {
            let id = id_of(phase.get("id"), &format!("Phase #{}", index + 1))?;
            let at = format!("Phase \"{id}\"");
            let next = match phase.get("next") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| transition(item, &format!("{at}, transition #{}", i + 1)))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(other) => {
                    return Err(invalid(
                        &at,
                        format!("\"next\" must be a list, {other} given"),
                    ))
                }
            };
            phases.push(FlowPhase {
                name: text_of(phase.get("name")).unwrap_or_else(|| id.clone()),
                retry: retry(phase.get("retry"), &at)?,
                id,
                next,
            });
        }
        let mut tasks = Vec::new();
        for (index, task) in list("tasks")?.iter().enumerate() {
            let id = id_of(task.get("id"), &format!("Task #{}", index + 1))?;
            let what = format!("task \"{id}\"");
            let at = format!("Task \"{id}\"");
            let name = text_of(task.get("name")).unwrap_or_else(|| id.clone());
            let phase = id_of(task.get("phase"), &format!("The \"phase\" of {what}"))?;
            let enabled = bool_of(task.get("enabled"), "enabled", &what, true)?;
            let body = task
                .get("task")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let kind = task_kind(&id, &name, &phase, enabled, body, &at)?;
            tasks.push(FlowTask {
                id,
                name,
                phase,
                enabled,
                kind,
            });
        }
        let flow = Flow { phases, tasks };
        flow.validate()?;
        Ok(flow)
    }

    fn validate(&self) -> Result<(), FlowError> {
        let mut phase_ids = HashSet::new();
        for phase in &self.phases {
            if !phase_ids.insert(phase.id.as_str()) {
                return Err(OrchestrationError::DuplicatePhase(phase.id.clone()).into());
            }
        }
        let mut task_ids = HashSet::new();
        let mut variables = HashSet::new();
        for task in &self.tasks {
            if !task_ids.insert(task.id.as_str()) {
                return Err(OrchestrationError::DuplicateTask(task.id.clone()).into());
            }
            if !phase_ids.contains(task.phase.as_str()) {
                return Err(OrchestrationError::UnknownPhase {
                    task: task.id.clone(),
                    phase: task.phase.clone(),
                }
                .into());
            }
            if let TaskKind::Variable { name, .. } = &task.kind {
                variables.insert(name.as_str());
            }
        }
        let check = |condition: &Condition, at: &str| {
            let mut problem = None;
            condition.references(&mut |reference| {
                let missing = match reference {
                    Reference::Phase(id) if !phase_ids.contains(id) => Some(format!(
                        "it names phase \"{id}\", which the flow does not have"
                    )),
                    Reference::Task(id) if id != "*" && !task_ids.contains(id) => Some(format!(
                        "it names task \"{id}\", which the flow does not have"
                    )),
                    Reference::Variable(name) if !variables.contains(name) => Some(format!(
                        "it reads variable \"{name}\", which no variable task of the flow sets"
                    )),
                    _ => None,
                };
                problem = problem.take().or(missing);
            });
            match problem {
                Some(problem) => Err(invalid(at, format!("{problem}; fix the condition."))),
                None => Ok(()),
            }
        };
        for phase in &self.phases {
            for (index, next) in phase.next.iter().flatten().enumerate() {
                let at = format!(
                    "Phase \"{}\", transition \"{}\" (#{})",
                    phase.id,
                    next.id,
                    index + 1
                );
                if let Some(goto) = &next.goto {
                    if !phase_ids.contains(goto.as_str()) {
                        return Err(invalid(
                            &at,
                            format!("it goes to phase \"{goto}\", which the flow does not have; set \"goto\" to a phase id or null."),
                        ));
                    }
                }
                if let Some(condition) = &next.condition {
                    check(condition, &at)?;
                }
            }
        }
        for task in &self.tasks {
            if let TaskKind::Variable { source, .. } = &task.kind {
                check(source, &format!("Task \"{}\"", task.id))?;
            }
        }
        Ok(())
    }

    pub fn phase(&self, id: &str) -> Option<&FlowPhase> {
        self.phases.iter().find(|p| p.id == id)
    }

    pub fn task(&self, id: &str) -> Option<&FlowTask> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The enabled job tasks of every phase (each will be checked as a job).
    pub fn job_tasks(&self) -> impl Iterator<Item = &FlowTask> {
        self.tasks
            .iter()
            .filter(|t| t.enabled && matches!(t.kind, TaskKind::Job { .. }))
    }

    /// The enabled tasks of phase `phase` of one kind (`job`, `notification`, `variable`), in
    /// configuration order.
    fn enabled<'a>(
        &'a self,
        phase: &'a str,
        kind: &'static str,
    ) -> impl Iterator<Item = &'a FlowTask> + 'a {
        self.tasks
            .iter()
            .filter(move |t| t.enabled && t.phase == phase && t.kind.name() == kind)
    }
}

impl TaskKind {
    /// The task's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Job { .. } => "job",
            TaskKind::Notification { .. } => "notification",
            TaskKind::Variable { .. } => "variable",
        }
    }
}

fn invalid(at: &str, problem: String) -> FlowError {
    FlowError::Part(PartError::Invalid {
        at: at.to_string(),
        problem,
    })
}

fn transition(item: &Value, at: &str) -> Result<Transition, FlowError> {
    let id = id_of(item.get("id"), &format!("{at}:"))?;
    let goto = match item.get("goto") {
        Some(Value::Null) => None,
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => {
            return Err(invalid(
                at,
                "\"goto\" must be a phase id, or null to end the flow".to_string(),
            ))
        }
    };
    let condition = match item.get("condition") {
        None | Some(Value::Null) => None,
        Some(condition) => Some(Condition::parse(
            condition,
            &format!("{at} (\"{id}\"), condition"),
        )?),
    };
    Ok(Transition {
        name: text_of(item.get("name")),
        id,
        goto,
        condition,
    })
}

fn retry(value: Option<&Value>, at: &str) -> Result<Option<Retry>, FlowError> {
    let Some(retry) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let at = format!("{at}, retry");
    match retry.get("strategy") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text == "linear" => {}
        Some(other) => {
            return Err(FlowError::Part(PartError::Unsupported {
                at,
                what: format!("retry strategy {other}"),
                supported: "linear",
            }))
        }
    }
    let params = retry.get("strategyParams");
    let number = |key: &str, default: u64| {
        match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                invalid(&at, format!("\"strategyParams.{key}\" must be a whole number of 0 or more, {value} given"))
            }),
    }
    };
    let mut retry_on = Vec::new();
    for condition in retry
        .get("retryOn")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let value = condition["value"].as_str().unwrap_or_default().to_string();
        retry_on.push(match condition["type"].as_str() {
            Some("errorMessageContains") => RetryOn::Contains(value),
            Some("errorMessageExact") => RetryOn::Exact(value),
            _ => {
                return Err(FlowError::Part(PartError::Unsupported {
                    at,
                    what: format!("retryOn type {}", condition["type"]),
                    supported: "errorMessageContains, errorMessageExact",
                }))
            }
        });
    }
    Ok(Some(Retry {
        max_retries: u32::try_from(number("maxRetries", 3)?).unwrap_or(u32::MAX),
        delay: number("delay", 10)?,
        retry_on,
    }))
}

fn task_kind(
    id: &str,
    name: &str,
    phase: &str,
    enabled: bool,
    mut body: Map<String, Value>,
    at: &str,
) -> Result<TaskKind, FlowError> {
    // The schema requires "type"; a body with a component and no type is a job.
    let kind = match body.get("type") {
        None if body.contains_key("componentId") => "job".to_string(),
        Some(Value::String(kind)) => kind.clone(),
        other => {
            return Err(invalid(
                at,
                format!(
                    "\"task.type\" must be job, notification or variable, {} given",
                    other.map_or("nothing".to_string(), Value::to_string)
                ),
            ))
        }
    };
    match kind.as_str() {
        "job" => {
            let delay = match body.remove("delay") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    value
                        .as_u64()
                        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                        .ok_or_else(|| {
                            invalid(at, format!("\"task.delay\" must be a whole number of seconds, {value} given"))
                        })?,
                ),
            };
            let retry = retry(body.get("retry"), at)?;
            let variable_overrides = match body.remove("variableOverrides") {
                None | Some(Value::Null) => None,
                Some(Value::Array(names)) => Some(
                    names
                        .iter()
                        .map(|n| n.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            invalid(at, "\"task.variableOverrides\" must be a list of variable names".to_string())
                        })?,
                ),
                Some(other) => {
                    return Err(invalid(at, format!("\"task.variableOverrides\" must be a list of variable names, {other} given")))
                }
            };
            for key in ["type", "retry"] {
                body.remove(key);
            }
            let task = Task {
                id: id.to_string(),
                name: name.to_string(),
                phase: phase.to_string(),
                enabled,
                continue_on_failure: false,
                job: body,
            };
            if enabled {
                task.task_job()?;
            }
            Ok(TaskKind::Job {
                task,
                delay,
                retry,
                variable_overrides,
            })
        }
        "notification" => {
            let mut recipients = Vec::new();
            let list = body.get("recipients").and_then(Value::as_array);
            for (index, recipient) in list.into_iter().flatten().enumerate() {
                let at = format!("{at}, recipient #{}", index + 1);
                let address = text_of(recipient.get("address"))
                    .or_else(|| text_of(recipient.get("url")))
                    .ok_or_else(|| invalid(&at, "it needs an \"address\"".to_string()))?;
                let channel = match recipient["channel"].as_str() {
                    Some("email") => Channel::Email,
                    Some("webhook") => Channel::Webhook,
                    _ => {
                        return Err(FlowError::Part(PartError::Unsupported {
                            at,
                            what: format!("channel {}", recipient["channel"]),
                            supported: "email, webhook",
                        }))
                    }
                };
                if !channel.takes(&address) {
                    return Err(FlowError::Part(PartError::Unsupported {
                        at,
                        what: format!("{} address \"{address}\"", channel.as_str()),
                        supported: match channel {
                            Channel::Webhook => "an http:// or https:// URL",
                            Channel::Email => "an email address",
                        },
                    }));
                }
                recipients.push(Recipient { channel, address });
            }
            if recipients.is_empty() && enabled {
                return Err(invalid(
                    at,
                    "a notification needs at least one recipient in \"task.recipients\""
                        .to_string(),
                ));
            }
            Ok(TaskKind::Notification {
                title: text_of(body.get("title")).unwrap_or_else(|| name.to_string()),
                message: text_of(body.get("message")),
                recipients,
            })
        }
        "variable" => {
            let name = text_of(body.get("name"))
                .ok_or_else(|| invalid(at, "a variable task needs a \"task.name\"".to_string()))?;
            let source = match (body.get("value"), body.get("source")) {
                (Some(value), None) => Condition::Constant(match value {
                    Value::String(_) => value.clone(),
                    other => Value::String(other.to_string()),
                }),
                (None, Some(source)) => Condition::parse(source, &format!("{at}, source"))?,
                _ => {
                    return Err(invalid(
                        at,
                        "a variable task needs either \"task.value\" or \"task.source\""
                            .to_string(),
                    ))
                }
            };
            Ok(TaskKind::Variable { name, source })
        }
        other => Err(FlowError::Part(PartError::Unsupported {
            at: at.to_string(),
            what: format!("task type \"{other}\""),
            supported: "job, notification, variable",
        })),
    }
}

/// The progress of a flow run, stored as the flow job's `result.flow` in the transaction that
/// creates its task jobs: the phases it ran, in order, and the flow variables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRun {
    pub phase_runs: Vec<PhaseRun>,
    pub variables: Map<String, Value>,
    /// How the flow ended (`success`, `warning`, `error`), once it did.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "status_text")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One run of a phase (a `goto` may run a phase again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRun {
    pub id: String,
    pub stage: Stage,
    /// Start and end, microseconds since the epoch.
    pub started: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<i64>,
    /// Per job task: how many jobs this phase run created for it (1 + its retries).
    pub attempts: BTreeMap<String, u32>,
    /// The notification and variable tasks it ran.
    pub notes: Vec<TaskNote>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "status_text")]
    pub status: Option<Status>,
    pub conditions: Vec<ConditionOutcome>,
}

/// Where a phase run is: its notification tasks, its variable tasks, its job tasks, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Notify,
    Variables,
    Jobs,
    Ended,
}

/// How a notification or variable task went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskNote {
    pub task: String,
    #[serde(with = "status_text::required")]
    pub status: Status,
    pub message: String,
}

/// Statuses in the record as clients read them (`"success"`), not as store codes.
mod status_text {
    use super::Status;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        status: &Option<Status>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match status {
            Some(status) => serializer.serialize_str(status.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Status>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => Status::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown status \"{text}\""))),
        }
    }

    pub mod required {
        use super::Status;
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(status: &Status, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(status.as_str())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Status, D::Error> {
            super::deserialize(deserializer)?
                .ok_or_else(|| serde::de::Error::custom("a status is required"))
        }
    }
}

/// A transition as it was evaluated after its phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionOutcome {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub goto: Option<String>,
    #[serde(rename = "match")]
    pub matched: bool,
    pub reason: String,
}

/// What a flow run knows of one job of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskJobFacts {
    pub id: u64,
    pub status: Status,
    /// `user` or `application` for a failed job.
    pub error_kind: Option<String>,
    pub message: Option<String>,
    pub component: String,
    pub config: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub duration: Option<i64>,
    pub result: Value,
}

/// What a flow run does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing until a task job ends.
    Wait,
    /// Send the notifications of the current phase run, then record them (`notified`).
    Notify(Vec<FlowTask>),
    /// Record `run` (in one transaction with the task jobs of `create`), then say `events`.
    Record(Progress),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub run: FlowRun,
    /// Jobs to create, of these tasks, after these delays (seconds).
    pub create: Vec<(FlowTask, Option<u64>)>,
    pub events: Vec<(EventType, String)>,
}

/// Decides the next step of a flow run from its record and the jobs of its tasks (each task's
/// jobs in creation order). A run that ended has `run.status`; it only waits.
pub fn step(
    flow: &Flow,
    run: &FlowRun,
    jobs: &BTreeMap<String, Vec<TaskJobFacts>>,
    now: i64,
) -> Step {
    if run.status.is_some() {
        return Step::Wait;
    }
    let mut progress = Progress {
        run: run.clone(),
        create: Vec::new(),
        events: Vec::new(),
    };
    let mut changed = false;
    if progress.run.phase_runs.is_empty() {
        match flow.phases.first() {
            Some(first) => start_phase(&mut progress, first, now),
            None => finish(
                &mut progress,
                Status::Success,
                "The flow has no phase.".into(),
            ),
        }
        changed = true;
    }
    loop {
        if progress.run.status.is_some() {
            return Step::Record(progress);
        }
        let current = progress.run.phase_runs.last().expect("a phase run").clone();
        let phase = flow.phase(&current.id).expect("a validated phase");
        match current.stage {
            Stage::Notify => {
                let notifications: Vec<FlowTask> =
                    flow.enabled(&phase.id, "notification").cloned().collect();
                if notifications.is_empty() {
                    set_stage(&mut progress, Stage::Variables);
                    changed = true;
                } else if changed {
                    return Step::Record(progress);
                } else {
                    return Step::Notify(notifications);
                }
            }
            Stage::Variables => {
                for task in flow.enabled(&phase.id, "variable") {
                    let TaskKind::Variable { name, source } = &task.kind else {
                        continue;
                    };
                    let facts = facts(flow, &progress.run, jobs);
                    let (status, message) = match source.evaluate(&facts) {
                        Ok(value) => {
                            let message = format!("Variable \"{name}\" set to {value}.");
                            progress.run.variables.insert(name.clone(), value);
                            (Status::Success, message)
                        }
                        Err(error) => {
                            let message = format!(
                                "Variable \"{name}\" of task \"{}\" could not be set: {error}",
                                task.name
                            );
                            progress.events.push((EventType::Error, message.clone()));
                            note(&mut progress, task, Status::Error, message.clone());
                            finish(&mut progress, Status::Error, message);
                            return Step::Record(progress);
                        }
                    };
                    progress.events.push((EventType::Info, message.clone()));
                    note(&mut progress, task, status, message);
                }
                set_stage(&mut progress, Stage::Jobs);
                changed = true;
            }
            Stage::Jobs => {
                let tasks: Vec<&FlowTask> = flow.enabled(&phase.id, "job").collect();
                if current.attempts.is_empty() && !tasks.is_empty() {
                    for task in tasks {
                        let TaskKind::Job { delay, .. } = &task.kind else {
                            continue;
                        };
                        attempts(&mut progress).insert(task.id.clone(), 1);
                        progress.create.push((task.clone(), *delay));
                    }
                    return Step::Record(progress);
                }
                let mut latest = Vec::new();
                for task in &tasks {
                    match latest_job(&progress.run, jobs, &task.id) {
                        Some(job) if job.status.is_finished() => latest.push((*task, job)),
                        _ => {
                            return if changed {
                                Step::Record(progress)
                            } else {
                                Step::Wait
                            }
                        }
                    }
                }
                for (task, job) in &latest {
                    let TaskKind::Job { retry, .. } = &task.kind else {
                        continue;
                    };
                    let Some(retry) = retry.as_ref().or(phase.retry.as_ref()) else {
                        continue;
                    };
                    let done = current.attempts.get(&task.id).copied().unwrap_or(1) - 1;
                    let message = job.message.clone().unwrap_or_default();
                    if job.status == Status::Error
                        && done < retry.max_retries
                        && retries_on(retry, &message)
                    {
                        attempts(&mut progress).insert(task.id.clone(), done + 2);
                        progress.events.push((
                            EventType::Warn,
                            format!(
                                "Task \"{}\" (job {}) failed; retry {} of {} in {} s.",
                                task.name,
                                job.id,
                                done + 1,
                                retry.max_retries,
                                retry.delay
                            ),
                        ));
                        progress.create.push(((*task).clone(), Some(retry.delay)));
                    }
                }
                if !progress.create.is_empty() {
                    return Step::Record(progress);
                }
                end_phase(flow, phase, &mut progress, jobs, &latest, now);
                changed = true;
            }
            Stage::Ended => unreachable!("a run whose last phase ended has gone on or ended"),
        }
    }
}

/// The record after the notifications of the current phase run were sent, with their notes.
pub fn notified(run: &FlowRun, notes: Vec<TaskNote>) -> FlowRun {
    let mut run = run.clone();
    if let Some(current) = run.phase_runs.last_mut() {
        if current.stage == Stage::Notify {
            current.notes.extend(notes);
            current.stage = Stage::Variables;
        }
    }
    run
}

fn start_phase(progress: &mut Progress, phase: &FlowPhase, now: i64) {
    progress.run.phase_runs.push(PhaseRun {
        id: phase.id.clone(),
        stage: Stage::Notify,
        started: now,
        ended: None,
        attempts: BTreeMap::new(),
        notes: Vec::new(),
        status: None,
        conditions: Vec::new(),
    });
    progress.events.push((
        EventType::Info,
        format!("Phase \"{}\" ({}) started.", phase.name, phase.id),
    ));
}

fn set_stage(progress: &mut Progress, stage: Stage) {
    if let Some(current) = progress.run.phase_runs.last_mut() {
        current.stage = stage;
    }
}

fn attempts(progress: &mut Progress) -> &mut BTreeMap<String, u32> {
    &mut progress
        .run
        .phase_runs
        .last_mut()
        .expect("a phase run")
        .attempts
}

fn note(progress: &mut Progress, task: &FlowTask, status: Status, message: String) {
    if let Some(current) = progress.run.phase_runs.last_mut() {
        current.notes.push(TaskNote {
            task: task.id.clone(),
            status,
            message,
        });
    }
}

fn finish(progress: &mut Progress, status: Status, message: String) {
    progress.events.push((
        match status {
            Status::Success => EventType::Info,
            Status::Warning => EventType::Warn,
            _ => EventType::Error,
        },
        format!("Flow ended {status}: {message}"),
    ));
    progress.run.status = Some(status);
    progress.run.message = Some(message);
}

fn retries_on(retry: &Retry, message: &str) -> bool {
    retry.retry_on.is_empty()
        || retry.retry_on.iter().any(|on| match on {
            RetryOn::Contains(part) => message.to_lowercase().contains(&part.to_lowercase()),
            RetryOn::Exact(text) => message == text,
        })
}

/// The jobs of `task` in phase run `index` of `run` (earlier runs' jobs come first).
fn jobs_in_run<'a>(
    run: &FlowRun,
    index: usize,
    jobs: &'a BTreeMap<String, Vec<TaskJobFacts>>,
    task: &str,
) -> &'a [TaskJobFacts] {
    let before: usize = run.phase_runs[..index]
        .iter()
        .map(|p| p.attempts.get(task).copied().unwrap_or(0) as usize)
        .sum();
    let own = run.phase_runs[index]
        .attempts
        .get(task)
        .copied()
        .unwrap_or(0) as usize;
    let all = jobs.get(task).map(Vec::as_slice).unwrap_or(&[]);
    &all[before.min(all.len())..(before + own).min(all.len())]
}

fn latest_job<'a>(
    run: &FlowRun,
    jobs: &'a BTreeMap<String, Vec<TaskJobFacts>>,
    task: &str,
) -> Option<&'a TaskJobFacts> {
    let index = run.phase_runs.len().checked_sub(1)?;
    let own = jobs_in_run(run, index, jobs, task);
    let wanted = run.phase_runs[index]
        .attempts
        .get(task)
        .copied()
        .unwrap_or(0) as usize;
    // A job the record names but the store does not have yet is not finished.
    (own.len() == wanted).then(|| own.last()).flatten()
}

/// The status conditions read: `success`, `user_error`, `application_error`, `terminated`.
fn condition_status(status: Status, error_kind: Option<&str>) -> &'static str {
    match status {
        Status::Success | Status::Warning => "success",
        Status::Error if error_kind == Some("application") => "application_error",
        Status::Error => "user_error",
        Status::Terminated | Status::Cancelled | Status::Terminating => "terminated",
        _ => "processing",
    }
}

fn end_phase(
    flow: &Flow,
    phase: &FlowPhase,
    progress: &mut Progress,
    jobs: &BTreeMap<String, Vec<TaskJobFacts>>,
    latest: &[(&FlowTask, &TaskJobFacts)],
    now: i64,
) {
    let statuses = latest.iter().map(|(_, job)| job.status);
    let status = super::orchestration::orchestration_outcome(statuses.clone());
    let status = match status {
        Status::Error
            if latest
                .iter()
                .any(|(_, j)| matches!(j.status, Status::Terminated | Status::Cancelled)) =>
        {
            Status::Terminated
        }
        other => other,
    };
    {
        let current = progress.run.phase_runs.last_mut().expect("a phase run");
        current.status = Some(status);
        current.ended = Some(now);
        current.stage = Stage::Ended;
    }
    progress.events.push((
        if status == Status::Success {
            EventType::Info
        } else {
            EventType::Warn
        },
        format!("Phase \"{}\" ({}) ended {status}.", phase.name, phase.id),
    ));
    let failed = !matches!(status, Status::Success | Status::Warning);
    let position = flow
        .phases
        .iter()
        .position(|p| p.id == phase.id)
        .unwrap_or(0);
    let default_next = [Transition {
        id: "next".to_string(),
        name: None,
        goto: flow.phases.get(position + 1).map(|p| p.id.clone()),
        condition: None,
    }];
    let transitions = phase.next.as_deref().unwrap_or(&default_next);
    let facts = facts(flow, &progress.run, jobs);
    let mut chosen = None;
    let mut outcomes = Vec::new();
    for next in transitions {
        if chosen.is_some() {
            break;
        }
        let (matched, reason) = match &next.condition {
            None if failed => (
                false,
                format!("Phase ended {status}: only a transition with a condition may follow it."),
            ),
            None => (true, "No condition: taken.".to_string()),
            Some(condition) => match condition.evaluate(&facts) {
                Ok(value) if super::condition::truthy(&value) => {
                    (true, "The condition holds.".to_string())
                }
                Ok(value) => (false, format!("The condition does not hold ({value}).")),
                Err(error) => (
                    false,
                    format!("The condition could not be evaluated: {error}"),
                ),
            },
        };
        let goto = next.goto.clone();
        let label = next.name.clone().unwrap_or_else(|| next.id.clone());
        let whither = goto
            .as_deref()
            .map_or("the end".to_string(), |g| format!("phase \"{g}\""));
        let event = match matched {
            true => format!(
                "Transition \"{label}\" of phase \"{}\" to {whither} taken: {reason}",
                phase.id
            ),
            false => format!(
                "Transition \"{label}\" of phase \"{}\" to {whither} not taken: {reason}",
                phase.id
            ),
        };
        progress.events.push((EventType::Info, event));
        outcomes.push(ConditionOutcome {
            id: next.id.clone(),
            name: next.name.clone(),
            goto: goto.clone(),
            matched,
            reason,
        });
        if matched {
            chosen = Some(goto);
        }
    }
    progress
        .run
        .phase_runs
        .last_mut()
        .expect("a phase run")
        .conditions = outcomes;
    match chosen {
        Some(Some(goto)) if progress.run.phase_runs.len() >= MAX_PHASE_RUNS => finish(
            progress,
            Status::Error,
            format!("The flow ran {MAX_PHASE_RUNS} phases and would go on to phase \"{goto}\"; check the transitions for a loop."),
        ),
        Some(Some(goto)) => {
            let next = flow.phase(&goto).expect("a validated goto");
            start_phase(progress, next, now);
        }
        Some(None) => {
            let warned = progress.run.phase_runs.iter().any(|p| p.status != Some(Status::Success))
                || progress.run.phase_runs.iter().flat_map(|p| &p.notes).any(|n| n.status != Status::Success);
            let (status, message) = match warned {
                true => (Status::Warning, "The flow ended; some of its phases or tasks did not succeed.".to_string()),
                false => (Status::Success, "All phases finished successfully.".to_string()),
            };
            finish(progress, status, message);
        }
        None if failed => finish(
            progress,
            Status::Error,
            format!("Phase \"{}\" ended {status} and no condition of its transitions handled it.", phase.id),
        ),
        None => finish(
            progress,
            Status::Error,
            format!("No transition of phase \"{}\" was taken; end its \"next\" with a transition without a condition.", phase.id),
        ),
    }
}

/// What conditions read now: the latest run of each task and phase, and the variables.
fn facts(flow: &Flow, run: &FlowRun, jobs: &BTreeMap<String, Vec<TaskJobFacts>>) -> Facts {
    let mut facts = Facts {
        variables: run.variables.clone(),
        ..Facts::default()
    };
    for task in flow.tasks.iter().filter(|t| t.enabled) {
        facts
            .tasks_of
            .entry(task.phase.clone())
            .or_default()
            .push(task.id.clone());
    }
    for (index, phase_run) in run.phase_runs.iter().enumerate() {
        for task in phase_run.attempts.keys() {
            if let Some(job) = jobs_in_run(run, index, jobs, task).last() {
                facts.tasks.insert(
                    task.clone(),
                    json!({
                        "taskId": task,
                        "phaseId": phase_run.id,
                        "status": condition_status(job.status, job.error_kind.as_deref()),
                        "job": {
                            "id": job.id.to_string(),
                            "componentId": job.component,
                            "configId": job.config,
                            "status": job.status.as_str(),
                            "result": job.result,
                            "startTime": job.start_time,
                            "endTime": job.end_time,
                            "duration": job.duration,
                        },
                    }),
                );
            }
        }
        for note in &phase_run.notes {
            facts.tasks.insert(
                note.task.clone(),
                json!({"taskId": note.task, "phaseId": phase_run.id, "status": condition_status(note.status, None)}),
            );
        }
        if let Some(status) = phase_run.status {
            let kind = run_error_kind(run, index, jobs);
            facts.phases.insert(
                phase_run.id.clone(),
                json!({"phaseId": phase_run.id, "status": condition_status(status, kind.as_deref())}),
            );
        }
    }
    facts
}

/// `application` when a job of phase run `index` failed with an application error.
fn run_error_kind(
    run: &FlowRun,
    index: usize,
    jobs: &BTreeMap<String, Vec<TaskJobFacts>>,
) -> Option<String> {
    let tasks = run.phase_runs[index].attempts.keys();
    let kinds = tasks.filter_map(|task| {
        jobs_in_run(run, index, jobs, task)
            .last()?
            .error_kind
            .clone()
    });
    kinds.max_by_key(|kind| kind == "application")
}

/// The flow's result document (`tasks` and `phases`, each entry upserted by id so a phase run
/// again shows its latest run); `result.flow` is the record itself.
pub fn document(
    flow: &Flow,
    run: &FlowRun,
    jobs: &BTreeMap<String, Vec<TaskJobFacts>>,
    format_time: impl Fn(i64) -> String,
) -> (Vec<Value>, Vec<Value>) {
    let mut tasks: Vec<Value> = Vec::new();
    let mut phases: Vec<Value> = Vec::new();
    let upsert = |list: &mut Vec<Value>, entry: Value| match list
        .iter_mut()
        .find(|e| e["id"] == entry["id"])
    {
        Some(old) => *old = entry,
        None => list.push(entry),
    };
    for (index, phase_run) in run.phase_runs.iter().enumerate() {
        for note in &phase_run.notes {
            let Some(task) = flow.task(&note.task) else {
                continue;
            };
            upsert(
                &mut tasks,
                json!({"id": task.id, "name": task.name, "type": task.kind.name(), "phase": task.phase, "status": note.status.as_str(), "message": note.message}),
            );
        }
        // Notification and variable tasks ran first, then the job tasks (configuration order).
        let job_tasks = flow
            .tasks
            .iter()
            .filter(|t| phase_run.attempts.contains_key(&t.id));
        for task in job_tasks {
            let task_id = &task.id;
            let own = jobs_in_run(run, index, jobs, task_id);
            let Some(last) = own.last() else { continue };
            let delay = match &task.kind {
                TaskKind::Job { delay, .. } => *delay,
                _ => None,
            };
            let results: Vec<Value> = own
                .iter()
                .map(|job| {
                    json!({
                        "jobId": job.id.to_string(),
                        "status": job.status.as_str(),
                        "startTime": job.start_time,
                        "duration": job.duration,
                        "result": job.result,
                    })
                })
                .collect();
            let mut entry = json!({
                "id": task.id, "name": task.name, "type": "job", "phase": task.phase,
                "jobId": last.id.to_string(), "component": last.component, "config": last.config,
                "startTime": last.start_time, "status": last.status.as_str(), "duration": last.duration,
                "results": results,
            });
            if let Some(delay) = delay {
                entry["delay"] = json!(delay);
            }
            if own.len() > 1 {
                entry["retry"] = json!(own.len() - 1);
            }
            upsert(&mut tasks, entry);
        }
        let name = flow
            .phase(&phase_run.id)
            .map_or(phase_run.id.clone(), |p| p.name.clone());
        upsert(
            &mut phases,
            json!({
                "id": phase_run.id,
                "name": name,
                "status": phase_run.status.map_or("processing", Status::as_str),
                "startTime": format_time(phase_run.started),
                "duration": phase_run.ended.map(|end| (end - phase_run.started).max(0) / 1_000_000),
                "conditions": phase_run.conditions,
            }),
        );
    }
    (tasks, phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, phase: &str, body: Value) -> Value {
        json!({"id": id, "name": format!("n{id}"), "phase": phase, "task": body})
    }

    fn job(component: &str) -> Value {
        json!({"type": "job", "componentId": component, "configData": {}, "mode": "run"})
    }

    fn parse(configuration: Value) -> Result<Flow, String> {
        Flow::parse(&configuration).map_err(|e| e.to_string())
    }

    fn facts(id: u64, status: Status, message: &str) -> TaskJobFacts {
        TaskJobFacts {
            id,
            status,
            error_kind: (status == Status::Error).then(|| "application".to_string()),
            message: Some(message.to_string()),
            component: "c".into(),
            config: None,
            start_time: None,
            end_time: None,
            duration: Some(1),
            result: json!({}),
        }
    }

    #[test]
    fn invalid_flows_name_the_part() {
        let phases = json!([{"id": "a", "name": "A", "next": [{"id": "t", "goto": "b"}]}, {"id": "b", "name": "B"}]);
        let cases = [
            (json!({"phases": [{"id": "a", "next": [{"id": "t", "goto": "z"}]}], "tasks": []}), "Phase \"a\", transition \"t\" (#1): it goes to phase \"z\", which the flow does not have; set \"goto\" to a phase id or null."),
            (json!({"phases": phases, "tasks": [task("1", "q", job("c"))]}), "Task \"1\" belongs to phase \"q\", which does not exist; set its \"phase\" to the id of one of the phases."),
            (json!({"phases": phases, "tasks": [task("1", "a", json!({"type": "script"}))]}), "Task \"1\": jobq does not support task type \"script\"; use one of job, notification, variable."),
            (json!({"phases": phases, "tasks": [task("1", "a", json!({"type": "notification", "title": "x", "recipients": [{"channel": "slack", "address": "x"}]}))]}), "Task \"1\", recipient #1: jobq does not support channel \"slack\"; use one of email, webhook."),
            (json!({"phases": phases, "tasks": [task("1", "a", json!({"type": "notification", "title": "x", "recipients": [{"channel": "webhook", "address": "ftp://x"}]}))]}), "Task \"1\", recipient #1: jobq does not support webhook address \"ftp://x\"; use one of an http:// or https:// URL."),
            (json!({"phases": [{"id": "a", "retry": {"strategy": "exponential"}}], "tasks": []}), "Phase \"a\", retry: jobq does not support retry strategy \"exponential\"; use one of linear."),
            (json!({"phases": [{"id": "a", "next": [{"id": "t", "goto": null, "condition": {"type": "variable", "value": "v"}}]}], "tasks": []}), "Phase \"a\", transition \"t\" (#1): it reads variable \"v\", which no variable task of the flow sets; fix the condition."),
            (json!({"phases": [{"id": "a", "next": [{"id": "t", "goto": null, "condition": {"type": "phase", "phase": "q", "value": "status"}}]}], "tasks": []}), "Phase \"a\", transition \"t\" (#1): it names phase \"q\", which the flow does not have; fix the condition."),
            (json!({"phases": [{"id": "a", "next": [{"id": "t", "goto": null, "condition": {"type": "operator", "operator": "XOR", "operands": []}}]}], "tasks": []}), "Phase \"a\", transition #1 (\"t\"), condition: jobq does not support operator \"XOR\"; use one of AND, OR, EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN, INCLUDES, CONTAINS, ALL_TASKS_IN_PHASE, ANY_TASKS_IN_PHASE."),
            (json!({"phases": phases, "tasks": [task("1", "a", json!({"type": "job", "configId": "1"}))]}), "Task \"1\" names no component; set its \"task.componentId\"."),
        ];
        for (configuration, message) in cases {
            assert_eq!(parse(configuration).unwrap_err(), message);
        }
    }

    /// Runs `step` as the queue would, with `outcome` deciding each created job's end.
    fn drive(
        flow: &Flow,
        outcome: impl Fn(&str, u32) -> Status,
    ) -> (FlowRun, Vec<String>, BTreeMap<String, Vec<TaskJobFacts>>) {
        let mut run = FlowRun::default();
        let mut jobs: BTreeMap<String, Vec<TaskJobFacts>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut next_id = 100;
        for _ in 0..50 {
            match step(flow, &run, &jobs, 0) {
                Step::Wait => break,
                Step::Notify(tasks) => {
                    let notes = tasks
                        .iter()
                        .map(|t| TaskNote {
                            task: t.id.clone(),
                            status: Status::Success,
                            message: "sent".into(),
                        })
                        .collect();
                    run = notified(&run, notes);
                }
                Step::Record(progress) => {
                    events.extend(progress.events.into_iter().map(|(_, m)| m));
                    for (task, _) in progress.create {
                        next_id += 1;
                        let list = jobs.entry(task.id.clone()).or_default();
                        let status = outcome(&task.id, list.len() as u32 + 1);
                        list.push(facts(next_id, status, "boom"));
                    }
                    run = progress.run;
                }
            }
        }
        (run, events, jobs)
    }

    #[test]
    fn a_run_follows_conditions_retries_and_variables() {
        let flow = parse(json!({
            "phases": [
                {"id": "a", "name": "A", "retry": {"strategyParams": {"maxRetries": 2, "delay": 0}},
                 "next": [
                    {"id": "bad", "goto": "c", "condition": {"type": "operator", "operator": "EQUALS", "operands": [
                        {"type": "task", "task": "j1", "value": "status"}, {"type": "const", "value": "application_error"}]}},
                    {"id": "ok", "goto": "b"}]},
                {"id": "b", "name": "B", "next": [{"id": "end", "goto": null}]},
                {"id": "c", "name": "C", "next": [{"id": "end", "goto": null}]}
            ],
            "tasks": [
                task("v", "a", json!({"type": "variable", "name": "env", "value": "prod"})),
                task("n", "a", json!({"type": "notification", "title": "hi", "recipients": [{"channel": "email", "address": "a@b.c"}]})),
                task("j1", "a", job("c")),
                task("j2", "b", job("c")),
                task("j3", "c", job("c"))
            ]
        }))
        .unwrap();
        // j1 fails once, then succeeds: the retry runs, the default transition goes to b.
        let (run, events, jobs) = drive(&flow, |task, attempt| {
            if task == "j1" && attempt == 1 {
                Status::Error
            } else {
                Status::Success
            }
        });
        assert_eq!(run.status, Some(Status::Success), "{events:#?}");
        let ids: Vec<&str> = run.phase_runs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(run.phase_runs[0].attempts["j1"], 2);
        assert_eq!(run.variables["env"], "prod");
        assert_eq!(run.phase_runs[0].notes[0].task, "n");
        assert_eq!(
            run.phase_runs[0].notes[1].message,
            "Variable \"env\" set to \"prod\"."
        );
        assert!(
            events.contains(&"Task \"nj1\" (job 101) failed; retry 1 of 2 in 0 s.".to_string()),
            "{events:#?}"
        );
        assert!(!run.phase_runs[0].conditions[0].matched);
        assert!(run.phase_runs[0].conditions[1].matched);
        let (tasks, phases) = document(&flow, &run, &jobs, |t| t.to_string());
        let j1 = tasks.iter().find(|t| t["id"] == "j1").unwrap();
        assert_eq!(j1["retry"], 1);
        assert_eq!(j1["results"].as_array().unwrap().len(), 2);
        assert_eq!(phases.len(), 2);

        // j1 always fails: after 2 retries the failed phase takes only the matching condition.
        let (run, _, _) = drive(&flow, |task, _| {
            if task == "j1" {
                Status::Error
            } else {
                Status::Success
            }
        });
        let ids: Vec<&str> = run.phase_runs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(run.phase_runs[0].attempts["j1"], 3);
        assert_eq!(run.status, Some(Status::Warning));
    }

    #[test]
    fn an_unhandled_failure_or_no_transition_ends_the_flow_in_error() {
        let flow = parse(json!({
            "phases": [{"id": "a"}, {"id": "b"}],
            "tasks": [task("1", "a", job("c")), task("2", "b", job("c"))]
        }))
        .unwrap();
        let (run, _, _) = drive(&flow, |_, _| Status::Success);
        assert_eq!(run.status, Some(Status::Success));
        assert_eq!(
            run.phase_runs.len(),
            2,
            "without \"next\" phases run in order"
        );
        let (run, _, _) = drive(&flow, |_, _| Status::Error);
        assert_eq!(run.status, Some(Status::Error));
        assert_eq!(
            run.message.as_deref(),
            Some("Phase \"a\" ended error and no condition of its transitions handled it.")
        );
        let looping = parse(json!({"phases": [{"id": "a", "next": [{"id": "again", "goto": "a"}]}], "tasks": [task("1", "a", job("c"))]})).unwrap();
        let (run, _, _) = drive(&looping, |_, _| Status::Success);
        assert_eq!(run.status, None, "50 steps are not yet the 100 phase runs");
        let never = parse(json!({"phases": [{"id": "a", "next": [{"id": "x", "goto": null, "condition": {"type": "const", "value": false}}]}], "tasks": []})).unwrap();
        let (run, _, _) = drive(&never, |_, _| Status::Success);
        assert_eq!(run.status, Some(Status::Error));
    }
}
