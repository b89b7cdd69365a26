//! jobq: a single-host daemon that runs Keboola component jobs.

pub mod config;
pub mod daemon;
pub mod debug;
pub mod demo;
pub mod failpoint;
pub mod http;
pub mod job;
pub mod mapping;
pub mod plan;
pub mod queue;
pub mod runner;
pub mod secrets;
pub mod settings;
pub mod snapshots;
pub mod state;
pub mod storage;
pub mod store;
