//! The operator's endpoints that need no token: liveness, readiness (the store takes writes)
//! and metrics in the Prometheus text format.

use std::fmt::Write;

use hyper::StatusCode;
use serde_json::json;

use crate::disk;
use crate::http::answer::Answer;
use crate::http::Services;

/// `GET /health/live`: the process answers.
pub fn live(_services: &Services) -> Answer {
    Answer::json(StatusCode::OK, &json!({"status": "live"}))
}

/// `GET /health/ready`: 200 while the store takes writes, else 503 with the reason.
pub fn ready(services: &Services) -> Answer {
    match services.queue.store_health().reason() {
        None => Answer::json(StatusCode::OK, &json!({"status": "ready"})),
        Some(reason) => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not ready", "reason": reason}),
        ),
    }
}

/// `GET /metrics`: the store's health and faults, and the free space of `data_dir`.
pub fn metrics(services: &Services) -> Answer {
    let (failures, refused) = services.queue.store_write_faults();
    let writable = u8::from(services.queue.store_health().reason().is_none());
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "jobq_store_write_failures_total",
        "counter",
        "Store writes that failed in the file system (the store was reopened after each fault).",
        failures,
    );
    metric(
        "jobq_store_writes_refused_total",
        "counter",
        "Store writes refused while data_dir was full or the store was being reopened.",
        refused,
    );
    metric(
        "jobq_store_writable",
        "gauge",
        "1 while the store takes writes, 0 while it refuses them.",
        u64::from(writable),
    );
    if let Ok(free) = disk::free_bytes(&services.settings.data_dir) {
        metric(
            "jobq_data_dir_free_bytes",
            "gauge",
            "Bytes free for jobq on the file system of data_dir.",
            free,
        );
    }
    Answer::bytes(StatusCode::OK, "text/plain; version=0.0.4", text)
}
