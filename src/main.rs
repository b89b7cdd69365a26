//! The `jobq` binary: everything it does is in `jobq::cli`.

fn main() -> std::process::ExitCode {
    jobq::cli::main()
}
