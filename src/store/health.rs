//! The store file's health: a gate that refuses writes while `data_dir` is nearly full, and
//! reopening the database after a failed write (redb answers every later operation with
//! "Previous I/O error" until it is closed and opened again), so a full disk or a read-only
//! remount stops writes only while it lasts, never until a restart.
//!
//! A write first checks the free space (one `statvfs`): below `write_reserve()` it is refused
//! before it touches the file, so the common fault (a disk that fills) leaves redb untouched and
//! reads working. A write that fails anyway (another program took the last bytes, `EIO`, a
//! read-only remount) marks the store failed. Either way a probe thread checks with backoff,
//! reopens the database when it failed (committed data is never lost: redb's commits are atomic,
//! the failed transaction is simply not there), and marks the store writable again. The log
//! says so once when it starts and once when it ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use redb::{Database, DatabaseError};

use super::error::StoreError;
use crate::disk::{self, Bytes, Space};

/// Free bytes below which the store refuses writes: room for what is in flight to commit (a
/// transaction grows the file by at most a few MiB) and for the reopen's repair. Tests of a
/// full disk set it with `JOBQ_WRITE_RESERVE` (see `failpoint`).
pub fn write_reserve() -> u64 {
    crate::failpoint::write_reserve(16 << 20)
}

/// The first and the longest pause of the probe.
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_LONGEST: Duration = Duration::from_secs(2);

/// Whether the store takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Writable,
    /// Writes are refused: the file system of `data_dir` has less than `write_reserve()` free.
    Full(Space),
    /// A write failed (the cause); the database is being reopened.
    Failed(String),
}

impl Health {
    /// Why the store takes no writes, as an operator reads it (`None` when it does).
    pub fn reason(&self) -> Option<String> {
        match self {
            Health::Writable => None,
            Health::Full(space) => Some(full_message(space)),
            Health::Failed(cause) => Some(failed_message(cause)),
        }
    }

    /// The error a refused request gets.
    pub fn error(&self) -> Option<StoreError> {
        match self {
            Health::Writable => None,
            Health::Full(space) => Some(StoreError::Full {
                message: full_message(space),
            }),
            Health::Failed(cause) => Some(StoreError::Unwritable {
                message: failed_message(cause),
            }),
        }
    }
}

fn full_message(space: &Space) -> String {
    format!(
        "data_dir is full: {} bytes free on {} ({}); jobq takes writes again by itself once \
         more than {} are free",
        space.free,
        space.mount.display(),
        Bytes(space.free),
        Bytes(write_reserve())
    )
}

fn failed_message(cause: &str) -> String {
    format!(
        "the job store cannot be written since a write failed ({cause}); jobq reopens it by \
         itself as soon as the file system takes writes again: retry shortly"
    )
}

/// The database, reopened in place after a failure.
pub(super) struct Db {
    path: PathBuf,
    /// redb's page cache, in bytes (`cache_size_mib`).
    cache_bytes: usize,
    /// What a reopen that repaired the file must write before the store is used again.
    after_repair: fn(&Database) -> Result<(), redb::Error>,
    /// `None` between closing a failed database and opening it again.
    database: RwLock<Option<Arc<Database>>>,
    state: Mutex<State>,
    changed: Condvar,
    write_failures: AtomicU64,
    writes_refused: AtomicU64,
}

/// The health, and whether the probe thread runs (changed together, under one lock).
struct State {
    health: Health,
    probing: bool,
}

impl Db {
    pub(super) fn new(
        path: &Path,
        cache_bytes: usize,
        database: Database,
        after_repair: fn(&Database) -> Result<(), redb::Error>,
    ) -> Arc<Db> {
        Arc::new(Db {
            path: path.to_path_buf(),
            cache_bytes,
            after_repair,
            database: RwLock::new(Some(Arc::new(database))),
            state: Mutex::new(State {
                health: Health::Writable,
                probing: false,
            }),
            changed: Condvar::new(),
            write_failures: AtomicU64::new(0),
            writes_refused: AtomicU64::new(0),
        })
    }

    pub(super) fn health(&self) -> Health {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .health
            .clone()
    }

