//! `keboola.orchestrator` configurations (legacy flows): phases and tasks parsed leniently and
//! validated, and the pure decisions of a flow run (may a phase start, how a phase and the
//! orchestration end).

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

use super::status::Status;

/// The component id of legacy flows; jobq runs its jobs itself (no image, no container).
pub const ORCHESTRATOR: &str = "keboola.orchestrator";

/// How many orchestrations deep a flow may go: an orchestration may run another one as a task,
/// which may run no further orchestration.
pub const MAX_NESTING: usize = 2;

/// A parsed orchestration configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Orchestration {
    pub phases: Vec<Phase>,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub id: String,
    pub name: String,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub phase: String,
    pub enabled: bool,
    pub continue_on_failure: bool,
    /// The task's `task` object: the body of the job it creates (`componentId`, `configId`...).
    pub job: Map<String, Value>,
}

/// The job a task creates, read leniently from its `task` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskJob {
    pub component: String,
    pub config: Option<String>,
    pub config_data: Value,
    pub mode: Option<String>,
    pub config_row_ids: Vec<String>,
    pub tag: Option<String>,
    pub variable_values_id: Option<String>,
    pub variable_values_data: Option<Value>,
}

/// Why an orchestration configuration cannot run; each message names the phase or task and
/// says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrchestrationError {
    #[error("The orchestration configuration needs a \"{0}\" array; add it to the configuration.")]
    NotAList(&'static str),
    #[error("{what} has an \"id\" that is neither a number nor a string; give it one.")]
    BadId { what: String },
    #[error("Phase \"{0}\" is defined twice; give every phase its own id.")]
    DuplicatePhase(String),
    #[error("Task \"{0}\" is defined twice; give every task its own id.")]
    DuplicateTask(String),
    #[error("Phase \"{phase}\" depends on phase \"{missing}\", which does not exist; fix its \"dependsOn\".")]
    UnknownDependency { phase: String, missing: String },
    #[error(
        "Phases {0} depend on each other in a cycle; remove one of their \"dependsOn\" entries."
    )]
    Cycle(String),
    #[error("Task \"{task}\" belongs to phase \"{phase}\", which does not exist; set its \"phase\" to the id of one of the phases.")]
    UnknownPhase { task: String, phase: String },
    #[error("Field \"{field}\" of {what} must be true or false, {given} given.")]
    NotABool {
        field: &'static str,
        what: String,
        given: String,
    },
    #[error("Field \"{field}\" of task \"{task}\" must be {expected}, {given} given.")]
    TaskField {
        task: String,
        field: &'static str,
        expected: &'static str,
        given: String,
    },
    #[error("Task \"{0}\" names no component; set its \"task.componentId\".")]
    NoComponent(String),
    #[error("Field \"onlyOrchestrationTaskIds\" names {0}, which the orchestration does not have; give ids of its tasks.")]
    UnknownTasks(String),
    #[error("Field \"onlyOrchestrationTaskIds\" names task \"{0}\" twice; give each task once.")]
    RepeatedTask(String),
}

