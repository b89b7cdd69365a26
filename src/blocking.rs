//! The one rule for blocking work called from async code: store and Storage calls (reads
//! included), file-system work and archive building go through `blocking`.

/// Runs `work` on this worker thread after tokio hands the thread's other tasks to another
/// worker (`block_in_place`), so a slow disk never stalls the HTTP server, the scheduler or a
/// log stream. Needs the multi-threaded runtime (the daemon's); nesting is harmless.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}
