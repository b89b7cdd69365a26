//! The queue's status paths on a real store, with an engine that never answers: races with a
//! stale snapshot, and job trees left half-ended by a crash.

use super::*;
use crate::model::{JobType, Parallelism};

/// A queue over a fresh store in `dir`, whose Docker engine is unreachable.
fn queue(dir: &tempfile::TempDir) -> Arc<Queue> {
    let settings = Settings::parse(&format!(
        "data_dir = {:?}\n[[tokens]]\nid = \"1\"\ntoken = \"t\"\n\
         [[components]]\nid = \"c\"\nimage = \"local/c\"\ntag = \"1\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let store = Arc::new(Store::open(&settings.database_path()).unwrap());
    let storage = Arc::new(Storage::open(Arc::clone(&store), &settings.data_dir).unwrap());
    let secrets = Arc::new(Secrets::open(&settings.data_dir, None).unwrap());
    let runner = Arc::new(
        crate::runner::Runner::new(Some("tcp://127.0.0.1:9"), store.instance_id()).unwrap(),
    );
    Queue::new(store, storage, secrets, Arc::new(settings), runner)
}

/// Stores `job` as it is (the store hands out its id).
fn stored(queue: &Queue, job: Job) -> Job {
    queue.store.create_job(|id| Job { id, ..job }).unwrap()
}

/// A container job (killed: `terminating`) in `status`, with one killed child in `child_status`.
fn killed_tree(queue: &Queue, parent_status: Status, child_status: Status) -> (Job, Job) {
    let parent = stored(
        queue,
        Job {
            status: parent_status,
            desired_status: DesiredStatus::Terminating,
            job_type: JobType::Container,
            parallelism: Some(Parallelism::Limit(2)),
            ..Job::example()
        },
    );
    let child = queue
        .store
        .create_job(|id| Job {
            id,
            run_id: parent.run_id.child(id),
            parent_run_id: Some(parent.run_id.clone()),
            status: child_status,
            desired_status: DesiredStatus::Terminating,
            ..Job::example()
        })
        .unwrap();
    (parent, child)
}

fn status(queue: &Queue, id: u64) -> Status {
    queue.store.job(id).unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_applied_to_a_stale_snapshot_of_a_finished_job_is_a_quiet_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    let snapshot = stored(
        &queue,
        Job {
            status: Status::Processing,
            desired_status: DesiredStatus::Terminating,
            ..Job::example()
        },
    );
    // The job finishes between the scheduler's read and its action.
    queue
        .store
        .update_job(snapshot.id, |job| {
            job.outcome = Some(Status::Success);
            job.move_to(Status::Success, now_micros())
        })
        .unwrap();
    queue.terminate(&snapshot).unwrap();
    assert_eq!(status(&queue, snapshot.id), Status::Success);
    // Cancelling a created job that started meanwhile is just as quiet.
    let created = stored(&queue, Job::example());
    queue
        .store
        .update_job(created.id, |job| {
            job.move_to(Status::Processing, now_micros())
        })
        .unwrap();
    queue.terminate(&created).unwrap();
    assert_eq!(status(&queue, created.id), Status::Processing);
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_ends_a_killed_tree_whose_child_never_got_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    // A parallel container job killed while a child was processing without a container yet,
    // then a crash: both were left terminating.
    let (parent, child) = killed_tree(&queue, Status::Terminating, Status::Terminating);
    queue.recover().await.unwrap();
    assert_eq!(status(&queue, child.id), Status::Terminated);
    let parent = queue.store.job(parent.id).unwrap().unwrap();
    assert_eq!(parent.status, Status::Terminated, "{:?}", parent.result);
    assert_eq!(
        parent.result.message,
        Some(format!(
            "Some child jobs did not succeed: {} (terminated).",
            child.id
        ))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_child_settles_its_container_job() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    // The container job is already terminating; its last child is cancelled by a later pass.
    let (parent, child) = killed_tree(&queue, Status::Terminating, Status::Created);
    queue.terminate(&child).unwrap();
    assert_eq!(status(&queue, child.id), Status::Cancelled);
    assert_eq!(status(&queue, parent.id), Status::Terminated);
    // The cancel and its event were written together.
    let events = queue.store.events(child.id, None, 0, 10).unwrap();
    assert_eq!(events[0].message, "Job was cancelled before it started.");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retention_sweep_deletes_expired_jobs_with_their_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    // Ended long before the 90 days of the default retention; the other one is still running.
    let old = stored(
        &queue,
        Job {
            status: Status::Success,
            end_time: Some(1_000),
            ..Job::example()
        },
    );
    let running = stored(
        &queue,
        Job {
            status: Status::Processing,
            ..Job::example()
        },
    );
    queue.event(&old, EventType::Info, "done");
    let folder = queue.settings.job_dir(old.id);
    std::fs::create_dir_all(folder.join("data")).unwrap();
    let upload = |tags: &[String]| queue.storage.upload_file("f", tags, &b"x"[..], 1).unwrap();
    let tag = |id: u64| format!("jobId:{id}");
    let gone = [
        upload(&[tag(old.id), "debug".into()]),
        upload(&["x".into(), tag(old.id), tag(old.id)]),
    ];
    // Each names a job that is stored, or none that was ever made.
    let kept = [
        upload(&[tag(old.id), tag(running.id + 100_000)]),
        upload(&[tag(running.id)]),
        upload(&[tag(old.id), tag(running.id)]),
        upload(&["jobId:0".into()]),
        upload(&[tag(running.id + 1)]),
        upload(&["jobId:x".into(), "debug".into()]),
    ];

    queue
        .sweep_expired_jobs(&CancellationToken::new(), false)
        .await;
    assert!(matches!(
        queue.job(&old.id.to_string()),
        Err(QueueError::JobNotFound { .. })
    ));
    assert!(queue.store.events(old.id, None, 0, 10).unwrap().is_empty());
    assert!(queue.job(&running.id.to_string()).is_ok());
    for file in &gone {
        assert_eq!(queue.storage.file(file.id).unwrap(), None, "{file:?}");
        assert!(!queue.storage.file_path(file).exists());
    }
    for file in &kept {
        assert!(queue.storage.file(file.id).unwrap().is_some(), "{file:?}");
    }
    // The folder goes with the leftovers, right after.
    queue.sweep().await;
    assert!(!folder.exists());
}