impl Orchestration {
    /// Parses a stored `keboola.orchestrator` configuration: ids as numbers or strings,
    /// `"true"`/`"false"` for booleans, `dependsOn` optional; a disabled task is not checked
    /// beyond its id and phase.
    pub fn parse(configuration: &Value) -> Result<Orchestration, OrchestrationError> {
        let list = |key: &'static str| match configuration.get(key) {
            Some(Value::Array(items)) => Ok(items.as_slice()),
            _ => Err(OrchestrationError::NotAList(key)),
        };
        let mut phases = Vec::new();
        for (index, phase) in list("phases")?.iter().enumerate() {
            let what = format!("Phase #{}", index + 1);
            let id = id_of(phase.get("id"), &what)?;
            let depends_on = match phase.get("dependsOn") {
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|dep| {
                        id_of(
                            Some(dep),
                            &format!("A \"dependsOn\" entry of phase \"{id}\""),
                        )
                    })
                    .collect::<Result<_, _>>()?,
                _ => Vec::new(),
            };
            phases.push(Phase {
                name: text_of(phase.get("name")).unwrap_or_else(|| id.clone()),
                id,
                depends_on,
            });
        }
        let mut tasks = Vec::new();
        for (index, task) in list("tasks")?.iter().enumerate() {
            let id = id_of(task.get("id"), &format!("Task #{}", index + 1))?;
            let what = format!("task \"{id}\"");
            tasks.push(Task {
                name: text_of(task.get("name")).unwrap_or_else(|| id.clone()),
                phase: id_of(task.get("phase"), &format!("The \"phase\" of {what}"))?,
                enabled: bool_of(task.get("enabled"), "enabled", &what, true)?,
                continue_on_failure: bool_of(
                    task.get("continueOnFailure"),
                    "continueOnFailure",
                    &what,
                    false,
                )?,
                job: task
                    .get("task")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                id,
            });
        }
        let orchestration = Orchestration { phases, tasks };
        orchestration.validate()?;
        Ok(orchestration)
    }

    /// Unique ids, known phases and dependencies, no cycle, a component for every enabled task.
    fn validate(&self) -> Result<(), OrchestrationError> {
        let mut ids = HashSet::new();
        for phase in &self.phases {
            if !ids.insert(phase.id.as_str()) {
                return Err(OrchestrationError::DuplicatePhase(phase.id.clone()));
            }
        }
        for phase in &self.phases {
            if let Some(missing) = phase.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
                return Err(OrchestrationError::UnknownDependency {
                    phase: phase.id.clone(),
                    missing: missing.clone(),
                });
            }
        }
        self.check_cycles()?;
        let mut task_ids = HashSet::new();
        for task in &self.tasks {
            if !task_ids.insert(task.id.as_str()) {
                return Err(OrchestrationError::DuplicateTask(task.id.clone()));
            }
            if !ids.contains(task.phase.as_str()) {
                return Err(OrchestrationError::UnknownPhase {
                    task: task.id.clone(),
                    phase: task.phase.clone(),
                });
            }
            if task.enabled {
                task.task_job()?;
            }
        }
        Ok(())
    }

    /// A depth-first walk over `dependsOn`; a phase met again on the current path closes a cycle.
    fn check_cycles(&self) -> Result<(), OrchestrationError> {
        let by_id: HashMap<&str, &Phase> = self.phases.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut done: HashSet<&str> = HashSet::new();
        for phase in &self.phases {
            let mut path: Vec<(&str, usize)> = vec![(phase.id.as_str(), 0)];
            while let Some((id, next)) = path.last().copied() {
                if done.contains(id) {
                    path.pop();
                    continue;
                }
                let deps = &by_id[id].depends_on;
                let Some(dep) = deps.get(next) else {
                    done.insert(id);
                    path.pop();
                    continue;
                };
                path.last_mut().expect("the path is not empty").1 += 1;
                if let Some(start) = path.iter().position(|(on, _)| *on == dep.as_str()) {
                    let cycle: Vec<String> = path[start..]
                        .iter()
                        .map(|(id, _)| format!("\"{id}\""))
                        .collect();
                    return Err(OrchestrationError::Cycle(cycle.join(", ")));
                }
                path.push((dep.as_str(), 0));
            }
        }
        Ok(())
    }

    /// The orchestration a rerun of `task_ids` runs: those tasks, the phases that hold them,
    /// and of each phase's `dependsOn` the phases that stay. No ids: the whole orchestration.
    pub fn only(self, task_ids: &[String]) -> Result<Orchestration, OrchestrationError> {
        if task_ids.is_empty() {
            return Ok(self);
        }
        let mut seen = HashSet::new();
        if let Some(twice) = task_ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(OrchestrationError::RepeatedTask(twice.clone()));
        }
        let unknown: Vec<String> = task_ids
            .iter()
            .filter(|id| self.task(id).is_none())
            .map(|id| format!("\"{id}\""))
            .collect();
        if !unknown.is_empty() {
            return Err(OrchestrationError::UnknownTasks(unknown.join(", ")));
        }
        let tasks: Vec<Task> = self
            .tasks
            .into_iter()
            .filter(|t| task_ids.contains(&t.id))
            .collect();
        let kept: HashSet<String> = tasks.iter().map(|t| t.phase.clone()).collect();
        let phases = self
            .phases
            .into_iter()
            .filter(|p| kept.contains(&p.id))
            .map(|mut phase| {
                phase.depends_on.retain(|dep| kept.contains(dep));
                phase
            })
            .collect();
        Ok(Orchestration { phases, tasks })
    }

    pub fn phase(&self, id: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.id == id)
    }

    /// The tasks of phase `id`, in the configuration's order.
    pub fn tasks_of<'a>(&'a self, phase: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.iter().filter(move |t| t.phase == phase)
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

