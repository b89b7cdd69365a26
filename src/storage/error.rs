//! Why a Storage operation failed, each message saying what to change.

use std::path::PathBuf;

use crate::disk::{Bytes, Space};
use crate::store::StoreError;

/// Why a Storage operation failed. Nothing was changed when one of these comes back.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "\"{id}\" is not a bucket id: use in.c-<name> or out.c-<name>, the name made of letters, \
         digits, '_' and '-' (at most {max} characters)",
        max = super::ids::MAX_NAME_LENGTH
    )]
    InvalidBucketId { id: String },

    #[error(
        "\"{id}\" is not a table id: use <bucket>.<name> (like in.c-main.orders), the name made of \
         letters, digits, '_' and '-' (at most {max} characters)",
        max = super::ids::MAX_NAME_LENGTH
    )]
    InvalidTableId { id: String },

    #[error(
        "Invalid column name \"{name}\" in {source_name}: use letters, digits and '_' (not first), \
         at most {max} characters",
        max = super::ids::MAX_COLUMN_LENGTH
    )]
    InvalidColumnName { name: String, source_name: String },

    #[error("Column \"{name}\" is given twice in {source_name}; every column needs its own name")]
    DuplicateColumn { name: String, source_name: String },

    #[error("Bucket \"{id}\" not found")]
    BucketNotFound { id: String },

    #[error("Table \"{id}\" not found")]
    TableNotFound { id: String },

    #[error(
        "Some columns are missing in the data of table \"{table}\". Missing columns: {}. \
         Expected columns: {}. Check the header and the delimiter of the data.",
        missing.join(","),
        expected.join(",")
    )]
    MissingColumns {
        table: String,
        missing: Vec<String>,
        expected: Vec<String>,
    },

    #[error(
        "The {role} of table \"{table}\" names column \"{column}\", which the table does not have; \
         its columns are {}",
        columns.join(",")
    )]
    UnknownColumn {
        table: String,
        role: &'static str,
        column: String,
        columns: Vec<String>,
    },

    #[error(
        "Table \"{table}\" has the primary key [{}], but the load gives [{}]: load with the \
         table's primary key (or none), or delete the table first",
        table_key.join(","),
        given.join(",")
    )]
    PrimaryKeyMismatch {
        table: String,
        table_key: Vec<String>,
        given: Vec<String>,
    },

    #[error(
        "{source_name} has no header: give the columns of headless data (a folder of slices \
         always needs them)"
    )]
    NoColumns { source_name: String },

    #[error("The {what} \"{given}\" cannot be used: {reason}")]
    Dialect {
        what: &'static str,
        given: String,
        reason: &'static str,
    },

    #[error("{source_name} is not valid CSV: {detail}")]
    Csv { source_name: String, detail: String },

    #[error("Cannot read {}; check that it exists and jobq may read it", path.display())]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "Storage failed while {action} {}; check free disk space and that jobq may \
         write to data_dir",
        path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "Not enough free space in data_dir for {what}: it needs about {}, and {} is free on {} \
         (jobq keeps {} free for its store). Free some space, or make the data smaller.",
        Bytes(*needed),
        Bytes(space.free),
        space.mount.display(),
        Bytes(crate::store::write_reserve())
    )]
    NoSpace {
        what: String,
        needed: u64,
        space: Space,
    },

    #[error("Cannot make the debug archive {name}: {error}")]
    Archive { name: String, error: String },

    #[error("Cannot write the exported data: {0}")]
    Export(std::io::Error),

    #[error(
        "The data file of table \"{table}\" is damaged ({detail}): load the table again, or \
         delete it"
    )]
    Corrupt { table: String, detail: String },

    #[error(transparent)]
    Store(#[from] StoreError),
}
