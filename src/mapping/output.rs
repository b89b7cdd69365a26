//! Output mapping: every table in `out/tables` and file in `out/files` into local Storage.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::chain;
use crate::mapping::manifest::OutputTable;
use crate::mapping::safety::{self, Entry};
use crate::mapping::table_entry;
use crate::model::UserError;
use crate::storage::{LoadRequest, LoadSource, Storage};

/// What the output mapping loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    /// `result.output.tables` entries.
    pub tables: Vec<Value>,
    /// `metrics.storage.outputTablesBytesSum`.
    pub bytes: u64,
}

/// Where and how a job's outputs go.
pub struct OutputMapping<'a> {
    pub storage: &'a Storage,
    /// The job's effective configuration (its `storage.output` entries).
    pub configuration: &'a Value,
    /// `<stage>.c-<component>-<config>`, when the component writes to its default bucket.
    pub default_bucket: Option<String>,
    /// The component failed: only tables marked `write_always` are loaded.
    pub failed: bool,
    /// Each table's load id is this, `/`, and the table's file name: a mapping run again after
    /// a crash loads no table twice.
    pub load_id: String,
}

/// The default bucket of a component's configuration: `<stage>.c-<component id with every
/// character outside [a-zA-Z0-9-] replaced by ->-<config id>`; `stage` is `in` or `out`.
pub fn default_bucket(stage: &str, component: &str, config: &str) -> String {
    let component: String = component
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{stage}.c-{component}-{config}")
}

impl OutputMapping<'_> {
    /// Loads the outputs of the job whose data folder is `data`. An error is a user error
    /// naming the file (or path) at fault; nothing outside `data` is ever read.
    pub fn run(&self, data: &Path) -> Result<Outputs, UserError> {
        let mut outputs = Outputs::default();
        let tables = data.join("out/tables");
        for (name, path) in entries(data, &tables)? {
            let kind = safety::check_entry(data, &path)?;
            let settings = self.table_settings(data, &name)?;
            if self.failed && !settings.write_always {
                continue;
            }
            let destination = self.destination(&name, &settings)?;
            let request = LoadRequest {
                columns: settings.columns.clone(),
                delimiter: settings.delimiter.unwrap_or(','),
                enclosure: settings.enclosure(),
                incremental: settings.incremental,
                primary_key: settings.primary_key.clone(),
                delete_where: settings.delete_where()?,
                load_id: Some(format!("{}/{name}", self.load_id)),
                ..LoadRequest::new(&destination, LoadSource::Path(path.clone()))
            };
            if kind == Entry::Folder && request.columns.is_none() {
                return Err(UserError(format!(
                    "The sliced table \"out/tables/{name}\" needs its columns in a manifest or the output mapping."
                )));
            }
            let table = self.storage.load(&request).map_err(|error| {
                format!(
                    "Cannot load \"out/tables/{name}\" into table \"{destination}\": {}",
                    chain(&error)
                )
            })?;
            outputs
                .tables
                .push(table_entry(&table.id, table.name(), &table.columns));
            outputs.bytes += table.data_size_bytes;
        }
        if !self.failed {
            let files = data.join("out/files");
            for (name, path) in entries(data, &files)? {
                if safety::check_entry(data, &path)? != Entry::File {
                    return Err(UserError(format!(
                        "\"out/files/{name}\" is a folder; output files must be plain files."
                    )));
                }
                let manifest = read_manifest(data, &files, &name)?;
                let tags: Vec<String> = manifest["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|tag| tag.as_str().map(str::to_string))
                    .collect();
                let content = fs::File::open(&path)
                    .map_err(|error| format!("Cannot read \"out/files/{name}\": {error}"))?;
                let size = content.metadata().map_or(0, |metadata| metadata.len());
                self.storage
                    .upload_file(&name, &tags, content, size)
                    .map_err(|error| {
                        format!("Cannot store \"out/files/{name}\": {}", chain(&error))
                    })?;
            }
        }
        Ok(outputs)
    }

    /// The manifest of `name` with the mapping entry whose `source` is `name` laid over it.
    fn table_settings(&self, data: &Path, name: &str) -> Result<OutputTable, UserError> {
        let manifest = read_manifest(data, &data.join("out/tables"), name)?;
        let mut settings = match manifest {
            Value::Null => OutputTable::default(),
            manifest => OutputTable::from_manifest(name, &manifest)?,
        };
        let mapping = self.configuration["storage"]["output"]["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["source"].as_str() == Some(name));
        if let Some(entry) = mapping {
            settings.apply(name, entry)?;
        }
        Ok(settings)
    }

    /// The destination table: the mapping's or manifest's, else the default bucket's, else a
    /// file name with two or more dots; else an error naming the file.
    fn destination(&self, name: &str, settings: &OutputTable) -> Result<String, UserError> {
        let stem = name.strip_suffix(".csv").unwrap_or(name);
        if let Some(destination) = &settings.destination {
            return Ok(destination.clone());
        }
        if let Some(bucket) = &self.default_bucket {
            return Ok(format!("{bucket}.{stem}"));
        }
        if stem.matches('.').count() >= 2 {
            return Ok(stem.to_string());
        }
        Err(UserError(format!(
            "Cannot tell where \"out/tables/{name}\" goes: give it a manifest with a \"destination\", an output mapping entry, or a name like \"out.c-bucket.table.csv\"."
        )))
    }
}

/// The data entries of an `out/` folder (manifests excluded), sorted by name.
fn entries(data: &Path, folder: &Path) -> Result<Vec<(String, PathBuf)>, UserError> {
    let shown = folder
        .strip_prefix(data)
        .unwrap_or(folder)
        .display()
        .to_string();
    let Ok(read) = fs::read_dir(folder) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in read {
        let entry = entry.map_err(|error| format!("Cannot read \"{shown}\": {error}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".manifest") {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// `<name>.manifest` beside the data as JSON, `Null` when there is none.
fn read_manifest(data: &Path, folder: &Path, name: &str) -> Result<Value, UserError> {
    let path = folder.join(format!("{name}.manifest"));
    if fs::symlink_metadata(&path).is_err() {
        return Ok(Value::Null);
    }
    if safety::check_entry(data, &path)? != Entry::File {
        return Err(UserError(format!(
            "The manifest of \"{name}\" is a folder."
        )));
    }
    let text = fs::read(&path)
        .map_err(|error| format!("Cannot read the manifest of \"{name}\": {error}"))?;
    serde_json::from_slice(&text).map_err(|error| {
        UserError(format!(
            "The manifest of \"{name}\" is not valid JSON: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bucket_replaces_characters_outside_the_allowed_set() {
        assert_eq!(
            default_bucket("in", "keboola.ex-db_snow", "123"),
            "in.c-keboola-ex-db-snow-123"
        );
        assert_eq!(
            default_bucket("out", "keboola.ex-db_snow", "123"),
            "out.c-keboola-ex-db-snow-123"
        );
    }
}
