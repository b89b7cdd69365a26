//! Retention: finished jobs deleted with everything of theirs the store keeps (index entries,
//! events, Storage load ids), a whole job tree at a time, in small write transactions.
//!
//! A sweep fixes a `cutoff` (Unix microseconds) and pages through the created-time index with
//! `expired_jobs` (a job that ended before the cutoff was created before it too), in read
//! transactions that never hold up a writer. `delete_expired` then deletes those candidates
//! whose whole tree (up through `parent_run_id` to its root, down through the parent index) is
//! finished and ended before the cutoff, in one write transaction bounded by a `Budget`, and
//! says how far it got; the caller goes on with the rest in later transactions.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use redb::{
    Database, ReadableDatabase, ReadableMultimapTable, ReadableTable, ReadableTableMetadata, Table,
    WriteTransaction,
};

use super::tables::*;
use super::{collect_ids, dangling, load_job, Fail, Indexes, Store, StoreError};
use crate::model::Job;

/// Where a scan of `expired_jobs` goes on: after this entry of the created-time index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryCursor {
    created: i64,
    id: u64,
}

/// A page of candidates for deletion.
#[derive(Debug, Default)]
pub struct ExpiredPage {
    /// Finished jobs that ended before the cutoff, in created-time order.
    pub ids: Vec<u64>,
    /// Where the next page starts; `None`: no job created before the cutoff is left.
    pub next: Option<ExpiryCursor>,
}

/// The most one write transaction of `delete_expired` deletes: it stops before the next tree
/// once `jobs` jobs are deleted, and trims the events of a tree whose events do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub jobs: usize,
    pub events: usize,
}

/// One retention sweep over its write transactions: its cutoff, the budget of each
/// transaction, and the jobs found to be in trees that stay (an unfinished job, or one that
/// ended after the cutoff), so a large such tree is walked once a sweep, not once a candidate.
#[derive(Debug)]
pub struct Sweep {
    cutoff: i64,
    budget: Budget,
    kept: HashSet<u64>,
}

impl Sweep {
    pub fn new(cutoff: i64, budget: Budget) -> Sweep {
        Sweep {
            cutoff,
            budget,
            kept: HashSet::new(),
        }
    }
}

/// What one write transaction of `delete_expired` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deletion {
    /// How many of the candidates were dealt with (deleted, kept, or already gone with an
    /// earlier tree); the caller goes on with the rest.
    pub consumed: usize,
    /// The jobs deleted, each tree's jobs together.
    pub jobs: Vec<u64>,
    /// Events deleted, those of a tree trimmed for a later transaction included.
    pub events: u64,
    /// Storage load ids deleted.
    pub loads: u64,
    /// Candidates kept: their tree has an unfinished job or one that ended after the cutoff.
    pub kept: usize,
}

impl Store {
    /// At most `limit` finished jobs that ended before `cutoff`, in created-time order,
    /// starting after `after` (from the oldest when `None`).
    pub fn expired_jobs(
        &self,
        cutoff: i64,
        after: Option<ExpiryCursor>,
        limit: usize,
    ) -> Result<ExpiredPage, StoreError> {
        self.read("finding expired jobs", |txn| {
            let jobs = txn.open_table(JOBS)?;
            let by_created = txn.open_multimap_table(JOBS_BY_CREATED)?;
            let from = after.map_or(i64::MIN, |cursor| cursor.created);
            let mut page = ExpiredPage::default();
            for entry in by_created.range(from..cutoff)? {
                let (created, ids) = entry?;
                let created = created.value();
                for id in collect_ids(ids)? {
                    if after.is_some_and(|cursor| (created, id) <= (cursor.created, cursor.id)) {
                        continue;
                    }
                    if page.ids.len() == limit {
                        // Full: the next page starts after the last job looked at.
                        return Ok(page);
                    }
                    let job = load_job(&jobs, id)?.ok_or_else(|| dangling(id))?;
                    if expired(&job, cutoff) {
                        page.ids.push(id);
                    }
                    page.next = Some(ExpiryCursor { created, id });
                }
            }
            page.next = None;
            Ok(page)
        })
    }

