//! Conditions of `keboola.flow` transitions and the sources of its variables: the operators and
//! operands of Keboola's conditional-flow schema, parsed (anything else refused, naming it) and
//! evaluated against what a flow run knows (its tasks, phases and variables).

use serde_json::{Map, Value};
use std::collections::HashMap;

/// A parsed condition or operand (the schema's `conditionObject`).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `{"type": "const"|"constant", "value"}`.
    Constant(Value),
    /// `{"type": "phase", "phase", "value"}`: a JMESPath expression over the phase's context.
    Phase { phase: String, path: String },
    /// `{"type": "task", "task", "value"}`: a JMESPath expression over the task's context;
    /// task `*` is the task an `ALL_TASKS_IN_PHASE`/`ANY_TASKS_IN_PHASE` operator is at.
    Task { task: String, path: String },
    /// `{"type": "variable", "value"}`: a flow variable by name.
    Variable(String),
    /// `{"type": "operator", "operator", "operands"}`.
    Operator {
        operator: Operator,
        operands: Vec<Condition>,
    },
    /// `{"type": "operator", "operator": "ALL_TASKS_IN_PHASE"|"ANY_TASKS_IN_PHASE", "phase",
    /// "operands": [one condition]}`.
    EachTask {
        all: bool,
        phase: String,
        condition: Box<Condition>,
    },
    /// `{"type": "function", "function", "operands"}`.
    Function {
        function: Function,
        operand: Box<Condition>,
    },
    /// `{"type": "array", "operands"}`.
    Array(Vec<Condition>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    And,
    Or,
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    Includes,
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The number of items of an array.
    Count,
    /// The current UTC time in a PHP `DateTime::format` format.
    Date,
}

/// Why a part of a flow (a condition, a task, a transition, a retry) cannot be used; the
/// message names the part and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("{at}: jobq does not support {what}; use one of {supported}.")]
    Unsupported {
        at: String,
        what: String,
        supported: &'static str,
    },
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
}

/// Why evaluating a condition failed while the flow ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvaluationError(pub String);

/// What a flow run knows when it evaluates a condition: each task's and phase's context (the
/// JSON its JMESPath expressions read) and the flow variables.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Task id -> `{"taskId", "phaseId", "status", "job"?}`, for tasks that ran.
    pub tasks: HashMap<String, Value>,
    /// Phase id -> `{"phaseId", "status"}`, for phases that ended.
    pub phases: HashMap<String, Value>,
    /// Phase id -> the ids of its tasks, in configuration order.
    pub tasks_of: HashMap<String, Vec<String>>,
    pub variables: Map<String, Value>,
}

const TYPES: &str = "const, constant, phase, task, variable, operator, function, array";
const OPERATORS: &str = "AND, OR, EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN, INCLUDES, CONTAINS, ALL_TASKS_IN_PHASE, ANY_TASKS_IN_PHASE";
const FUNCTIONS: &str = "COUNT, DATE";
/// The PHP date format characters DATE supports (a backslash escapes the next character).
const DATE_CHARACTERS: &str = "d D j l N w z W F m M n t L o Y y a A g G h H i s u v e O P p T U c";

impl Condition {
    /// Parses the condition at `at` (used in messages); `in_phase_operator` allows task `*`.
    pub fn parse(value: &Value, at: &str) -> Result<Condition, PartError> {
        Self::parse_in(value, at, false)
    }

