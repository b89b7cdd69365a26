//! Events: the lines of a job's log, written by jobq or the component.

use serde::{Deserialize, Serialize};

/// Event severity, as Storage events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Info,
    Warn,
    Error,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Info => "info",
            EventType::Warn => "warn",
            EventType::Error => "error",
        }
    }
}

/// Who wrote an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventSource {
    /// jobq itself (runner messages, the final error).
    Jobq,
    /// A line the component printed to stdout. Counting these lets a re-attached run resume
    /// the container's log exactly where the stored events stop.
    Stdout,
    /// The component's stderr.
    Stderr,
}

/// One line of a job's log. `id` comes from one sequence across all jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub job_id: u64,
    pub event_type: EventType,
    pub source: EventSource,
    pub message: String,
    pub created: i64,
    pub run_id: String,
    pub component: String,
}

/// An event to append; the store gives it its id.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub job_id: u64,
    pub event_type: EventType,
    pub source: EventSource,
    pub message: &'a str,
    pub run_id: &'a str,
    pub component: &'a str,
    pub created: i64,
}
