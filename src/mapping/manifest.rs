//! Output manifests (the legacy format and `manifest_type: "out"` with `schema`) and output
//! mapping entries, merged into the settings of one table load.

use serde_json::Value;

use crate::model::UserError;
use crate::storage::{Operator, RowFilter};

/// How one output table is loaded, from its manifest and its mapping entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputTable {
    /// The destination table id, when the manifest or the mapping names one.
    pub destination: Option<String>,
    pub incremental: bool,
    pub primary_key: Vec<String>,
    /// Given: the data has no header row and these are its columns.
    pub columns: Option<Vec<String>>,
    pub delimiter: Option<char>,
    /// `Some("")`: values are never enclosed.
    pub enclosure: Option<String>,
    pub write_always: bool,
    pub delete_where: Option<DeleteWhere>,
}

/// Rows to delete before an incremental load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteWhere {
    pub column: String,
    pub values: Vec<String>,
    /// `eq` or `ne`.
    pub operator: String,
}

impl OutputTable {
    /// The enclosure character of the data: `"` unless set; none when set empty.
    pub fn enclosure(&self) -> Option<char> {
        match &self.enclosure {
            None => Some('"'),
            Some(text) => text.chars().next(),
        }
    }

    /// The rows to delete before an incremental load, for the Storage engine.
    pub fn delete_where(&self) -> Result<Option<RowFilter>, UserError> {
        let Some(delete) = &self.delete_where else {
            return Ok(None);
        };
        let operator = Operator::parse(&delete.operator).ok_or_else(|| {
            format!(
                "\"delete_where_operator\" must be eq or ne, \"{}\" given.",
                delete.operator
            )
        })?;
        Ok(Some(RowFilter {
            column: delete.column.clone(),
            values: delete.values.clone(),
            operator,
        }))
    }

