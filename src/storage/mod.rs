//! jobq's local Storage: buckets, tables and files in `data_dir/storage`, their metadata in the store.
//!
//! A table's rows are one CSV file per version, `storage/tables/<table id>/<version>.csv` (the
//! stored format of `rows`, with a header). A load writes the next version to a temporary file,
//! renames it into place, commits the table's new metadata (pointing at it) in one store
//! transaction, and only then deletes the old version: a failed load leaves the table as it was,
//! and a crash leaves at most an unreferenced file, which `Storage::open` removes. Loads and
//! deletes of one table take turns; exports never wait for a load (an export keeps reading the
//! version it opened). A file's content is `storage/files/<id>`. Every method blocks.

mod error;
mod ids;
mod load;
mod rows;

pub use error::StorageError;

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use csv::StringRecord;

use crate::disk;
use crate::model::{now_micros, Bucket, StoredFile, Table};
use crate::store::{write_reserve, Store};
use rows::{Dialect, RowWriter, SourceRows, StoredRows};

/// The local Storage over a store and `data_dir/storage`. Share it through an `Arc`.
pub struct Storage {
    store: Arc<Store>,
    root: PathBuf,
    /// One lock per table id that loads and deletes of the table hold.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Read while an export finds and opens a data file, written while data is removed: no
    /// export looks for a version that a load has just replaced.
    opening: RwLock<()>,
}

/// What to load into which table. `LoadRequest::new` gives the defaults.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub table_id: String,
    pub source: LoadSource,
    /// The columns of headless data; `None`: the data's first line is its header.
    pub columns: Option<Vec<String>>,
    pub delimiter: char,
    /// `None`: values are never enclosed (a manifest's `"enclosure": ""`).
    pub enclosure: Option<char>,
    /// Keep the table's rows (`false`: replace them).
    pub incremental: bool,
    /// The primary key of a new table; for an existing one it must be the table's, or empty.
    pub primary_key: Vec<String>,
    /// Rows of the table to delete before an incremental load (a full load replaces them all).
    pub delete_where: Option<RowFilter>,
    /// Makes the load apply once: a later load with the same id leaves the table as it is.
    pub load_id: Option<String>,
}

/// Where a load's data is.
#[derive(Debug, Clone)]
pub enum LoadSource {
    /// A CSV file, or a folder of headless CSV slices (a sliced table: `columns` is required).
    Path(PathBuf),
    /// CSV data in memory, such as an upload.
    Bytes(Bytes),
}

