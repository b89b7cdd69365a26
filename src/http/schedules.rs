//! The Scheduler API: activating a `keboola.scheduler` configuration, listing, reading and
//! deactivating schedules; each parses the request, asks the queue, renders the answer.

use hyper::StatusCode;

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::{blocking, render, Services};

type Reply = Result<Answer, ApiError>;

/// `POST /schedules {"configurationId", "configurationVersionId"?}`: the activated schedule.
pub async fn activate(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let configuration = fields
        .id("configurationId")?
        .ok_or_else(|| ApiError::bad_request("Field \"configurationId\" is required."))?;
    let version = fields.id("configurationVersionId")?;
    let schedule = services
        .queue
        .activate_schedule(&configuration, version.as_deref(), &request.token)
        .await?;
    Ok(Answer::ok(&render::schedule(&schedule)))
}

/// `GET /schedules[?componentId=&configurationId=]`: the filter is on the target, both or none.
pub async fn list(services: &Services, request: Request) -> Reply {
    let component = request.query.one("componentId");
    let configuration = request.query.one("configurationId");
    let target =
        match (component, configuration) {
            (Some(component), Some(configuration)) => Some((component, configuration)),
            (None, None) => None,
            _ => return Err(ApiError::bad_request(
                "Query parameters \"componentId\" and \"configurationId\" filter together; give \
                 both or neither.",
            )),
        };
    let schedules = blocking(|| services.queue.schedules(target))?;
    Ok(Answer::ok(
        &schedules.iter().map(render::schedule).collect(),
    ))
}

pub async fn get(services: &Services, request: Request) -> Reply {
    let schedule = blocking(|| services.queue.activated_schedule(request.segment("id")))?;
    Ok(Answer::ok(&render::schedule(&schedule)))
}

/// `DELETE /schedules/{id}`: deactivated; its configuration stays in Storage.
pub async fn delete(services: &Services, request: Request) -> Reply {
    blocking(|| services.queue.delete_schedule(request.segment("id")))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /configurations/{id}`: every schedule of that `keboola.scheduler` configuration
/// deactivated.
pub async fn delete_of_configuration(services: &Services, request: Request) -> Reply {
    blocking(|| services.queue.delete_schedules_of(request.segment("id")))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}
