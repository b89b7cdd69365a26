//! What a handler answers: a status, headers and a body that is either whole (JSON, text, CSV)
//! or streamed from a file on disk, so that large downloads never sit in memory.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, IntoHeaderName, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio_util::io::ReaderStream;

use crate::http::error::ApiError;
use crate::runner::outcome::new_exception_id;

/// The body of every answer: whole or streamed, failing only with a read error of a file.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An answer to one request.
pub struct Answer(Response<Body>);

impl Answer {
    /// 200 and `value`.
    pub fn ok(value: &Value) -> Answer {
        Answer::json(StatusCode::OK, value)
    }

    /// `value` as `application/json`.
    pub fn json(status: StatusCode, value: &Value) -> Answer {
        Answer::bytes(status, "application/json", value.to_string())
    }

    /// No body (a DELETE's 204).
    pub fn empty(status: StatusCode) -> Answer {
        Answer::with_body(status, whole(Bytes::new()))
    }

    /// A whole body of `content_type`.
    pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer::with_body(status, whole(body.into()))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
    }

    /// The content of the file at `path`, read from disk as the client takes it (200).
    pub async fn file(path: &Path, content_type: &'static str) -> std::io::Result<Answer> {
        let file = tokio::fs::File::open(path).await?;
        let length = file.metadata().await?.len();
        let frames = ReaderStream::new(file).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(frames));
        Ok(Answer::with_body(StatusCode::OK, body)
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(CONTENT_LENGTH, HeaderValue::from(length)))
    }

    /// The Keboola error body of `error`, and the exceptionId it carries.
    pub fn error(error: &ApiError) -> (Answer, String) {
        let exception_id = new_exception_id();
        let answer = Answer::json(error.status, &error.body(&exception_id));
        let answer = match error.retry_after {
            Some(seconds) => answer.header(RETRY_AFTER, HeaderValue::from(seconds)),
            None => answer,
        };
        (answer, exception_id)
    }

    /// The answer with the header `name` set to `value`.
    pub fn header(mut self, name: impl IntoHeaderName, value: HeaderValue) -> Answer {
        self.0.headers_mut().insert(name, value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    pub fn into_response(self) -> Response<Body> {
        self.0
    }

    pub fn with_body(status: StatusCode, body: Body) -> Answer {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        Answer(response)
    }
}

fn whole(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_streamed_whole_with_its_length() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let path = dir.path().join("content");
        // Larger than one read of the stream, so that it takes several frames.
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("written");
        let response = Answer::file(&path, "application/octet-stream")
            .await
            .expect("the file opens")
            .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_LENGTH], "300000");
        let body = response.into_body().collect().await.expect("read");
        assert_eq!(body.to_bytes(), content);
        let missing = Answer::file(&dir.path().join("missing"), "text/plain").await;
        assert!(missing.is_err());
    }
}
