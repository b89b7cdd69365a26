//! What a previous process left: re-attaching, requeueing, and sweeping leftovers.

use super::end::Ending;
use super::{Queue, QueueError};
use crate::blocking::blocking;
use crate::model::{now_micros, EventType, JobType, Status};
use crate::runner::workspace;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Queue {
    /// Settles what the previous process left, before anything new starts: a `processing` job
    /// without a container goes back to `created`; one with a container is re-attached (its
    /// container keeps running); `terminating` jobs finish their termination. Containers of this
    /// store that belong to no such job are removed.
    pub async fn recover(self: &Arc<Self>) -> Result<(), QueueError> {
        for status in [Status::Processing, Status::Terminating] {
            for job in blocking(|| self.store.jobs_with_status(status))? {
                if job.job_type == JobType::Container {
                    // Virtual: it finishes when its children do.
                    blocking(|| self.settle_container(&job.run_id))?;
                    continue;
                }
                if job.outcome.is_some() {
                    // It ended before the crash: only the cleanup was left.
                    if let Some(container_id) = &job.container_id {
                        self.runner.remove_container(container_id).await;
                    }
                    blocking(|| self.end(job.id, Ending::Recorded))?;
                    continue;
                }
                match job.container_id.clone() {
                    None if status == Status::Processing => {
                        if self.move_if(job.id, status, Status::Created)?.is_some() {
                            self.event(
                                &job,
                                EventType::Warn,
                                "The job was requeued: jobq stopped before its container started.",
                            );
                        }
                    }
                    None => blocking(|| self.end(job.id, Ending::Terminated))?,
                    Some(container_id) => {
                        tracing::info!(job_id = job.id, %container_id, "re-attaching to a running job");
                        let cancel = CancellationToken::new();
                        if status == Status::Terminating {
                            cancel.cancel();
                        }
                        self.lock_running().insert(job.id, cancel.clone());
                        tokio::spawn(Arc::clone(self).execute(job, Some(container_id), cancel));
                    }
                }
            }
        }
        self.sweep().await;
        Ok(())
    }

    /// Removes containers of this store that no running job owns, and folders of jobs
    /// finished longer ago than `job_folder_retention`.
    pub(super) async fn sweep(&self) {
        let containers = match self.runner.labelled_containers().await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::debug!(%error, "cannot list containers to sweep");
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
                self.runner.remove_container(&container_id).await;
            }
        }
        blocking(|| self.sweep_folders());
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
        let cutoff = now_micros() - self.settings.job_folder_retention.as_micros() as i64;
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
