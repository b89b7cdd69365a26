//! jobq: a single-host daemon that runs Keboola component jobs.

mod actions;
mod blocking;
mod channels;
pub mod cli;
mod configurations;
pub mod daemon;
pub mod debug;
mod disk;
pub mod error;
pub mod failpoint;
mod http;
mod mail;
mod mapping;
mod metrics;
pub mod model;
mod notifications;
mod plan;
mod queue;
pub mod runner;
pub mod secrets;
pub mod settings;
mod storage;
mod store;
