//! Keboola Storage's buckets, tables and files as plain records (their data lives in `storage/`).

use serde::{Deserialize, Serialize};

/// A bucket: `in.c-<name>` or `out.c-<name>`. Made by the first load into one of its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    /// Unix microseconds.
    pub created: i64,
}

/// A table's metadata; its rows are in its data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// `<bucket id>.<name>`.
    pub id: String,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub rows_count: u64,
    /// The size of the data file (the stored CSV with its header).
    pub data_size_bytes: u64,
    /// Unix microseconds.
    pub created: i64,
    /// When the last load committed (Unix microseconds).
    pub last_import: i64,
    /// The version of the data file, `<data_version>.csv`; every load raises it by one.
    pub data_version: u64,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub id: u64,
    /// As given, with characters other than letters, digits, `.`, `_` and `-` replaced by `_`.
    pub name: String,
    pub size_bytes: u64,
    pub tags: Vec<String>,
    /// Unix microseconds.
    pub created: i64,
}

impl Bucket {
    /// `in` or `out`.
    pub fn stage(&self) -> &str {
        self.id.split('.').next().unwrap_or_default()
    }

    /// The id without the stage: `c-main`.
    pub fn name(&self) -> &str {
        self.id.split_once('.').map_or("", |(_, name)| name)
    }

    /// The name without `c-`: `main`.
    pub fn display_name(&self) -> &str {
        let name = self.name();
        name.strip_prefix("c-").unwrap_or(name)
    }
}

impl Table {
    /// The id of the table's bucket.
    pub fn bucket_id(&self) -> &str {
        self.id.rsplit_once('.').map_or("", |(bucket, _)| bucket)
    }

    /// The id without the bucket.
    pub fn name(&self) -> &str {
        self.id.rsplit_once('.').map_or("", |(_, name)| name)
    }
}
