//! The errors of the job store, each saying what went wrong and what the user can do about it.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this one) holds the file.
    #[error(
        "the job store {} is open in another jobq process: stop the other jobq or choose another data_dir",
        path.display()
    )]
    Locked { path: PathBuf },

    /// The file is in a database file format this jobq cannot open.
    #[error(
        "the job store {} uses database file format {version}, which this jobq cannot open: \
         upgrade the file with a jobq release that reads it, or choose another data_dir",
        path.display()
    )]
    OldFileFormat { path: PathBuf, version: u8 },

    /// The file could not be opened or created.
    #[error(
        "cannot open the job store {}; check that data_dir exists, that jobq may read \
         and write it, and that the file is a jobq store",
        path.display()
    )]
    Open { path: PathBuf, source: DbError },

    /// The database failed during an operation.
    #[error(
        "the job store failed while {action}; check free disk space and the data_dir \
         file system, then retry"
    )]
    Database {
        action: &'static str,
        source: DbError,
    },

    /// The store must be prepared (a new file, or an older layout) but cannot be written.
    #[error("the job store is new or of an older layout and must be written before use")]
    Unprepared,

    /// Writes are refused: the file system of `data_dir` is (nearly) full.
    #[error("{message}")]
    Full { message: String },

    /// The store failed to write and is being reopened; reads may fail meanwhile too.
    #[error("{message}")]
    Unwritable { message: String },

    /// A record (or the store layout) is newer than this jobq understands.
    #[error(
        "a stored {record} has format version {version}, but this jobq knows versions up to \
         {known} only: this jobq is too old for its data_dir; run the newer jobq that wrote it"
    )]
    UnknownVersion {
        record: &'static str,
        version: u64,
        known: u64,
    },

    /// A record could not be decoded, or the tables disagree with each other.
    #[error(
        "a stored {record} is damaged ({detail}): restore data_dir from a backup, or move the \
         store file away to start empty"
    )]
    Corrupt {
        record: &'static str,
        detail: String,
    },

    /// A record could not be encoded; a jobq bug.
    #[error("cannot encode a {record} for the job store ({detail}): please report this jobq bug")]
    Encode {
        record: &'static str,
        detail: String,
    },

    /// No job has this id.
    #[error("job {id} does not exist")]
    JobNotFound { id: u64 },

    /// The group commit of job creations failed in a way that is a jobq bug.
    #[error("jobq could not create the job ({detail}): please report this jobq bug")]
    Creation { detail: String },

    /// No configuration has this key.
    #[error(
        "Configuration \"{config}\" of component \"{component}\" not found in branch \"{branch}\"."
    )]
    ConfigurationNotFound {
        branch: String,
        component: String,
        config: String,
    },

    /// The configuration has no row with this id.
    #[error(
        "Row \"{row}\" of configuration \"{config}\" of component \"{component}\" not found in \
         branch \"{branch}\"."
    )]
    RowNotFound {
        branch: String,
        component: String,
        config: String,
        row: String,
    },

    /// A new configuration would take the key of an existing one.
    #[error(
        "Configuration \"{config}\" of component \"{component}\" already exists in branch \
         \"{branch}\"; choose another id, or send none to get a new one."
    )]
    ConfigurationExists {
        branch: String,
        component: String,
        config: String,
    },

    /// Two rows of one configuration would share an id.
    #[error(
        "Row \"{row}\" already exists in configuration \"{config}\" of component \
         \"{component}\" in branch \"{branch}\"; choose another id, or send none to get a new one."
    )]
    RowExists {
        branch: String,
        component: String,
        config: String,
        row: String,
    },

    /// A Storage table changed while a load was writing its new data.
    #[error(
        "Table \"{table}\" changed while this load ran (another load, or a delete): load again"
    )]
    StorageTableChanged { table: String },

    /// A bucket with tables is deleted without force.
    #[error(
        "Bucket \"{bucket}\" is not empty: it has {tables} table(s); delete them first, or \
         delete the bucket with force"
    )]
    BucketNotEmpty { bucket: String, tables: usize },

    /// A sequence reached `u64::MAX`.
    #[error("the {sequence} id sequence is exhausted: start jobq with a new data_dir")]
    SequenceExhausted { sequence: &'static str },
}

impl StoreError {
    /// Whether the store refused or failed for a fault of the host that passes (a full disk,
    /// a failed write being repaired): retrying later succeeds.
    pub fn is_host_fault(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. } | StoreError::Unwritable { .. }
        )
    }
}

/// Why `Store::update_job` (or `update_configuration`, `update_state`) did not write.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The store failed, or the job does not exist (`StoreError::JobNotFound`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The update function refused the change; nothing was written.
    #[error("{0}")]
    Rejected(E),
}

impl<E> UpdateError<E> {
    /// Whether the job or configuration to update does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            UpdateError::Store(
                StoreError::JobNotFound { .. } | StoreError::ConfigurationNotFound { .. }
            )
        )
    }
}

/// An error of the underlying database, kept opaque so its types stay inside the store.
#[derive(Debug)]
pub struct DbError(pub(super) redb::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
