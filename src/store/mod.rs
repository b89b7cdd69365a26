//! The store: everything jobq keeps in its one redb file (jobs with their indexes and events,
//! configurations, rows and dev branches, Storage metadata); the only module that knows redb.
//!
//! Every change to a job rewrites its indexes in the same write transaction, so readers never
//! see a job and its index entries disagree. Job and event ids come from sequences kept in the
//! `meta` table, so they keep increasing across restarts.

mod codec;
mod configs;
mod error;
mod group;
mod grouped;
mod health;
mod notifications;
mod retention;
mod schedules;
mod storage_meta;
mod tables;
mod walk;

pub use error::{DbError, StoreError, UpdateError};
pub use group::Creations;
pub use grouped::GroupBy;
pub use health::{write_reserve, Health};
pub use retention::{Budget, Sweep};

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{
    Database, DatabaseError, Durability, MultimapTable, ReadTransaction, ReadableDatabase,
    ReadableTable, Table, WriteTransaction,
};

use crate::model::{Delivery, Subscription};
use crate::model::{Event, EventSource, EventType, Job, JobQuery, NewEvent, Status};
use tables::*;

/// The job store over one redb file. Cheap to share through an `Arc`; every method is blocking.
pub struct Store {
    db: Arc<health::Db>,
    path: PathBuf,
    instance_id: String,
    /// Events committed by this process (for the metrics).
    events_written: AtomicU64,
}

