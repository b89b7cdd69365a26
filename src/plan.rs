//! What a job runs: its configuration resolved into tasks, one per container (rows selected
//! and deep-merged over the root, variables replaced, state attached).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::{deep_merge, replace_placeholders, Configuration, Row};
use crate::model::{Job, JobResult, UserError, Variable};
use crate::runner::Task;
use crate::settings::Component;

/// The component whose configurations hold variable definitions and their value sets.
pub const VARIABLES_COMPONENT: &str = "keboola.variables";

/// The tasks of a job and what its result reports about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tasks: Vec<Task>,
    /// Disabled rows that were not asked for.
    pub skipped_rows: Vec<String>,
    /// The stored configuration's version; `None` for configData jobs.
    pub config_version: Option<u64>,
    /// The variables that were replaced, in order.
    pub variables: Vec<(String, String)>,
}

impl Plan {
    /// Adds `configVersion` and `variables` to a job's `result`.
    pub fn describe(&self, result: &mut JobResult) {
        if let Some(version) = self.config_version {
            result.config_version = Some(version.to_string());
        }
        if !self.variables.is_empty() {
            let variables = self.variables.iter().map(|(name, value)| Variable {
                name: name.clone(),
                value: value.clone(),
            });
            result.variables = Some(variables.collect());
        }
    }
}

/// Whether the job runs its stored configuration (a `config` and no `configData`).
pub fn runs_stored(config: Option<&str>, config_data: &Value) -> bool {
    config.is_some() && config_data.as_object().is_none_or(|data| data.is_empty())
}

/// The rows a job of `stored` runs: the listed ones (in the configuration's order, disabled or
/// not), else every enabled row. Also the disabled rows skipped. Unknown listed ids: an error
/// naming them.
pub fn select_rows<'a>(
    stored: &'a Configuration,
    listed: &[String],
) -> Result<(Vec<&'a Row>, Vec<String>), UserError> {
    let unknown: Vec<&str> = listed
        .iter()
        .filter(|id| stored.row(id).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(UserError(format!(
            "Configuration row(s) \"{}\" not found in configuration \"{}\" of component \"{}\".",
            unknown.join("\", \""),
            stored.id,
            stored.component
        )));
    }
    let mut selected = Vec::new();
    let mut skipped = Vec::new();
    for row in &stored.rows {
        if listed.is_empty() {
            if row.is_disabled {
                skipped.push(row.id.clone());
            } else {
                selected.push(row);
            }
        } else if listed.contains(&row.id) {
            selected.push(row);
        }
    }
    Ok((selected, skipped))
}

/// Processors live at the root or in rows, never both.
pub fn check_processors(stored: &Configuration) -> Result<(), UserError> {
    let has = |configuration: &Value| {
        configuration.get("processors").is_some_and(|p| {
            p.as_object().is_some_and(|p| {
                p.values()
                    .any(|list| list.as_array().is_some_and(|l| !l.is_empty()))
            })
        })
    };
    if has(&stored.configuration) && stored.rows.iter().any(|row| has(&row.configuration)) {
        return Err("Processors may be set either in configuration or in configuration row, but not in both places.".into());
    }
    Ok(())
}

