//! The Storage API's dev branches and component configurations (rows, state): requests parsed
//! into calls of the configurations service, its answers rendered.
//!
//! Every configuration path exists under `/v2/storage/branch/{branch}/` and directly under
//! `/v2/storage/` (the default branch); `{branch}` is `default`, the default branch's id or a dev
//! branch's id. Only registered components have configurations: any other is a 404 naming it.
//! Bodies are JSON or forms (`application/x-www-form-urlencoded`, JSON-valued fields as JSON
//! text). State changes keep `version`, as in the public API; every other change raises it.
//! DELETE answers 204 without a body.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::configurations::{Changes, ComponentIn, ConfigurationsError};
use crate::error::chain;
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::render::{self, Include};
use crate::http::request::Request;
use crate::http::{blocking, Services};
use crate::model::Configuration;
use crate::store::StoreError;

type Reply = Result<Answer, ApiError>;

/// `GET /v2/storage/dev-branches`: the default branch first.
pub async fn branches(services: &Services, _request: Request) -> Reply {
    let branches = blocking(|| services.configurations.branches())?;
    Ok(Answer::ok(&branches.iter().map(render::branch).collect()))
}

/// `POST /v2/storage/dev-branches`: `name` (required), `description`; made at once.
pub async fn create_branch(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let name = fields.required_text("name")?;
    let description = fields.text("description")?.unwrap_or_default();
    let branch = blocking(|| services.configurations.create_branch(name, description))?;
    Ok(Answer::json(StatusCode::CREATED, &render::branch(&branch)))
}

pub async fn branch(services: &Services, request: Request) -> Reply {
    let branch = blocking(|| services.configurations.branch(request.segment("id")))?;
    Ok(Answer::ok(&render::branch(&branch)))
}

