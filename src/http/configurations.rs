//! The Storage API's dev branches and component configurations (rows, state), kept in the store.
//!
//! Every configuration path exists under `/v2/storage/branch/{branch}/` and directly under
//! `/v2/storage/` (the default branch); `{branch}` is `default`, the default branch's id or a dev
//! branch's id. Only registered components have configurations: any other is a 404 naming it.
//! Bodies are JSON or forms (`application/x-www-form-urlencoded`, JSON-valued fields as JSON
//! text). State changes keep `version`, as in the public API; every other change raises it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::query::Query;
use crate::http::render::{self, Include};
use crate::model::now_micros;
use crate::model::{Branch, Configuration, Row};
use crate::secrets::{self, Secrets};
use crate::settings::Settings;
use crate::store::{Store, StoreError, UpdateError};

/// What the storage routes work with.
pub struct Context<'a> {
    pub store: &'a Store,
    pub settings: &'a Settings,
    pub secrets: &'a Secrets,
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
    let fields = || Fields::parse(&parts.headers, body);
    let ok = |value: Value| Ok((StatusCode::OK, Some(value)));
    match (&parts.method, target) {
        (&Method::GET, Target::Branches) => {
            let mut branches = vec![context.default_branch()?];
            branches.extend(context.store.branches().map_err(store_error)?);
            ok(branches.iter().map(render::branch).collect())
        }
        (&Method::POST, Target::Branches) => create_branch(context, &fields()?),
        (&Method::GET, Target::Branch(id)) => ok(render::branch(&context.branch(id)?)),
        (&Method::DELETE, Target::Branch(id)) => {
            let branch = context.branch(id)?;
            if branch.is_default {
                return Err(ApiError::bad_request(
                    "The default branch cannot be deleted; delete a dev branch instead.",
                ));
            }
            context
                .store
                .delete_branch(&branch.id)
                .map_err(store_error)?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        (&Method::GET, Target::Components(branch)) => list_components(context, branch),
        (&Method::GET, Target::Configurations(scope)) => {
            let at = context.at(scope)?;
            if context.query.one("isDeleted") == Some("true") {
                // Deleted configurations are gone at once: the trash is always empty.
                return ok(json!([]));
            }
            let configurations = context
                .store
                .configurations(&at.branch, Some(&at.component))
                .map_err(store_error)?;
            ok(configurations
                .iter()
                .map(|c| render::configuration(c, Include::ALL))
                .collect())
        }
        (&Method::POST, Target::Configurations(scope)) => {
            create_configuration(context, &context.at(scope)?, &fields()?)
        }
        (&Method::GET, Target::Configuration(scope, config)) => {
            let configuration = context.at(scope)?.load(context.store, config)?;
            ok(render::configuration(&configuration, Include::ALL))
        }
        (&Method::PUT, Target::Configuration(scope, config)) => {
            let at = context.at(scope)?;
            let fields = fields()?;
            let changes = Changes::parse(&fields)?.sealed(context, &at);
            let order = fields.ids("rowsSortOrder")?;
            let updated = at.update(context.store, config, |configuration, _| {
                changes.apply(editable!(configuration));
                match &order {
                    Some(order) => sort_rows(configuration, order),
                    None => Ok(()),
                }
            })?;
            ok(render::configuration(&updated, Include::ALL))
        }
        (&Method::DELETE, Target::Configuration(scope, config)) => {
            let at = context.at(scope)?;
            let deleted = context
                .store
                .delete_configuration(&at.branch, &at.component, config)
                .map_err(store_error)?;
            if !deleted {
                return Err(store_error(at.configuration_not_found(config)));
            }
            Ok((StatusCode::NO_CONTENT, None))
        }
        (&Method::PUT, Target::State(scope, config, row)) => {
            let at = context.at(scope)?;
            let mut state = fields()?.object("state")?.ok_or_else(|| {
                ApiError::bad_request("Field \"state\" is required: the new state, an object.")
            })?;
            context.seal(&at, &mut state);
            let saved = context
                .store
                .update_state(&at.branch, &at.component, config, |configuration| {
                    let target = match row {
                        None => &mut configuration.state,
                        Some(row) => &mut at.row_mut(configuration, row)?.state,
                    };
                    *target = state;
                    Ok(())
                })
                .map_err(update_error)?;
            match row {
                None => ok(render::configuration(&saved, Include::ALL)),
                Some(row) => ok(render::row(at.row(&saved, row)?)),
            }
        }
        (&Method::GET, Target::Rows(scope, config)) => {
            let configuration = context.at(scope)?.load(context.store, config)?;
            ok(configuration.rows.iter().map(render::row).collect())
        }
        (&Method::POST, Target::Rows(scope, config)) => {
            create_row(context, &context.at(scope)?, config, &fields()?)
        }
        (&Method::GET, Target::Row(scope, config, row)) => {
            let at = context.at(scope)?;
            let configuration = at.load(context.store, config)?;
            ok(render::row(at.row(&configuration, row)?))
        }
        (&Method::PUT, Target::Row(scope, config, row)) => {
            let at = context.at(scope)?;
            let changes = Changes::parse(&fields()?)?.sealed(context, &at);
            let updated = at.update(context.store, config, |configuration, _| {
                let changed = at.row_mut(configuration, row)?;
                changes.apply(editable!(changed));
                changed.version += 1;
                configuration.change_description = changes.describe(row, "changed");
                Ok(())
            })?;
            ok(render::row(at.row(&updated, row)?))
        }
        (&Method::DELETE, Target::Row(scope, config, row)) => {
            let at = context.at(scope)?;
            at.update(context.store, config, |configuration, _| {
                at.row_mut(configuration, row)?;
                configuration.rows.retain(|r| r.id != row);
                configuration.change_description = format!("Row {row} deleted");
                Ok(())
            })?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        _ => Err(super::method_not_allowed(parts)),
    }
}

/// `POST /v2/storage/dev-branches`: made at once (the public API runs a job for it).
fn create_branch(context: &Context<'_>, fields: &Fields) -> Answer {
    let name = fields.required_text("name")?;
    let description = fields.text("description")?.unwrap_or_default();
    let default_branch_id = &context.settings.project.default_branch_id;
    let branch = context
        .store
        .create_branch(default_branch_id, |id| Branch {
            id,
            name,
            description,
            is_default: false,
            created: now_micros(),
        })
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Some(render::branch(&branch))))
}

