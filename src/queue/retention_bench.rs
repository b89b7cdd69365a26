//! A benchmark, not a test (ignored, never timed by `cargo test`): job creation latency while
//! the retention sweep deletes 100,000 expired jobs, and what the store file does. Results and
//! how to read them in BENCHMARKS.md.
//!
//! ```sh
//! cargo test --release --lib retention_bench -- --ignored --nocapture
//! ```
//!
//! Environment: `JOBQ_BENCH_JOBS` (expired jobs, default 100000), `JOBQ_BENCH_EVENTS` (events
//! per expired job, default 10), `JOBQ_BENCH_CREATORS` (concurrent creators, default 4).

use super::*;
use crate::model::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A queue over the store in `dir` with a 1 s job retention and an unreachable engine.
fn queue(dir: &std::path::Path) -> Arc<Queue> {
    let settings = Settings::parse(&format!(
        "data_dir = {:?}\njob_retention = \"1s\"\n[[tokens]]\nid = \"1\"\ntoken = \"t\"\n\
         [[components]]\nid = \"c\"\nimage = \"local/c\"\ntag = \"1\"\n",
        dir.display().to_string()
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

/// A job as `POST /jobs` with `configData` makes it.
fn request() -> NewJob {
    NewJob {
        component: "c".into(),
        config_data: serde_json::json!({"parameters": {"rows": 100, "name": "benchmark"}}),
        ..NewJob::default()
    }
}

/// `creators` tasks creating jobs one after another (as fast as they can) until `stop`;
/// answers every creation's latency.
async fn create_until(queue: &Arc<Queue>, creators: usize, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let tasks: Vec<_> = (0..creators)
        .map(|_| {
            let queue = Arc::clone(queue);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let token = queue.settings.tokens[0].clone();
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    queue.create(request(), &token).await.unwrap();
                    latencies.push(started.elapsed());
                    tokio::task::yield_now().await;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn summary(latencies: &[Duration], over: Duration) -> String {
    let at = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    format!(
        "{} creations in {:.1} s ({:.0}/s): p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        latencies.len(),
        over.as_secs_f64(),
        latencies.len() as f64 / over.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: cargo test --release --lib retention_bench -- --ignored --nocapture"]
async fn retention_bench() {
    let jobs = env("JOBQ_BENCH_JOBS", 100_000);
    let events = env("JOBQ_BENCH_EVENTS", 10);
    let creators = env("JOBQ_BENCH_CREATORS", 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobq.redb");
    let file_size = || std::fs::metadata(&path).unwrap().len();
    let queue = queue(dir.path());

    // Finished a day ago, created a second before they ended, like a quick real job.
    let started = Instant::now();
    let day_ago = now_micros() - 86_400_000_000;
    queue
        .store
        .fill(jobs, 1_000, events, |id| Job {
            run_id: crate::model::RunId::root(id),
            status: Status::Success,
            created_time: day_ago + id as i64,
            start_time: Some(day_ago + id as i64 + 100_000),
            end_time: Some(day_ago + id as i64 + 1_000_000),
            config_data: serde_json::json!({"parameters": {"rows": 100, "name": "benchmark"}}),
            result: serde_json::from_value(
                serde_json::json!({"message": "Component processing finished."}),
            )
            .unwrap(),
            ..Job::example()
        })
        .unwrap();
    println!(
        "filled {jobs} expired jobs with {events} events each in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        mib(file_size())
    );
    // What measuring the free space costs a start with all of them.
    drop(queue);
    let started = Instant::now();
    drop(Store::open(&path).unwrap());
    println!(
        "opened the full store in {:.2} s (nothing deleted yet: free space not measured)",
        started.elapsed().as_secs_f64()
    );
    let queue = self::queue(dir.path());

    // Creation alone, as long as the sweep below will take at most.
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let alone = create_until(&queue, creators, stop).await;
    timer.await.unwrap();
    println!(
        "no sweep, {creators} creators: {}",
        summary(&alone, started.elapsed())
    );

    // Creation during the sweep.
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let queue = Arc::clone(&queue);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let started = Instant::now();
            queue
                .sweep_expired_jobs(&CancellationToken::new(), false)
                .await;
            stop.store(true, Ordering::Relaxed);
            started.elapsed()
        })
    };
    let started = Instant::now();
    let during = create_until(&queue, creators, stop).await;
    let swept = sweeper.await.unwrap();
    println!(
        "during the sweep, {creators} creators: {}",
        summary(&during, started.elapsed())
    );
    println!(
        "the sweep deleted {jobs} jobs and {} events in {:.1} s ({:.0} jobs/s)",
        jobs * events,
        swept.as_secs_f64(),
        jobs as f64 / swept.as_secs_f64()
    );
    let left = queue.store.expired_jobs(now_micros(), None, 10).unwrap();
    assert!(left.ids.is_empty(), "expired jobs left: {:?}", left.ids);
    let created = alone.len() + during.len();
    assert_eq!(
        queue.store.jobs_with_status(Status::Created).unwrap().len(),
        created
    );
    let after_sweep = file_size();
    println!("store file after the sweep: {}", mib(after_sweep));

    // The next start measures the free space, and compacts.
    drop(queue);
    let started = Instant::now();
    let store = Store::open(&path).unwrap();
    println!(
        "reopened in {:.2} s (measuring free space, compacting): {} -> {}",
        started.elapsed().as_secs_f64(),
        mib(after_sweep),
        mib(file_size())
    );
    drop(store);
    let started = Instant::now();
    let store = Store::open(&path).unwrap();
    println!(
        "reopened again in {:.2} s (small file: measured, not compacted): {}",
        started.elapsed().as_secs_f64(),
        mib(file_size())
    );
    assert_eq!(
        store.jobs_with_status(Status::Created).unwrap().len(),
        created
    );
}