impl Task {
    /// The task as a configuration writes it (ids as strings), for a phase job's `configData`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "phase": self.phase,
            "enabled": self.enabled,
            "continueOnFailure": self.continue_on_failure,
            "task": self.job,
        })
    }

    /// The job this task creates. Ids may be numbers; `configData` must be an object (or `[]`).
    pub fn task_job(&self) -> Result<TaskJob, OrchestrationError> {
        let field = |name: &'static str, expected: &'static str, given: &Value| {
            OrchestrationError::TaskField {
                task: self.id.clone(),
                field: name,
                expected,
                given: given.to_string(),
            }
        };
        let id = |name: &'static str| match self.job.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(other) => Err(field(name, "a string or a number", other)),
        };
        let object = |name: &'static str| match self.job.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) if items.is_empty() => Ok(Some(Value::Object(Map::new()))),
            Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
            Some(other) => Err(field(name, "an object", other)),
        };
        let component =
            id("componentId")?.ok_or_else(|| OrchestrationError::NoComponent(self.id.clone()))?;
        let config_row_ids = match self.job.get("configRowIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(rows)) => rows
                .iter()
                .map(|row| match row {
                    Value::String(text) => Ok(text.clone()),
                    Value::Number(number) => Ok(number.to_string()),
                    other => Err(field("configRowIds", "a list of ids", other)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(field("configRowIds", "a list of ids", other)),
        };
        Ok(TaskJob {
            component,
            config: id("configId")?,
            config_data: object("configData")?.unwrap_or_else(|| Value::Object(Map::new())),
            mode: id("mode")?,
            config_row_ids,
            tag: id("tag")?,
            variable_values_id: id("variableValuesId")?,
            variable_values_data: object("variableValuesData")?,
        })
    }
}

pub(super) fn id_of(value: Option<&Value>, what: &str) -> Result<String, OrchestrationError> {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        _ => Err(OrchestrationError::BadId {
            what: what.to_string(),
        }),
    }
}

pub(super) fn text_of(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .map(str::to_string)
}

/// A boolean, also written `"true"`/`"false"` by older configurations; absent means `default`.
pub(super) fn bool_of(
    value: Option<&Value>,
    field: &'static str,
    what: &str,
    default: bool,
) -> Result<bool, OrchestrationError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(Value::String(text)) if text == "true" => Ok(true),
        Some(Value::String(text)) if text == "false" => Ok(false),
        Some(other) => Err(OrchestrationError::NotABool {
            field,
            what: what.to_string(),
            given: other.to_string(),
        }),
    }
}

/// Whether a phase may start, given the statuses of the phases it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseStart {
    /// Every phase it depends on ended `success` or `warning`.
    Start,
    /// These phases have not finished yet.
    Wait(Vec<String>),
    /// This phase it depends on ended otherwise: the phase never runs.
    Never { phase: String, status: Status },
}

/// Decides a phase's start from `status_of` each phase of `depends_on` (`None`: no job yet).
pub fn phase_start(
    depends_on: &[String],
    status_of: impl Fn(&str) -> Option<Status>,
) -> PhaseStart {
    let mut pending = Vec::new();
    for phase in depends_on {
        match status_of(phase) {
            Some(Status::Success | Status::Warning) => {}
            Some(status) if status.is_finished() => {
                return PhaseStart::Never {
                    phase: phase.clone(),
                    status,
                }
            }
            _ => pending.push(phase.clone()),
        }
    }
    if pending.is_empty() {
        PhaseStart::Start
    } else {
        PhaseStart::Wait(pending)
    }
}

/// How a phase ends from its finished tasks (status, `continueOnFailure`): a task that failed
/// without `continueOnFailure`, or was killed, fails the phase; other failures and tasks ending
/// `warning` make it `warning`.
pub fn phase_outcome(tasks: impl IntoIterator<Item = (Status, bool)>) -> Status {
    let mut outcome = Status::Success;
    for (status, continue_on_failure) in tasks {
        match status {
            Status::Success => {}
            Status::Warning => outcome = Status::Warning,
            Status::Error if continue_on_failure => outcome = Status::Warning,
            _ => return Status::Error,
        }
    }
    outcome
}

