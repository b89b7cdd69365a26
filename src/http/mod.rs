//! The HTTP API on hyper (the only module that knows hyper): routing, tokens, bodies, answers,
//! and the web page (`/ui/`) with its sessions.

mod actions;
mod answer;
mod configurations;
mod encrypt;
pub mod error;
mod fields;
mod health;
mod jobs;
mod notifications;
mod openapi;
pub mod query;
pub mod render;
mod request;
mod routes;
mod schedules;
mod session;
mod storage;
mod stream;
mod ui;
pub mod webhook;

use routes::Public;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::configurations::Configurations;
use crate::notifications::Notifications;
use crate::queue::Queue;
use crate::secrets::Secrets;
use crate::settings::Settings;
use crate::storage::Storage;
use answer::{Answer, Body};
use error::ApiError;
use request::Request;
use session::Sessions;

/// The header carrying the API token.
pub const TOKEN_HEADER: &str = "X-StorageApi-Token";
/// The header carrying a job's revision, for long polls (`?wait=<s>&index=<revision>`).
pub const INDEX_HEADER: &str = "X-Jobq-Index";
/// The header that makes a new job a child of a run.
pub const RUN_ID_HEADER: &str = "X-KBC-RunId";

/// What the API answers from, built once by the daemon: the queue answers the job routes,
/// `configurations` the configuration routes, `storage` the bucket, table and file routes,
/// `secrets` `/encrypt`, `actions` the synchronous actions, `notifications` the project
/// subscriptions; `sessions` are the web page's logins.
pub struct Services {
    pub settings: Arc<Settings>,
    pub queue: Arc<Queue>,
    pub configurations: Configurations,
    pub storage: Arc<Storage>,
    pub secrets: Arc<Secrets>,
    pub actions: Arc<Actions>,
    pub notifications: Arc<Notifications>,
    pub sessions: Sessions,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The API (and the health routes).
    Api,
    /// `metrics_listen`: `GET /metrics` without a token, and the health routes.
    Metrics,
}

/// Serves `surface` on `listener` until `shutdown`, then lets open requests finish (up to
/// 10 s).
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    surface: Surface,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let services = Arc::clone(&services);
        let service = hyper::service::service_fn(move |request| {
            let services = Arc::clone(&services);
            async move { Ok::<_, Infallible>(answer(&services, surface, request, peer).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 10 s; closing them");
    }
}

/// Handles one request; every failure becomes a Keboola error body. Each request is one info
/// line of the log: method, route pattern (never a job id or a token), status, latency, and the
/// exceptionId of an error answer.
async fn answer(
    services: &Services,
    surface: Surface,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let mut route = "(none)";
    let (answer, exception_id) = match respond(services, surface, request, &mut route).await {
        Ok(answer) => (answer, None),
        Err(error) => {
            let (answer, exception_id) = Answer::error(&error);
            (answer, Some(exception_id))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let status = answer.status().as_u16();
    services
        .queue
        .metrics()
        .request(method.as_str(), route, status, seconds);
    tracing::info!(
        %peer,
        %method,
        route,
        status,
        latency_ms = seconds * 1000.0,
        exception_id = exception_id.as_deref().unwrap_or(""),
        "request"
    );
    answer.into_response()
}

/// Finds the route (404 and 405 before the token check, so that a probe of an unknown path needs
/// no secret), checks the token (or, under `/ui/api/`, the page's session) and lets the route's
/// handler answer; public routes and the page's files need no token.
/// `route` is set to the matched pattern for the request's log line.
async fn respond(
    services: &Services,
    surface: Surface,
    request: hyper::Request<Incoming>,
    route_pattern: &mut &'static str,
) -> Result<Answer, ApiError> {
    if let Some((pattern, public)) = routes::public(request.method(), request.uri().path()) {
        *route_pattern = pattern;
        return Ok(match public {
            Public::Live => health::live(),
            Public::Ready => health::ready(services).await,
            Public::OpenApi => openapi::answer(),
        });
    }
    if surface == Surface::Metrics {
        return match request.uri().path().trim_end_matches('/') {
            "/metrics" if request.method() == hyper::Method::GET => {
                *route_pattern = "metrics";
                Ok(health::metrics_text(services))
            }
            path => Err(ApiError::new(
                hyper::StatusCode::NOT_FOUND,
                format!(
                    "Route {} {path} not found: this address serves GET /metrics.",
                    request.method()
                ),
            )),
        };
    }
    let ui = ui::route(request.uri().path());
    if let Some(ui::Ui::Page(page)) = ui {
        *route_pattern = page.pattern();
        return page.answer(services, request.method(), request.headers());
    }
    let (route, params) = match ui {
        Some(ui::Ui::Api(path)) => routes::find(request.method(), path)?,
        _ => routes::find(request.method(), request.uri().path())?,
    };
    *route_pattern = &route.pattern;
    // The page's requests carry its session cookie, never a token; those that change
    // something also carry the page's header (against cross-site requests).
    let token = match ui {
        Some(ui::Ui::Api(_)) => {
            let token = services.sessions.token(request.headers())?;
            if request.method() != hyper::Method::GET {
                session::require_page_header(request.headers())?;
            }
            token
        }
        _ => request::authenticate(&services.settings, request.headers())?,
    };
    let (parts, body) = request.into_parts();
    let limit = services.settings.max_body_bytes;
    let request = Request::new(parts, body, token, params, limit);
    (route.handler)(services, request).await
}

/// Runs a handler's store or Storage work through `crate::blocking` (the one rule for blocking
/// work), turning its error into an answer.
fn blocking<T, E: Into<ApiError>>(work: impl FnOnce() -> Result<T, E>) -> Result<T, ApiError> {
    crate::blocking::blocking(work).map_err(Into::into)
}
