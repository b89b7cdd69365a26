//! Stored configurations of components: branches, configurations, rows and their state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A development branch, or the project's default (main) branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    /// Unix microseconds.
    pub created: i64,
}

/// A component's configuration in one branch. Rows live inside it: a row change is a change of
/// the configuration (its `version` goes up), as in the public Storage API.
///
/// JSON-valued fields are kept as JSON text so that the record encodes with bincode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    pub component: String,
    pub branch_id: String,
    pub id: String,
    pub name: String,
    pub description: String,
    pub change_description: String,
    /// Starts at 1; every change adds one.
    pub version: u64,
    pub is_disabled: bool,
    /// `parameters`, `storage`, `processors`, `runtime`, `authorization`, `variables_id`, ...
    #[serde(with = "super::job::json_text")]
    pub configuration: Value,
    /// `{"component": {...}, "storage": {"input": {...}}}`; `{}` when none.
    #[serde(with = "super::job::json_text")]
    pub state: Value,
    /// In their sort order.
    pub rows: Vec<Row>,
    /// Unix microseconds.
    pub created: i64,
}

/// One row of a configuration: its own configuration (deep-merged over the root's) and state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub description: String,
    pub change_description: String,
    /// The row's own version: starts at 1, every change of this row adds one.
    pub version: u64,
    pub is_disabled: bool,
    #[serde(with = "super::job::json_text")]
    pub configuration: Value,
    #[serde(with = "super::job::json_text")]
    pub state: Value,
    pub created: i64,
}

impl Configuration {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.id == id)
    }

    pub fn row_mut(&mut self, id: &str) -> Option<&mut Row> {
        self.rows.iter_mut().find(|row| row.id == id)
    }
}

/// `{{name}}` placeholders in `value`, in order of first appearance, each once.
pub fn placeholders(value: &Value) -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::String(text) => {
                let mut rest = text.as_str();
                while let Some(start) = rest.find("{{") {
                    let Some(length) = rest[start + 2..].find("}}") else {
                        break;
                    };
                    let name = rest[start + 2..start + 2 + length].trim().to_string();
                    if !name.is_empty() && !found.contains(&name) {
                        found.push(name);
                    }
                    rest = &rest[start + 2 + length + 2..];
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            Value::Object(map) => map.values().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(value, &mut found);
    found
}

/// Replaces every `{{name}}` in the strings of `value` with its value from `values`.
/// Returns the names that have no value (and leaves them in place).
pub fn replace_placeholders(value: &mut Value, values: &[(String, String)]) -> Vec<String> {
    let missing: Vec<String> = placeholders(value)
        .into_iter()
        .filter(|name| !values.iter().any(|(n, _)| n == name))
        .collect();
    fn walk(value: &mut Value, values: &[(String, String)]) {
        match value {
            Value::String(text) => {
                for (name, replacement) in values {
                    for pattern in [format!("{{{{{name}}}}}"), format!("{{{{ {name} }}}}")] {
                        if text.contains(&pattern) {
                            *text = text.replace(&pattern, replacement);
                        }
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, values)),
            Value::Object(map) => map.values_mut().for_each(|item| walk(item, values)),
            _ => {}
        }
    }
    walk(value, values);
    missing
}

/// The root configuration deep-merged with a row's: objects merge key by key, lists by index,
/// anything else the row's value wins.
pub fn deep_merge(root: &Value, row: &Value) -> Value {
    match (root, row) {
        (Value::Object(base), Value::Object(over)) => {
            let mut merged = base.clone();
            for (key, value) in over {
                let next = match base.get(key) {
                    Some(existing) => deep_merge(existing, value),
                    None => value.clone(),
                };
                merged.insert(key.clone(), next);
            }
            Value::Object(merged)
        }
        (Value::Array(base), Value::Array(over)) => {
            let length = base.len().max(over.len());
            Value::Array(
                (0..length)
                    .map(|i| match (base.get(i), over.get(i)) {
                        (Some(b), Some(o)) => deep_merge(b, o),
                        (None, Some(o)) => o.clone(),
                        (Some(b), None) => b.clone(),
                        (None, None) => Value::Null,
                    })
                    .collect(),
            )
        }
        (_, over) => over.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_merge_merges_objects_by_key_and_lists_by_index() {
        let root =
            json!({"parameters": {"a": 1, "b": {"c": 2}, "list": [1, {"x": 1}, 3]}, "storage": {}});
        let row = json!({"parameters": {"b": {"d": 4}, "list": [9, {"y": 2}]}, "extra": true});
        assert_eq!(
            deep_merge(&root, &row),
            json!({
                "parameters": {"a": 1, "b": {"c": 2, "d": 4}, "list": [9, {"x": 1, "y": 2}, 3]},
                "storage": {},
                "extra": true,
            })
        );
    }

    #[test]
    fn scalars_and_mismatched_types_take_the_row_value() {
        assert_eq!(
            deep_merge(&json!({"a": [1]}), &json!({"a": "x"})),
            json!({"a": "x"})
        );
        assert_eq!(deep_merge(&json!(1), &json!(2)), json!(2));
    }

    #[test]
    fn placeholders_are_found_and_replaced() {
        let mut value = json!({"p": "{{a}} and {{ b }}", "l": ["{{a}}", "{{missing}}"], "n": 5});
        // Objects are walked in key order: "l" before "p".
        assert_eq!(placeholders(&value), ["a", "missing", "b"]);
        let missing = replace_placeholders(
            &mut value,
            &[("a".into(), "1".into()), ("b".into(), "2".into())],
        );
        assert_eq!(missing, ["missing"]);
        assert_eq!(
            value,
            json!({"p": "1 and 2", "l": ["1", "{{missing}}"], "n": 5})
        );
    }
}
