//! The metadata of jobq's local Storage: buckets, tables and files, one write transaction per change.
//!
//! Tables are keyed by their id, `<bucket id>.<name>`; bucket names hold no `.`, so a bucket's
//! tables are the keys starting with `<bucket id>.`. File ids come from a sequence in `meta`.

use redb::{ReadableTable, WriteTransaction};

use super::tables::*;
use super::{codec, next_in_sequence, Fail, Store, StoreError};
use crate::model::{Bucket, StoredFile, Table};

impl Store {
    /// All buckets, by id.
    pub fn storage_buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        self.read("listing buckets", |txn| {
            let mut buckets = Vec::new();
            for entry in txn.open_table(STORAGE_BUCKETS)?.iter()? {
                let (_, record) = entry?;
                buckets.push(codec::decode_bucket(record.value())?);
            }
            Ok(buckets)
        })
    }

    /// The bucket `id`, if any.
    pub fn storage_bucket(&self, id: &str) -> Result<Option<Bucket>, StoreError> {
        self.read("reading a bucket", |txn| {
            let table = txn.open_table(STORAGE_BUCKETS)?;
            let bucket = table.get(id)?;
            Ok(bucket
                .map(|record| codec::decode_bucket(record.value()))
                .transpose()?)
        })
    }

    /// All tables, or those of `bucket`, by id.
    pub fn storage_tables(&self, bucket: Option<&str>) -> Result<Vec<Table>, StoreError> {
        self.read("listing tables", |txn| {
            tables_in(&txn.open_table(STORAGE_TABLES)?, bucket)
        })
    }

    /// The table `id`, if any.
    pub fn storage_table(&self, id: &str) -> Result<Option<Table>, StoreError> {
        self.read("reading a table", |txn| {
            load_table(&txn.open_table(STORAGE_TABLES)?, id)
        })
    }

    /// Stores `table`, and its bucket (made at the table's last import) when missing, if the
    /// stored table still has data version `replaces` (`None`: if there is no such table);
    /// otherwise nothing is written and the answer is `StoreError::StorageTableChanged`. A
    /// `load_id` is recorded in the same transaction (see `storage_load_applied`).
    pub fn save_storage_table(
        &self,
        table: &Table,
        replaces: Option<u64>,
        load_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write("saving a table", |txn| {
            if let Some(load_id) = load_id {
                txn.open_table(STORAGE_LOADS)?
                    .insert(load_id, table.id.as_str())?;
            }
            let mut tables = txn.open_table(STORAGE_TABLES)?;
            let stored = load_table(&tables, &table.id)?.map(|t| t.data_version);
            if stored != replaces {
                return Err(StoreError::StorageTableChanged {
                    table: table.id.clone(),
                }
                .into());
            }
            let mut buckets = txn.open_table(STORAGE_BUCKETS)?;
            let bucket_id = table.bucket_id();
            if buckets.get(bucket_id)?.is_none() {
                let bucket = Bucket {
                    id: bucket_id.to_string(),
                    created: table.last_import,
                };
                buckets.insert(bucket_id, codec::encode_bucket(&bucket)?.as_slice())?;
            }
            tables.insert(table.id.as_str(), codec::encode_table(table)?.as_slice())?;
            Ok(())
        })
    }

    /// Whether a load with this id was committed.
    pub fn storage_load_applied(&self, load_id: &str) -> Result<bool, StoreError> {
        self.read("reading a load id", |txn| {
            Ok(txn.open_table(STORAGE_LOADS)?.get(load_id)?.is_some())
        })
    }

    /// Deletes the table `id`, answering what it was; `None` when there is none.
    pub fn delete_storage_table(&self, id: &str) -> Result<Option<Table>, StoreError> {
        self.write("deleting a table", |txn| {
            let mut tables = txn.open_table(STORAGE_TABLES)?;
            let table = load_table(&tables, id)?;
            if table.is_some() {
                tables.remove(id)?;
            }
            Ok(table)
        })
    }

    /// Deletes the bucket `id` and, with `force`, its tables, answering those; without `force`
    /// a bucket with tables stays (`StoreError::BucketNotEmpty`). `None`: there is no bucket.
    pub fn delete_storage_bucket(
        &self,
        id: &str,
        force: bool,
    ) -> Result<Option<Vec<Table>>, StoreError> {
        self.write("deleting a bucket", |txn| {
            if txn.open_table(STORAGE_BUCKETS)?.remove(id)?.is_none() {
                return Ok(None);
            }
            let mut tables = txn.open_table(STORAGE_TABLES)?;
            let inside = tables_in(&tables, Some(id))?;
            if !force && !inside.is_empty() {
                return Err(StoreError::BucketNotEmpty {
                    bucket: id.to_string(),
                    tables: inside.len(),
                }
                .into());
            }
            for table in &inside {
                tables.remove(table.id.as_str())?;
            }
            Ok(Some(inside))
        })
    }

    /// Takes the next file id.
    pub fn next_storage_file_id(&self) -> Result<u64, StoreError> {
        self.write("taking a file id", |txn| {
            next_in_sequence(txn, META_LAST_STORAGE_FILE_ID, "storage file")
        })
    }

    /// Stores a file record under its id.
    pub fn save_storage_file(&self, file: &StoredFile) -> Result<(), StoreError> {
        self.write("saving a file", |txn| {
            txn.open_table(STORAGE_FILES)?
                .insert(file.id, codec::encode_file(file)?.as_slice())?;
            Ok(())
        })
    }

    /// Deletes the file records `ids`, answering those there were.
    pub fn delete_storage_files(&self, ids: &[u64]) -> Result<Vec<StoredFile>, StoreError> {
        self.write("deleting files", |txn| {
            let mut files = txn.open_table(STORAGE_FILES)?;
            let mut deleted = Vec::new();
            for &id in ids {
                if let Some(record) = files.remove(id)? {
                    deleted.push(codec::decode_file(record.value())?);
                }
            }
            Ok(deleted)
        })
    }

    /// All files, newest (highest id) first.
    pub fn storage_files(&self) -> Result<Vec<StoredFile>, StoreError> {
        self.read("listing files", |txn| {
            let mut files = Vec::new();
            for entry in txn.open_table(STORAGE_FILES)?.iter()?.rev() {
                let (_, record) = entry?;
                files.push(codec::decode_file(record.value())?);
            }
            Ok(files)
        })
    }

    /// The file `id`, if any.
    pub fn storage_file(&self, id: u64) -> Result<Option<StoredFile>, StoreError> {
        self.read("reading a file", |txn| {
            let table = txn.open_table(STORAGE_FILES)?;
            let file = table.get(id)?;
            Ok(file
                .map(|record| codec::decode_file(record.value()))
                .transpose()?)
        })
    }
}