impl Store {
    /// Opens or creates `<path>` (the redb file) with the default page cache
    /// (`cache_size_mib`'s default).
    #[cfg_attr(not(test), allow(dead_code))] // the daemon opens with its settings' cache
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let bytes = (crate::settings::DEFAULT_CACHE_SIZE_MIB as usize) << 20;
        Store::open_with_cache(path, bytes)
    }

    /// Opens or creates `<path>` (the redb file) with a page cache of `cache_bytes` (redb's
    /// default, 1 GiB, would be most of the daemon's memory). After a crash (redb repairs the
    /// file) the event sequence skips `EVENT_IDS_SKIPPED_AFTER_A_CRASH`: ids of events whose
    /// commit was not durable yet, and is lost, may have been read; they are never handed out
    /// again.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let (mut db, repaired) =
            health::open(path, cache_bytes).map_err(|error| open_error(path, error))?;
        if crate::disk::space(path.parent().unwrap_or(path))
            .is_ok_and(|space| space.free >= write_reserve().saturating_mul(2))
        {
            // Compaction rewrites pages: never on a (nearly) full disk.
            retention::compact_if_mostly_free(&mut db, path);
        }
        let mut store = Store {
            db: health::Db::new(path, cache_bytes, db, skip_event_ids_in),
            path: path.to_path_buf(),
            instance_id: String::new(),
            events_written: AtomicU64::new(0),
        };
        let instance = match store.prepare(repaired) {
            Err(error) if error.is_host_fault() => {
                // A full or failing disk: a store already prepared serves reads, and takes
                // writes once the fault passes.
                tracing::warn!(%error, "the job store cannot be written at start");
                store.prepared_instance().map_err(|_| error)?
            }
            prepared => prepared?,
        };
        store.instance_id = format!("{instance:016x}");
        Ok(store)
    }

    /// The instance id of a store whose tables and layout are current (read only).
    fn prepared_instance(&self) -> Result<u64, StoreError> {
        self.read("checking the tables", |txn| {
            let meta = txn.open_table(META)?;
            let value =
                |key: &str| -> Result<Option<u64>, Fail> { Ok(meta.get(key)?.map(|v| v.value())) };
            let (Some(instance), Some(SCHEMA_VERSION)) =
                (value(META_INSTANCE_ID)?, value(META_SCHEMA_VERSION)?)
            else {
                return Err(Fail::Store(StoreError::Unprepared));
            };
            txn.open_table(JOBS)?;
            txn.open_table(EVENTS)?;
            Ok(instance)
        })
    }

    /// Creates missing tables, the instance id and the layout version (migrating an older
    /// layout); the instance id.
    fn prepare(&self, repaired: bool) -> Result<u64, StoreError> {
        self.write("preparing the tables", |txn| {
            let instance = {
                let mut meta = txn.open_table(META)?;
                let instance = meta.get(META_INSTANCE_ID)?.map(|v| v.value());
                let instance = match instance {
                    Some(instance) => instance,
                    None => {
                        let instance = rand::random::<u64>();
                        meta.insert(META_INSTANCE_ID, instance)?;
                        instance
                    }
                };
                let schema = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
                match schema {
                    None => {
                        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
                        meta.insert(META_DURATION_SUM, 0)?;
                    }
                    Some(version) if version > SCHEMA_VERSION => {
                        return Err(Fail::Store(StoreError::UnknownVersion {
                            record: "table layout",
                            version,
                            known: SCHEMA_VERSION,
                        }));
                    }
                    Some(1) => {
                        meta.insert(META_DURATION_SUM, sum_durations(txn)?)?;
                        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
                    }
                    Some(_) => {}
                }
                if repaired {
                    skip_event_ids(&mut meta)?;
                }
                instance
            };
            txn.open_table(JOBS)?;
            Indexes::open(txn)?;
            txn.open_table(EVENTS)?;
            txn.open_table(LOGS_CLOSED)?;
            configs::prepare(txn)?;
            storage_meta::prepare(txn)?;
            txn.open_table(SCHEDULES)?;
            notifications::prepare(txn)?;
            Ok(instance)
        })
    }

    /// A random id made when the store file was created: it tells this store's containers
    /// apart from those of other jobq stores on the same Docker engine.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Whether the store takes writes, and why not.
    pub fn health(&self) -> Health {
        self.db.health()
    }

    /// Writes that failed in the file system, and writes refused for lack of space, since start.
    pub fn write_fault_counts(&self) -> (u64, u64) {
        self.db.counts()
    }

    /// Blocks until the store takes writes, or `timeout` passed; whether it does.
    pub fn wait_writable(&self, timeout: Duration) -> bool {
        self.db.wait_writable(timeout)
    }

    /// Allocates the next id from the sequence and inserts the job `make(id)` returns, with all
    /// indexes, in one write transaction. The job's `id` is set to the allocated id.
    #[cfg_attr(not(test), allow(dead_code))] // the daemon creates through `Creations`
    pub fn create_job(&self, make: impl FnOnce(u64) -> Job) -> Result<Job, StoreError> {
        let mut jobs = self.create_jobs(1, |ids| vec![make(ids[0])])?;
        Ok(jobs.remove(0))
    }

    /// Allocates `count` ids and inserts the jobs `make(ids)` returns (one per id, in order) in
    /// one write transaction: a job tree is stored whole or not at all.
    #[cfg_attr(not(test), allow(dead_code))] // the daemon creates through `Creations`
    pub fn create_jobs(
        &self,
        count: usize,
        make: impl FnOnce(&[u64]) -> Vec<Job>,
    ) -> Result<Vec<Job>, StoreError> {
        self.write("creating jobs", |txn| {
            insert_jobs(txn, count, |ids| Ok(make(ids)))
        })
    }

    /// The job with this id, if any.
    pub fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        self.read("reading a job", |txn| {
            let jobs = txn.open_table(JOBS)?;
            load_job(&jobs, id)
        })
    }

    /// Read-modify-write of one job in one write transaction; indexes follow the change and
    /// `revision` goes up by one.
    ///
    /// `f` returning `Err` aborts (nothing is written) and comes back as `UpdateError::Rejected`.
    /// A missing job is `UpdateError::Store(StoreError::JobNotFound)`. `f` cannot change the id.
    pub fn update_job<E>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Job) -> Result<(), E>,
    ) -> Result<Job, UpdateError<E>> {
        let mut f = Some(f);
        let mut updated = self.update_jobs(&[id], |job| match f.take() {
            Some(f) => f(job),
            None => Ok(()),
        })?;
        Ok(updated.remove(0))
    }

    /// `update_job` for several jobs in one write transaction: all are written, or none.
    pub fn update_jobs<E>(
        &self,
        ids: &[u64],
        mut f: impl FnMut(&mut Job) -> Result<(), E>,
    ) -> Result<Vec<Job>, UpdateError<E>> {
        let outcome = self.write_or_abort("updating jobs", |txn| {
            let mut updated = Vec::with_capacity(ids.len());
            for &id in ids {
                match rewrite_job(txn, id, &mut f)? {
                    Ok(job) => updated.push(job),
                    Err(rejection) => return Ok(Err(rejection)),
                }
            }
            Ok(Ok(updated))
        })?;
        outcome.map_err(UpdateError::Rejected)
    }

    /// `update_job`, and in the same write transaction the jobq event `f` returns for the
    /// updated job and the notification deliveries `outbox` makes of it for the stored
    /// subscriptions: none is ever written without the others.
    pub fn update_job_with_event<E>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Job) -> Result<Option<(EventType, String)>, E>,
        outbox: impl FnOnce(&Job, &[Subscription]) -> Vec<Delivery>,
    ) -> Result<Job, UpdateError<E>> {
        let mut wrote_event = false;
        let outcome = self.write_or_abort("updating a job and adding its event", |txn| {
            let mut event = None;
            let updated = rewrite_job(txn, id, |job| {
                event = f(job)?;
                Ok(())
            })?;
            let job = match updated {
                Ok(job) => job,
                Err(rejection) => return Ok(Err(rejection)),
            };
            if let Some((event_type, message)) = event {
                insert_event(
                    txn,
                    NewEvent {
                        job_id: id,
                        event_type,
                        source: EventSource::Jobq,
                        message: &message,
                        run_id: job.run_id.as_str(),
                        component: &job.component,
                        created: crate::model::now_micros(),
                    },
                )?;
                wrote_event = true;
            }
            let deliveries = outbox(&job, &notifications::all_subscriptions(txn)?);
            notifications::insert_deliveries(txn, deliveries)?;
            Ok(Ok(job))
        })?;
        if outcome.is_ok() && wrote_event {
            self.events_written.fetch_add(1, Ordering::Relaxed);
        }
        outcome.map_err(UpdateError::Rejected)
    }

    /// `update_job`, and in the same write transaction the `count` new jobs `make(updated job,
    /// ids)` returns (one per id, in order): a parent's start and the children it creates are
    /// written together or not at all.
    pub fn update_job_creating<E>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Job) -> Result<(), E>,
        count: usize,
        make: impl FnOnce(&Job, &[u64]) -> Vec<Job>,
    ) -> Result<(Job, Vec<Job>), UpdateError<E>> {
        let outcome = self.write_or_abort("updating a job and creating its children", |txn| {
            let job = match rewrite_job(txn, id, f)? {
                Ok(job) => job,
                Err(rejection) => return Ok(Err(rejection)),
            };
            let children = insert_jobs(txn, count, |ids| Ok(make(&job, ids)))?;
            Ok(Ok((job, children)))
        })?;
        outcome.map_err(UpdateError::Rejected)
    }

    /// How many jobs are in `status` (the status index's entries; no job is read).
    pub fn count_with_status(&self, status: Status) -> Result<u64, StoreError> {
        self.read("counting jobs by status", |txn| {
            let index = txn.open_multimap_table(JOBS_BY_STATUS)?;
            Ok(index.get(status.code())?.len())
        })
    }

    /// Jobs in `status`, oldest (lowest id) first, via the status index.
    pub fn jobs_with_status(&self, status: Status) -> Result<Vec<Job>, StoreError> {
        self.read("listing jobs by status", |txn| {
            let index = txn.open_multimap_table(JOBS_BY_STATUS)?;
            let ids = collect_ids(index.get(status.code())?)?;
            load_jobs(txn, &ids)
        })
    }

    /// The jobs `query` selects, sorted and paged by it: see `walk` for how.
    pub fn search(&self, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
        self.read("searching jobs", |txn| walk::search(txn, query))
    }

    /// The sum of `durationSeconds` over all stored jobs, kept up to date by every change.
    pub fn duration_sum(&self) -> Result<u64, StoreError> {
        self.read("reading the jobs' duration sum", |txn| {
            let meta = txn.open_table(META)?;
            let sum = meta.get(META_DURATION_SUM)?.map(|v| v.value());
            Ok(sum.unwrap_or(0))
        })
    }

    /// The direct children of `parent_run_id`: jobs whose `parent_run_id` it is, lowest id first.
    pub fn children(&self, parent_run_id: &str) -> Result<Vec<Job>, StoreError> {
        self.read("listing child jobs", |txn| {
            let index = txn.open_multimap_table(JOBS_BY_PARENT)?;
            let ids = collect_ids(index.get(parent_run_id)?)?;
            load_jobs(txn, &ids)
        })
    }

    /// The job whose `run_id` is `run_id`, if any (the lowest id, should there be several).
    pub fn job_by_run_id(&self, run_id: &str) -> Result<Option<Job>, StoreError> {
        self.read("finding a job by run id", |txn| {
            let index = txn.open_multimap_table(JOBS_BY_RUN_ID)?;
            let ids = collect_ids(index.get(run_id)?)?;
            Ok(load_jobs(txn, &ids)?.into_iter().next())
        })
    }

    /// Appends an event for an existing job, with the next id of the global event sequence,
    /// keyed (job id, event id).
    pub fn add_event(&self, new: NewEvent<'_>) -> Result<Event, StoreError> {
        let event = self.write("adding an event", |txn| insert_event(txn, new))?;
        self.events_written.fetch_add(1, Ordering::Relaxed);
        Ok(event)
    }

    /// Events committed by this process since it opened the store.
    pub fn events_written(&self) -> u64 {
        self.events_written.load(Ordering::Relaxed)
    }

    /// Appends `events` (of existing jobs) in one write transaction: one commit for the whole
    /// batch, ids consecutive in the order given. Returns the ids handed out.
    ///
    /// Not `durable`: the commit skips the fsync and is persisted by the next durable commit of
    /// any kind; a crash before that loses it (the ids it handed out are skipped, see `open`).
    pub fn add_events(
        &self,
        events: &[NewEvent<'_>],
        durable: bool,
    ) -> Result<Range<u64>, StoreError> {
        let ids = self.write_as("adding events", durable, |txn| insert_events(txn, events))?;
        self.events_written
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(ids)
    }

    /// `add_events`, and in the same transaction closes the log of container `container_id` of
    /// job `job_id` (see `log_closed`): the events and the mark are written together or not at
    /// all.
    pub fn add_events_closing_log(
        &self,
        events: &[NewEvent<'_>],
        job_id: u64,
        container_id: &str,
    ) -> Result<Range<u64>, StoreError> {
        let ids = self.write("adding events and closing a container's log", |txn| {
            let ids = insert_events(txn, events)?;
            txn.open_table(LOGS_CLOSED)?.insert(job_id, container_id)?;
            Ok(ids)
        })?;
        self.events_written
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(ids)
    }

    /// Whether the log of `container_id` of job `job_id` was closed by `add_events_closing_log`:
    /// its events are final, and a re-attached run stores none of its lines again.
    pub fn log_closed(&self, job_id: u64, container_id: &str) -> Result<bool, StoreError> {
        self.read("reading whether a container's log is closed", |txn| {
            let closed = txn.open_table(LOGS_CLOSED)?;
            let closed = closed.get(job_id)?;
            Ok(closed.is_some_and(|closed| closed.value() == container_id))
        })
    }

    /// How many of a job's events came from `source`.
    pub fn count_events(&self, job_id: u64, source: EventSource) -> Result<usize, StoreError> {
        self.read("counting events", |txn| {
            let table = txn.open_table(EVENTS)?;
            let mut count = 0;
            for entry in table.range((job_id, 0)..=(job_id, u64::MAX))? {
                let (_, record) = entry?;
                if codec::decode_event(record.value())?.source == source {
                    count += 1;
                }
            }
            Ok(count)
        })
    }

    /// A job's events newest first, skipping `offset` and returning at most `limit`;
    /// with `since_id`, only events with a greater id.
    pub fn events(
        &self,
        job_id: u64,
        since_id: Option<u64>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read_events(job_id, since_id, true, offset, limit)
    }

    /// A job's oldest `limit` events with an id greater than `after` (all with `None`), oldest
    /// first: what a follower of the job has not seen yet.
    pub fn events_after(
        &self,
        job_id: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read_events(job_id, after, false, 0, limit)
    }

    fn read_events(
        &self,
        job_id: u64,
        since_id: Option<u64>,
        newest_first: bool,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let first = match since_id {
            None => 0,
            Some(since) => match since.checked_add(1) {
                Some(first) => first,
                None => return Ok(Vec::new()),
            },
        };
        self.read("reading events", |txn| {
            let table = txn.open_table(EVENTS)?;
            let range = table.range((job_id, first)..=(job_id, u64::MAX))?;
            let entries: Box<dyn Iterator<Item = _>> = match newest_first {
                true => Box::new(range.rev()),
                false => Box::new(range),
            };
            let mut events = Vec::new();
            for entry in entries.skip(offset).take(limit) {
                let (_, record) = entry?;
                events.push(codec::decode_event(record.value())?);
            }
            Ok(events)
        })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A failure inside a transaction: the database's, or one the store diagnosed.
enum Fail {
    Db(redb::Error),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Self {
        Fail::Store(error)
    }
}

macro_rules! fail_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(error: $t) -> Self {
                Fail::Db(error.into())
            }
        }
    )*};
}

