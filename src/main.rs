//! The `jobq` binary: everything it does is in `jobq::cli`.

/// mimalloc rather than glibc's malloc: glibc keeps memory freed into each thread's arena (the
/// store's page cache, churned from whichever thread reads, grew RSS by about its size per
/// thread), and one arena makes the HTTP threads queue for its lock (job creations/s halved).
/// mimalloc gives freed pages back and scales across threads (figures in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jobq::cli::main()
}