    fn parse_in(value: &Value, at: &str, each_task: bool) -> Result<Condition, PartError> {
        let invalid = |problem: String| PartError::Invalid {
            at: at.to_string(),
            problem,
        };
        let Some(object) = value.as_object() else {
            return Err(invalid(format!(
                "a condition must be an object with a \"type\", {value} given"
            )));
        };
        let text = |key: &str| match object.get(key) {
            Some(Value::String(text)) => Ok(text.clone()),
            other => Err(invalid(format!(
                "field \"{key}\" must be a string, {} given",
                other.map_or("nothing".to_string(), Value::to_string)
            ))),
        };
        let operands = || match object.get("operands") {
            Some(Value::Array(items)) => Ok(items.as_slice()),
            _ => Err(invalid("field \"operands\" must be a list".to_string())),
        };
        let parse_all = |items: &[Value], each: bool| {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| Self::parse_in(item, &format!("{at}, operand #{}", i + 1), each))
                .collect::<Result<Vec<_>, _>>()
        };
        let path = |key: &str| -> Result<String, PartError> {
            let path = text(key)?;
            jmespath::compile(&path).map_err(|error| {
                invalid(format!(
                    "\"{path}\" is not a valid JMESPath expression ({})",
                    error.reason
                ))
            })?;
            Ok(path)
        };
        // The schema's default type of an object with an "operator" is "operator".
        let kind = match object.get("type") {
            None if object.contains_key("operator") => "operator".to_string(),
            _ => text("type")?,
        };
        match kind.as_str() {
            "const" | "constant" => match object.get("value") {
                Some(
                    value
                    @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Array(_)),
                ) => Ok(Condition::Constant(value.clone())),
                _ => Err(invalid(
                    "a constant needs a \"value\": a string, number, boolean or list".to_string(),
                )),
            },
            "phase" => Ok(Condition::Phase {
                phase: text("phase")?,
                path: path("value")?,
            }),
            "task" => {
                let task = text("task")?;
                if task == "*" && !each_task {
                    return Err(invalid("task \"*\" stands for each task of a phase and may be used only inside ALL_TASKS_IN_PHASE or ANY_TASKS_IN_PHASE".to_string()));
                }
                Ok(Condition::Task {
                    task,
                    path: path("value")?,
                })
            }
            "variable" => Ok(Condition::Variable(text("value")?)),
            "array" => Ok(Condition::Array(parse_all(operands()?, each_task)?)),
            "function" => {
                let function = match text("function")?.as_str() {
                    "COUNT" => Function::Count,
                    "DATE" => Function::Date,
                    other => {
                        return Err(PartError::Unsupported {
                            at: at.to_string(),
                            what: format!("function \"{other}\""),
                            supported: FUNCTIONS,
                        })
                    }
                };
                let mut items = parse_all(operands()?, each_task)?;
                if items.len() != 1 {
                    return Err(invalid(format!(
                        "function {} takes 1 operand, {} given",
                        text("function")?,
                        items.len()
                    )));
                }
                let operand = items.remove(0);
                if let (Function::Date, Condition::Constant(Value::String(format))) =
                    (function, &operand)
                {
                    check_date_format(format, at)?;
                }
                Ok(Condition::Function {
                    function,
                    operand: Box::new(operand),
                })
            }
            "operator" => {
                let name = text("operator")?;
                if name == "ALL_TASKS_IN_PHASE" || name == "ANY_TASKS_IN_PHASE" {
                    let mut items = parse_all(operands()?, true)?;
                    if items.len() != 1 {
                        return Err(invalid(format!(
                            "operator {name} takes 1 operand, {} given",
                            items.len()
                        )));
                    }
                    return Ok(Condition::EachTask {
                        all: name == "ALL_TASKS_IN_PHASE",
                        phase: text("phase")?,
                        condition: Box::new(items.remove(0)),
                    });
                }
                let operator = match name.as_str() {
                    "AND" => Operator::And,
                    "OR" => Operator::Or,
                    "EQUALS" => Operator::Equals,
                    "NOT_EQUALS" => Operator::NotEquals,
                    "GREATER_THAN" => Operator::GreaterThan,
                    "LESS_THAN" => Operator::LessThan,
                    "INCLUDES" => Operator::Includes,
                    "CONTAINS" => Operator::Contains,
                    other => {
                        return Err(PartError::Unsupported {
                            at: at.to_string(),
                            what: format!("operator \"{other}\""),
                            supported: OPERATORS,
                        })
                    }
                };
                let operands = parse_all(operands()?, each_task)?;
                let fits = match operator {
                    Operator::And | Operator::Or => !operands.is_empty(),
                    _ => operands.len() == 2,
                };
                if !fits {
                    let wanted = match operator {
                        Operator::And | Operator::Or => "1 or more operands",
                        _ => "2 operands",
                    };
                    return Err(invalid(format!(
                        "operator {name} takes {wanted}, {} given",
                        operands.len()
                    )));
                }
                Ok(Condition::Operator { operator, operands })
            }
            other => Err(PartError::Unsupported {
                at: at.to_string(),
                what: format!("condition type \"{other}\""),
                supported: TYPES,
            }),
        }
    }

    /// Calls `visit` with every phase, task and variable this condition names.
    pub fn references(&self, visit: &mut impl FnMut(Reference<'_>)) {
        match self {
            Condition::Constant(_) => {}
            Condition::Phase { phase, .. } => visit(Reference::Phase(phase)),
            Condition::Task { task, .. } => visit(Reference::Task(task)),
            Condition::Variable(name) => visit(Reference::Variable(name)),
            Condition::Operator { operands, .. } | Condition::Array(operands) => {
                operands.iter().for_each(|o| o.references(visit))
            }
            Condition::EachTask {
                phase, condition, ..
            } => {
                visit(Reference::Phase(phase));
                condition.references(visit);
            }
            Condition::Function { operand, .. } => operand.references(visit),
        }
    }

    /// The value of this condition given `facts`.
    pub fn evaluate(&self, facts: &Facts) -> Result<Value, EvaluationError> {
        self.evaluate_at(facts, None)
    }

    fn evaluate_at(&self, facts: &Facts, each: Option<&str>) -> Result<Value, EvaluationError> {
        let error = |message: String| Err(EvaluationError(message));
        match self {
            Condition::Constant(value) => Ok(value.clone()),
            Condition::Phase { phase, path } => match facts.phases.get(phase) {
                Some(context) => search(path, context),
                None => error(format!(
                    "Phase \"{phase}\" has not ended yet; a condition can read only phases that ended."
                )),
            },
            Condition::Task { task, path } => {
                let task = match (task.as_str(), each) {
                    ("*", Some(current)) => current,
                    _ => task.as_str(),
                };
                match facts.tasks.get(task) {
                    Some(context) => search(path, context),
                    None => error(format!(
                        "Task \"{task}\" has not run yet; a condition can read only tasks that ran."
                    )),
                }
            }
            Condition::Variable(name) => match facts.variables.get(name) {
                Some(value) => Ok(value.clone()),
                None => error(format!(
                    "Variable \"{name}\" is not set yet; a variable task must set it first."
                )),
            },
            Condition::Array(operands) => operands
                .iter()
                .map(|o| o.evaluate_at(facts, each))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Condition::Function { function, operand } => {
                let value = operand.evaluate_at(facts, each)?;
                match (function, &value) {
                    (Function::Count, Value::Array(items)) => Ok(Value::from(items.len())),
                    (Function::Count, Value::Object(items)) => Ok(Value::from(items.len())),
                    (Function::Count, Value::Null) => Ok(Value::from(0)),
                    (Function::Date, Value::String(format)) => Ok(Value::String(php_date(
                        format,
                        chrono::Utc::now().fixed_offset(),
                    ))),
                    (Function::Count, other) => {
                        error(format!("COUNT needs a list, {other} given."))
                    }
                    (Function::Date, other) => {
                        error(format!("DATE needs a format string, {other} given."))
                    }
                }
            }
            Condition::EachTask {
                all,
                phase,
                condition,
            } => {
                let tasks = facts.tasks_of.get(phase).map(Vec::as_slice).unwrap_or(&[]);
                let mut ran = tasks.iter().filter(|t| facts.tasks.contains_key(*t));
                let holds = |task: &String| {
                    condition
                        .evaluate_at(facts, Some(task))
                        .map(|value| truthy(&value))
                };
                let outcome = if *all {
                    ran.try_fold(true, |acc, t| holds(t).map(|h| acc && h))?
                } else {
                    ran.try_fold(false, |acc, t| holds(t).map(|h| acc || h))?
                };
                Ok(Value::Bool(outcome))
            }
            Condition::Operator { operator, operands } => {
                if let Operator::And | Operator::Or = operator {
                    // Short-circuit, left to right.
                    let and = *operator == Operator::And;
                    for operand in operands {
                        if truthy(&operand.evaluate_at(facts, each)?) != and {
                            return Ok(Value::Bool(!and));
                        }
                    }
                    return Ok(Value::Bool(and));
                }
                let left = operands[0].evaluate_at(facts, each)?;
                let right = operands[1].evaluate_at(facts, each)?;
                let outcome = match operator {
                    Operator::Equals => same(&left, &right),
                    Operator::NotEquals => !same(&left, &right),
                    Operator::GreaterThan | Operator::LessThan => {
                        let (Some(l), Some(r)) = (number(&left), number(&right)) else {
                            return error(format!(
                                "{operator:?} compares numbers, {left} and {right} given."
                            ));
                        };
                        if *operator == Operator::GreaterThan {
                            l > r
                        } else {
                            l < r
                        }
                    }
                    Operator::Includes => match &right {
                        Value::Array(items) => items.iter().any(|item| same(&left, item)),
                        other => {
                            return error(format!(
                                "INCLUDES needs a list as its second operand, {other} given."
                            ))
                        }
                    },
                    Operator::Contains => match (&left, &right) {
                        (Value::String(text), Value::String(part)) => {
                            text.to_lowercase().contains(&part.to_lowercase())
                        }
                        _ => {
                            return error(format!(
                                "CONTAINS needs two strings, {left} and {right} given."
                            ))
                        }
                    },
                    Operator::And | Operator::Or => unreachable!("handled above"),
                };
                Ok(Value::Bool(outcome))
            }
        }
    }
}