impl LoadSource {
    /// The bytes of the data (0 when they cannot be read: the load then says why).
    pub fn size(&self) -> u64 {
        match self {
            LoadSource::Path(path) => disk::size_of_tree(path).unwrap_or(0),
            LoadSource::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

/// Rows whose `column` is (`Eq`) or is not (`Ne`) one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub column: String,
    pub values: Vec<String>,
    pub operator: Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
}

/// What an export writes; the default writes every row and column.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// These columns in this order; empty: all, in the table's order.
    pub columns: Vec<String>,
    /// Only rows this filter matches.
    pub filter: Option<RowFilter>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Rows carry no times: a table whose last import is older than this (Unix microseconds)
    /// exports no rows, any other all of them.
    pub changed_since: Option<i64>,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Rows, the header aside.
    pub rows: u64,
    /// Bytes, the header included.
    pub bytes: u64,
}

impl Storage {
    /// Opens the Storage of `data_dir` (creating `data_dir/storage`), and removes what an
    /// interrupted load or upload left behind.
    pub fn open(store: Arc<Store>, data_dir: &Path) -> Result<Storage, StorageError> {
        let storage = Storage {
            store,
            root: data_dir.join("storage"),
            locks: Mutex::default(),
            opening: RwLock::default(),
        };
        for dir in [storage.tables_dir(), storage.files_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        storage.sweep()?;
        Ok(storage)
    }

    /// All buckets, by id.
    pub fn buckets(&self) -> Result<Vec<Bucket>, StorageError> {
        Ok(self.store.storage_buckets()?)
    }

    /// The bucket `id`, if any.
    pub fn bucket(&self, id: &str) -> Result<Option<Bucket>, StorageError> {
        ids::check_bucket_id(id)?;
        Ok(self.store.storage_bucket(id)?)
    }

    /// All tables, or those of `bucket`, by id.
    pub fn tables(&self, bucket: Option<&str>) -> Result<Vec<Table>, StorageError> {
        if let Some(bucket) = bucket {
            ids::check_bucket_id(bucket)?;
        }
        Ok(self.store.storage_tables(bucket)?)
    }

    /// The table `id`, if any.
    pub fn table(&self, id: &str) -> Result<Option<Table>, StorageError> {
        ids::split_table_id(id)?;
        Ok(self.store.storage_table(id)?)
    }

    /// Loads CSV data into a table, making the table and its bucket when missing. Atomic: on
    /// any error the table (rows, columns, metadata) is as it was.
    ///
    /// A full load replaces the rows, an incremental one keeps them (less those `delete_where`
    /// matches); with a primary key, a new row replaces the row with the same key. Every column
    /// of the table must be in the data (else `MissingColumns` names those missing); the data's
    /// other columns are added.
    pub fn load(&self, request: &LoadRequest) -> Result<Table, StorageError> {
        let id = request.table_id.as_str();
        ids::split_table_id(id)?;
        let dialect = Dialect::new(request.delimiter, request.enclosure)?;
        let source = SourceRows::open(&request.source, request.columns.as_deref(), dialect)?;
        ids::check_columns(&source.header, &source.name)?;

        let lock = self.lock(id);
        let _turn = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.store.storage_table(id)?;
        let kept_bytes = match &old {
            Some(table) if request.incremental => table.data_size_bytes,
            _ => 0,
        };
        self.make_room(
            || format!("the load of table \"{id}\""),
            request.source.size().saturating_add(kept_bytes),
        )?;
        if let (Some(load_id), Some(table)) = (&request.load_id, &old) {
            if self.store.storage_load_applied(load_id)? {
                return Ok(table.clone());
            }
        }
        let kept = match &old {
            Some(table) if request.incremental => {
                Some(StoredRows::open(&self.data_path(table), table)?)
            }
            _ => None,
        };
        let dir = self.table_dir(id);
        std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        let temp =
            tempfile::NamedTempFile::new_in(&dir).map_err(io_error("creating a file in", &dir))?;
        let mut out = RowWriter::new(BufWriter::new(temp), io_error("writing to", &dir));
        let merged = load::merge(request, old.as_ref(), kept, source, &mut out)?;
        let (buffered, rows_count, data_size_bytes) = out.finish()?;
        let temp = buffered
            .into_inner()
            .map_err(|error| io_error("writing to", &dir)(error.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("writing to", &dir))?;

        let now = now_micros();
        let table = Table {
            id: id.to_string(),
            columns: merged.columns,
            primary_key: merged.primary_key,
            rows_count,
            data_size_bytes,
            created: old.as_ref().map_or(now, |t| t.created),
            last_import: now,
            data_version: old.as_ref().map_or(1, |t| t.data_version + 1),
        };
        let path = self.data_path(&table);
        temp.persist(&path)
            .map_err(|error| io_error("writing to", &dir)(error.error))?;
        if let Err(error) = self.store.save_storage_table(
            &table,
            old.as_ref().map(|t| t.data_version),
            request.load_id.as_deref(),
        ) {
            remove(&path);
            return Err(error.into());
        }
        if let Some(old) = &old {
            self.discard(&self.data_path(old));
        }
        Ok(table)
    }

    /// Writes the table's rows as the stored format (RFC 4180 CSV with a header, every value
    /// enclosed in `"`) to `writer`, as `export` selects them.
    pub fn export(
        &self,
        id: &str,
        export: &Export,
        writer: impl Write,
    ) -> Result<ExportSummary, StorageError> {
        ids::split_table_id(id)?;
        let (table, mut stored) = {
            // The file opened stays readable even if a load replaces it right after.
            let _opening = self.opening.read().unwrap_or_else(PoisonError::into_inner);
            let table = self
                .store
                .storage_table(id)?
                .ok_or_else(|| StorageError::TableNotFound { id: id.to_string() })?;
            let stored = StoredRows::open(&self.data_path(&table), &table)?;
            (table, stored)
        };
        let position = |role, column: &str| column_position(id, &table.columns, role, column);
        let picked: Vec<usize> = if export.columns.is_empty() {
            (0..table.columns.len()).collect()
        } else {
            export
                .columns
                .iter()
                .map(|column| position("export", column))
                .collect::<Result<_, _>>()?
        };
        let filter = match &export.filter {
            Some(filter) => Some((position("where filter", &filter.column)?, filter)),
            None => None,
        };

        let mut out = RowWriter::new(writer, StorageError::Export);
        out.header(picked.iter().map(|&i| table.columns[i].as_str()))?;
        let unchanged = export
            .changed_since
            .is_some_and(|since| table.last_import < since);
        let limit = export.limit.unwrap_or(u64::MAX);
        let mut record = StringRecord::new();
        while !unchanged && out.rows() < limit && stored.next(&mut record)? {
            if filter.is_some_and(|(at, filter)| !filter.matches(&record[at])) {
                continue;
            }
            out.row(picked.iter().map(|&i| &record[i]))?;
        }
        let (_, rows, bytes) = out.finish()?;
        Ok(ExportSummary { rows, bytes })
    }

    /// Deletes a table with its data; `false` when there is none.
    pub fn delete_table(&self, id: &str) -> Result<bool, StorageError> {
        ids::split_table_id(id)?;
        let lock = self.lock(id);
        let _turn = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let deleted = self.store.delete_storage_table(id)?;
        if deleted.is_some() {
            self.discard(&self.table_dir(id));
        }
        Ok(deleted.is_some())
    }

    /// Deletes a bucket; one with tables only when `force` (the tables go with it), else
    /// `StoreError::BucketNotEmpty`. `false` when there is no such bucket.
    pub fn delete_bucket(&self, id: &str, force: bool) -> Result<bool, StorageError> {
        ids::check_bucket_id(id)?;
        let locks: Vec<_> = self
            .store
            .storage_tables(Some(id))?
            .iter()
            .map(|table| self.lock(&table.id))
            .collect();
        // In id order, the only order anyone takes more than one in.
        let _turns: Vec<_> = locks
            .iter()
            .map(|lock| lock.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let Some(deleted) = self.store.delete_storage_bucket(id, force)? else {
            return Ok(false);
        };
        for table in deleted {
            self.discard(&self.table_dir(&table.id));
        }
        Ok(true)
    }

    /// Stores `content` (`size` bytes) as a new file with `tags` (empty ones dropped, each kept
    /// once); `NoSpace` when it would not leave the store's reserve free.
    pub fn upload_file(
        &self,
        name: &str,
        tags: &[String],
        mut content: impl Read,
        size: u64,
    ) -> Result<StoredFile, StorageError> {
        self.make_room(|| format!("the file \"{name}\""), size)?;
        let dir = self.files_dir();
        let mut temp =
            tempfile::NamedTempFile::new_in(&dir).map_err(io_error("creating a file in", &dir))?;
        let size_bytes =
            std::io::copy(&mut content, &mut temp).map_err(io_error("storing a file in", &dir))?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("storing a file in", &dir))?;
        let mut distinct: Vec<String> = Vec::new();
        for tag in tags {
            if !tag.is_empty() && !distinct.contains(tag) {
                distinct.push(tag.clone());
            }
        }
        let file = StoredFile {
            id: self.store.next_storage_file_id()?,
            name: ids::file_name(name),
            size_bytes,
            tags: distinct,
            created: now_micros(),
        };
        let path = self.file_path(&file);
        temp.persist(&path)
            .map_err(|error| io_error("storing a file in", &dir)(error.error))?;
        if let Err(error) = self.store.save_storage_file(&file) {
            remove(&path);
            return Err(error.into());
        }
        Ok(file)
    }

    /// `NoSpace` for `what` unless `needed` bytes fit into `data_dir` with the store's reserve
    /// left free. A file system that cannot say how full it is lets the write try.
    pub fn make_room(
        &self,
        what: impl FnOnce() -> String,
        needed: u64,
    ) -> Result<(), StorageError> {
        match disk::fits(&self.root, needed, write_reserve()) {
            Ok(Err(space)) => Err(StorageError::NoSpace {
                what: what(),
                needed,
                space,
            }),
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    }

    /// The files that carry every one of `tags`, newest first.
    pub fn files(&self, tags: &[String]) -> Result<Vec<StoredFile>, StorageError> {
        let mut files = self.store.storage_files()?;
        files.retain(|file| tags.iter().all(|tag| file.tags.contains(tag)));
        Ok(files)
    }

    /// Deletes the files `ids` with their content, answering those there were. A crash
    /// between the two leaves content of no file, which `open` removes.
    pub fn delete_files(&self, ids: &[u64]) -> Result<Vec<StoredFile>, StorageError> {
        let deleted = self.store.delete_storage_files(ids)?;
        for file in &deleted {
            remove(&self.file_path(file));
        }
        Ok(deleted)
    }

    /// The file `id`, if any.
    pub fn file(&self, id: u64) -> Result<Option<StoredFile>, StorageError> {
        Ok(self.store.storage_file(id)?)
    }

    /// Where the content of `file` is.
    pub fn file_path(&self, file: &StoredFile) -> PathBuf {
        self.files_dir().join(file.id.to_string())
    }
}

impl LoadRequest {
    /// A full load of CSV with a header, `,` delimited and `"` enclosed, with no primary key.
    pub fn new(table_id: &str, source: LoadSource) -> LoadRequest {
        LoadRequest {
            table_id: table_id.to_string(),
            source,
            columns: None,
            delimiter: ',',
            enclosure: Some('"'),
            incremental: false,
            primary_key: Vec::new(),
            delete_where: None,
            load_id: None,
        }
    }
}

impl RowFilter {
    /// Whether a row with `value` in the filter's column passes.
    pub fn matches(&self, value: &str) -> bool {
        let listed = self.values.iter().any(|v| v == value);
        listed == (self.operator == Operator::Eq)
    }
}

impl Operator {
    /// `eq` or `ne`, as the Storage API and mappings write them.
    pub fn parse(text: &str) -> Option<Operator> {
        match text {
            "eq" => Some(Operator::Eq),
            "ne" => Some(Operator::Ne),
            _ => None,
        }
    }
}

impl Storage {
    fn tables_dir(&self) -> PathBuf {
        self.root.join("tables")
    }

    fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }

    fn table_dir(&self, id: &str) -> PathBuf {
        self.tables_dir().join(id)
    }

    fn data_path(&self, table: &Table) -> PathBuf {
        self.table_dir(&table.id)
            .join(format!("{}.csv", table.data_version))
    }

    /// `remove` once no export is opening a data file.
    fn discard(&self, path: &Path) {
        let _removing = self.opening.write().unwrap_or_else(PoisonError::into_inner);
        remove(path);
    }

    fn lock(&self, table_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(table_id.to_string()).or_default())
    }

    /// Removes table folders of no table, data files of no table version and file contents of
    /// no file: what a crash during a load, a delete or an upload leaves.
    fn sweep(&self) -> Result<(), StorageError> {
        for (name, path) in entries(&self.tables_dir())? {
            match self.store.storage_table(&name)? {
                Some(table) if path.is_dir() => {
                    let current = self.data_path(&table);
                    for (_, file) in entries(&path)? {
                        if file != current {
                            remove(&file);
                        }
                    }
                }
                _ => remove(&path),
            }
        }
        let files: HashSet<String> = self
            .store
            .storage_files()?
            .iter()
            .map(|file| file.id.to_string())
            .collect();
        for (name, path) in entries(&self.files_dir())? {
            if !files.contains(&name) {
                remove(&path);
            }
        }
        Ok(())
    }
}

/// Where `column` is in `columns`, or an error naming the table, the column and its `role`.
fn column_position(
    table: &str,
    columns: &[String],
    role: &'static str,
    column: &str,
) -> Result<usize, StorageError> {
    columns
        .iter()
        .position(|c| c == column)
        .ok_or_else(|| StorageError::UnknownColumn {
            table: table.to_string(),
            role,
            column: column.to_string(),
            columns: columns.to_vec(),
        })
}

/// Turns an I/O error while `action` `path` into `StorageError::Io`.
fn io_error(action: &'static str, path: &Path) -> impl Fn(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io {
        action,
        path: path.clone(),
        source,
    }
}

/// The names and paths in a folder.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let unreadable = io_error("listing", dir);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(&unreadable)? {
        let entry = entry.map_err(&unreadable)?;
        found.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(found)
}

/// Removes a file or folder that is no longer needed; a failure only costs disk space, so it is
/// logged.
fn remove(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(error) = removed {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "cannot remove unused storage data");
        }
    }
}

#[cfg(test)]
mod tests;