    /// The last job id handed out (0 before the first job): every id up to it named a job,
    /// which is stored, or was deleted.
    pub fn last_job_id(&self) -> Result<u64, StoreError> {
        self.read("reading the job sequence", |txn| {
            let meta = txn.open_table(META)?;
            let last = meta.get(META_LAST_JOB_ID)?.map(|v| v.value());
            Ok(last.unwrap_or(0))
        })
    }

    /// Deletes, in one write transaction, the trees of `candidates` (in order) whose every job
    /// is finished and ended before the sweep's cutoff: each job with its index entries, its
    /// events and its Storage load ids (`job/<id>/...`). A tree with an unfinished or later job
    /// is kept whole. Stops before the next tree once the budget's `jobs` jobs are deleted (or
    /// five times as many candidates looked at); a tree whose events do not fit into what is
    /// left of its `events` loses its oldest events now and goes, with the rest of them, in a
    /// later transaction (it is not consumed).
    ///
    /// Not `durable`: the commit skips the fsync and is persisted by the next durable commit of
    /// any kind (a crash before that brings the jobs back, for the next sweep to delete again);
    /// the pages it frees are reused only after that commit too.
    pub fn delete_expired(
        &self,
        sweep: &mut Sweep,
        candidates: &[u64],
        durable: bool,
    ) -> Result<Deletion, StoreError> {
        self.write_as("deleting expired jobs", durable, |txn| {
            delete_expired(txn, sweep, candidates)
        })
    }
}

fn delete_expired(
    txn: &WriteTransaction,
    sweep: &mut Sweep,
    candidates: &[u64],
) -> Result<Deletion, Fail> {
    let budget = sweep.budget;
    let mut jobs = txn.open_table(JOBS)?;
    let mut indexes = Indexes::open(txn)?;
    let mut events = txn.open_table(EVENTS)?;
    let mut loads = txn.open_table(STORAGE_LOADS)?;
    let mut deletion = Deletion::default();
    let mut events_left = budget.events;
    'candidates: for &id in candidates {
        if deletion.jobs.len() >= budget.jobs
            || deletion.consumed >= budget.jobs.saturating_mul(5)
            || events_left == 0
        {
            break;
        }
        let Some(job) = load_job(&jobs, id)? else {
            // Deleted with an earlier candidate's tree.
            deletion.consumed += 1;
            continue;
        };
        let Some(tree) = expired_tree(&jobs, &indexes, job, sweep)? else {
            deletion.kept += 1;
            deletion.consumed += 1;
            continue;
        };
        for job in &tree {
            let (removed, all) = remove_events(&mut events, job.id, events_left)?;
            events_left -= removed;
            deletion.events += removed as u64;
            if !all {
                break 'candidates;
            }
        }
        for job in &tree {
            jobs.remove(job.id)?;
            indexes.remove(job)?;
            deletion.loads += remove_loads(&mut loads, job.id)?;
            deletion.jobs.push(job.id);
        }
        deletion.consumed += 1;
    }
    // `meta` is open in `indexes`.
    drop(indexes);
    let deleted = deletion.jobs.len() as u64 + deletion.events + deletion.loads;
    if deleted > 0 {
        let mut meta = txn.open_table(META)?;
        let before = meta
            .get(META_DELETED_SINCE_MEASURED)?
            .map_or(0, |v| v.value());
        meta.insert(META_DELETED_SINCE_MEASURED, before.saturating_add(deleted))?;
    }
    Ok(deletion)
}

/// What `compact_if_mostly_free` found and did, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compaction {
    pub file: u64,
    /// `None`: not measured (too little was deleted since the last measurement).
    pub free: Option<u64>,
    /// The file's size after compacting; `None`: not compacted.
    pub compacted: Option<u64>,
}

/// Files up to this size are measured at every start (it takes milliseconds); larger ones only
/// when retention deleted at least half as many records as there are (measuring reads every
/// page: about 0.2 s per 200 MiB here).
const ALWAYS_MEASURED_BYTES: u64 = 64 << 20;

