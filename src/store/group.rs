//! Group commit of job creations: concurrent creations share one durable write transaction.
//!
//! A durable redb commit waits for the disk, so one transaction per `POST /jobs` caps creations
//! at the disk's commits per second. `Creations` owns the write path of creations: a caller sends
//! its job maker through a channel and waits for the answer; a dedicated thread takes whatever is
//! queued (up to `MAX_GROUP_JOBS` jobs; a larger job tree goes alone) and inserts it in one
//! transaction (`Durability::Immediate`, redb's default), so a caller's jobs are on disk when its
//! answer comes. There is no waiting for company: creations queue up while the previous group
//! commits, and the next group is whatever queued meanwhile.
//!
//! A job tree is one creation, so it is never split across transactions. Ids are allocated in
//! the transaction, in queue order: unique, and increasing in commit order. When a group's
//! transaction fails, nothing of it is written and each of its creations is tried again in a
//! transaction of its own, so a failing creation fails alone (a failing disk fails each).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use redb::WriteTransaction;
use tokio::sync::oneshot;

use super::{insert_jobs, Fail, Store, StoreError};
use crate::model::Job;

/// The most jobs one group commit takes, so a burst of creations still answers in steps.
const MAX_GROUP_JOBS: usize = 1024;

/// Makes the jobs of one creation from their allocated ids (one job per id, in order). It may be
/// called more than once (a failed group is retried one creation at a time).
type Maker = Box<dyn Fn(&[u64]) -> Vec<Job> + Send>;

/// One creation waiting for its commit.
struct Creation {
    count: usize,
    make: Maker,
    answer: oneshot::Sender<Result<Vec<Job>, StoreError>>,
}

/// The committer of job creations: a thread owning the creation write path of one store.
/// Dropping it lets the queued creations commit, then ends and joins the thread.
pub struct Creations {
    sender: Option<mpsc::Sender<Creation>>,
    thread: Option<JoinHandle<()>>,
}

