//! `POST /actions` and `GET /actions`: synchronous actions of registered components, answered
//! as Keboola's sync-actions API does (the component's JSON with 201, errors as 4xx/5xx).

use hyper::StatusCode;
use serde_json::json;

use crate::actions::{ActionError, ActionRequest};
use crate::error::chain;
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::Services;

/// `Retry-After` seconds when every action slot is taken.
const BUSY_RETRY_AFTER: u64 = 1;

/// `POST /actions`: runs the action; its answer is the component's stdout as it printed it.
pub async fn run(services: &Services, mut request: Request) -> Result<Answer, ApiError> {
    let fields = request.fields().await?;
    let action = ActionRequest {
        component_id: fields.required_text("componentId")?,
        action: fields.required_text("action")?,
        config_data: fields
            .object("configData")?
            .ok_or_else(|| ApiError::bad_request("Field \"configData\" is required."))?,
        branch_id: fields.id("branchId")?,
        tag: fields.text("tag")?.filter(|tag| !tag.trim().is_empty()),
    };
    let answer = services.actions.run(action).await?;
    Ok(Answer::bytes(
        StatusCode::CREATED,
        "application/json",
        answer,
    ))
}

/// `GET /actions?componentId=`: `{"actions": [...]}`, the component's synchronous actions.
pub async fn list(services: &Services, request: Request) -> Result<Answer, ApiError> {
    let component = request.query_fields().required_text("componentId")?;
    let actions = services.actions.list(&component)?;
    Ok(Answer::ok(&json!({ "actions": actions })))
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        let message = chain(&error);
        match error {
            ActionError::ComponentNotFound(_) | ActionError::NotDefined { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, message)
            }
            ActionError::Busy { .. } => ApiError {
                retry_after: Some(BUSY_RETRY_AFTER),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            },
            ActionError::Stopping => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            ActionError::Image(crate::runner::action::ActionRunError::Engine(_)) => ApiError {
                retry_after: Some(BUSY_RETRY_AFTER),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            },
            ActionError::Run
            | ActionError::Secrets(_)
            | ActionError::NoResponse
            | ActionError::InvalidJson(_)
            | ActionError::TooLarge
            | ActionError::User(_)
            | ActionError::Image(_) => ApiError::bad_request(message),
            ActionError::Application { .. } | ActionError::Folder(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
        }
    }
}
