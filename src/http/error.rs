//! API errors and the Keboola error body every 4xx/5xx answer carries.

use hyper::StatusCode;
use serde_json::json;

use crate::error::chain;
use crate::queue::QueueError;
use crate::runner::outcome::new_exception_id;

/// An error answer: status, message, and an optional machine-readable `context.stringCode`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub string_code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            string_code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn with_code(mut self, string_code: &'static str) -> ApiError {
        self.string_code = Some(string_code);
        self
    }

    /// The Keboola error body. A 5xx hides its cause behind an exceptionId that the log explains.
    pub fn body(&self) -> serde_json::Value {
        let exception_id = new_exception_id();
        let message = if self.status.is_server_error() {
            tracing::error!(exception_id = %exception_id, cause = %self.message, "internal error");
            "Internal Server Error occurred.".to_string()
        } else {
            self.message.clone()
        };
        let context = match self.string_code {
            Some(code) => json!({"stringCode": code}),
            None => json!({}),
        };
        json!({
            "error": message,
            "code": self.status.as_u16(),
            "exceptionId": exception_id,
            "status": "error",
            "context": context,
        })
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        let message = chain(&error);
        match error {
            QueueError::Invalid { .. } => ApiError::bad_request(message),
            QueueError::JobNotFound { .. } | QueueError::ConfigurationNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, message)
            }
            QueueError::NotKillable { .. } => {
                ApiError::bad_request(message).with_code("statusTransitionForbidden")
            }
            QueueError::Forbidden(_) | QueueError::Store(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
        }
    }
}
