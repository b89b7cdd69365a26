//! What a previous process left: re-attaching, requeueing, and sweeping leftovers.

use super::end::Ending;
use super::{Queue, QueueError};
use crate::blocking::blocking;
use crate::error::chain;
use crate::model::{now_micros, EventType, Job, Status};
use crate::runner::workspace;
use crate::storage::StorageError;
use crate::store::{Budget, StoreError, Sweep};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The most one write transaction of the retention sweep deletes: job creation waits for at
/// most one such transaction, about 10 ms (see BENCHMARKS.md).
const DELETE_BUDGET: Budget = Budget {
    jobs: 200,
    events: 5_000,
};
/// Candidates read per page of the retention sweep.
const SCAN_PAGE: usize = 5_000;
/// Files deleted per write transaction.
const FILE_BATCH: usize = 500;
/// How long the retention sweep's deletions may stay unpersisted: its write transactions skip
/// the fsync (job creation's commits wait for theirs alone), but one at least this often, and
/// the last, is durable.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// The shortest pause between two write transactions of the retention sweep. The pause is as
/// long as the transaction before it, so waiting writers (job creation, events) get at least
/// half of the store's write time.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// What one retention sweep deleted.
#[derive(Debug, Default)]
struct Swept {
    jobs: usize,
    events: u64,
    loads: u64,
    kept: usize,
    transactions: usize,
    /// Whether the last transaction was not durable.
    unpersisted: bool,
}