fail_from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl Fail {
    fn during(self, action: &'static str) -> StoreError {
        match self {
            Fail::Db(error) => StoreError::Database {
                action,
                source: DbError(error),
            },
            Fail::Store(error) => error,
        }
    }
}

impl Store {
    fn read<T>(
        &self,
        action: &'static str,
        body: impl FnOnce(&ReadTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let db = self.db.for_read()?;
        let run = || {
            let txn = db.begin_read()?;
            body(&txn)
        };
        run().map_err(|fail| self.failed(fail, action))
    }

    /// `fail` as the error of `action`; a failure of the file system marks the store failed.
    fn failed(&self, fail: Fail, action: &'static str) -> StoreError {
        match &fail {
            Fail::Db(error) => self
                .db
                .failure(error)
                .unwrap_or_else(|| fail.during(action)),
            Fail::Store(_) => fail.during(action),
        }
    }

    /// Runs `body` in a write transaction and commits it durably, or aborts when `body` fails.
    fn write<T>(
        &self,
        action: &'static str,
        body: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.write_as(action, true, body)
    }

    /// `write`, durable or not (`Durability::None`: no fsync; see `add_events`).
    fn write_as<T>(
        &self,
        action: &'static str,
        durable: bool,
        body: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.transact(action, durable, |txn| {
            body(txn).map(Ok::<T, std::convert::Infallible>)
        })
        .map(|outcome| match outcome {
            Ok(value) => value,
            Err(never) => match never {},
        })
    }

    /// Runs `body` in a write transaction; commits when it returns `Ok(Ok(_))`, aborts otherwise.
    fn write_or_abort<T, R>(
        &self,
        action: &'static str,
        body: impl FnOnce(&WriteTransaction) -> Result<Result<T, R>, Fail>,
    ) -> Result<Result<T, R>, StoreError> {
        self.transact(action, true, body)
    }

    /// `write_or_abort`, durable or not.
    fn transact<T, R>(
        &self,
        action: &'static str,
        durable: bool,
        body: impl FnOnce(&WriteTransaction) -> Result<Result<T, R>, Fail>,
    ) -> Result<Result<T, R>, StoreError> {
        let db = self.db.for_write()?;
        let run = || {
            let mut txn = db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)
                    .map_err(|error| Fail::Db(error.into()))?;
            }
            match body(&txn) {
                Ok(Ok(value)) => {
                    crate::failpoint::hit(crate::failpoint::STORE_COMMIT);
                    txn.commit()?;
                    Ok(Ok(value))
                }
                Ok(Err(rejection)) => {
                    txn.abort()?;
                    Ok(Err(rejection))
                }
                Err(fail) => {
                    // The failure is what the caller needs; an abort error would hide it.
                    let _ = txn.abort();
                    Err(fail)
                }
            }
        };
        run().map_err(|fail: Fail| self.failed(fail, action))
    }
}