pub async fn delete_branch(services: &Services, request: Request) -> Reply {
    blocking(|| services.configurations.delete_branch(request.segment("id")))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `GET .../components`: every registered component with its configurations in the branch; the
/// parts beyond the summary come with `include=configuration,rows,state`.
pub async fn components(services: &Services, request: Request) -> Reply {
    let mut include = Include::default();
    for part in request
        .query
        .all("include")
        .iter()
        .flat_map(|v| v.split(','))
    {
        match part.trim() {
            "configuration" => include.configuration = true,
            "rows" => include.rows = true,
            "state" => include.state = true,
            _ => {}
        }
    }
    let components = blocking(|| services.configurations.components(branch_of(&request)))?;
    let components = components.iter().map(|(component, configurations)| {
        let own: Vec<&Configuration> = configurations.iter().collect();
        render::component(component, &own, include)
    });
    Ok(Answer::ok(&components.collect()))
}

/// `GET .../configs`; `isDeleted=true` lists none (deleted configurations are gone at once).
pub async fn configurations(services: &Services, request: Request) -> Reply {
    let listed = blocking(|| component(services, &request)?.list())?;
    if request.query.one("isDeleted") == Some("true") {
        return Ok(Answer::ok(&json!([])));
    }
    Ok(Answer::ok(
        &listed.iter().map(configuration_object).collect(),
    ))
}

/// `POST .../configs`: `name` is required; `configurationId` chooses the id.
pub async fn create_configuration(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let changes = changes(&fields)?;
    fields.required_text("name")?;
    let id = fields.chosen_id("configurationId")?;
    let created = blocking(|| component(services, &request)?.create(id, changes))?;
    let body = configuration_object(&created);
    Ok(Answer::json(StatusCode::CREATED, &body))
}

pub async fn configuration(services: &Services, request: Request) -> Reply {
    let config = request.segment("config");
    let configuration = blocking(|| component(services, &request)?.get(config))?;
    Ok(Answer::ok(&configuration_object(&configuration)))
}

/// `PUT .../configs/{config}`: the changes, and `rowsSortOrder` to reorder the rows.
pub async fn update_configuration(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let changes = changes(&fields)?;
    let order = fields.list("rowsSortOrder")?;
    let config = request.segment("config");
    let updated =
        blocking(|| component(services, &request)?.update(config, changes, order.as_deref()))?;
    Ok(Answer::ok(&configuration_object(&updated)))
}

pub async fn delete_configuration(services: &Services, request: Request) -> Reply {
    let config = request.segment("config");
    blocking(|| component(services, &request)?.delete(config))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `PUT .../configs/{config}/state`: `state`, an object; the version stays.
pub async fn set_state(services: &Services, mut request: Request) -> Reply {
    let state = required_state(&request.fields().await?)?;
    let config = request.segment("config");
    let saved = blocking(|| component(services, &request)?.set_state(config, state))?;
    Ok(Answer::ok(&configuration_object(&saved)))
}

pub async fn rows(services: &Services, request: Request) -> Reply {
    let config = request.segment("config");
    let configuration = blocking(|| component(services, &request)?.get(config))?;
    Ok(Answer::ok(
        &configuration.rows.iter().map(render::row).collect(),
    ))
}

/// `POST .../rows`: `rowId` chooses the id; the row goes last.
pub async fn create_row(services: &Services, mut request: Request) -> Reply {
    let fields = request.fields().await?;
    let changes = changes(&fields)?;
    let id = fields.chosen_id("rowId")?;
    let config = request.segment("config");
    let row = blocking(|| component(services, &request)?.create_row(config, id, changes))?;
    Ok(Answer::json(StatusCode::CREATED, &render::row(&row)))
}

pub async fn row(services: &Services, request: Request) -> Reply {
    let (config, row) = (request.segment("config"), request.segment("row"));
    let row = blocking(|| component(services, &request)?.row(config, row))?;
    Ok(Answer::ok(&render::row(&row)))
}

pub async fn update_row(services: &Services, mut request: Request) -> Reply {
    let changes = changes(&request.fields().await?)?;
    let (config, row) = (request.segment("config"), request.segment("row"));
    let row = blocking(|| component(services, &request)?.update_row(config, row, changes))?;
    Ok(Answer::ok(&render::row(&row)))
}

pub async fn delete_row(services: &Services, request: Request) -> Reply {
    let (config, row) = (request.segment("config"), request.segment("row"));
    blocking(|| component(services, &request)?.delete_row(config, row))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `PUT .../rows/{row}/state`: `state`, an object; the versions stay.
pub async fn set_row_state(services: &Services, mut request: Request) -> Reply {
    let state = required_state(&request.fields().await?)?;
    let (config, row) = (request.segment("config"), request.segment("row"));
    let row = blocking(|| component(services, &request)?.set_row_state(config, row, state))?;
    Ok(Answer::ok(&render::row(&row)))
}

/// The branch a path names: paths without `branch/{branch}` name the default branch.
fn branch_of(request: &Request) -> &str {
    request.param("branch").unwrap_or("default")
}

/// The configurations of the component the path names, in its branch.
fn component<'s>(
    services: &'s Services,
    request: &Request,
) -> Result<ComponentIn<'s>, ConfigurationsError> {
    let component = request.segment("component");
    services
        .configurations
        .component(branch_of(request), component)
}

/// A configuration's own answers carry all of it.
fn configuration_object(configuration: &Configuration) -> Value {
    render::configuration(configuration, Include::ALL)
}

/// The fields a configuration and a row share.
fn changes(fields: &Fields) -> Result<Changes, ApiError> {
    Ok(Changes {
        name: fields.text("name")?,
        description: fields.text("description")?,
        change_description: fields.text("changeDescription")?,
        is_disabled: fields.flag("isDisabled")?,
        configuration: fields.object("configuration")?,
        state: fields.object("state")?,
    })
}

fn required_state(fields: &Fields) -> Result<Value, ApiError> {
    fields.object("state")?.ok_or_else(|| {
        ApiError::bad_request("Field \"state\" is required: the new state, an object.")
    })
}

impl From<ConfigurationsError> for ApiError {
    fn from(error: ConfigurationsError) -> Self {
        if let ConfigurationsError::Store(store) = &error {
            if let Some(fault) = ApiError::host_fault(store) {
                return fault;
            }
        }
        let status = match &error {
            ConfigurationsError::BranchNotFound { .. }
            | ConfigurationsError::ComponentNotRegistered { .. }
            | ConfigurationsError::Store(
                StoreError::ConfigurationNotFound { .. } | StoreError::RowNotFound { .. },
            ) => StatusCode::NOT_FOUND,
            ConfigurationsError::Store(
                StoreError::ConfigurationExists { .. } | StoreError::RowExists { .. },
            ) => StatusCode::CONFLICT,
            ConfigurationsError::DefaultBranchNotDeletable
            | ConfigurationsError::UnknownRowInSortOrder { .. } => StatusCode::BAD_REQUEST,
            ConfigurationsError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, chain(&error))
    }
}
