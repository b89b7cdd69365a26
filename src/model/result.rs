//! A job's `result`: the fields jobq writes, typed; any other key kept as it came.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job's `result` as clients see it. A field jobq has not written is absent from the JSON,
/// never `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResultError>,
    /// Per row, the images it ran (processors and the component), as the runner describes
    /// them (`{"id", "digests"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Vec<Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<MappedTables>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<MappedTables>,
    /// The version of the stored configuration the job ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// The variables replaced in its configuration, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<Variable>>,
    /// Keys jobq does not write itself, kept and answered as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `result.error`: who is to blame, and the exception id of the log line that explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultError {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    pub exception_id: String,
}

/// An error of the job's own found outside its container (its configuration, its mappings,
/// what it wrote): the job fails with it, its message becoming `result.message`, with
/// `result.error.type` "user".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl From<String> for UserError {
    fn from(message: String) -> UserError {
        UserError(message)
    }
}

impl From<&str> for UserError {
    fn from(message: &str) -> UserError {
        UserError(message.to_string())
    }
}

/// Which side is to blame for a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    User,
    Application,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::Application => "application",
        }
    }
}

/// `result.input` / `result.output`: the tables a job's mappings read or loaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappedTables {
    /// Entries as `mapping::table_entry` writes them.
    pub tables: Vec<Value>,
}

/// One replaced variable of `result.variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_fields_stay_absent() {
        assert_eq!(json!(JobResult::default()), json!({}));
        let ok = JobResult {
            message: Some("Component processing finished.".to_string()),
            images: Some(Vec::new()),
            ..JobResult::default()
        };
        assert_eq!(
            json!(ok),
            json!({"message": "Component processing finished.", "images": []})
        );
    }

    #[test]
    fn every_field_has_its_api_name() {
        let result = JobResult {
            message: Some("m".to_string()),
            error: Some(ResultError {
                kind: ErrorKind::Application,
                exception_id: "exception-1".to_string(),
            }),
            images: Some(vec![vec![json!({"id": "i", "digests": ["d"]})]]),
            input: Some(MappedTables {
                tables: vec![json!({"id": "in.c-a.t"})],
            }),
            output: Some(MappedTables::default()),
            config_version: Some("4".to_string()),
            variables: Some(vec![Variable {
                name: "who".to_string(),
                value: "you".to_string(),
            }]),
            other: Map::new(),
        };
        let answered = json!({
            "message": "m",
            "error": {"type": "application", "exceptionId": "exception-1"},
            "images": [[{"id": "i", "digests": ["d"]}]],
            "input": {"tables": [{"id": "in.c-a.t"}]},
            "output": {"tables": []},
            "configVersion": "4",
            "variables": [{"name": "who", "value": "you"}],
        });
        assert_eq!(json!(result), answered);
        let back: JobResult = serde_json::from_value(answered).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn unknown_keys_round_trip() {
        let stored = json!({"message": "m", "future": {"x": [1, null]}, "z": "last"});
        let result: JobResult = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(result.message.as_deref(), Some("m"));
        assert_eq!(result.other.len(), 2);
        assert_eq!(json!(result), stored);
    }
}