/// `GET .../components`: every registered component with its configurations in the branch; the
/// parts beyond the summary come with `include=configuration,rows,state`.
fn list_components(context: &Context<'_>, branch: &str) -> Answer {
    let branch = context.branch(branch)?.id;
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
    let configurations = context
        .store
        .configurations(&branch, None)
        .map_err(store_error)?;
    let components = context.settings.components.iter().map(|component| {
        let own: Vec<&Configuration> = configurations
            .iter()
            .filter(|c| c.component == component.id)
            .collect();
        render::component(&component.id, &own, include)
    });
    Ok((StatusCode::OK, Some(components.collect())))
}

/// `POST .../configs`: `name` is required; `configurationId` chooses the id.
fn create_configuration(context: &Context<'_>, at: &At, fields: &Fields) -> Answer {
    let store = context.store;
    let changes = Changes::parse(fields)?.sealed(context, at);
    fields.required_text("name")?;
    // A configuration starts with what a row starts with, plus its component, branch and rows.
    let id = fields.chosen_id("configurationId")?.unwrap_or_default();
    let new = new_row(id, &changes);
    let configuration = Configuration {
        component: at.component.clone(),
        branch_id: at.branch.clone(),
        id: new.id,
        name: new.name,
        description: new.description,
        change_description: new.change_description,
        version: new.version,
        is_disabled: new.is_disabled,
        configuration: new.configuration,
        state: new.state,
        rows: Vec::new(),
        created: new.created,
    };
    let created = store
        .create_configuration(configuration)
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Some(render::configuration(&created, Include::ALL)),
    ))
}

/// `POST .../rows`: `rowId` chooses the id; the row goes last.
fn create_row(context: &Context<'_>, at: &At, config: &str, fields: &Fields) -> Answer {
    let store = context.store;
    let changes = Changes::parse(fields)?.sealed(context, at);
    let chosen = fields.chosen_id("rowId")?;
    let mut id = String::new();
    let updated = at.update(store, config, |configuration, next_id| {
        let row = new_row(chosen.unwrap_or_else(next_id), &changes);
        configuration.change_description = changes.describe(&row.id, "added");
        id.clone_from(&row.id);
        configuration.rows.push(row);
        Ok(())
    })?;
    Ok((
        StatusCode::CREATED,
        Some(render::row(at.row(&updated, &id)?)),
    ))
}

/// A row at version 1 with what the request gives, empty or `{}` where it gives nothing.
fn new_row(id: String, changes: &Changes) -> Row {
    let mut row = Row {
        id,
        name: String::new(),
        description: String::new(),
        change_description: String::new(),
        version: 1,
        is_disabled: false,
        configuration: json!({}),
        state: json!({}),
        created: now_micros(),
    };
    changes.apply(editable!(row));
    row
}

