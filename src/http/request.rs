//! One request as every handler sees it: the caller's token, the parameters its route's pattern
//! matched in the path, the query, the headers, and the body, read once and never beyond
//! `max_body_bytes`.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::query::Query;
use crate::http::TOKEN_HEADER;
use crate::settings::{Settings, Token};

/// Each `{name}` of a route's pattern with the path segment it matched.
pub type Params = Vec<(&'static str, String)>;

/// A request whose token is valid and whose route is found.
pub struct Request {
    /// The configured token the request carries.
    pub token: Token,
    pub query: Query,
    pub headers: HeaderMap,
    params: Params,
    /// `None` once read.
    body: Option<Incoming>,
    body_limit: usize,
}

impl Request {
    pub fn new(
        parts: Parts,
        body: Incoming,
        token: Token,
        params: Params,
        body_limit: usize,
    ) -> Request {
        Request {
            token,
            query: Query::parse(parts.uri.query()),
            headers: parts.headers,
            params,
            body: Some(body),
            body_limit,
        }
    }

    /// The path segment the route's `{name}` matched; `None` when its pattern has no `{name}`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `param(name)` of a name every pattern of the route has.
    pub fn segment(&self, name: &str) -> &str {
        self.param(name).unwrap_or_default()
    }

    /// The media type of the body, lowercase and without parameters (`application/json`).
    pub fn media_type(&self) -> Option<String> {
        let value = self.header(CONTENT_TYPE.as_str())?;
        Some(value.split(';').next()?.trim().to_ascii_lowercase())
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string's parameters, read leniently.
    pub fn query_fields(&self) -> Fields {
        Fields::from_query(self.query.clone())
    }

    /// The body's fields: a JSON object or a form.
    pub async fn fields(&mut self) -> Result<Fields, ApiError> {
        let body = self.body().await?;
        Fields::from_body(&self.headers, &body)
    }

    /// The whole body; a body larger than `max_body_bytes` is refused with 413. Read once: a
    /// second call answers an empty body.
    pub async fn body(&mut self) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        let limit = self.body_limit;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than the limit of {limit} bytes."),
            )
        };
        let declared = self
            .header(CONTENT_LENGTH.as_str())
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
}

/// The configured token `headers` carry, compared in constant time against every one.
pub fn authenticate(settings: &Settings, headers: &HeaderMap) -> Result<Token, ApiError> {
    let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let given = headers
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