/// After a crash (or a reopen after a failed write) redb repaired the file: ids of events whose
/// commit was not durable, and is lost, may have been read; they are never handed out again.
fn skip_event_ids(meta: &mut Table<&str, u64>) -> Result<(), Fail> {
    let last = meta.get(META_LAST_EVENT_ID)?.map_or(0, |v| v.value());
    meta.insert(
        META_LAST_EVENT_ID,
        last.saturating_add(EVENT_IDS_SKIPPED_AFTER_A_CRASH),
    )?;
    Ok(())
}

/// `skip_event_ids` in a transaction of its own (for the reopen after a failed write).
fn skip_event_ids_in(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        skip_event_ids(&mut meta).map_err(|fail| match fail {
            Fail::Db(error) => error,
            Fail::Store(error) => redb::Error::Corrupted(error.to_string()),
        })?;
    }
    txn.commit()?;
    Ok(())
}

/// Read-modify-write of job `id` inside `txn`: indexes follow the change, `revision` goes up by
/// one; `f` returning `Err` leaves the job as it was and comes back as the inner `Err`.
fn rewrite_job<E>(
    txn: &WriteTransaction,
    id: u64,
    f: impl FnOnce(&mut Job) -> Result<(), E>,
) -> Result<Result<Job, E>, Fail> {
    let mut jobs = txn.open_table(JOBS)?;
    let Some(old) = load_job(&jobs, id)? else {
        return Err(Fail::Store(StoreError::JobNotFound { id }));
    };
    let mut job = old.clone();
    if let Err(rejection) = f(&mut job) {
        return Ok(Err(rejection));
    }
    job.id = id;
    job.revision = old.revision + 1;
    jobs.insert(id, codec::encode_job(&job)?.as_slice())?;
    Indexes::open(txn)?.replace(&old, &job)?;
    Ok(Ok(job))
}

