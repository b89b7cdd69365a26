//! Input mapping: `storage.input.tables[]` and `storage.input.files[]` into `in/`.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::chain;
use crate::mapping::{safety, table_entry};
use crate::model::{format_time, parse_time, UserError};
use crate::storage::{Export, Operator, RowFilter, Storage};

/// What the input mapping put into `in/`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inputs {
    /// `result.input.tables` entries.
    pub tables: Vec<Value>,
    /// `metrics.storage.inputTablesBytesSum`.
    pub bytes: u64,
}

/// Writes every mapped table as `in/tables/<destination>` (RFC 4180 CSV with a header) with its
/// manifest, and every mapped file as `in/files/<id>_<name>` with its manifest. An error is a
/// user error naming what is wrong.
pub fn map_inputs(
    storage: &Storage,
    configuration: &Value,
    data: &Path,
) -> Result<Inputs, UserError> {
    let mut inputs = Inputs::default();
    let input = &configuration["storage"]["input"];
    for entry in input["tables"].as_array().into_iter().flatten() {
        let source = entry["source"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("Every input mapping table needs a \"source\" table id.")?;
        let destination = entry["destination"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or(source);
        safety::check_relative("input mapping destination", destination)?;
        let table = storage
            .table(source)
            .map_err(|error| chain(&error))?
            .ok_or_else(|| {
                format!("Table \"{source}\" of the input mapping does not exist in Storage.")
            })?;
        let export = export_of(source, entry)?;
        let path = data.join("in/tables").join(destination);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        let file = fs::File::create(&path)
            .map_err(|error| format!("Cannot write \"in/tables/{destination}\": {error}"))?;
        let exported = storage
            .export(source, &export, std::io::BufWriter::new(file))
            .map_err(|error| chain(&error))?;
        let columns = if export.columns.is_empty() {
            table.columns.clone()
        } else {
            export.columns.clone()
        };
        let manifest = json!({
            "id": table.id,
            "name": table.name(),
            "columns": columns,
            "primary_key": table.primary_key,
            "rows_count": exported.rows,
            "data_size_bytes": exported.bytes,
            "created": format_time(table.created),
            "last_import_date": format_time(table.last_import),
        });
        write_manifest(&data.join("in/tables"), destination, &manifest)?;
        inputs
            .tables
            .push(table_entry(&table.id, table.name(), &columns));
        inputs.bytes += exported.bytes;
    }
    for entry in input["files"].as_array().into_iter().flatten() {
        let tags: Vec<String> = entry["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tag| tag.as_str().map(str::to_string))
            .collect();
        let query = entry["query"].as_str().unwrap_or("");
        if tags.is_empty() && query.is_empty() {
            return Err("Every input mapping file needs \"tags\" or a \"query\".".into());
        }
        for file in storage.files(&tags).map_err(|error| chain(&error))? {
            if !query.is_empty() && !file.name.contains(query) {
                continue;
            }
            let name = format!("{}_{}", file.id, file.name);
            safety::check_relative("input file name", &name)?;
            fs::copy(storage.file_path(&file), data.join("in/files").join(&name))
                .map_err(|error| format!("Cannot write \"in/files/{name}\": {error}"))?;
            let manifest = json!({
                "id": file.id,
                "name": file.name,
                "tags": file.tags,
                "size_bytes": file.size_bytes,
                "created": format_time(file.created),
            });
            write_manifest(&data.join("in/files"), &name, &manifest)?;
        }
    }
    Ok(inputs)
}

/// The export an input mapping entry asks for: `columns`, `where_column` / `where_values` /
/// `where_operator`, `limit`, `changed_since` (`-N days`, or a time).
fn export_of(source: &str, entry: &Value) -> Result<Export, UserError> {
    let strings = |key: &str| -> Vec<String> {
        entry[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .collect()
    };
    let filter = match entry["where_column"].as_str().filter(|c| !c.is_empty()) {
        None => None,
        Some(column) => {
            let operator = entry["where_operator"].as_str().unwrap_or("eq");
            Some(RowFilter {
                column: column.to_string(),
                values: strings("where_values"),
                operator: Operator::parse(operator).ok_or_else(|| {
                    format!("\"where_operator\" of input table \"{source}\" must be eq or ne, \"{operator}\" given.")
                })?,
            })
        }
    };
    let limit = match &entry["limit"] {
        Value::Null => None,
        value => Some(value.as_u64().ok_or_else(|| {
            format!("\"limit\" of input table \"{source}\" must be a whole number.")
        })?),
    };
    let changed_since = match entry["changed_since"].as_str().filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => Some(parse_time(text).ok_or_else(|| {
            format!("\"changed_since\" of input table \"{source}\" must be like \"-7 days\", \"{text}\" given.")
        })?),
    };
    Ok(Export {
        columns: strings("columns"),
        filter,
        limit,
        changed_since,
    })
}

fn write_manifest(folder: &Path, name: &str, manifest: &Value) -> Result<(), UserError> {
    let path = folder.join(format!("{name}.manifest"));
    let text = serde_json::to_vec_pretty(manifest).map_err(|error| error.to_string())?;
    fs::write(&path, text)
        .map_err(|error| UserError(format!("Cannot write \"{name}.manifest\": {error}")))
}
