//! A small client of the jobq API, used by `jobq demo`, `jobq load-table` and the integration
//! tests.

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::http::TOKEN_HEADER;

/// Why a request to the API failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to jobq at {addr}; check that the daemon runs there")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP exchange with jobq failed")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request")]
    Request(#[from] hyper::http::Error),
    #[error("\"{url}\" is not the address of a jobq: give http://<host>:<port>")]
    Url { url: String },
}

/// One answer: status, headers and the raw body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// An answer whose body is still arriving: read it piece by piece (`chunk`), never whole in
/// memory, or whole (`collect`).
#[derive(Debug)]
pub struct Streaming {
    pub status: u16,
    pub headers: HeaderMap,
    body: Incoming,
}

impl Streaming {
    /// The next piece of the body as it arrives; `None` at its end. A body shorter than its
    /// `Content-Length` is an error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        while let Some(frame) = self.body.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The rest of the body, read into an `Answer`.
    pub async fn collect(self) -> Result<Answer, ClientError> {
        let body = self.body.collect().await?.to_bytes();
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            body,
        })
    }
}

/// Talks to one daemon with one token (`None`: send no token).
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, token: &str) -> ApiClient {
        ApiClient {
            addr,
            token: Some(token.to_string()),
        }
    }

    /// A client of the daemon at `url` (`http://<host>:<port>`, the host resolved now).
    pub fn from_url(url: &str, token: &str) -> Result<ApiClient, ClientError> {
        let invalid = || ClientError::Url {
            url: url.to_string(),
        };
        let authority = url.strip_prefix("http://").ok_or_else(invalid)?;
        let authority = authority.trim_end_matches('/');
        let addr = authority
            .to_socket_addrs()
            .map_err(|_| invalid())?
            .next()
            .ok_or_else(invalid)?;
        Ok(ApiClient::new(addr, token))
    }

    /// Loads CSV (with a header) into a Storage table: creates the table (with `primary_key`)
    /// when it does not exist, else imports into it, incrementally when asked. The answer is the
    /// create's or import's (the table), or the failed look-up's.
    pub async fn load_table(
        &self,
        table_id: &str,
        csv: Bytes,
        incremental: bool,
        primary_key: &[String],
    ) -> Result<Answer, ClientError> {
        let found = self.get(&format!("/v2/storage/tables/{table_id}")).await?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !primary_key.is_empty() {
            query.append_pair("primaryKey", &primary_key.join(","));
        }
        let path = match (found.status, table_id.rsplit_once('.')) {
            (404, Some((bucket, name))) => {
                query.append_pair("name", name);
                format!("/v2/storage/buckets/{bucket}/tables")
            }
            (200, _) => {
                query.append_pair("incremental", if incremental { "1" } else { "0" });
                format!("/v2/storage/tables/{table_id}/import")
            }
            _ => return Ok(found),
        };
        let path = format!("{path}?{}", query.finish());
        self.send(Method::POST, &path, &[("Content-Type", "text/csv")], csv)
            .await
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// A GET whose body is left to read as it arrives (downloads).
    pub async fn get_streaming(&self, path: &str) -> Result<Streaming, ClientError> {
        self.send_streaming(Method::GET, path, &[], Bytes::new())
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.post_with(path, &[], body).await
    }

    /// A JSON POST with extra headers (such as `X-KBC-RunId`).
    pub async fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<Answer, ClientError> {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, path, &all, Bytes::from(body.to_string()))
            .await
    }

    /// Sends any request over a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        self.send_streaming(method, path, headers, body)
            .await?
            .collect()
            .await
    }

    /// `send`, leaving the answer's body to read as it arrives.
    pub async fn send_streaming(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Streaming, ClientError> {
        let stream =
            TcpStream::connect(self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr,
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.as_str());
        }
        let mut request = request.body(Full::new(body))?;
        let host =
            HeaderValue::from_str(&self.addr.to_string()).map_err(hyper::http::Error::from)?;
        request.headers_mut().insert(HOST, host);
        if !request.headers().contains_key(CONTENT_TYPE) && request.method() == Method::POST {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok(Streaming {
            status,
            headers,
            body: response.into_body(),
        })
    }
}