/// Allocates `count` ids and inserts the jobs `make(ids)` returns (one per id, in order), with
/// all indexes, inside `txn`. Each job's `id` is set to its allocated id.
fn insert_jobs(
    txn: &WriteTransaction,
    count: usize,
    make: impl FnOnce(&[u64]) -> Result<Vec<Job>, Fail>,
) -> Result<Vec<Job>, Fail> {
    let ids = (0..count)
        .map(|_| next_in_sequence(txn, META_LAST_JOB_ID, "job"))
        .collect::<Result<Vec<u64>, Fail>>()?;
    let mut made = make(&ids)?;
    let mut jobs = txn.open_table(JOBS)?;
    let mut indexes = Indexes::open(txn)?;
    for (job, &id) in made.iter_mut().zip(&ids) {
        job.id = id;
        if jobs.get(id)?.is_some() {
            return Err(Fail::Store(StoreError::Corrupt {
                record: "job sequence",
                detail: format!("job {id} already exists although the sequence handed it out"),
            }));
        }
        jobs.insert(id, codec::encode_job(job)?.as_slice())?;
        indexes.insert(job)?;
    }
    Ok(made)
}

/// Appends events of existing jobs inside `txn`, with consecutive ids of the event sequence in
/// the order given (the sequence is read and advanced once).
fn insert_events(txn: &WriteTransaction, events: &[NewEvent<'_>]) -> Result<Range<u64>, Fail> {
    if events.is_empty() {
        return Ok(0..0);
    }
    {
        let jobs = txn.open_table(JOBS)?;
        let mut checked = None;
        for new in events {
            if checked != Some(new.job_id) {
                if jobs.get(new.job_id)?.is_none() {
                    return Err(Fail::Store(StoreError::JobNotFound { id: new.job_id }));
                }
                checked = Some(new.job_id);
            }
        }
    }
    let first = {
        let mut meta = txn.open_table(META)?;
        let last = meta
            .get(META_LAST_EVENT_ID)?
            .map(|v| v.value())
            .unwrap_or(0);
        let exhausted = || StoreError::SequenceExhausted { sequence: "event" };
        let new_last = last
            .checked_add(events.len() as u64)
            .ok_or_else(exhausted)?;
        meta.insert(META_LAST_EVENT_ID, new_last)?;
        last + 1
    };
    let mut table = txn.open_table(EVENTS)?;
    for (id, new) in (first..).zip(events) {
        let event = stored_event(new, id);
        table.insert((new.job_id, id), codec::encode_event(&event)?.as_slice())?;
    }
    Ok(first..first + events.len() as u64)
}

/// The event `new` becomes under `id`.
fn stored_event(new: &NewEvent<'_>, id: u64) -> Event {
    Event {
        id,
        job_id: new.job_id,
        event_type: new.event_type,
        source: new.source,
        message: new.message.to_string(),
        created: new.created,
        run_id: new.run_id.to_string(),
        component: new.component.to_string(),
    }
}

/// Appends an event for an existing job inside `txn`, with the next id of the event sequence.
fn insert_event(txn: &WriteTransaction, new: NewEvent<'_>) -> Result<Event, Fail> {
    if txn.open_table(JOBS)?.get(new.job_id)?.is_none() {
        return Err(Fail::Store(StoreError::JobNotFound { id: new.job_id }));
    }
    let id = next_in_sequence(txn, META_LAST_EVENT_ID, "event")?;
    let event = stored_event(&new, id);
    txn.open_table(EVENTS)?
        .insert((new.job_id, id), codec::encode_event(&event)?.as_slice())?;
    Ok(event)
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        DatabaseError::UpgradeRequired(version) => StoreError::OldFileFormat { path, version },
        other => StoreError::Open {
            path,
            source: DbError(other.into()),
        },
    }
}

