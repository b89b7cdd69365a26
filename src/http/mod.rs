//! The HTTP API on hyper (the only module that knows hyper): routing, tokens, bodies, answers.

mod answer;
mod configurations;
mod encrypt;
pub mod error;
mod fields;
mod health;
mod jobs;
pub mod query;
pub mod render;
mod request;
mod routes;
mod storage;
pub mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::configurations::Configurations;
use crate::queue::Queue;
use crate::secrets::Secrets;
use crate::settings::Settings;
use crate::storage::Storage;
use answer::{Answer, Body};
use error::ApiError;
use request::Request;

/// The header carrying the API token.
pub const TOKEN_HEADER: &str = "X-StorageApi-Token";
/// The header carrying a job's revision, for long polls (`?wait=<s>&index=<revision>`).
pub const INDEX_HEADER: &str = "X-Jobq-Index";
/// The header that makes a new job a child of a run.
pub const RUN_ID_HEADER: &str = "X-KBC-RunId";

/// What the API answers from, built once by the daemon: the queue answers the job routes,
/// `configurations` the configuration routes, `storage` the bucket, table and file routes,
/// `secrets` `/encrypt`.
pub struct Services {
    pub settings: Arc<Settings>,
    pub queue: Arc<Queue>,
    pub configurations: Configurations,
    pub storage: Arc<Storage>,
    pub secrets: Arc<Secrets>,
}

/// Serves the API on `listener` until `shutdown`, then lets open requests finish (up to 10 s).
pub async fn serve(listener: TcpListener, services: Arc<Services>, shutdown: CancellationToken) {
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
            async move { Ok::<_, Infallible>(answer(&services, request, peer).await) }
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

/// Handles one request; every failure becomes a Keboola error body.
async fn answer(
    services: &Services,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let answer = respond(services, request)
        .await
        .unwrap_or_else(|error| Answer::error(&error));
    tracing::debug!(%peer, %method, %path, status = answer.status().as_u16(), "request");
    answer.into_response()
}

/// Checks the token, finds the route and lets its handler answer; public routes need no token.
async fn respond(
    services: &Services,
    request: hyper::Request<Incoming>,
) -> Result<Answer, ApiError> {
    if let Some(handler) = routes::public(request.method(), request.uri().path()) {
        return Ok(handler(services));
    }
    let token = request::authenticate(&services.settings, request.headers())?;
    let (parts, body) = request.into_parts();
    let (route, params) = routes::find(&parts.method, parts.uri.path())?;
    let limit = services.settings.max_body_bytes;
    let request = Request::new(parts, body, token, params, limit);
    (route.handler)(services, request).await
}

/// Runs a handler's store or Storage work through `crate::blocking` (the one rule for blocking
/// work), turning its error into an answer.
fn blocking<T, E: Into<ApiError>>(work: impl FnOnce() -> Result<T, E>) -> Result<T, ApiError> {
    crate::blocking::blocking(work).map_err(Into::into)
}