/// Compacts the file when more than half of it is free. redb reuses the pages deleted jobs
/// leave, so the file stops growing under a steady load, but only compaction gives them back
/// to the file system (after a large first sweep, or a shorter retention). Free is the file
/// less redb's allocated pages. Runs at open, before any transaction (compaction needs none to
/// be live); logs what it did. A failure is logged: the store works uncompacted.
pub(super) fn compact_if_mostly_free(db: &mut Database, path: &Path) -> Option<Compaction> {
    compact_if_mostly_free_over(db, path, ALWAYS_MEASURED_BYTES)
}

fn compact_if_mostly_free_over(
    db: &mut Database,
    path: &Path,
    always_measured: u64,
) -> Option<Compaction> {
    let file_size = || std::fs::metadata(path).map(|meta| meta.len());
    let measured = (|| -> Result<(u64, Option<u64>), String> {
        let text = |error: &dyn std::fmt::Display| error.to_string();
        let file = file_size().map_err(|e| text(&e))?;
        if file > always_measured && !deleted_much(db).map_err(|e| text(&e))? {
            return Ok((file, None));
        }
        let txn = db.begin_write().map_err(|e| text(&e))?;
        let stats = txn.stats().map_err(|e| text(&e));
        // The count starts again (written only when there is one: a commit costs pages).
        let counted = {
            let mut meta = txn.open_table(META).map_err(|e| text(&e))?;
            let counted = meta
                .get(META_DELETED_SINCE_MEASURED)
                .map_err(|e| text(&e))?
                .is_some_and(|v| v.value() > 0);
            if counted && stats.is_ok() {
                meta.insert(META_DELETED_SINCE_MEASURED, 0)
                    .map_err(|e| text(&e))?;
            }
            counted
        };
        if counted && stats.is_ok() {
            txn.commit().map_err(|e| text(&e))?;
        } else {
            txn.abort().map_err(|e| text(&e))?;
        }
        let stats = stats?;
        let used = stats.allocated_pages() * stats.page_size() as u64;
        Ok((file, Some(file.saturating_sub(used))))
    })();
    let (file, free) = match measured {
        Ok(measured) => measured,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot measure the store's free space");
            return None;
        }
    };
    let mut done = Compaction {
        file,
        free,
        compacted: None,
    };
    let Some(free) = free.filter(|&free| free > file / 2) else {
        tracing::debug!(
            file_bytes = file,
            free_bytes = free,
            "the store needs no compaction"
        );
        return Some(done);
    };
    let started = Instant::now();
    tracing::info!(
        file_bytes = file,
        free_bytes = free,
        "compacting the store: more than half of its file is free"
    );
    match db.compact() {
        Ok(_) => {
            let after = file_size().unwrap_or(file);
            tracing::info!(
                before_bytes = file,
                after_bytes = after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compacted the store"
            );
            done.compacted = Some(after);
        }
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot compact the store; it works as it is");
        }
    }
    Some(done)
}

/// Whether retention deleted at least half as many records (jobs, events, load ids) since the
/// last measurement as there are jobs and events now: enough, perhaps, to free half the file.
fn deleted_much(db: &Database) -> Result<bool, redb::Error> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    let deleted = meta
        .get(META_DELETED_SINCE_MEASURED)?
        .map_or(0, |v| v.value());
    let mut live = 0;
    if let Ok(jobs) = txn.open_table(JOBS) {
        live += jobs.len()?;
    }
    if let Ok(events) = txn.open_table(EVENTS) {
        live += events.len()?;
    }
    Ok(deleted > 0 && deleted.saturating_mul(2) >= live)
}

fn expired(job: &Job, cutoff: i64) -> bool {
    job.status.is_finished() && job.end_time.is_some_and(|end| end < cutoff)
}