/// A phase, task or variable a condition names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    Phase(&'a str),
    Task(&'a str),
    Variable(&'a str),
}

/// JMESPath's truth: false, null, `""`, `[]` and `{}` are false, everything else true.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(items) => !items.is_empty(),
        _ => true,
    }
}

/// Equal JSON values; numbers by value (`1` equals `1.0`).
fn same(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) => l.as_f64() == r.as_f64(),
        _ => left == right,
    }
}

/// A number, or a string that holds one.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn search(path: &str, context: &Value) -> Result<Value, EvaluationError> {
    let expression = jmespath::compile(path)
        .map_err(|error| EvaluationError(format!("\"{path}\": {}", error.reason)))?;
    let found = expression
        .search(context)
        .map_err(|error| EvaluationError(format!("\"{path}\": {}", error.reason)))?;
    serde_json::to_value(&*found).map_err(|error| EvaluationError(format!("\"{path}\": {error}")))
}

fn check_date_format(format: &str, at: &str) -> Result<(), PartError> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c.is_ascii_alphabetic() && !DATE_CHARACTERS.split(' ').any(|d| d == c.to_string())
        {
            return Err(PartError::Unsupported {
                at: at.to_string(),
                what: format!("DATE format character \"{c}\""),
                supported: DATE_CHARACTERS,
            });
        }
    }
    Ok(())
}

