//! The channels notifications leave jobq by, one sender for subscriptions' deliveries and flows'
//! notification tasks: webhooks get a JSON `POST` from the HTTP layer's client (which the
//! daemon gives: only `http/` knows HTTP), email goes through the `[smtp]` server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::error::chain;
use crate::mail::Mailer;
use crate::model::{Channel, Recipient};

/// POSTs a JSON body to a URL within the attempt timeout: the answer's status code, or what
/// went wrong as one line.
pub type Post = Arc<
    dyn Fn(String, Value) -> Pin<Box<dyn Future<Output = Result<u16, String>> + Send>>
        + Send
        + Sync,
>;

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The attempt failed (no connection, a timeout, a refused message); worth another try.
    Failed(String),
    /// An email, and jobq has no `[smtp]` settings: it cannot be sent at all.
    NoSmtp,
}

/// How notifications are sent.
pub struct Channels {
    post: Post,
    mail: Option<Mailer>,
}

/// What one notification says, in each channel's form.
pub struct Message<'a> {
    /// A webhook's JSON body.
    pub body: &'a Value,
    /// An email's subject and plain text.
    pub subject: &'a str,
    pub text: &'a str,
}

impl Channels {
    /// Webhooks through `post`, email through `mail` when there is an SMTP server.
    pub fn new(post: Post, mail: Option<Mailer>) -> Arc<Channels> {
        Arc::new(Channels { post, mail })
    }

    /// Sends `message` to `recipient` once: the answer's code (an HTTP status, or the SMTP
    /// server's 250 once it took the email).
    pub async fn send(
        &self,
        recipient: &Recipient,
        message: Message<'_>,
    ) -> Result<u16, SendError> {
        match recipient.channel {
            Channel::Webhook => (self.post)(recipient.address.clone(), message.body.clone())
                .await
                .map_err(SendError::Failed),
            Channel::Email => {
                let mail = self.mail.as_ref().ok_or(SendError::NoSmtp)?;
                mail.send(&recipient.address, message.subject, message.text)
                    .await
                    .map_err(|error| SendError::Failed(chain(&error)))
            }
        }
    }
}
