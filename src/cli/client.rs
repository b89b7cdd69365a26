//! The client of the jobq API (reqwest: http and https, a base path, bodies read as they
//! arrive), used by the CLI commands, `jobq demo` and the integration tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use crate::http::TOKEN_HEADER;

/// Why a request to the API failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to jobq at {url}; check that the daemon runs there")]
    Connect { url: String, source: reqwest::Error },
    #[error("the HTTP exchange with jobq at {url} failed")]
    Http { url: String, source: reqwest::Error },
    #[error(
        "\"{url}\" is not the address of a jobq: give http(s)://<host>[:<port>][/<base path>]"
    )]
    Url { url: String },
    #[error("cannot use {path} as the CA certificate: give a PEM file")]
    Certificate {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    url: String,
    response: reqwest::Response,
}

impl Streaming {
    /// The next piece of the body as it arrives; `None` at its end. A body shorter than its
    /// `Content-Length` is an error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        let url = &self.url;
        self.response
            .chunk()
            .await
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })
    }

    /// The rest of the body, read into an `Answer`.
    pub async fn collect(self) -> Result<Answer, ClientError> {
        let url = self.url;
        let body = self
            .response
            .bytes()
            .await
            .map_err(|source| ClientError::Http { url, source })?;
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            body,
        })
    }
}

/// Talks to one daemon (at a base URL: scheme, host, port and an optional base path) with one
/// token (`None`: send no token).
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the daemon listening on `addr` (plain HTTP).
    pub fn new(addr: SocketAddr, token: &str) -> ApiClient {
        ApiClient::at(format!("http://{addr}"), Some(token), None)
            .expect("a client without a CA file builds")
    }

    /// A client of the daemon on `addr` that sends no token.
    pub fn anonymous(addr: SocketAddr) -> ApiClient {
        ApiClient::at(format!("http://{addr}"), None, None)
            .expect("a client without a CA file builds")
    }

    /// A client of the daemon at `url` (`http(s)://<host>[:<port>][/<base path>]`), trusting
    /// the CA certificate in `ca_file` (PEM) besides the usual roots.
    pub fn from_url(
        url: &str,
        token: &str,
        ca_file: Option<&Path>,
    ) -> Result<ApiClient, ClientError> {
        let invalid = || ClientError::Url {
            url: url.to_string(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
        let fits = matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some()
            && parsed.query().is_none()
            && parsed.fragment().is_none();
        if !fits {
            return Err(invalid());
        }
        ApiClient::at(url.trim_end_matches('/').to_string(), Some(token), ca_file)
    }

    fn at(
        base: String,
        token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<ApiClient, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        if let Some(path) = ca_file {
            let certificate =
                |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Certificate {
                    path: path.display().to_string(),
                    source,
                };
            let pem = std::fs::read(path).map_err(|e| certificate(e.into()))?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| certificate(e.into()))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            url: base.clone(),
            source,
        })?;
        Ok(ApiClient {
            base,
            token: token.map(str::to_string),
            http,
        })
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// This client with another token (`None`: none).
    pub fn with_token(&self, token: Option<&str>) -> ApiClient {
        ApiClient {
            token: token.map(str::to_string),
            ..self.clone()
        }
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

    /// Sends any request.
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

    /// `send`, leaving the answer's body to read as it arrives. A POST without a
    /// `Content-Type` is sent as JSON.
    pub async fn send_streaming(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Streaming, ClientError> {
        let url = self.url(path);
        let is_post = method == Method::POST;
        let mut request = self.http.request(method, &url);
        if is_post
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.as_str());
        }
        let response = request.body(body).send().await.map_err(|source| {
            if source.is_connect() {
                ClientError::Connect {
                    url: self.base.clone(),
                    source,
                }
            } else {
                ClientError::Http {
                    url: self.base.clone(),
                    source,
                }
            }
        })?;
        Ok(Streaming {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            url,
            response,
        })
    }
}