impl Creations {
    /// Starts the committer thread of `store`.
    pub fn start(store: Arc<Store>) -> Creations {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("jobq-creations".into())
            .spawn(move || commit_loop(&store, &receiver))
            .expect("the job creation committer thread starts");
        Creations {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    /// `Store::create_jobs` through the group commit: allocates `count` ids and inserts the jobs
    /// `make(ids)` returns (one per id, in order), all in one transaction shared with the
    /// creations queued at the same time. Returns once they are durably committed, or failed.
    pub async fn create_jobs(
        &self,
        count: usize,
        make: impl Fn(&[u64]) -> Vec<Job> + Send + 'static,
    ) -> Result<Vec<Job>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let creation = Creation {
            count,
            make: Box::new(make),
            answer,
        };
        let sent = self.sender.as_ref().map(|sender| sender.send(creation));
        if !matches!(sent, Some(Ok(()))) {
            return Err(stopped());
        }
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Drop for Creations {
    fn drop(&mut self) {
        // The thread ends once the channel is closed and empty.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Creations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creations").finish_non_exhaustive()
    }
}

fn stopped() -> StoreError {
    StoreError::Creation {
        detail: "the job creation committer has stopped".to_string(),
    }
}

/// Commits groups until every sender is gone and the queue is empty.
fn commit_loop(store: &Store, receiver: &mpsc::Receiver<Creation>) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = first.count;
        let mut group = vec![first];
        while jobs < MAX_GROUP_JOBS {
            match receiver.try_recv() {
                Ok(next) => {
                    jobs += next.count;
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        store.commit_group(group);
    }
}

impl Store {
    /// Inserts every creation of `group` in one transaction and answers each; when that fails,
    /// each creation gets a transaction (and answer) of its own.
    fn commit_group(&self, group: Vec<Creation>) {
        if group.len() > 1 {
            let committed = self.write("creating jobs", |txn| {
                group
                    .iter()
                    .map(|creation| insert_creation(txn, creation))
                    .collect::<Result<Vec<_>, Fail>>()
            });
            if let Ok(made) = committed {
                for (creation, jobs) in group.into_iter().zip(made) {
                    // A caller that stopped waiting has its jobs created all the same.
                    let _ = creation.answer.send(Ok(jobs));
                }
                return;
            }
        }
        for creation in group {
            let outcome = self.write("creating jobs", |txn| insert_creation(txn, &creation));
            let _ = creation.answer.send(outcome);
        }
    }
}

/// `insert_jobs` of one creation; a panicking maker fails its creation only.
fn insert_creation(txn: &WriteTransaction, creation: &Creation) -> Result<Vec<Job>, Fail> {
    insert_jobs(txn, creation.count, |ids| {
        catch_unwind(AssertUnwindSafe(|| (creation.make)(ids))).map_err(|_| {
            Fail::Store(StoreError::Creation {
                detail: "making the new job panicked".to_string(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::RunId;

    fn open_temp() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("jobq.redb")).expect("open store");
        (dir, Arc::new(store))
    }

    /// A root job and, when `children` > 0, that many children of it: one creation.
    fn tree(children: usize) -> (usize, impl Fn(&[u64]) -> Vec<Job> + Send + 'static) {
        let make = |ids: &[u64]| {
            let root = Job {
                id: ids[0],
                run_id: RunId::root(ids[0]),
                ..Job::example()
            };
            let children = ids[1..].iter().map(|&id| Job {
                id,
                run_id: root.run_id.child(id),
                parent_run_id: Some(root.run_id.clone()),
                ..Job::example()
            });
            let children: Vec<Job> = children.collect();
            std::iter::once(root).chain(children).collect()
        };
        (children + 1, make)
    }

    fn creation(
        count: usize,
        make: impl Fn(&[u64]) -> Vec<Job> + Send + 'static,
    ) -> (Creation, oneshot::Receiver<Result<Vec<Job>, StoreError>>) {
        let (answer, answered) = oneshot::channel();
        let make = Box::new(make);
        (
            Creation {
                count,
                make,
                answer,
            },
            answered,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creations_get_distinct_increasing_ids_and_trees_stay_whole() {
        let (dir, store) = open_temp();
        let creations = Arc::new(Creations::start(Arc::clone(&store)));
        let mut tasks = Vec::new();
        for task in 0..16 {
            let creations = Arc::clone(&creations);
            tasks.push(tokio::spawn(async move {
                let mut made = Vec::new();
                for n in 0..25 {
                    // Every fifth creation of a task is a tree of three.
                    let (count, make) = tree(if (task + n) % 5 == 0 { 2 } else { 0 });
                    let jobs = creations.create_jobs(count, make).await.expect("created");
                    assert_eq!(jobs.len(), count);
                    made.push(jobs);
                }
                made
            }));
        }
        let mut all = BTreeSet::new();
        let mut count = 0;
        for task in tasks {
            let made = task.await.expect("the task ends");
            let firsts: Vec<u64> = made.iter().map(|jobs| jobs[0].id).collect();
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
            for jobs in made {
                // A tree's ids come from one transaction: consecutive, root first.
                let ids: Vec<u64> = jobs.iter().map(|job| job.id).collect();
                let expected: Vec<u64> = (ids[0]..ids[0] + ids.len() as u64).collect();
                assert_eq!(ids, expected);
                for job in &jobs[1..] {
                    assert_eq!(job.parent_run_id.as_ref(), Some(&jobs[0].run_id));
                }
                count += ids.len();
                all.extend(ids);
            }
        }
        assert_eq!(all.len(), count, "an id was given twice");
        assert_eq!(
            all.iter().copied().collect::<Vec<_>>(),
            (1..=count as u64).collect::<Vec<_>>()
        );
        store.assert_internally_consistent();

        // Dropping the committer ends its thread, which releases the store: it opens again.
        drop(creations);
        let store = Arc::try_unwrap(store).expect("the committer let go of the store");
        drop(store);
        let store = Store::open(&dir.path().join("jobq.redb")).expect("reopen");
        for id in all {
            assert!(store.job(id).expect("read").is_some(), "job {id} is gone");
        }
    }

    #[test]
    fn a_failing_creation_fails_alone_and_takes_no_id() {
        let (_dir, store) = open_temp();
        let (first, first_answer) = creation(1, tree(0).1);
        let (failing, failing_answer) =
            creation(1, |_: &[u64]| -> Vec<Job> { panic!("a maker that fails") });
        let (tree_creation, tree_answer) = creation(3, tree(2).1);
        store.commit_group(vec![first, failing, tree_creation]);

        let first = first_answer.blocking_recv().expect("answered");
        assert_eq!(first.expect("created")[0].id, 1);
        let failed = failing_answer.blocking_recv().expect("answered");
        assert!(
            matches!(failed, Err(StoreError::Creation { .. })),
            "{failed:?}"
        );
        let tree = tree_answer
            .blocking_recv()
            .expect("answered")
            .expect("created");
        assert_eq!(tree.iter().map(|job| job.id).collect::<Vec<_>>(), [2, 3, 4]);
        for id in 1..=4 {
            assert!(store.job(id).expect("read").is_some());
        }
        assert_eq!(store.job(5).expect("read"), None);
        store.assert_internally_consistent();
    }

    #[test]
    fn a_group_commits_in_one_transaction() {
        let (_dir, store) = open_temp();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut answers = Vec::new();
        let mut group = Vec::new();
        for _ in 0..10 {
            // Each maker looks for the job before its own: not committed yet, inside the group.
            let (store, seen) = (Arc::clone(&store), Arc::clone(&seen));
            let (creation, answer) = creation(1, move |ids: &[u64]| {
                let before = store.job(ids[0] - 1).expect("read");
                seen.lock().unwrap().push(before.is_some());
                tree(0).1(ids)
            });
            group.push(creation);
            answers.push(answer);
        }
        store.commit_group(group);
        let ids: Vec<u64> = answers
            .into_iter()
            .map(|answer| answer.blocking_recv().expect("answered").expect("created")[0].id)
            .collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        assert_eq!(*seen.lock().unwrap(), [false; 10]);
        store.assert_internally_consistent();
    }
}
