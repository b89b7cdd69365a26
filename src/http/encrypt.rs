//! `POST /encrypt`: ciphertexts of one `text/plain` value, or of every `#` value of a JSON body,
//! for the scope that `componentId`, `projectId` and `configId` choose.

use hyper::StatusCode;

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::Services;
use crate::secrets::Scope;
use crate::settings::Settings;

/// `POST /encrypt`: the answer has the body's type (a JSON body keeps its shape, with every `#`
/// scalar encrypted).
pub async fn encrypt(services: &Services, mut request: Request) -> Result<Answer, ApiError> {
    let scope = scope(&services.settings, &request.query)?;
    let json = match request.media_type().as_deref() {
        Some("application/json") => true,
        Some("text/plain") => false,
        _ => {
            return Err(ApiError::bad_request(
                "Send the value to encrypt as Content-Type text/plain, or a JSON object whose \
                 `#` values are to be encrypted as Content-Type application/json.",
            ))
        }
    };
    let body = request.body().await?;
    let secrets = &services.secrets;
    if json {
        let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!("The request body is not valid JSON: {error}."))
        })?;
        secrets.encrypt_json(&mut value, &scope);
        return Ok(Answer::json(StatusCode::OK, &value));
    }
    let plain = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("The text/plain body is not valid UTF-8."))?;
    let encrypted = secrets.encrypt_value(plain, &scope);
    Ok(Answer::bytes(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        encrypted,
    ))
}

/// componentId + projectId + configId: ConfigSecure; componentId + projectId: ProjectSecure;
/// componentId: ComponentSecure; projectId: ProjectWideSecure. Empty parameters are absent.
fn scope(settings: &Settings, query: &Query) -> Result<Scope, ApiError> {
    let given = |name| query.one(name).filter(|value| !value.is_empty());
    let (component, project, config) =
        (given("componentId"), given("projectId"), given("configId"));
    if let Some(component) = component {
        if !settings.is_registered(component) {
            return Err(ApiError::bad_request(format!(
                "Component \"{component}\" is not registered; give the componentId of one of \
                 the [[components]] in the settings."
            )));
        }
    }
    if let Some(project) = project {
        if project != settings.project.id {
            return Err(ApiError::bad_request(format!(
                "Project \"{project}\" is not this project; give projectId \"{}\".",
                settings.project.id
            )));
        }
    }
    let owned = |id: &str| id.to_string();
    match (component, project, config) {
        (Some(component), Some(project), Some(config)) => Ok(Scope::Config {
            component: owned(component),
            project: owned(project),
            config: owned(config),
        }),
        (Some(component), Some(project), None) => Ok(Scope::Project {
            component: owned(component),
            project: owned(project),
        }),
        (Some(component), None, None) => Ok(Scope::Component {
            component: owned(component),
        }),
        (None, Some(project), None) => Ok(Scope::ProjectWide {
            project: owned(project),
        }),
        (_, _, Some(_)) => Err(ApiError::bad_request(
            "Parameter configId needs componentId and projectId too: a configuration's \
             values are encrypted for all three.",
        )),
        (None, None, None) => Err(ApiError::bad_request(
            "Give the query parameters componentId, projectId or both (and configId): they \
             choose whom the value is encrypted for.",
        )),
    }
}