/// How an orchestration ends from its phases: `error` when one did not end `success` or
/// `warning`, `warning` when one ended so, else `success`.
pub fn orchestration_outcome(phases: impl IntoIterator<Item = Status>) -> Status {
    let mut outcome = Status::Success;
    for status in phases {
        match status {
            Status::Success => {}
            Status::Warning => outcome = Status::Warning,
            _ => return Status::Error,
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(configuration: Value) -> Result<Orchestration, String> {
        Orchestration::parse(&configuration).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_leniently() {
        let parsed = parse(json!({
            "phases": [
                {"id": 123, "name": "Extract", "dependsOn": []},
                {"id": "456", "name": "Transform", "dependsOn": [123]},
                {"id": 7}
            ],
            "tasks": [
                {"id": 1001, "name": "T1", "phase": 123, "enabled": "true",
                 "task": {"componentId": "c", "configId": 493, "mode": "run", "configRowIds": [1, "b"]}},
                {"id": "1002", "name": "T2", "phase": "456", "enabled": false, "continueOnFailure": "true",
                 "task": {"componentId": "c", "configId": ""}},
                {"id": 1003, "phase": 7, "enabled": "false", "task": {}}
            ]
        }))
        .unwrap();
        assert_eq!(parsed.phases[0].id, "123");
        assert_eq!(parsed.phases[1].depends_on, vec!["123"]);
        assert_eq!(parsed.phases[2].depends_on, Vec::<String>::new());
        assert_eq!(parsed.phases[2].name, "7");
        let tasks = &parsed.tasks;
        assert!(tasks[0].enabled && !tasks[0].continue_on_failure);
        assert!(!tasks[1].enabled && tasks[1].continue_on_failure);
        assert!(!tasks[2].enabled);
        assert_eq!(tasks[2].name, "1003");
        let job = tasks[0].task_job().unwrap();
        assert_eq!(job.component, "c");
        assert_eq!(job.config.as_deref(), Some("493"));
        assert_eq!(job.config_row_ids, vec!["1", "b"]);
        assert_eq!(job.config_data, json!({}));
        assert_eq!(parsed.tasks_of("456").count(), 1);
    }

    #[test]
    fn invalid_configurations_name_the_phase_or_task() {
        let phases = json!([{"id": "a"}, {"id": "b", "dependsOn": ["a"]}]);
        let task = |phase: Value, body: Value| json!({"id": 9, "phase": phase, "task": body});
        let cases = [
            (json!({"tasks": []}), "The orchestration configuration needs a \"phases\" array; add it to the configuration."),
            (json!({"phases": [{"id": "a"}, {"id": "a"}], "tasks": []}), "Phase \"a\" is defined twice; give every phase its own id."),
            (json!({"phases": [{"name": "x"}], "tasks": []}), "Phase #1 has an \"id\" that is neither a number nor a string; give it one."),
            (json!({"phases": [{"id": "a", "dependsOn": ["z"]}], "tasks": []}), "Phase \"a\" depends on phase \"z\", which does not exist; fix its \"dependsOn\"."),
            (
                json!({"phases": [{"id": "a", "dependsOn": ["c"]}, {"id": "b", "dependsOn": ["a"]}, {"id": "c", "dependsOn": ["b"]}], "tasks": []}),
                "Phases \"a\", \"c\", \"b\" depend on each other in a cycle; remove one of their \"dependsOn\" entries.",
            ),
            (json!({"phases": [{"id": "a", "dependsOn": ["a"]}], "tasks": []}), "Phases \"a\" depend on each other in a cycle; remove one of their \"dependsOn\" entries."),
            (json!({"phases": phases, "tasks": [task(json!("q"), json!({"componentId": "c"}))]}), "Task \"9\" belongs to phase \"q\", which does not exist; set its \"phase\" to the id of one of the phases."),
            (json!({"phases": phases, "tasks": [task(json!("a"), json!({"configId": "1"}))]}), "Task \"9\" names no component; set its \"task.componentId\"."),
            (json!({"phases": phases, "tasks": [task(json!("a"), json!({"componentId": "c", "configData": "x"}))]}), "Field \"configData\" of task \"9\" must be an object, \"x\" given."),
            (json!({"phases": phases, "tasks": [{"id": 9, "phase": "a", "enabled": "yes", "task": {}}]}), "Field \"enabled\" of task \"9\" must be true or false, \"yes\" given."),
            (json!({"phases": phases, "tasks": [task(json!("a"), json!({"componentId": "c"})), task(json!("b"), json!({"componentId": "c"}))]}), "Task \"9\" is defined twice; give every task its own id."),
        ];
        for (configuration, message) in cases {
            assert_eq!(parse(configuration).unwrap_err(), message);
        }
    }

    #[test]
    fn a_rerun_keeps_its_tasks_their_phases_and_the_dependencies_among_them() {
        let full = parse(json!({
            "phases": [{"id": "a"}, {"id": "b", "dependsOn": ["a"]}, {"id": "c", "dependsOn": ["b", "a"]}],
            "tasks": [
                {"id": 1, "phase": "a", "task": {"componentId": "x"}},
                {"id": 2, "phase": "b", "task": {"componentId": "x"}},
                {"id": 3, "phase": "c", "task": {"componentId": "x"}},
                {"id": 4, "phase": "c", "task": {"componentId": "x"}}
            ]
        }))
        .unwrap();
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(full.clone().only(&[]).unwrap(), full);
        let rerun = full.clone().only(&ids(&["3", "1"])).unwrap();
        let phases: Vec<(&str, &[String])> = rerun
            .phases
            .iter()
            .map(|p| (p.id.as_str(), p.depends_on.as_slice()))
            .collect();
        assert_eq!(phases, [("a", &[][..]), ("c", &ids(&["a"])[..])]);
        let tasks: Vec<&str> = rerun.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(tasks, ["1", "3"]);
        assert_eq!(
            full.clone().only(&ids(&["9", "1", "8"])).unwrap_err().to_string(),
            "Field \"onlyOrchestrationTaskIds\" names \"9\", \"8\", which the orchestration does not have; give ids of its tasks."
        );
        assert_eq!(
            full.only(&ids(&["1", "1"])).unwrap_err().to_string(),
            "Field \"onlyOrchestrationTaskIds\" names task \"1\" twice; give each task once."
        );
    }

    #[test]
    fn a_phase_starts_after_its_dependencies_succeeded_or_warned() {
        let deps = vec!["a".to_string(), "b".to_string()];
        let statuses = |a, b| move |id: &str| if id == "a" { a } else { b };
        assert_eq!(phase_start(&[], |_| None), PhaseStart::Start);
        assert_eq!(
            phase_start(
                &deps,
                statuses(Some(Status::Success), Some(Status::Warning))
            ),
            PhaseStart::Start
        );
        assert_eq!(
            phase_start(
                &deps,
                statuses(Some(Status::Processing), Some(Status::Success))
            ),
            PhaseStart::Wait(vec!["a".to_string()])
        );
        assert_eq!(
            phase_start(
                &deps,
                statuses(Some(Status::Waiting), Some(Status::Cancelled))
            ),
            PhaseStart::Never {
                phase: "b".to_string(),
                status: Status::Cancelled
            }
        );
    }

    #[test]
    fn phases_and_orchestrations_end_by_their_worst_part() {
        use Status::*;
        assert_eq!(phase_outcome([]), Success);
        assert_eq!(phase_outcome([(Success, false), (Success, true)]), Success);
        assert_eq!(phase_outcome([(Success, false), (Error, true)]), Warning);
        assert_eq!(phase_outcome([(Warning, false)]), Warning);
        assert_eq!(phase_outcome([(Error, true), (Error, false)]), Error);
        assert_eq!(phase_outcome([(Terminated, true)]), Error);
        assert_eq!(phase_outcome([(Cancelled, true)]), Error);
        assert_eq!(orchestration_outcome([Success, Success]), Success);
        assert_eq!(orchestration_outcome([Success, Warning]), Warning);
        assert_eq!(orchestration_outcome([Warning, Cancelled]), Error);
        assert_eq!(orchestration_outcome([Error, Warning]), Error);
    }
}