    /// Writes that failed in the file system, and writes refused for lack of space.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.write_failures.load(Ordering::Relaxed),
            self.writes_refused.load(Ordering::Relaxed),
        )
    }

    /// Blocks until the store takes writes, or `timeout` passed; whether it does.
    pub(super) fn wait_writable(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| state.health != Health::Writable)
            .unwrap_or_else(|p| p.into_inner());
        state.health == Health::Writable
    }

    /// The database for a read; a reopen waits until every such handle is dropped.
    pub(super) fn for_read(&self) -> Result<Arc<Database>, StoreError> {
        let database = self.database.read().unwrap_or_else(|p| p.into_inner());
        database.clone().ok_or_else(|| self.refusal())
    }

    /// The database for a write, when the store takes writes and the space is there.
    pub(super) fn for_write(self: &Arc<Self>) -> Result<Arc<Database>, StoreError> {
        let health = self.health();
        if let Health::Failed(_) = health {
            self.writes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(self.refusal());
        }
        if let Ok(free) = disk::free_bytes(&self.path) {
            if free < write_reserve() {
                self.writes_refused.fetch_add(1, Ordering::Relaxed);
                let space = disk::space(&self.path).unwrap_or_else(|_| Space {
                    free,
                    mount: self.path.clone(),
                });
                self.set(Health::Full(space));
                return Err(self.refusal());
            }
            if let Health::Full(_) = health {
                self.set(Health::Writable);
            }
        }
        self.for_read()
    }

    /// Takes note of a database error: one the file system caused marks the store failed
    /// (reopened by the probe) and comes back as `StoreError::Unwritable`.
    pub(super) fn failure(self: &Arc<Self>, error: &redb::Error) -> Option<StoreError> {
        if !matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo) {
            return None;
        }
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        self.set(Health::Failed(error.to_string()));
        Some(self.refusal())
    }

    fn refusal(&self) -> StoreError {
        self.health()
            .error()
            .unwrap_or_else(|| StoreError::Unwritable {
                message: failed_message("it is being reopened"),
            })
    }

    /// Moves to `health`, logging the change; a fault starts the probe unless it runs.
    fn set(self: &Arc<Self>, health: Health) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (&state.health, &health) {
            // Still full: fresher figures, no news.
            (Health::Full(_), Health::Full(_)) => {
                state.health = health;
                return;
            }
            // A failed store stays failed until the probe reopened it.
            (Health::Failed(_), Health::Full(_) | Health::Failed(_)) => return,
            (current, new) if current == new => return,
            _ => {}
        }
        match &health {
            Health::Writable => tracing::info!("the job store takes writes again"),
            fault => tracing::error!(
                reason = fault.reason().unwrap_or_default(),
                "the job store refuses writes until the fault passes"
            ),
        }
        let start_probe = health != Health::Writable && !state.probing;
        state.health = health;
        if start_probe {
            let db = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("jobq-store-probe".into())
                .spawn(move || db.probe());
            match spawned {
                Ok(_) => state.probing = true,
                Err(error) => tracing::error!(%error, "cannot start the store's probe thread"),
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Checks with backoff until the store takes writes again, reopening a failed database.
    fn probe(self: Arc<Self>) {
        let mut pause = PROBE_FIRST;
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(PROBE_LONGEST);
            if let Ok(space) = disk::space(&self.path) {
                if space.free < write_reserve() {
                    self.set(Health::Full(space));
                    continue;
                }
            }
            if let Health::Failed(_) = self.health() {
                if let Err(error) = self.reopen() {
                    tracing::debug!(%error, "the job store cannot be reopened yet");
                    continue;
                }
            }
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.probing = false;
            drop(state);
            self.set(Health::Writable);
            return;
        }
    }

    /// Closes the failed database (waiting for the transactions in progress) and opens it again.
    fn reopen(&self) -> Result<(), DatabaseError> {
        let taken = self
            .database
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut failed) = taken {
            // The file lock goes only with the last handle: wait for the transactions in
            // progress (they fail fast on a failed database).
            loop {
                match Arc::try_unwrap(failed) {
                    Ok(database) => break drop(database),
                    Err(shared) => failed = shared,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let (database, repaired) = open(&self.path, self.cache_bytes)?;
        if repaired {
            (self.after_repair)(&database).map_err(|error| {
                DatabaseError::Storage(redb::StorageError::Corrupted(error.to_string()))
            })?;
        }
        *self.database.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(database));
        tracing::info!(path = %self.path.display(), "reopened the job store");
        Ok(())
    }
}

/// Opens or creates the redb file at `path` with a page cache of `cache_bytes`; whether redb
/// had to repair it (after a crash, or a failed write).
pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<(Database, bool), DatabaseError> {
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&repaired);
    let database = Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
        .create(path)?;
    Ok((database, repaired.load(Ordering::Relaxed)))
}
