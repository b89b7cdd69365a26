//! The HTTP API on hyper (the only module that knows hyper): routing, tokens, bodies, answers.

mod configurations;
mod encrypt;
pub mod error;
mod fields;
mod jobs;
pub mod query;
pub mod render;
mod storage;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::configurations::Configurations;
use crate::queue::Queue;
use crate::secrets::Secrets;
use crate::settings::{Settings, Token};
use crate::storage::Storage;
use error::ApiError;

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
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match dispatch(services, request).await {
        Ok(response) => response,
        Err(error) => json_response(error.status, &error.body()),
    };
    tracing::debug!(%peer, %method, %path, status = response.status().as_u16(), "request");
    response
}

async fn dispatch(
    services: &Services,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let Services {
        settings,
        queue,
        configurations,
        storage,
        secrets,
    } = services;
    let token = authenticate(settings, &request)?;
    let (parts, body) = request.into_parts();
    let query = query::Query::parse(parts.uri.query());
    let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    let context = jobs::Context {
        queue,
        token: &token,
        query: &query,
        headers: &parts.headers,
    };
    let (status, value) = match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["jobs"]) => {
            let body = read_body(body, &parts.headers, settings.max_body_bytes).await?;
            jobs::create_job(&context, &body)?
        }
        (&Method::GET, ["jobs"]) | (&Method::GET, ["search", "jobs"]) => {
            jobs::search_jobs(&context)?
        }
        (&Method::GET, ["jobs", id]) => {
            let (status, value, revision) = jobs::get_job(&context, id).await?;
            let mut response = json_response(status, &value);
            response
                .headers_mut()
                .insert(INDEX_HEADER, HeaderValue::from(revision));
            return Ok(response);
        }
        (&Method::POST, ["jobs", id, "kill"]) => jobs::kill_job(&context, id)?,
        (&Method::GET, ["search", "grouped-jobs"]) => jobs::grouped_jobs(&context)?,
        (&Method::GET, ["stats", "project"]) => jobs::project_stats(&context)?,
        (&Method::GET, ["v2", "storage", "events"]) => jobs::events(&context)?,
        (&Method::GET, ["v2", "storage", "tokens", "verify"]) => jobs::verify_token(&context),
        (_, ["jobs"] | ["search", "jobs" | "grouped-jobs"] | ["jobs", _] | ["jobs", _, "kill"])
        | (_, ["stats", "project"])
        | (_, ["v2", "storage", "events"] | ["v2", "storage", "tokens", "verify"]) => {
            return Err(method_not_allowed(&parts))
        }
        (_, ["encrypt"]) => {
            let context = encrypt::Context {
                secrets,
                settings,
                query: &query,
            };
            return encrypt::route(&context, &parts, body).await;
        }
        (_, ["v2", "storage", "buckets" | "tables" | "files", ..]) => {
            let params = fields::Fields::from_query(query.clone());
            let context = storage::Context {
                storage,
                settings,
                query: &query,
                params: &params,
            };
            return storage::route(&context, &parts, &segments, body).await;
        }
        (_, ["v2", "storage", ..]) => {
            let context = configurations::Context {
                configurations,
                settings,
                query: &query,
            };
            return configurations::route(&context, &parts, &segments, body).await;
        }
        _ => return Err(route_not_found(&parts)),
    };
    Ok(json_response(status, &value))
}

fn method_not_allowed(parts: &hyper::http::request::Parts) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "Method {} is not allowed on {}.",
            parts.method,
            parts.uri.path()
        ),
    )
}

fn route_not_found(parts: &hyper::http::request::Parts) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Route {} {} not found.", parts.method, parts.uri.path()),
    )
}

/// The token of the request, compared in constant time against every configured token.
fn authenticate(settings: &Settings, request: &Request<Incoming>) -> Result<Token, ApiError> {
    let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let given = request
        .headers()
        .get(TOKEN_HEADER)
        .ok_or_else(|| unauthorized("Access token must be set in the X-StorageApi-Token header."))?
        .as_bytes();
    let mut found = None;
    for token in &settings.tokens {
        if bool::from(token.token.as_bytes().ct_eq(given)) {
            found = Some(token.clone());
        }
    }
    found.ok_or_else(|| unauthorized("Invalid access token."))
}

/// Reads a body of at most `limit` bytes; larger ones are refused with 413.
async fn read_body(
    body: Incoming,
    headers: &hyper::HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::bad_request(format!(
            "Cannot read the request body: {error}"
        ))),
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