/// The sum of `duration_seconds` over every job, read job by job: once, when a store of
/// schema version 1 (which kept no sum) is opened.
fn sum_durations(txn: &WriteTransaction) -> Result<u64, Fail> {
    let started = std::time::Instant::now();
    let jobs = txn.open_table(JOBS)?;
    let (mut sum, mut count) = (0u64, 0u64);
    for entry in jobs.range::<u64>(..)? {
        let (_, record) = entry?;
        sum = sum.saturating_add(duration_of(&codec::decode_job(record.value())?));
        count += 1;
    }
    tracing::info!(
        jobs = count,
        duration_sum = sum,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "computed the jobs' duration sum (store layout 1 to 2)"
    );
    Ok(sum)
}

/// What a job adds to `META_DURATION_SUM`.
fn duration_of(job: &Job) -> u64 {
    job.duration_seconds()
        .map_or(0, |seconds| seconds.max(0) as u64)
}

/// Takes the next id of the sequence stored under `key` in `meta`.
fn next_in_sequence(
    txn: &WriteTransaction,
    key: &str,
    sequence: &'static str,
) -> Result<u64, Fail> {
    let mut meta = txn.open_table(META)?;
    let last = meta.get(key)?.map(|v| v.value()).unwrap_or(0);
    let next = last
        .checked_add(1)
        .ok_or(StoreError::SequenceExhausted { sequence })?;
    meta.insert(key, next)?;
    Ok(next)
}