/// Puts the rows `order` names first, in that order; the others keep theirs after them.
fn sort_rows(configuration: &mut Configuration, order: &[String]) -> Result<(), ApiError> {
    if let Some(unknown) = order.iter().find(|id| configuration.row(id).is_none()) {
        return Err(ApiError::bad_request(format!(
            "Field \"rowsSortOrder\" names row \"{unknown}\", which configuration \"{}\" does not have.",
            configuration.id
        )));
    }
    let place = |row: &Row| {
        order
            .iter()
            .position(|id| *id == row.id)
            .unwrap_or(order.len())
    };
    configuration.rows.sort_by_key(place);
    Ok(())
}

impl Context<'_> {
    /// The branch a path names: `default` and the default branch's id mean the default branch,
    /// anything else must be a stored dev branch.
    fn branch(&self, given: &str) -> Result<Branch, ApiError> {
        let default = &self.settings.project.default_branch_id;
        if given == "default" || given == default {
            return self.default_branch();
        }
        let branch = self.store.branch(given).map_err(store_error)?;
        branch.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "Branch \"{given}\" not found; GET /v2/storage/dev-branches lists the branches."
                ),
            )
        })
    }

    /// The default branch is not stored: its id comes from the settings, its time from the store.
    fn default_branch(&self) -> Result<Branch, ApiError> {
        Ok(Branch {
            id: self.settings.project.default_branch_id.clone(),
            name: "Main".to_string(),
            description: String::new(),
            is_default: true,
            created: self.store.created_time().map_err(store_error)?,
        })
    }

    /// The resolved branch and the component, which must be registered.
    /// Encrypts every `#` value of a configuration, row or state of `at`'s component before it
    /// is stored: answers and the store only ever hold ciphertexts.
    fn seal(&self, at: &At, value: &mut Value) {
        let scope = secrets::Scope::Project {
            component: at.component.clone(),
            project: self.settings.project.id.clone(),
        };
        self.secrets.encrypt_json(value, &scope);
    }

    fn at(&self, scope: Scope<'_>) -> Result<At, ApiError> {
        let branch = self.branch(scope.branch)?.id;
        if self.settings.component(scope.component).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "Component \"{}\" is not registered in jobq; add it under [[components]] in \
                     the settings file.",
                    scope.component
                ),
            ));
        }
        Ok(At {
            branch,
            component: scope.component.to_string(),
        })
    }
}

/// A registered component in an existing branch.
struct At {
    branch: String,
    component: String,
}

impl At {
    fn load(&self, store: &Store, config: &str) -> Result<Configuration, ApiError> {
        store
            .configuration(&self.branch, &self.component, config)
            .map_err(store_error)?
            .ok_or_else(|| store_error(self.configuration_not_found(config)))
    }

    fn update(
        &self,
        store: &Store,
        config: &str,
        f: impl FnOnce(&mut Configuration, &mut dyn FnMut() -> String) -> Result<(), ApiError>,
    ) -> Result<Configuration, ApiError> {
        store
            .update_configuration(&self.branch, &self.component, config, f)
            .map_err(update_error)
    }

    fn row<'c>(&self, configuration: &'c Configuration, row: &str) -> Result<&'c Row, ApiError> {
        configuration
            .row(row)
            .ok_or_else(|| self.row_not_found(configuration, row))
    }

    fn row_mut<'c>(
        &self,
        configuration: &'c mut Configuration,
        row: &str,
    ) -> Result<&'c mut Row, ApiError> {
        let missing = self.row_not_found(configuration, row);
        configuration.row_mut(row).ok_or(missing)
    }

    fn configuration_not_found(&self, config: &str) -> StoreError {
        StoreError::ConfigurationNotFound {
            branch: self.branch.clone(),
            component: self.component.clone(),
            config: config.to_string(),
        }
    }

    fn row_not_found(&self, configuration: &Configuration, row: &str) -> ApiError {
        store_error(StoreError::RowNotFound {
            branch: self.branch.clone(),
            component: self.component.clone(),
            config: configuration.id.clone(),
            row: row.to_string(),
        })
    }
}

fn store_error(error: StoreError) -> ApiError {
    let status = match error {
        StoreError::ConfigurationNotFound { .. } | StoreError::RowNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        StoreError::ConfigurationExists { .. } | StoreError::RowExists { .. } => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.to_string())
}

