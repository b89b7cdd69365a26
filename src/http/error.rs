//! API errors and the Keboola error body every 4xx/5xx answer carries.

use hyper::StatusCode;
use serde_json::json;

use crate::error::chain;
use crate::notifications::NotificationsError;
use crate::queue::QueueError;
use crate::store::StoreError;

/// `Retry-After` seconds while a failed store is being reopened.
const STORE_RETRY_AFTER: u64 = 5;

/// An error answer: status, message, and an optional machine-readable `context.stringCode`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub string_code: Option<&'static str>,
    /// Seconds after which a retry may succeed (`Retry-After`), for faults that pass.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            string_code: None,
            retry_after: None,
        }
    }

    /// The answer to a store refusing for a fault of the host: 507 while `data_dir` is full,
    /// 503 with `Retry-After` while a failed store is reopened; `None` for other errors.
    pub fn host_fault(error: &StoreError) -> Option<ApiError> {
        match error {
            StoreError::Full { message } => Some(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                message.clone(),
            )),
            StoreError::Unwritable { message } => Some(ApiError {
                retry_after: Some(STORE_RETRY_AFTER),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message.clone())
            }),
            _ => None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn with_code(mut self, string_code: &'static str) -> ApiError {
        self.string_code = Some(string_code);
        self
    }

    /// The Keboola error body. A 500 hides its cause behind an exceptionId that the log
    /// explains; the other 5xx (a host fault that passes) say what it is.
    pub fn body(&self, exception_id: &str) -> serde_json::Value {
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
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

impl From<NotificationsError> for ApiError {
    fn from(error: NotificationsError) -> Self {
        match error {
            NotificationsError::Store(store) => ApiError::host_fault(&store)
                .unwrap_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, chain(&store))),
            NotificationsError::Invalid(invalid) => ApiError::bad_request(invalid.message),
            NotificationsError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string())
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        if let QueueError::Store(store) = &error {
            if let Some(fault) = ApiError::host_fault(store) {
                return fault;
            }
        }
        let message = chain(&error);
        match error {
            QueueError::Invalid { .. } => ApiError::bad_request(message),
            QueueError::JobNotFound { .. }
            | QueueError::ScheduleNotFound { .. }
            | QueueError::ConfigurationNotFound { .. } => {
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
