//! The Storage API's dev branches and component configurations (rows, state): requests parsed
//! into calls of the configurations service, its answers rendered.
//!
//! Every configuration path exists under `/v2/storage/branch/{branch}/` and directly under
//! `/v2/storage/` (the default branch); `{branch}` is `default`, the default branch's id or a dev
//! branch's id. Only registered components have configurations: any other is a 404 naming it.
//! Bodies are JSON or forms (`application/x-www-form-urlencoded`, JSON-valued fields as JSON
//! text). State changes keep `version`, as in the public API; every other change raises it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::query::Query;
use crate::http::render::{self, Include};
use crate::configurations::{Changes, Configurations, ConfigurationsError};
use crate::model::Configuration;
use crate::settings::Settings;
use crate::store::StoreError;

/// What the configuration routes work with.
pub struct Context<'a> {
    pub configurations: &'a Configurations,
    pub settings: &'a Settings,
    pub query: &'a Query,
}

/// Answers a request whose path starts with `v2/storage` (events and tokens aside): 404 for an
/// unknown path, 405 for a method the path does not take; DELETE answers 204 without a body.
pub async fn route(
    context: &Context<'_>,
    parts: &Parts,
    segments: &[&str],
    body: Incoming,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let target = Target::parse(segments).ok_or_else(|| super::route_not_found(parts))?;
    let body = match parts.method {
        Method::POST | Method::PUT => {
            super::read_body(body, &parts.headers, context.settings.max_body_bytes).await?
        }
        _ => Bytes::new(),
    };
    let (status, value) = tokio::task::block_in_place(|| answer(context, parts, target, &body))?;
    Ok(match value {
        Some(value) => super::json_response(status, &value),
        None => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            response
        }
    })
}