fn update_error(error: UpdateError<ApiError>) -> ApiError {
    match error {
        UpdateError::Store(error) => store_error(error),
        UpdateError::Rejected(error) => error,
    }
}

/// A request body's fields: a JSON object, or a form as the public API's clients send it.
enum Fields {
    Json(Map<String, Value>),
    Form(Query),
}

impl Fields {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Fields, ApiError> {
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("The form body is not valid UTF-8."))?;
            return Ok(Fields::Form(Query::parse(Some(text))));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::Json(Map::new()));
        }
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(Fields::Json(map)),
            Ok(_) => Err(ApiError::bad_request(
                "The request body must be a JSON object.",
            )),
            Err(error) => Err(ApiError::bad_request(format!(
                "The request body is not valid JSON: {error}; send JSON, or a form with \
                 Content-Type application/x-www-form-urlencoded."
            ))),
        }
    }

    /// The field's value (JSON `null` is absent); a form field given several times is a list.
    fn get(&self, field: &str) -> Option<Value> {
        match self {
            Fields::Json(map) => map.get(field).filter(|v| !v.is_null()).cloned(),
            Fields::Form(form) => match form.all(field) {
                [] => None,
                [one] => Some(Value::String(one.clone())),
                many => Some(json!(many)),
            },
        }
    }

    fn text(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(wrong_type(field, "a string")),
        }
    }

    fn required_text(&self, field: &str) -> Result<String, ApiError> {
        self.text(field)?
            .filter(|text| !text.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("Field \"{field}\" is required.")))
    }

    /// An id the client chooses: letters, digits, `.`, `_` and `-` (it becomes a path segment).
    fn chosen_id(&self, field: &str) -> Result<Option<String>, ApiError> {
        let id = self.text(field)?.filter(|id| !id.is_empty());
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.as_deref().is_some_and(|id| !id.chars().all(allowed)) {
            return Err(wrong_type(
                field,
                "made of letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(id)
    }

    /// `true`/`false`, or as forms send them: `"true"`, `"false"`, `"1"`, `"0"`.
    fn flag(&self, field: &str) -> Result<Option<bool>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let flag = match &value {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) => match number.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(text) => match text.trim() {
                "true" | "1" => Some(true),
                "false" | "0" | "" => Some(false),
                _ => None,
            },
            _ => None,
        };
        flag.map(Some)
            .ok_or_else(|| wrong_type(field, "true or false (or \"1\", \"0\")"))
    }

    /// A JSON object, given as one or as JSON text (forms can only send text); `[]` means `{}`.
    fn object(&self, field: &str) -> Result<Option<Value>, ApiError> {
        let value = match self.get(field) {
            None => return Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => json!({}),
            Some(Value::String(text)) => serde_json::from_str(&text).map_err(|error| {
                ApiError::bad_request(format!("Field \"{field}\" is not valid JSON: {error}."))
            })?,
            Some(value) => value,
        };
        match value {
            Value::Object(_) => Ok(Some(value)),
            Value::Array(items) if items.is_empty() => Ok(Some(json!({}))),
            _ => Err(wrong_type(field, "a JSON object")),
        }
    }

    /// A list of ids: an array, or (in forms) `field[]=a&field[]=b` or `field=a,b`.
    fn ids(&self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        let items = match self.get(field) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(Value::String(text)) => text.split(',').map(|id| json!(id.trim())).collect(),
            Some(_) => return Err(wrong_type(field, "a list of ids")),
        };
        items
            .into_iter()
            .filter(|item| item.as_str() != Some(""))
            .map(|item| match item {
                Value::String(id) => Ok(id),
                Value::Number(id) => Ok(id.to_string()),
                _ => Err(wrong_type(field, "a list of ids")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::bad_request(format!("Field \"{field}\" must be {expected}."))
}

/// The fields a configuration and a row share, as a request gives them (`None`: unchanged).
struct Changes {
    name: Option<String>,
    description: Option<String>,
    change_description: Option<String>,
    is_disabled: Option<bool>,
    configuration: Option<Value>,
    state: Option<Value>,
}

/// The fields `Changes` sets, borrowed from a configuration or a row.
struct Editable<'a> {
    name: &'a mut String,
    description: &'a mut String,
    change_description: &'a mut String,
    is_disabled: &'a mut bool,
    configuration: &'a mut Value,
    state: &'a mut Value,
}

/// `Editable` of a configuration or a row (a place, evaluated once per field).
macro_rules! editable {
    ($record:ident) => {
        Editable {
            name: &mut $record.name,
            description: &mut $record.description,
            change_description: &mut $record.change_description,
            is_disabled: &mut $record.is_disabled,
            configuration: &mut $record.configuration,
            state: &mut $record.state,
        }
    };
}
use editable;

impl Changes {
    /// The changes with their secrets encrypted for `at`'s component.
    fn sealed(mut self, context: &Context<'_>, at: &At) -> Changes {
        for value in [&mut self.configuration, &mut self.state]
            .into_iter()
            .flatten()
        {
            context.seal(at, value);
        }
        self
    }

    fn parse(fields: &Fields) -> Result<Changes, ApiError> {
        Ok(Changes {
            name: fields.text("name")?,
            description: fields.text("description")?,
            change_description: fields.text("changeDescription")?,
            is_disabled: fields.flag("isDisabled")?,
            configuration: fields.object("configuration")?,
            state: fields.object("state")?,
        })
    }

    /// Sets what the request gives; `changeDescription` describes this change only.
    fn apply(&self, record: Editable<'_>) {
        let set = |target: &mut String, given: &Option<String>| {
            if let Some(given) = given {
                target.clone_from(given);
            }
        };
        set(record.name, &self.name);
        set(record.description, &self.description);
        *record.change_description = self.change_description.clone().unwrap_or_default();
        if let Some(disabled) = self.is_disabled {
            *record.is_disabled = disabled;
        }
        if let Some(configuration) = &self.configuration {
            record.configuration.clone_from(configuration);
        }
        if let Some(state) = &self.state {
            record.state.clone_from(state);
        }
    }

    /// The configuration's change description for a change of one of its rows.
    fn describe(&self, row: &str, what: &str) -> String {
        self.change_description
            .clone()
            .unwrap_or_else(|| format!("Row {row} {what}"))
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

    fn form(text: &str) -> Fields {
        Fields::Form(Query::parse(Some(text)))
    }

    fn json_fields(value: Value) -> Fields {
        match value {
            Value::Object(map) => Fields::Json(map),
            _ => panic!("an object"),
        }
    }

    #[test]
    fn forms_and_json_give_the_same_changes() {
        let from_form = form(
            "name=n&isDisabled=1&configuration=%7B%22parameters%22%3A%7B%22a%22%3A1%7D%7D&state=",
        );
        let from_json = json_fields(json!({
            "name": "n",
            "isDisabled": true,
            "configuration": {"parameters": {"a": 1}},
            "state": [],
        }));
        for fields in [from_form, from_json] {
            let changes = Changes::parse(&fields).expect("valid");
            assert_eq!(changes.name.as_deref(), Some("n"));
            assert_eq!(changes.is_disabled, Some(true));
            assert_eq!(changes.configuration, Some(json!({"parameters": {"a": 1}})));
            assert_eq!(changes.state, Some(json!({})));
            assert_eq!(changes.description, None);
        }
        let fields = json_fields(json!({"configuration": "{\"parameters\": {}}"}));
        assert_eq!(
            fields.object("configuration").unwrap(),
            Some(json!({"parameters": {}}))
        );
    }

    #[test]
    fn flags_ids_and_bad_values() {
        for (text, flag) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            assert_eq!(
                form(&format!("isDisabled={text}"))
                    .flag("isDisabled")
                    .unwrap(),
                Some(flag)
            );
        }
        let sorted = ["b".to_string(), "a".to_string()];
        for fields in [
            form("rowsSortOrder[]=b&rowsSortOrder[]=a"),
            form("rowsSortOrder=b,a"),
            json_fields(json!({"rowsSortOrder": ["b", "a"]})),
        ] {
            assert_eq!(
                fields.ids("rowsSortOrder").unwrap().as_deref(),
                Some(&sorted[..])
            );
        }
        let bad = [
            (form("isDisabled=maybe"), "isDisabled"),
            (form("configuration=%7Bnope"), "configuration"),
            (json_fields(json!({"configuration": 5})), "configuration"),
            (
                json_fields(json!({"configuration": "[1]"})),
                "configuration",
            ),
            (json_fields(json!({"name": ["x"]})), "name"),
        ];
        for (fields, field) in bad {
            let error = Changes::parse(&fields).err().expect("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.message.contains(field), "{}", error.message);
        }
        let error = form("configurationId=a/b")
            .chosen_id("configurationId")
            .unwrap_err();
        assert!(
            error.message.contains("configurationId"),
            "{}",
            error.message
        );
    }
}