impl Queue {
    /// Settles what the previous process left, before anything new starts: a `processing` job
    /// without a container goes back to `created`; one with a container is re-attached (its
    /// container keeps running); `terminating` jobs finish their termination. Containers of this
    /// store that belong to no such job are removed.
    pub async fn recover(self: &Arc<Self>) -> Result<(), QueueError> {
        for status in [Status::Processing, Status::Terminating] {
            for job in blocking(|| self.store.jobs_with_status(status))? {
                if job.job_type.is_virtual() {
                    // Virtual: it finishes when its children do.
                    blocking(|| self.settle_container(&job.run_id))?;
                    continue;
                }
                if job.outcome.is_some() {
                    // It ended before the crash: only the cleanup was left.
                    self.end_recorded(&job).await?;
                    self.metrics.recovered("ended");
                    continue;
                }
                if self.lock_running().contains_key(&job.id) {
                    // Re-attached by an earlier recovery that a host fault stopped part way.
                    continue;
                }
                match job.container_id.clone() {
                    None if status == Status::Processing => {
                        if self.move_if(job.id, status, Status::Created)?.is_some() {
                            self.metrics.recovered("requeued");
                            self.event(
                                &job,
                                EventType::Warn,
                                "The job was requeued: jobq stopped before its container started.",
                            );
                        }
                    }
                    None => {
                        blocking(|| self.end(job.id, Ending::Terminated))?;
                        self.metrics.recovered("ended");
                    }
                    Some(container_id) => {
                        tracing::info!(job_id = job.id, %container_id, "re-attaching to a running job");
                        let cancel = CancellationToken::new();
                        if status == Status::Terminating {
                            cancel.cancel();
                        }
                        self.lock_running().insert(job.id, cancel.clone());
                        self.metrics.recovered("reattached");
                        tokio::spawn(Arc::clone(self).execute(job, Some(container_id), cancel));
                    }
                }
            }
        }
        self.sweep().await;
        self.recovered.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the store takes writes, recovers (again, after a fault stopped it part
    /// way), then runs the scheduler until `shutdown`.
    pub async fn recover_then_schedule(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            while !blocking(|| self.store.wait_writable(Duration::from_secs(1))) {
                if shutdown.is_cancelled() {
                    return;
                }
            }
            match self.recover().await {
                Ok(()) => break,
                Err(QueueError::Store(error)) if error.is_host_fault() => continue,
                Err(error) => {
                    tracing::error!(error = %chain(&error), "recovery failed; jobs start anyway");
                    break;
                }
            }
        }
        self.run_scheduler(shutdown).await;
    }

    /// Ends a job whose outcome is recorded: its container removed, then `end`.
    pub(super) async fn end_recorded(&self, job: &Job) -> Result<(), QueueError> {
        if let Some(container_id) = &job.container_id {
            self.executor.remove(container_id).await;
        }
        blocking(|| self.end(job.id, Ending::Recorded))
    }

    /// Removes containers of this store that no running job owns, and folders of jobs
    /// finished longer ago than `job_folder_retention`.
    pub(super) async fn sweep(&self) {
        let containers = match self.executor.ours().await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::debug!(error = %chain(&error), "cannot list containers to sweep");
                Vec::new()
            }
        };
        for (container_id, job_id) in containers {
            let owned = match job_id.parse::<u64>() {
                Ok(id) => {
                    self.lock_running().contains_key(&id)
                        || matches!(blocking(|| self.store.job(id)), Ok(Some(job)) if job.container_id.as_deref() == Some(container_id.as_str()) && !job.status.is_finished())
                }
                Err(_) => false,
            };
            if !owned {
                tracing::info!(%container_id, %job_id, "removing a container no running job owns");
                self.executor.remove(&container_id).await;
            }
        }
        blocking(|| self.sweep_folders());
    }

    /// Deletes the finished jobs that ended longer ago than `job_retention`, a whole job tree
    /// at a time (never one with an unfinished or later job), with their events and Storage load
    /// ids, in small write transactions with a pause between them; then the Storage files
    /// tagged with a deleted job (debug archives), content included. Their folders go with the
    /// next `sweep_folders`. `check_files` looks for such files even when no job was deleted
    /// (after a crash between the two). Stops early at `stop`.
    pub(super) async fn sweep_expired_jobs(&self, stop: &CancellationToken, check_files: bool) {
        let started = Instant::now();
        let cutoff = now_micros().saturating_sub(micros(self.settings.job_retention));
        let mut swept = Swept::default();
        let mut sweep = Sweep::new(cutoff, DELETE_BUDGET);
        if let Err(error) = self
            .delete_expired_jobs(&mut sweep, cutoff, stop, &mut swept)
            .await
        {
            tracing::error!(%error, deleted_jobs = swept.jobs, "the retention sweep failed; the next one goes on");
        }
        if swept.unpersisted {
            let persisted = blocking(|| self.store.delete_expired(&mut sweep, &[], true));
            if let Err(error) = persisted {
                tracing::error!(%error, "cannot persist the retention sweep's deletions");
            }
        }
        let files = match swept.jobs > 0 || check_files {
            true => blocking(|| self.delete_files_of_deleted_jobs()),
            false => 0,
        };
        if swept.jobs > 0 || files > 0 {
            tracing::info!(
                jobs = swept.jobs,
                events = swept.events,
                load_ids = swept.loads,
                files,
                kept = swept.kept,
                transactions = swept.transactions,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "deleted expired jobs"
            );
        }
    }

    async fn delete_expired_jobs(
        &self,
        sweep: &mut Sweep,
        cutoff: i64,
        stop: &CancellationToken,
        swept: &mut Swept,
    ) -> Result<(), StoreError> {
        let mut after = None;
        let mut persisted = Instant::now();
        loop {
            let page = blocking(|| self.store.expired_jobs(cutoff, after, SCAN_PAGE))?;
            let mut candidates = page.ids.as_slice();
            while !candidates.is_empty() {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let batch = Instant::now();
                let durable = persisted.elapsed() >= PERSIST_EVERY;
                let deletion = blocking(|| self.store.delete_expired(sweep, candidates, durable))?;
                if durable {
                    persisted = Instant::now();
                }
                swept.unpersisted = !durable;
                candidates = &candidates[deletion.consumed..];
                swept.jobs += deletion.jobs.len();
                swept.events += deletion.events;
                swept.loads += deletion.loads;
                swept.kept += deletion.kept;
                swept.transactions += 1;
                if !deletion.jobs.is_empty() {
                    // Long polls of a deleted job answer 404 (the scheduler has nothing new).
                    self.changes
                        .send_modify(|tick| *tick = tick.wrapping_add(1));
                }
                tokio::time::sleep(batch.elapsed().max(BATCH_PAUSE)).await;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Deletes the Storage files of deleted jobs (see `files_of_deleted_jobs`), content
    /// included; answers how many.
    fn delete_files_of_deleted_jobs(&self) -> usize {
        let ids = match self.files_of_deleted_jobs() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::error!(%error, "cannot look for files of deleted jobs");
                return 0;
            }
        };
        let mut deleted = 0;
        for chunk in ids.chunks(FILE_BATCH) {
            match self.storage.delete_files(chunk) {
                Ok(files) => deleted += files.len(),
                Err(error) => {
                    tracing::error!(%error, "cannot delete files of deleted jobs");
                    break;
                }
            }
        }
        deleted
    }

    /// The Storage files every `jobId:<id>` tag of which names a deleted job: an id handed
    /// out, of no stored job.
    fn files_of_deleted_jobs(&self) -> Result<Vec<u64>, StorageError> {
        let last = self.store.last_job_id()?;
        let mut ids = Vec::new();
        for file in self.storage.files(&[])? {
            let mut jobs = file
                .tags
                .iter()
                .filter_map(|tag| tag.strip_prefix("jobId:")?.parse::<u64>().ok())
                .peekable();
            if jobs.peek().is_none() {
                continue;
            }
            let mut deleted = true;
            for id in jobs {
                if !(1..=last).contains(&id) || self.store.job(id)?.is_some() {
                    deleted = false;
                    break;
                }
            }
            if deleted {
                ids.push(file.id);
            }
        }
        Ok(ids)
    }

    /// Makes `jobs/` private and removes the folders of jobs finished longer ago than
    /// `job_folder_retention` (and of jobs the store does not know).
    fn sweep_folders(&self) {
        let jobs_dir = self.settings.data_dir.join("jobs");
        let private = workspace::create_private(&jobs_dir).and_then(|()| {
            std::fs::set_permissions(&jobs_dir, std::fs::Permissions::from_mode(0o700))
        });
        if let Err(error) = private {
            tracing::warn!(%error, path = %jobs_dir.display(), "cannot make the job folders private");
        }
        let cutoff = now_micros().saturating_sub(micros(self.settings.job_folder_retention));
        let Ok(entries) = std::fs::read_dir(&jobs_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            let expired = match self.store.job(id) {
                Ok(Some(job)) => {
                    job.status.is_finished() && job.end_time.is_some_and(|end| end < cutoff)
                }
                Ok(None) => true,
                Err(_) => false,
            };
            if expired {
                if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(job_id = id, %error, "cannot remove an expired job folder");
                }
            }
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
