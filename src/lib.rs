//! jobq: a single-host daemon that runs Keboola component jobs.

pub mod blocking;
pub mod cli;
pub mod configurations;
pub mod daemon;
pub mod debug;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod queue;
pub mod runner;
pub mod secrets;
pub mod settings;
pub mod storage;
pub mod store;
