//! `GET /jobs/{id}/events/stream`: a job's events as server-sent events, live, oldest first,
//! ending once the job has ended and its last event was sent. `Last-Event-ID` (or `sinceId`)
//! resumes after an event; `tree=1` adds the events of the jobs under it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::json;

use crate::error::chain;
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::{blocking, render, Services};
use crate::queue::Queue;

/// Events of one message at most; a follower that fell behind catches up page by page.
const PAGE: usize = 500;
/// How long the stream may be silent: then a comment line keeps proxies from closing it.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /jobs/{id}/events/stream`
pub async fn events(services: &Services, request: Request) -> Result<Answer, ApiError> {
    let id = request.segment("id").to_string();
    let tree = request.query_fields().flag("tree")?.unwrap_or(false);
    let resume = match request.header("last-event-id") {
        Some(last) => Some(last.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Header \"Last-Event-ID\" must be the id of an event, not \"{last}\"."
            ))
        })?),
        None => request.query.number("sinceId")?,
    };
    // An unknown job is a 404 answer, not an empty stream.
    blocking(|| services.queue.job(&id))?;
    let mut follower = Follower {
        queue: Arc::clone(&services.queue),
        id,
        tree,
        after: resume,
        done: false,
    };
    // A task of its own writes the stream; it ends with the job, or when the client leaves.
    let (mut sender, body) = Channel::new(1);
    tokio::spawn(async move {
        while !follower.done {
            let text = follower.next_message().await;
            if sender.send_data(Bytes::from(text)).await.is_err() {
                break;
            }
        }
    });
    Ok(Answer::with_body(StatusCode::OK, BodyExt::boxed(body))
        .header(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// Where one stream stands.
struct Follower {
    queue: Arc<Queue>,
    id: String,
    tree: bool,
    /// The last event sent.
    after: Option<u64>,
    done: bool,
}

impl Follower {
    /// The next piece of the stream: events (`id:` and `data:` lines, the default message
    /// type), a keep-alive comment, or the closing `end` message with the job's final status
    /// (`error` with a message when the job cannot be read any more).
    async fn next_message(&mut self) -> String {
        let followed = self
            .queue
            .follow_events(&self.id, self.tree, self.after, PAGE, KEEPALIVE)
            .await;
        let followed = match followed {
            Ok(followed) => followed,
            Err(error) => {
                self.done = true;
                let data = json!({"error": chain(&error)});
                return format!("event: error\ndata: {data}\n\n");
            }
        };
        let mut text = String::new();
        for event in &followed.events {
            text.push_str(&format!(
                "id: {}\ndata: {}\n\n",
                event.id,
                render::event(event)
            ));
            self.after = Some(event.id);
        }
        if let Some(status) = followed.ended {
            self.done = true;
            let data = json!({"id": self.id, "status": status.as_str()});
            text.push_str(&format!("event: end\ndata: {data}\n\n"));
        }
        if text.is_empty() {
            text.push_str(": keep-alive\n\n");
        }
        text
    }
}