fn load_job(jobs: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<Job>, Fail> {
    let Some(record) = jobs.get(id)? else {
        return Ok(None);
    };
    let job = codec::decode_job(record.value())?;
    if job.id != id {
        return Err(Fail::Store(StoreError::Corrupt {
            record: "job record",
            detail: format!("the record under id {id} says it is job {}", job.id),
        }));
    }
    Ok(Some(job))
}

/// The jobs an index named, in the order of `ids`.
fn load_jobs(txn: &ReadTransaction, ids: &[u64]) -> Result<Vec<Job>, Fail> {
    let jobs = txn.open_table(JOBS)?;
    let mut found = Vec::with_capacity(ids.len());
    for &id in ids {
        match load_job(&jobs, id)? {
            Some(job) => found.push(job),
            None => return Err(dangling(id)),
        }
    }
    Ok(found)
}

fn dangling(id: u64) -> Fail {
    Fail::Store(StoreError::Corrupt {
        record: "job index",
        detail: format!("an index names job {id}, which does not exist"),
    })
}

fn collect_ids<'a>(
    values: impl Iterator<Item = Result<redb::AccessGuard<'a, u64>, redb::StorageError>>,
) -> Result<Vec<u64>, Fail> {
    let mut ids = Vec::new();
    for id in values {
        ids.push(id?.value());
    }
    Ok(ids)
}

fn distinct<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(item) {
            seen.push(*item);
        }
    }
    seen
}

/// The index tables of `JOBS`, and `meta` for the duration sum, open in a write transaction
/// (so `meta` cannot be opened beside them).
struct Indexes<'txn> {
    by_status: MultimapTable<'txn, u8, u64>,
    by_config: MultimapTable<'txn, (&'static str, &'static str, &'static str), u64>,
    by_parent: MultimapTable<'txn, &'static str, u64>,
    by_created: MultimapTable<'txn, i64, u64>,
    by_run_id: MultimapTable<'txn, &'static str, u64>,
    meta: Table<'txn, &'static str, u64>,
}

impl<'txn> Indexes<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, Fail> {
        Ok(Indexes {
            by_status: txn.open_multimap_table(JOBS_BY_STATUS)?,
            by_config: txn.open_multimap_table(JOBS_BY_CONFIG)?,
            by_parent: txn.open_multimap_table(JOBS_BY_PARENT)?,
            by_created: txn.open_multimap_table(JOBS_BY_CREATED)?,
            by_run_id: txn.open_multimap_table(JOBS_BY_RUN_ID)?,
            meta: txn.open_table(META)?,
        })
    }

    /// Moves `META_DURATION_SUM` from counting `old` seconds of a job to counting `new`.
    fn count_duration(&mut self, old: u64, new: u64) -> Result<(), Fail> {
        if old == new {
            return Ok(());
        }
        let sum = self.meta.get(META_DURATION_SUM)?.map_or(0, |v| v.value());
        let sum = sum.saturating_sub(old).saturating_add(new);
        self.meta.insert(META_DURATION_SUM, sum)?;
        Ok(())
    }

    fn insert(&mut self, job: &Job) -> Result<(), Fail> {
        self.count_duration(0, duration_of(job))?;
        let id = job.id;
        self.by_status.insert(job.status.code(), id)?;
        self.by_config.insert(config_key(job), id)?;
        self.by_parent.insert(job.parent_run_id_str(), id)?;
        self.by_created.insert(job.created_time, id)?;
        self.by_run_id.insert(job.run_id.as_str(), id)?;
        Ok(())
    }

    /// Moves the entries of `old` to those of `new` (the same job), touching only what changed.
    fn replace(&mut self, old: &Job, new: &Job) -> Result<(), Fail> {
        self.count_duration(duration_of(old), duration_of(new))?;
        let id = new.id;
        if old.status != new.status {
            self.by_status.remove(old.status.code(), id)?;
            self.by_status.insert(new.status.code(), id)?;
        }
        if config_key(old) != config_key(new) {
            self.by_config.remove(config_key(old), id)?;
            self.by_config.insert(config_key(new), id)?;
        }
        if old.parent_run_id != new.parent_run_id {
            self.by_parent.remove(old.parent_run_id_str(), id)?;
            self.by_parent.insert(new.parent_run_id_str(), id)?;
        }
        if old.created_time != new.created_time {
            self.by_created.remove(old.created_time, id)?;
            self.by_created.insert(new.created_time, id)?;
        }
        if old.run_id != new.run_id {
            self.by_run_id.remove(old.run_id.as_str(), id)?;
            self.by_run_id.insert(new.run_id.as_str(), id)?;
        }
        Ok(())
    }

    /// Removes the entries of `job`, which is being deleted.
    fn remove(&mut self, job: &Job) -> Result<(), Fail> {
        self.count_duration(duration_of(job), 0)?;
        let id = job.id;
        self.by_status.remove(job.status.code(), id)?;
        self.by_config.remove(config_key(job), id)?;
        self.by_parent.remove(job.parent_run_id_str(), id)?;
        self.by_created.remove(job.created_time, id)?;
        self.by_run_id.remove(job.run_id.as_str(), id)?;
        Ok(())
    }
}

