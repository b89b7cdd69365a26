//! Bucket ids, table ids, column names and file names: what Storage accepts, so that no id can
//! name anything outside the storage folder.

use super::StorageError;

/// The longest bucket or table name (after `c-` for buckets).
pub const MAX_NAME_LENGTH: usize = 96;
/// The longest column name.
pub const MAX_COLUMN_LENGTH: usize = 64;

/// Checks `in.c-<name>` / `out.c-<name>`.
pub fn check_bucket_id(id: &str) -> Result<(), StorageError> {
    let name = id
        .strip_prefix("in.c-")
        .or_else(|| id.strip_prefix("out.c-"));
    match name {
        Some(name) if is_name(name) => Ok(()),
        _ => Err(StorageError::InvalidBucketId { id: id.to_string() }),
    }
}

/// Checks `<bucket id>.<name>` and splits it into the bucket id and the table name.
pub fn split_table_id(id: &str) -> Result<(&str, &str), StorageError> {
    let invalid = || StorageError::InvalidTableId { id: id.to_string() };
    let (bucket, name) = id.rsplit_once('.').ok_or_else(invalid)?;
    if check_bucket_id(bucket).is_err() || !is_name(name) {
        return Err(invalid());
    }
    Ok((bucket, name))
}

/// Checks every column name of a header and that none repeats; `source_name` names the data.
pub fn check_columns(columns: &[String], source_name: &str) -> Result<(), StorageError> {
    for (i, name) in columns.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= MAX_COLUMN_LENGTH
            && !name.starts_with('_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(StorageError::InvalidColumnName {
                name: name.clone(),
                source_name: source_name.to_string(),
            });
        }
        if columns[..i].contains(name) {
            return Err(StorageError::DuplicateColumn {
                name: name.clone(),
                source_name: source_name.to_string(),
            });
        }
    }
    Ok(())
}

/// A file name as Storage keeps it: every character other than a letter, digit, `.`, `_` or
/// `-` becomes `_`; an empty name becomes `file`.
pub fn file_name(given: &str) -> String {
    let name: String = given
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "file".to_string()
    } else {
        name
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}