/// `time` formatted as PHP's `DateTime::format(format)` does, for the characters of
/// `DATE_CHARACTERS`; other characters are copied, a backslash escapes the next one.
pub fn php_date(format: &str, time: chrono::DateTime<chrono::FixedOffset>) -> String {
    use chrono::{Datelike, Timelike};
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '\\' => chars.next().map(String::from).unwrap_or_default(),
            'd' => time.format("%d").to_string(),
            'D' => time.format("%a").to_string(),
            'j' => time.day().to_string(),
            'l' => time.format("%A").to_string(),
            'N' => time.weekday().number_from_monday().to_string(),
            'w' => time.weekday().num_days_from_sunday().to_string(),
            'z' => time.ordinal0().to_string(),
            'W' => time.format("%V").to_string(),
            'F' => time.format("%B").to_string(),
            'm' => time.format("%m").to_string(),
            'M' => time.format("%b").to_string(),
            'n' => time.month().to_string(),
            't' => days_in_month(time.year(), time.month()).to_string(),
            'L' => u8::from(days_in_month(time.year(), 2) == 29).to_string(),
            'o' => time.iso_week().year().to_string(),
            'Y' => time.year().to_string(),
            'y' => time.format("%y").to_string(),
            'a' => time.format("%P").to_string(),
            'A' => time.format("%p").to_string(),
            'g' => time.format("%-I").to_string(),
            'G' => time.hour().to_string(),
            'h' => time.format("%I").to_string(),
            'H' => time.format("%H").to_string(),
            'i' => time.format("%M").to_string(),
            's' => time.format("%S").to_string(),
            'u' => format!("{:06}", time.timestamp_subsec_micros()),
            'v' => format!("{:03}", time.timestamp_subsec_millis()),
            'e' | 'T' => "UTC".to_string(),
            'O' => time.format("%z").to_string(),
            'P' => time.format("%:z").to_string(),
            'p' if time.offset().local_minus_utc() == 0 => "Z".to_string(),
            'p' => time.format("%:z").to_string(),
            'U' => time.timestamp().to_string(),
            'c' => time.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            other => other.to_string(),
        };
        out.push_str(&piece);
    }
    out
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|first| first.pred_opt())
        .map_or(30, |last| chrono::Datelike::day(&last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> Facts {
        let mut facts = Facts::default();
        facts.tasks.insert(
            "t1".into(),
            json!({"taskId": "t1", "phaseId": "p", "status": "success", "job": {"id": "5", "status": "success", "result": {"output": {"tables": [1, 2]}}}}),
        );
        facts.tasks.insert(
            "t2".into(),
            json!({"taskId": "t2", "phaseId": "p", "status": "user_error", "job": {"id": "6", "status": "error"}}),
        );
        facts
            .phases
            .insert("p".into(), json!({"phaseId": "p", "status": "user_error"}));
        facts
            .tasks_of
            .insert("p".into(), vec!["t1".into(), "t2".into(), "off".into()]);
        facts.variables.insert("env".into(), json!("Prod"));
        facts
    }

    fn eval(condition: Value) -> Result<Value, String> {
        Condition::parse(&condition, "c")
            .map_err(|e| e.to_string())?
            .evaluate(&facts())
            .map_err(|e| e.to_string())
    }

    fn op(operator: &str, operands: Value) -> Value {
        json!({"type": "operator", "operator": operator, "operands": operands})
    }

    #[test]
    fn operators_and_operands_of_the_schema() {
        let status = |task: &str| json!({"type": "task", "task": task, "value": "status"});
        let c = |value: Value| json!({"type": "const", "value": value});
        assert_eq!(
            eval(op("EQUALS", json!([status("t1"), c(json!("success"))]))),
            Ok(json!(true))
        );
        assert_eq!(
            eval(op("NOT_EQUALS", json!([status("t2"), c(json!("success"))]))),
            Ok(json!(true))
        );
        assert_eq!(
            eval(op(
                "EQUALS",
                json!([{"type": "phase", "phase": "p", "value": "status"}, {"type": "constant", "value": "user_error"}])
            )),
            Ok(json!(true))
        );
        let tables = json!({"type": "function", "function": "COUNT", "operands": [{"type": "task", "task": "t1", "value": "job.result.output.tables"}]});
        assert_eq!(
            eval(op("GREATER_THAN", json!([tables, c(json!(1))]))),
            Ok(json!(true))
        );
        assert_eq!(
            eval(op("LESS_THAN", json!([c(json!("3")), c(json!(2.5))]))),
            Ok(json!(false))
        );
        assert_eq!(
            eval(op(
                "INCLUDES",
                json!([status("t2"), {"type": "array", "operands": [c(json!("user_error")), c(json!("terminated"))]}])
            )),
            Ok(json!(true))
        );
        assert_eq!(
            eval(op(
                "CONTAINS",
                json!([{"type": "variable", "value": "env"}, c(json!("pro"))])
            )),
            Ok(json!(true))
        );
        assert_eq!(
            eval(op("AND", json!([c(json!(true)), c(json!(""))]))),
            Ok(json!(false))
        );
        assert_eq!(
            eval(op("OR", json!([c(json!(false)), c(json!([1]))]))),
            Ok(json!(true))
        );
        let each = |operator: &str| json!({"type": "operator", "operator": operator, "phase": "p", "operands": [op("EQUALS", json!([status("*"), c(json!("success"))]))]});
        assert_eq!(eval(each("ALL_TASKS_IN_PHASE")), Ok(json!(false)));
        assert_eq!(eval(each("ANY_TASKS_IN_PHASE")), Ok(json!(true)));
        assert_eq!(
            eval(
                json!({"type": "task", "task": "t1", "value": "job.result.output.tables[?@ > `1`] | [0]"})
            ),
            Ok(json!(2))
        );
        assert_eq!(
            eval(json!({"type": "task", "task": "t1", "value": "job.missing"})),
            Ok(Value::Null)
        );
        let year =
            eval(json!({"type": "function", "function": "DATE", "operands": [c(json!("Y"))]}))
                .unwrap();
        assert_eq!(year.as_str().unwrap().len(), 4);
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        let refused = |condition: Value| {
            Condition::parse(&condition, "Transition \"x\"")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(op("CONTINUE_ON_FAILURE", json!([]))),
            format!("Transition \"x\": jobq does not support operator \"CONTINUE_ON_FAILURE\"; use one of {OPERATORS}.")
        );
        assert_eq!(
            refused(json!({"type": "script", "value": "1"})),
            format!("Transition \"x\": jobq does not support condition type \"script\"; use one of {TYPES}.")
        );
        assert_eq!(
            refused(json!({"type": "function", "function": "NOW", "operands": []})),
            format!(
                "Transition \"x\": jobq does not support function \"NOW\"; use one of {FUNCTIONS}."
            )
        );
        assert_eq!(
            refused(json!({"type": "function", "function": "DATE", "operands": [{"type": "const", "value": "Y-m-d X"}]})),
            format!("Transition \"x\", operand #1: jobq does not support DATE format character \"X\"; use one of {DATE_CHARACTERS}.")
                .replace(", operand #1", "")
        );
        assert_eq!(
            refused(op("EQUALS", json!([{"type": "const", "value": 1}]))),
            "Transition \"x\": operator EQUALS takes 2 operands, 1 given"
        );
        assert_eq!(
            refused(json!({"type": "task", "task": "*", "value": "status"})),
            "Transition \"x\": task \"*\" stands for each task of a phase and may be used only inside ALL_TASKS_IN_PHASE or ANY_TASKS_IN_PHASE"
        );
        assert!(
            refused(json!({"type": "task", "task": "a", "value": "status[?"}))
                .starts_with("Transition \"x\": \"status[?\" is not a valid JMESPath expression")
        );
    }

    #[test]
    fn php_dates() {
        let time = chrono::DateTime::parse_from_rfc3339("2024-02-05T07:08:09Z").unwrap();
        assert_eq!(php_date("Y-m-d H:i:s", time), "2024-02-05 07:08:09");
        assert_eq!(
            php_date("D, j M y, N w z t L \\Y", time),
            "Mon, 5 Feb 24, 1 1 35 29 1 Y"
        );
        assert_eq!(
            php_date("c U", time),
            "2024-02-05T07:08:09+00:00 1707116889"
        );
    }
}