    /// Reads a manifest of either format; `name` (the file's) goes into error messages.
    pub fn from_manifest(name: &str, manifest: &Value) -> Result<OutputTable, UserError> {
        let mut table = OutputTable::default();
        table.apply(name, manifest)?;
        if manifest.get("manifest_type").and_then(Value::as_str) == Some("out") {
            if let Some(schema) = manifest.get("schema").and_then(Value::as_array) {
                let names = |keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
                    schema
                        .iter()
                        .filter(|column| keep(column))
                        .filter_map(|column| column.get("name")?.as_str().map(str::to_string))
                        .collect()
                };
                let has_header = manifest
                    .get("has_header")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !has_header {
                    table.columns = Some(names(&|_| true));
                }
                let primary_key = names(&|column| {
                    column.get("primary_key").and_then(Value::as_bool) == Some(true)
                });
                if !primary_key.is_empty() {
                    table.primary_key = primary_key;
                }
            }
        }
        Ok(table)
    }

    /// Lays the fields an output mapping entry sets over this table's.
    pub fn apply(&mut self, name: &str, entry: &Value) -> Result<(), UserError> {
        let Some(entry) = entry.as_object() else {
            return Err(UserError(format!(
                "The manifest of \"{name}\" is not a JSON object."
            )));
        };
        let text = |key: &str| -> Result<Option<String>, UserError> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(UserError(format!(
                    "\"{key}\" of \"{name}\" must be a string."
                ))),
            }
        };
        let list = |key: &str| -> Result<Option<Vec<String>>, UserError> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) => Ok(text.clone()),
                        Value::Number(number) => Ok(number.to_string()),
                        _ => Err(UserError(format!(
                            "\"{key}\" of \"{name}\" must be a list of strings."
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(UserError(format!(
                    "\"{key}\" of \"{name}\" must be a list of strings."
                ))),
            }
        };
        let flag = |key: &str| -> Result<Option<bool>, UserError> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(flag)) => Ok(Some(*flag)),
                Some(_) => Err(UserError(format!(
                    "\"{key}\" of \"{name}\" must be true or false."
                ))),
            }
        };
        let character = |key: &str| -> Result<Option<char>, UserError> {
            let Some(text) = text(key)? else {
                return Ok(None);
            };
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Some(c)),
                _ => Err(UserError(format!(
                    "\"{key}\" of \"{name}\" must be one character."
                ))),
            }
        };
        if let Some(destination) = text("destination")?.filter(|d| !d.is_empty()) {
            self.destination = Some(destination);
        }
        if let Some(incremental) = flag("incremental")? {
            self.incremental = incremental;
        }
        if let Some(primary_key) = list("primary_key")? {
            self.primary_key = primary_key;
        }
        if let Some(columns) = list("columns")?.filter(|c| !c.is_empty()) {
            self.columns = Some(columns);
        }
        if let Some(delimiter) = character("delimiter")? {
            self.delimiter = Some(delimiter);
        }
        if let Some(enclosure) = text("enclosure")? {
            if enclosure.chars().count() > 1 {
                return Err(UserError(format!(
                    "\"enclosure\" of \"{name}\" must be one character or empty."
                )));
            }
            self.enclosure = Some(enclosure);
        }
        if let Some(write_always) = flag("write_always")? {
            self.write_always = write_always;
        }
        if let Some(column) = text("delete_where_column")?.filter(|c| !c.is_empty()) {
            self.delete_where = Some(DeleteWhere {
                column,
                values: list("delete_where_values")?.unwrap_or_default(),
                operator: text("delete_where_operator")?.unwrap_or_else(|| "eq".into()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_manifest_gives_every_setting() {
        let table = OutputTable::from_manifest(
            "t.csv",
            &json!({
                "destination": "out.c-x.t", "incremental": true, "primary_key": ["id"],
                "columns": ["id", "name"], "delimiter": ";", "enclosure": "'", "write_always": true,
                "delete_where_column": "id", "delete_where_values": ["1", 2], "delete_where_operator": "ne",
            }),
        )
        .unwrap();
        assert_eq!(
            table,
            OutputTable {
                destination: Some("out.c-x.t".into()),
                incremental: true,
                primary_key: vec!["id".into()],
                columns: Some(vec!["id".into(), "name".into()]),
                delimiter: Some(';'),
                enclosure: Some("'".into()),
                write_always: true,
                delete_where: Some(DeleteWhere {
                    column: "id".into(),
                    values: vec!["1".into(), "2".into()],
                    operator: "ne".into()
                }),
            }
        );
    }

    #[test]
    fn new_manifest_takes_columns_and_primary_key_from_schema() {
        let manifest = json!({
            "manifest_type": "out", "destination": "out.c-x.t", "has_header": false,
            "schema": [
                {"name": "id", "data_type": {"base": {"type": "INTEGER"}}, "primary_key": true},
                {"name": "name", "nullable": true},
            ],
        });
        let table = OutputTable::from_manifest("t.csv", &manifest).unwrap();
        assert_eq!(table.columns, Some(vec!["id".into(), "name".into()]));
        assert_eq!(table.primary_key, vec!["id".to_string()]);
        let with_header =
            json!({"manifest_type": "out", "has_header": true, "schema": [{"name": "id"}]});
        assert_eq!(
            OutputTable::from_manifest("t.csv", &with_header)
                .unwrap()
                .columns,
            None
        );
    }

    #[test]
    fn mapping_entries_override_the_manifest() {
        let mut table =
            OutputTable::from_manifest("t.csv", &json!({"destination": "out.c-a.t"})).unwrap();
        table
            .apply(
                "t.csv",
                &json!({"source": "t.csv", "destination": "out.c-b.t", "incremental": true}),
            )
            .unwrap();
        assert_eq!(table.destination.as_deref(), Some("out.c-b.t"));
        assert!(table.incremental);
    }

    #[test]
    fn wrong_types_name_the_key_and_the_file() {
        let error =
            OutputTable::from_manifest("t.csv", &json!({"incremental": "yes"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"incremental\" of \"t.csv\" must be true or false."
        );
        let error = OutputTable::from_manifest("t.csv", &json!({"delimiter": ";;"})).unwrap_err();
        assert!(error.to_string().contains("one character"));
    }
}