/// The tree of `job` (its root, through `parent_run_id`, and all the root's descendants) if
/// every job of it is expired; `None` if one is not (the sweep then remembers the root, or the
/// unexpired ancestor).
fn expired_tree(
    jobs: &Table<u64, &'static [u8]>,
    indexes: &Indexes<'_>,
    job: Job,
    sweep: &mut Sweep,
) -> Result<Option<Vec<Job>>, Fail> {
    let cutoff = sweep.cutoff;
    let mut seen = HashSet::from([job.id]);
    let mut root = job;
    loop {
        if sweep.kept.contains(&root.id) {
            return Ok(None);
        }
        if !expired(&root, cutoff) {
            sweep.kept.insert(root.id);
            return Ok(None);
        }
        let Some(parent_run_id) = &root.parent_run_id else {
            break;
        };
        let parents = collect_ids(indexes.by_run_id.get(parent_run_id.as_str())?)?;
        // A parent run that is not (or no longer) stored ends the walk up.
        let Some(&parent) = parents.first() else {
            break;
        };
        if !seen.insert(parent) {
            break;
        }
        root = load_job(jobs, parent)?.ok_or_else(|| dangling(parent))?;
    }
    let root_id = root.id;
    let mut seen = HashSet::from([root_id]);
    let mut tree = Vec::new();
    let mut walk = vec![root];
    while let Some(job) = walk.pop() {
        if !expired(&job, cutoff) {
            sweep.kept.insert(root_id);
            return Ok(None);
        }
        for child in collect_ids(indexes.by_parent.get(job.run_id.as_str())?)? {
            if seen.insert(child) {
                walk.push(load_job(jobs, child)?.ok_or_else(|| dangling(child))?);
            }
        }
        tree.push(job);
    }
    Ok(Some(tree))
}

/// Removes at most `limit` of job `id`'s events, oldest first; answers how many, and whether
/// none is left.
fn remove_events(
    events: &mut Table<(u64, u64), &'static [u8]>,
    id: u64,
    limit: usize,
) -> Result<(usize, bool), Fail> {
    let range = (id, 0)..=(id, u64::MAX);
    let mut removed = 0;
    {
        let mut extracted = events.extract_from_if(range.clone(), |_, _| true)?;
        while removed < limit {
            match extracted.next() {
                Some(entry) => {
                    entry?;
                    removed += 1;
                }
                None => return Ok((removed, true)),
            }
        }
    }
    let left = events.range(range)?.next().is_some();
    Ok((removed, !left))
}

/// Removes the Storage load ids of job `id` (`job/<id>/...`); answers how many.
fn remove_loads(loads: &mut Table<&'static str, &'static str>, id: u64) -> Result<u64, Fail> {
    // `0` follows `/`: the range holds exactly the keys starting with `job/<id>/`.
    let (from, to) = (format!("job/{id}/"), format!("job/{id}0"));
    let mut removed = 0;
    for entry in loads.extract_from_if(from.as_str()..to.as_str(), |_, _| true)? {
        entry?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;

#[cfg(test)]
impl Store {
    /// Stores `count` jobs `make(id)` returns, each with `events` stdout events, in write
    /// transactions of `chunk` jobs (tests and benchmarks).
    pub(crate) fn fill(
        &self,
        count: usize,
        chunk: usize,
        events: usize,
        make: impl Fn(u64) -> Job,
    ) -> Result<(), StoreError> {
        use crate::model::{EventSource, EventType, NewEvent};
        let mut left = count;
        while left > 0 {
            let size = left.min(chunk);
            left -= size;
            self.write("filling the store", |txn| {
                let mut jobs = Vec::with_capacity(size);
                for _ in 0..size {
                    let id = super::next_in_sequence(txn, META_LAST_JOB_ID, "job")?;
                    let mut job = make(id);
                    job.id = id;
                    jobs.push(job);
                }
                {
                    let mut table = txn.open_table(JOBS)?;
                    let mut indexes = Indexes::open(txn)?;
                    for job in &jobs {
                        table.insert(job.id, super::codec::encode_job(job)?.as_slice())?;
                        indexes.insert(job)?;
                    }
                }
                for job in &jobs {
                    for n in 0..events {
                        super::insert_event(
                            txn,
                            NewEvent {
                                job_id: job.id,
                                event_type: EventType::Info,
                                source: EventSource::Stdout,
                                message: &format!("line {n} of job {}", job.id),
                                run_id: job.run_id.as_str(),
                                component: &job.component,
                                created: job.created_time,
                            },
                        )?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