/// Makes the tables of this module; part of `Store::open`.
pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), Fail> {
    txn.open_table(STORAGE_BUCKETS)?;
    txn.open_table(STORAGE_TABLES)?;
    txn.open_table(STORAGE_FILES)?;
    txn.open_table(STORAGE_LOADS)?;
    Ok(())
}

fn load_table(
    tables: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Table>, Fail> {
    let Some(record) = tables.get(id)? else {
        return Ok(None);
    };
    let table = codec::decode_table(record.value())?;
    if table.id != id {
        return Err(StoreError::Corrupt {
            record: "table record",
            detail: format!("the record under {id} says it is table {}", table.id),
        }
        .into());
    }
    Ok(Some(table))
}

/// The tables of `bucket` (all, when `None`), in id order.
fn tables_in(
    tables: &impl ReadableTable<&'static str, &'static [u8]>,
    bucket: Option<&str>,
) -> Result<Vec<Table>, Fail> {
    let prefix = bucket.map(|bucket| format!("{bucket}."));
    let start = prefix.as_deref().unwrap_or("");
    let mut found = Vec::new();
    for entry in tables.range(start..)? {
        let (key, record) = entry?;
        if !key.value().starts_with(start) {
            break;
        }
        found.push(codec::decode_table(record.value())?);
    }
    Ok(found)
}