/// Resolves `job` into tasks. `stored` is its stored configuration when it runs one;
/// `variables` the variables configuration that `stored` names, if any. An error is the user
/// error the job fails with.
pub fn plan(
    job: &Job,
    job_dir: &Path,
    stored: Option<&Configuration>,
    variables: Option<&Configuration>,
) -> Result<Plan, UserError> {
    let values = variable_values(
        &job.variable_values_data,
        job.variable_values_id.as_deref(),
        stored,
        variables,
    )?;
    let (mut tasks, skipped_rows, config_version) = match stored {
        None => (
            vec![Task {
                configuration: job.config_data.clone(),
                state: json!({}),
                row_id: None,
                folder: job_dir.to_path_buf(),
                config_version: None,
            }],
            Vec::new(),
            None,
        ),
        Some(stored) if stored.rows.is_empty() => (
            vec![Task {
                configuration: stored.configuration.clone(),
                state: component_state(&stored.state),
                row_id: None,
                folder: job_dir.to_path_buf(),
                config_version: Some(stored.version),
            }],
            Vec::new(),
            Some(stored.version),
        ),
        Some(stored) => {
            let (rows, skipped) = select_rows(stored, &job.config_row_ids)?;
            let tasks = rows
                .into_iter()
                .map(|row| Task {
                    configuration: deep_merge(&stored.configuration, &row.configuration),
                    state: component_state(&row.state),
                    row_id: Some(row.id.clone()),
                    folder: job_dir.join("rows").join(&row.id),
                    config_version: Some(stored.version),
                })
                .collect();
            (tasks, skipped, Some(stored.version))
        }
    };
    let mut missing: Vec<String> = Vec::new();
    for task in &mut tasks {
        for name in replace_placeholders(&mut task.configuration, &values) {
            if !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    if !missing.is_empty() {
        return Err(UserError(format!(
            "Missing values for placeholders: {}",
            missing.join(", ")
        )));
    }
    Ok(Plan {
        tasks,
        skipped_rows,
        config_version,
        variables: values,
    })
}

/// The longest a job's component container may run: the configuration's
/// `runtime.process_timeout` when above 0 (at most `MAX_PROCESS_TIMEOUT`), else the component's
/// own, as the platform reads it (processors always run with their own).
pub fn process_timeout(configuration: &Value, component: &Component) -> Duration {
    match configuration
        .pointer("/runtime/process_timeout")
        .and_then(Value::as_f64)
    {
        Some(seconds) if seconds >= 1.0 => {
            Duration::from_secs(seconds as u64).min(MAX_PROCESS_TIMEOUT)
        }
        _ => component.process_timeout,
    }
}

/// The cap of a configuration's `runtime.process_timeout`: a day.
pub const MAX_PROCESS_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The `component` part of a stored state (`{}` when none).
pub fn component_state(state: &Value) -> Value {
    match state.get("component") {
        Some(component) if component.is_object() => component.clone(),
        _ => json!({}),
    }
}

/// The `variableValuesData` of a `keboola.flow` task's job: its own values (`values_data`, else
/// the value set of `variables`), each variable that `variables` defines and the flow sets
/// (`flow`) taking the flow's value. `None` when the flow sets none of them: the job runs with
/// its own values.
pub fn with_flow_variables(
    values_data: &Value,
    values_id: Option<&str>,
    stored: Option<&Configuration>,
    variables: &Configuration,
    flow: &[(String, String)],
) -> Result<Option<Value>, UserError> {
    let defined = variables.configuration["variables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let defined: Vec<&str> = defined.iter().filter_map(|v| v["name"].as_str()).collect();
    let taken: Vec<&(String, String)> = flow
        .iter()
        .filter(|(name, _)| defined.contains(&name.as_str()))
        .collect();
    if taken.is_empty() {
        return Ok(None);
    }
    let mut values = variable_values(values_data, values_id, stored, Some(variables))?;
    for (name, value) in taken {
        match values.iter_mut().find(|(own, _)| own == name) {
            Some(own) => own.1 = value.clone(),
            None => values.push((name.clone(), value.clone())),
        }
    }
    let values: Vec<Value> = values
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(Some(json!({"values": values})))
}

/// Variable values: the job's `variableValuesData`, else the value set (`variableValuesId`, else
/// the configuration's `variables_values_id`) of the variables configuration it names.
fn variable_values(
    values_data: &Value,
    values_id: Option<&str>,
    stored: Option<&Configuration>,
    variables: Option<&Configuration>,
) -> Result<Vec<(String, String)>, UserError> {
    let pairs = |values: &Value| -> Vec<(String, String)> {
        values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| {
                let name = pair.get("name")?.as_str()?.to_string();
                let value = match pair.get("value")? {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                Some((name, value))
            })
            .collect()
    };
    let given = pairs(&values_data["values"]);
    if !given.is_empty() {
        return Ok(given);
    }
    let Some(variables) = variables else {
        return Ok(Vec::new());
    };
    let values_id = values_id.map(str::to_string).or_else(|| {
        stored
            .and_then(|s| s.configuration.get("variables_values_id"))
            .and_then(|id| {
                id.as_str()
                    .map(str::to_string)
                    .or_else(|| id.as_u64().map(|n| n.to_string()))
            })
    });
    let Some(values_id) = values_id else {
        return Ok(Vec::new());
    };
    let row = variables.row(&values_id).ok_or_else(|| {
        format!(
            "Variable values \"{values_id}\" not found in variables configuration \"{}\".",
            variables.id
        )
    })?;
    Ok(pairs(&row.configuration["values"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Row;

    #[test]
    fn a_configuration_timeout_above_zero_wins_up_to_a_day() {
        let component = Component::development("c", "i:1");
        let timeout = |runtime: Value| process_timeout(&json!({"runtime": runtime}), &component);
        assert_eq!(
            timeout(json!({"process_timeout": 5})),
            Duration::from_secs(5)
        );
        assert_eq!(
            timeout(json!({"process_timeout": 100_000})),
            Duration::from_secs(86_400)
        );
        for ignored in [
            json!({"process_timeout": 0}),
            json!({"process_timeout": "9"}),
            json!({}),
        ] {
            assert_eq!(timeout(ignored), component.process_timeout);
        }
    }

    fn row(id: &str, disabled: bool, configuration: Value) -> Row {
        Row {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            change_description: String::new(),
            version: 1,
            is_disabled: disabled,
            configuration,
            state: json!({"component": {"row": id}}),
            created: 0,
        }
    }

    fn stored(configuration: Value, rows: Vec<Row>) -> Configuration {
        Configuration {
            component: "c".into(),
            branch_id: "1".into(),
            id: "cfg".into(),
            name: "cfg".into(),
            description: String::new(),
            change_description: String::new(),
            version: 7,
            is_disabled: false,
            configuration,
            state: json!({"component": {"root": true}}),
            rows,
            created: 0,
        }
    }

    fn job(rows: &[&str], values: Value) -> Job {
        Job {
            id: 5,
            config: Some("cfg".into()),
            config_row_ids: rows.iter().map(|r| r.to_string()).collect(),
            variable_values_data: json!({"values": values}),
            ..Job::example()
        }
    }

    #[test]
    fn enabled_rows_run_and_disabled_ones_are_skipped_unless_listed() {
        let config = stored(
            json!({}),
            vec![row("a", false, json!({})), row("b", true, json!({}))],
        );
        let (selected, skipped) = select_rows(&config, &[]).unwrap();
        assert_eq!(
            selected.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(skipped, ["b"]);
        let (selected, skipped) = select_rows(&config, &["b".to_string()]).unwrap();
        assert_eq!(
            selected.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert!(skipped.is_empty());
        let error = select_rows(&config, &["x".to_string(), "b".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"x\"") && !error.contains("\"b\""),
            "{error}"
        );
    }

    #[test]
    fn processors_at_root_and_in_rows_are_refused() {
        let processors = json!({"processors": {"before": [{"definition": {"component": "p"}}]}});
        let both = stored(
            processors.clone(),
            vec![row("a", false, processors.clone())],
        );
        assert!(check_processors(&both).is_err());
        assert!(check_processors(&stored(
            processors.clone(),
            vec![row("a", false, json!({}))]
        ))
        .is_ok());
        assert!(check_processors(&stored(
            json!({"processors": {"before": []}}),
            vec![row("a", false, processors)]
        ))
        .is_ok());
    }

    #[test]
    fn rows_become_tasks_with_merged_configuration_and_their_own_state_and_folder() {
        let config = stored(
            json!({"parameters": {"x": 1, "greeting": "hi {{who}}"}}),
            vec![row("a", false, json!({"parameters": {"y": 2}}))],
        );
        let plan = plan(
            &job(&[], json!([{"name": "who", "value": "you"}])),
            Path::new("/j/5"),
            Some(&config),
            None,
        )
        .unwrap();
        assert_eq!(plan.config_version, Some(7));
        let task = &plan.tasks[0];
        assert_eq!(
            task.configuration,
            json!({"parameters": {"x": 1, "y": 2, "greeting": "hi you"}})
        );
        assert_eq!(task.state, json!({"row": "a"}));
        assert_eq!(task.folder, Path::new("/j/5/rows/a"));
        assert_eq!(task.row_id.as_deref(), Some("a"));
        let mut result = JobResult::default();
        plan.describe(&mut result);
        assert_eq!(
            json!(result),
            json!({"configVersion": "7", "variables": [{"name": "who", "value": "you"}]})
        );
    }

    #[test]
    fn a_configuration_without_rows_is_one_task_with_the_root_state() {
        let plan = plan(
            &job(&[], json!([])),
            Path::new("/j/5"),
            Some(&stored(json!({}), vec![])),
            None,
        )
        .unwrap();
        assert_eq!(plan.tasks.len(), 1);
        assert_eq!(plan.tasks[0].state, json!({"root": true}));
        assert_eq!(plan.tasks[0].folder, Path::new("/j/5"));
    }

    #[test]
    fn missing_placeholder_values_fail_with_the_spec_message() {
        let config = stored(
            json!({"parameters": {"a": "{{one}}", "b": "{{two}}"}}),
            vec![],
        );
        let error = plan(&job(&[], json!([])), Path::new("/j"), Some(&config), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Missing values for placeholders: one, two"
        );
    }

    #[test]
    fn stored_value_sets_fill_variables() {
        let config = stored(
            json!({"variables_id": "9", "variables_values_id": "v1", "parameters": {"a": "{{one}}"}}),
            vec![],
        );
        let mut variables = stored(
            json!({"variables": [{"name": "one"}]}),
            vec![row(
                "v1",
                false,
                json!({"values": [{"name": "one", "value": "1"}]}),
            )],
        );
        variables.id = "9".into();
        let plan = plan(
            &job(&[], json!([])),
            Path::new("/j"),
            Some(&config),
            Some(&variables),
        )
        .unwrap();
        assert_eq!(plan.tasks[0].configuration["parameters"]["a"], "1");
    }

    #[test]
    fn only_a_config_without_config_data_runs_the_stored_configuration() {
        assert!(runs_stored(Some("1"), &json!({})));
        assert!(runs_stored(Some("1"), &json!([])));
        assert!(!runs_stored(Some("1"), &json!({"parameters": {}})));
        assert!(!runs_stored(None, &json!({})));
    }
}
