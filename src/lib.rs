//! jobq: a single-host daemon that runs Keboola component jobs.

pub mod job;
pub mod state;
