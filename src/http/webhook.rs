//! The webhook client: one JSON `POST` over a fresh HTTP/1.1 connection, bounded by a timeout.
//! Plain `http://` only: jobq carries no TLS stack.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a webhook call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "\"{url}\" is not a webhook URL jobq can call; give http://<host>[:<port>]/<path> \
         (jobq has no TLS, so https:// URLs need a proxy on the host)"
    )]
    Url { url: String },
    #[error("cannot connect to the webhook at {url}; check that it listens")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook at {url} did not answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("the HTTP exchange with the webhook at {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
}

/// POSTs `body` as JSON to `url` and returns the answer's status code, whatever it is; an
/// error when the URL is not `http://`, the connection fails or no answer came within `timeout`.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<u16, WebhookError> {
    let bad_url = || WebhookError::Url {
        url: url.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad_url())?;
    let authority = uri.authority().filter(|_| uri.scheme_str() == Some("http"));
    let authority = authority.ok_or_else(bad_url)?.clone();
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let exchange = async {
        let stream =
            TcpStream::connect(&address)
                .await
                .map_err(|source| WebhookError::Connect {
                    url: url.to_string(),
                    source,
                })?;
        let http = |source| WebhookError::Http {
            url: url.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = path.parse().map_err(|_| bad_url())?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad_url())?;
        request.headers_mut().insert(HOST, host);
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let answer = sender.send_request(request).await.map_err(http)?;
        Ok(answer.status().as_u16())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| WebhookError::Timeout {
            url: url.to_string(),
            seconds: timeout.as_secs(),
        })?
}
