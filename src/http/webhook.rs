//! A minimal webhook client: one JSON POST to an `http://` URL (no TLS: jobq talks to services
//! on its own network), answered by the status code the receiver sent.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Why a webhook got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("Webhook URL \"{0}\" is not an http:// URL with a host; jobq sends webhooks over plain HTTP only.")]
    BadUrl(String),
    #[error("Cannot connect to webhook {url}; check that the receiver runs and the URL is right.")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Webhook {url} failed while sending or reading its answer.")]
    Exchange {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("Webhook {url} did not answer within {seconds} s.")]
    Timeout { url: String, seconds: u64 },
}

/// POSTs `body` as JSON to `url` (`http://host[:port][/path]`) and returns the answer's status
/// code, whatever it is; an answer that does not come within `timeout` is `Timeout`.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<u16, WebhookError> {
    let (authority, path) = split(url).ok_or_else(|| WebhookError::BadUrl(url.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|_| WebhookError::BadUrl(url.to_string()))?;
    let exchange = async {
        let address = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| WebhookError::Connect {
                url: url.to_string(),
                source,
            })?;
        let failed = |source| WebhookError::Exchange {
            url: url.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(failed)?;
        let connection = tokio::spawn(connection);
        let answer = sender.send_request(request).await.map_err(failed)?;
        let status = answer.status().as_u16();
        // The body is read so the receiver is not cut off mid-answer.
        let _ = answer.into_body().collect().await;
        connection.abort();
        Ok(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(WebhookError::Timeout {
            url: url.to_string(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// `http://host:port/path?q` into (`host:port`, `/path?q`).
fn split(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    (!authority.is_empty() && !authority.contains('@')).then_some((authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split("http://127.0.0.1:8080/hook?a=1"),
            Some(("127.0.0.1:8080", "/hook?a=1"))
        );
        assert_eq!(split("http://example"), Some(("example", "/")));
        assert_eq!(split("https://example/"), None);
        assert_eq!(split("http:///x"), None);
    }
}