/// A component's configurations in a branch, as the path names them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scope<'a> {
    branch: &'a str,
    component: &'a str,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target<'a> {
    Branches,
    Branch(&'a str),
    /// Registered components with their configurations, in a branch.
    Components(&'a str),
    Configurations(Scope<'a>),
    Configuration(Scope<'a>, &'a str),
    Rows(Scope<'a>, &'a str),
    Row(Scope<'a>, &'a str, &'a str),
    /// The state of a configuration, or of one of its rows.
    State(Scope<'a>, &'a str, Option<&'a str>),
}

impl<'a> Target<'a> {
    /// Paths without `branch/{branch}` are those of the default branch.
    fn parse(segments: &[&'a str]) -> Option<Target<'a>> {
        let (branch, rest) = match segments {
            ["v2", "storage", "dev-branches"] => return Some(Target::Branches),
            ["v2", "storage", "dev-branches", id] => return Some(Target::Branch(id)),
            ["v2", "storage", "branch", branch, rest @ ..] => (*branch, rest),
            ["v2", "storage", rest @ ..] => ("default", rest),
            _ => return None,
        };
        let scope = |component| Scope { branch, component };
        Some(match *rest {
            ["components"] => Target::Components(branch),
            ["components", component, "configs"] => Target::Configurations(scope(component)),
            ["components", component, "configs", config] => {
                Target::Configuration(scope(component), config)
            }
            ["components", component, "configs", config, "state"] => {
                Target::State(scope(component), config, None)
            }
            ["components", component, "configs", config, "rows"] => {
                Target::Rows(scope(component), config)
            }
            ["components", component, "configs", config, "rows", row] => {
                Target::Row(scope(component), config, row)
            }
            ["components", component, "configs", config, "rows", row, "state"] => {
                Target::State(scope(component), config, Some(row))
            }
            _ => return None,
        })
    }
}

/// Status and body; `None` answers no body.
type Answer = Result<(StatusCode, Option<Value>), ApiError>;

fn answer(context: &Context<'_>, parts: &Parts, target: Target<'_>, body: &[u8]) -> Answer {
    let configurations = context.configurations;
    let fields = || Fields::from_body(&parts.headers, body);
    let ok = |value: Value| Ok((StatusCode::OK, Some(value)));
    let no_content = || Ok((StatusCode::NO_CONTENT, None));
    match (&parts.method, target) {
        (&Method::GET, Target::Branches) => {
            ok(configurations.branches()?.iter().map(render::branch).collect())
        }
        (&Method::POST, Target::Branches) => {
            let fields = fields()?;
            let name = fields.required_text("name")?;
            let description = fields.text("description")?.unwrap_or_default();
            let branch = configurations.create_branch(name, description)?;
            Ok((StatusCode::CREATED, Some(render::branch(&branch))))
        }
        (&Method::GET, Target::Branch(id)) => ok(render::branch(&configurations.branch(id)?)),
        (&Method::DELETE, Target::Branch(id)) => {
            configurations.delete_branch(id)?;
            no_content()
        }
        (&Method::GET, Target::Components(branch)) => list_components(context, branch),
        (&Method::GET, Target::Configurations(Scope { branch, component })) => {
            let listed = configurations.configurations(branch, component)?;
            if context.query.one("isDeleted") == Some("true") {
                // Deleted configurations are gone at once: the trash is always empty.
                return ok(json!([]));
            }
            ok(listed
                .iter()
                .map(|c| render::configuration(c, Include::ALL))
                .collect())
        }
        (&Method::POST, Target::Configurations(Scope { branch, component })) => {
            let fields = fields()?;
            let changes = changes(&fields)?;
            fields.required_text("name")?;
            let id = fields.chosen_id("configurationId")?;
            let created = configurations.create_configuration(branch, component, id, changes)?;
            Ok((
                StatusCode::CREATED,
                Some(render::configuration(&created, Include::ALL)),
            ))
        }
        (&Method::GET, Target::Configuration(Scope { branch, component }, config)) => {
            let configuration = configurations.configuration(branch, component, config)?;
            ok(render::configuration(&configuration, Include::ALL))
        }
        (&Method::PUT, Target::Configuration(Scope { branch, component }, config)) => {
            let fields = fields()?;
            let changes = changes(&fields)?;
            let order = fields.list("rowsSortOrder")?;
            let updated = configurations.update_configuration(
                branch,
                component,
                config,
                changes,
                order.as_deref(),
            )?;
            ok(render::configuration(&updated, Include::ALL))
        }
        (&Method::DELETE, Target::Configuration(Scope { branch, component }, config)) => {
            configurations.delete_configuration(branch, component, config)?;
            no_content()
        }
        (&Method::PUT, Target::State(Scope { branch, component }, config, row)) => {
            let state = fields()?.object("state")?.ok_or_else(|| {
                ApiError::bad_request("Field \"state\" is required: the new state, an object.")
            })?;
            match row {
                None => {
                    let saved = configurations.set_state(branch, component, config, state)?;
                    ok(render::configuration(&saved, Include::ALL))
                }
                Some(row) => {
                    let saved =
                        configurations.set_row_state(branch, component, config, row, state)?;
                    ok(render::row(&saved))
                }
            }
        }
        (&Method::GET, Target::Rows(Scope { branch, component }, config)) => {
            let configuration = configurations.configuration(branch, component, config)?;
            ok(configuration.rows.iter().map(render::row).collect())
        }
        (&Method::POST, Target::Rows(Scope { branch, component }, config)) => {
            let fields = fields()?;
            let changes = changes(&fields)?;
            let id = fields.chosen_id("rowId")?;
            let row = configurations.create_row(branch, component, config, id, changes)?;
            Ok((StatusCode::CREATED, Some(render::row(&row))))
        }
        (&Method::GET, Target::Row(Scope { branch, component }, config, row)) => {
            ok(render::row(&configurations.row(branch, component, config, row)?))
        }
        (&Method::PUT, Target::Row(Scope { branch, component }, config, row)) => {
            let changes = changes(&fields()?)?;
            let updated = configurations.update_row(branch, component, config, row, changes)?;
            ok(render::row(&updated))
        }
        (&Method::DELETE, Target::Row(Scope { branch, component }, config, row)) => {
            configurations.delete_row(branch, component, config, row)?;
            no_content()
        }
        _ => Err(super::method_not_allowed(parts)),
    }
}

/// `GET .../components`: every registered component with its configurations in the branch; the
/// parts beyond the summary come with `include=configuration,rows,state`.
fn list_components(context: &Context<'_>, branch: &str) -> Answer {
    let mut include = Include::default();
    for part in context
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
    let components = context.configurations.components(branch)?;
    let components = components.iter().map(|(component, configurations)| {
        let own: Vec<&Configuration> = configurations.iter().collect();
        render::component(component, &own, include)
    });
    Ok((StatusCode::OK, Some(components.collect())))
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

impl From<ConfigurationsError> for ApiError {
    fn from(error: ConfigurationsError) -> Self {
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
        ApiError::new(status, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Option<Target<'_>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Target::parse(&segments)
    }

    #[test]
    fn both_path_shapes_name_the_same_targets() {
        let main = Scope {
            branch: "default",
            component: "c",
        };
        let dev = Scope {
            branch: "9",
            component: "c",
        };
        let cases = [
            (
                "/v2/storage/components",
                Some(Target::Components("default")),
            ),
            (
                "/v2/storage/branch/9/components",
                Some(Target::Components("9")),
            ),
            (
                "/v2/storage/components/c/configs",
                Some(Target::Configurations(main)),
            ),
            (
                "/v2/storage/branch/9/components/c/configs/7",
                Some(Target::Configuration(dev, "7")),
            ),
            (
                "/v2/storage/components/c/configs/7/state",
                Some(Target::State(main, "7", None)),
            ),
            (
                "/v2/storage/branch/9/components/c/configs/7/rows",
                Some(Target::Rows(dev, "7")),
            ),
            (
                "/v2/storage/components/c/configs/7/rows/r",
                Some(Target::Row(main, "7", "r")),
            ),
            (
                "/v2/storage/branch/9/components/c/configs/7/rows/r/state",
                Some(Target::State(dev, "7", Some("r"))),
            ),
            ("/v2/storage/dev-branches", Some(Target::Branches)),
            ("/v2/storage/dev-branches/9", Some(Target::Branch("9"))),
            ("/v2/storage/branch/9/dev-branches", None),
            ("/v2/storage/components/c", None),
            ("/v2/storage/components/c/configs/7/versions", None),
            ("/v2/storage/buckets", None),
        ];
        for (path, expected) in cases {
            assert_eq!(parse(path), expected, "{path}");
        }
    }
}