fn config_key(job: &Job) -> (&str, &str, &str) {
    (
        job.component.as_str(),
        job.config_id(),
        job.branch_id.as_str(),
    )
}

#[cfg(test)]
impl Store {
    /// Panics unless every index entry names an existing job with that value, every job is in
    /// every index, the sequences are ahead of every id, and every event belongs to a job.
    fn assert_internally_consistent(&self) {
        use redb::{ReadOnlyTable, ReadableMultimapTable};
        use std::collections::BTreeMap;

        let db = self.db.for_read().expect("store open");
        let txn = db.begin_read().expect("begin read");
        let table = txn.open_table(JOBS).expect("jobs table");
        let mut jobs = BTreeMap::new();
        for entry in table.range::<u64>(..).expect("range") {
            let (key, record) = entry.expect("entry");
            let job = codec::decode_job(record.value()).expect("decode job");
            assert_eq!(job.id, key.value(), "job record under another id");
            jobs.insert(job.id, job);
        }

        macro_rules! check_index {
            ($name:literal, $table:expr, $job_key:expr) => {{
                let index = txn.open_multimap_table($table).expect($name);
                let mut entries = 0;
                for entry in index.iter().expect("iter") {
                    let (key, values) = entry.expect("entry");
                    let key = format!("{:?}", key.value());
                    for id in values {
                        let id = id.expect("id").value();
                        entries += 1;
                        let job = jobs
                            .get(&id)
                            .unwrap_or_else(|| panic!("{} names missing job {id}", $name));
                        let wanted = format!("{:?}", ($job_key)(job));
                        assert_eq!(wanted, key, "{} entry of job {id} is stale", $name);
                    }
                }
                assert_eq!(
                    entries,
                    jobs.len(),
                    "{} does not hold every job once",
                    $name
                );
            }};
        }
        check_index!("status index", JOBS_BY_STATUS, |j: &Job| j.status.code());
        check_index!("config index", JOBS_BY_CONFIG, config_key);
        check_index!("parent index", JOBS_BY_PARENT, |j: &Job| j
            .parent_run_id_str()
            .to_string());
        check_index!("created index", JOBS_BY_CREATED, |j: &Job| j.created_time);
        check_index!("run id index", JOBS_BY_RUN_ID, |j: &Job| j
            .run_id
            .to_string());

        let meta: ReadOnlyTable<&str, u64> = txn.open_table(META).expect("meta");
        let last = |key: &str| meta.get(key).expect("meta get").map_or(0, |v| v.value());
        let durations: u64 = jobs.values().map(duration_of).sum();
        assert_eq!(last(META_DURATION_SUM), durations, "duration sum stale");
        if let Some(max) = jobs.keys().next_back() {
            assert!(last(META_LAST_JOB_ID) >= *max, "job sequence behind");
        }
        let events = txn.open_table(EVENTS).expect("events");
        for entry in events.range::<(u64, u64)>(..).expect("range") {
            let (key, record) = entry.expect("entry");
            let (job_id, event_id) = key.value();
            let event = codec::decode_event(record.value()).expect("decode event");
            assert_eq!((event.job_id, event.id), (job_id, event_id), "event key");
            assert!(jobs.contains_key(&job_id), "event of missing job {job_id}");
            assert!(
                last(META_LAST_EVENT_ID) >= event_id,
                "event sequence behind"
            );
        }
        let closed = txn.open_table(LOGS_CLOSED).expect("closed logs");
        for entry in closed.range::<u64>(..).expect("range") {
            let (job_id, _) = entry.expect("entry");
            let job_id = job_id.value();
            assert!(
                jobs.contains_key(&job_id),
                "closed log of missing job {job_id}"
            );
        }
    }
}

#[cfg(test)]
mod tests;
