//! Input and output mapping: local Storage tables and files into a job's `in/` before its
//! container runs, and its `out/` back into Storage afterwards.

pub mod input;
pub mod manifest;
pub mod output;
pub mod safety;

use serde_json::{json, Value};

/// A table as a job's `result.input.tables` / `result.output.tables` lists it.
pub fn table_entry(id: &str, name: &str, columns: &[String]) -> Value {
    let columns: Vec<Value> = columns.iter().map(|name| json!({"name": name})).collect();
    json!({"id": id, "name": name, "displayName": name, "columns": columns})
}
