//! Crash points for the crash tests: `JOBQ_CRASH_AT=<point>[:<n>]` aborts the process, like a
//! SIGKILL, the n-th time (default 1) it passes `<point>`. Unset, a pass costs one atomic load.
//! And one knob for the host-fault tests: `JOBQ_WRITE_RESERVE=<bytes>` sets the free space the
//! store keeps (0 lets a write reach the file system's own "no space left").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a crash point.
pub const VARIABLE: &str = "JOBQ_CRASH_AT";

/// Before a store write transaction commits.
pub const STORE_COMMIT: &str = "store-commit";
/// After the container id is stored, before the container starts.
pub const CONTAINER_CREATED: &str = "container-created";
/// After the container started, before anything else is written.
pub const CONTAINER_STARTED: &str = "container-started";
/// After the container ended, before the job's final status is written.
pub const CONTAINER_ENDED: &str = "container-ended";
/// After a row's output mapping loaded its tables, before the row is recorded.
pub const OUTPUT_MAPPED: &str = "output-mapped";
/// After an orchestration or phase job went `processing` with its children, before anything else.
pub const CHILDREN_CREATED: &str = "children-created";
/// After a flow job's record changed without creating task jobs, before anything else.
pub const FLOW_RECORDED: &str = "flow-recorded";
/// After a job's final status (and final event) committed, before anything else.
pub const JOB_ENDED: &str = "job-ended";
/// Inside a schedule's fire transaction (its job made, its next fire time set), before the commit.
pub const SCHEDULE_FIRING: &str = "schedule-firing";
/// After a schedule's fire (its job and its next fire time) committed, before anything else.
pub const SCHEDULE_FIRED: &str = "schedule-fired";

/// The environment variable that sets the store's write reserve, in bytes.
pub const WRITE_RESERVE_VARIABLE: &str = "JOBQ_WRITE_RESERVE";

/// The store's write reserve: `default`, unless `JOBQ_WRITE_RESERVE` sets it (read once).
pub fn write_reserve(default: u64) -> u64 {
    static RESERVE: OnceLock<u64> = OnceLock::new();
    *RESERVE.get_or_init(|| {
        std::env::var(WRITE_RESERVE_VARIABLE)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    })
}

/// Aborts the process if `point` is armed and this is its n-th pass.
pub fn hit(point: &str) {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var(VARIABLE).ok()?;
        let (name, nth) = match value.split_once(':') {
            Some((name, nth)) => (name.to_string(), nth.parse().ok()?),
            None => (value, 1),
        };
        Some((name, nth))
    });
    if let Some((name, nth)) = armed {
        if name == point && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("jobq: crash point {point} reached; aborting");
            std::process::abort();
        }
    }
}
