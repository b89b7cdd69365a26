//! The operator's endpoints: liveness and readiness (the store takes writes), which need no
//! token, metrics in the OpenMetrics text format, and the overview of `GET /status`.

use hyper::StatusCode;
use serde_json::json;

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::Services;

/// `GET /health/live`: the process answers.
pub fn live() -> Answer {
    Answer::json(StatusCode::OK, &json!({"status": "live"}))
}

/// `GET /health/ready`: 200 while jobs can run (the store takes writes, recovery is done,
/// `data_dir` has `min_free_space`, the engine answered within the last seconds), else 503
/// with the first reason.
pub async fn ready(services: &Services) -> Answer {
    match services.queue.not_ready().await {
        None => Answer::json(StatusCode::OK, &json!({"status": "ready"})),
        Some(reason) => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not ready", "reason": reason}),
        ),
    }
}

/// `GET /metrics`: the daemon's metrics in the OpenMetrics text format (which Prometheus
/// scrapes): with a token on the API's address, without one on `metrics_listen`.
pub async fn metrics(services: &Services, _request: Request) -> Result<Answer, ApiError> {
    Ok(metrics_text(services))
}

/// The metrics answer itself.
pub fn metrics_text(services: &Services) -> Answer {
    Answer::bytes(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        services.queue.metrics_text(),
    )
}

/// `GET /status`: the operator's overview the page's status strip shows: slots used and their
/// maximum, whether the Docker engine answers, and the components whose image it lacks
/// (`missingImages` is null while the engine does not answer).
pub async fn status(services: &Services, _request: Request) -> Result<Answer, ApiError> {
    let overview = services.queue.overview().await;
    let missing = overview.missing_images.map(|missing| {
        missing
            .into_iter()
            .map(|(component, image)| json!({"component": component, "image": image}))
            .collect::<Vec<_>>()
    });
    Ok(Answer::ok(&json!({
        "slots": {"used": overview.slots_used, "max": overview.slots_max},
        "engine": {"up": overview.engine_up},
        "missingImages": missing,
    })))
}
