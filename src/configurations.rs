//! The rules of stored component configurations, as the Storage API keeps them: dev branches
//! beside the unstored default branch, configurations and rows of registered components only,
//! `#` values sealed (encrypted) before anything is stored, versions, change descriptions, state.
//!
//! The HTTP layer parses requests into these calls; this module knows no HTTP. Every change of
//! a configuration or one of its rows raises the configuration's `version` (a row's change
//! raises the row's too); state changes keep it, as in the public API.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::model::{now_micros, Branch, Configuration, Row, FLOW, ORCHESTRATOR, SCHEDULER};
use crate::secrets::{self, Secrets};
use crate::settings::Settings;
use crate::store::{Store, StoreError, UpdateError};

/// Why a configuration request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationsError {
    #[error("Branch \"{branch}\" not found; GET /v2/storage/dev-branches lists the branches.")]
    BranchNotFound { branch: String },
    #[error(
        "Component \"{component}\" is not registered in jobq; add it under [[components]] in the \
         settings file."
    )]
    ComponentNotRegistered { component: String },
    #[error("The default branch cannot be deleted; delete a dev branch instead.")]
    DefaultBranchNotDeletable,
    #[error(
        "Field \"rowsSortOrder\" names row \"{row}\", which configuration \"{config}\" does not \
         have."
    )]
    UnknownRowInSortOrder { config: String, row: String },
    /// Not found, already exists, or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UpdateError<ConfigurationsError>> for ConfigurationsError {
    fn from(error: UpdateError<ConfigurationsError>) -> Self {
        match error {
            UpdateError::Store(error) => error.into(),
            UpdateError::Rejected(error) => error,
        }
    }
}

type Result<T> = std::result::Result<T, ConfigurationsError>;

/// The fields a configuration and a row share, as a request gives them (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Describes this change only; a change without one clears the stored description.
    pub change_description: Option<String>,
    pub is_disabled: Option<bool>,
    pub configuration: Option<Value>,
    pub state: Option<Value>,
}

/// Stored configurations: their store, the key that seals their secrets, the registered
/// components and the default branch.
pub struct Configurations {
    store: Arc<Store>,
    secrets: Arc<Secrets>,
    settings: Arc<Settings>,
}

impl Configurations {
    pub fn new(store: Arc<Store>, secrets: Arc<Secrets>, settings: Arc<Settings>) -> Self {
        Configurations {
            store,
            secrets,
            settings,
        }
    }

    /// The default branch first, then the dev branches in id order.
    pub fn branches(&self) -> Result<Vec<Branch>> {
        let mut branches = vec![self.default_branch()?];
        branches.extend(self.store.branches()?);
        Ok(branches)
    }

    /// The branch `given` names: `default` and the default branch's id mean the default branch,
    /// anything else must be a stored dev branch.
    pub fn branch(&self, given: &str) -> Result<Branch> {
        let default = &self.settings.project.default_branch_id;
        if given == "default" || given == default {
            return self.default_branch();
        }
        self.store
            .branch(given)?
            .ok_or_else(|| ConfigurationsError::BranchNotFound {
                branch: given.to_string(),
            })
    }

    /// A new dev branch, made at once (the public API runs a job for it).
    pub fn create_branch(&self, name: String, description: String) -> Result<Branch> {
        let default_branch_id = &self.settings.project.default_branch_id;
        let branch = self.store.create_branch(default_branch_id, |id| Branch {
            id,
            name,
            description,
            is_default: false,
            created: now_micros(),
        })?;
        Ok(branch)
    }

    /// Deletes a dev branch with its configurations; the default branch stays.
    pub fn delete_branch(&self, given: &str) -> Result<()> {
        let branch = self.branch(given)?;
        if branch.is_default {
            return Err(ConfigurationsError::DefaultBranchNotDeletable);
        }
        self.store.delete_branch(&branch.id)?;
        Ok(())
    }

    /// Every registered component, in the settings' order, with its configurations in `branch`.
    pub fn components(&self, branch: &str) -> Result<Vec<(String, Vec<Configuration>)>> {
        let branch = self.branch(branch)?.id;
        let configurations = self.store.configurations(&branch, None)?;
        // The orchestrator, flows and the scheduler are listed once they have configurations.
        let built_in = [ORCHESTRATOR, FLOW, SCHEDULER]
            .into_iter()
            .filter(|id| configurations.iter().any(|c| c.component == *id));
        let ids = self.settings.components.iter().map(|c| c.id.as_str());
        let components = ids.chain(built_in).map(|id| {
            let own = configurations.iter().filter(|c| c.component == id).cloned();
            (id.to_string(), own.collect())
        });
        Ok(components.collect())
    }

    /// The configurations of `component` in `branch` (`default`, the default branch's id or a
    /// dev branch's id); the component must be registered.
    pub fn component(&self, branch: &str, component: &str) -> Result<ComponentIn<'_>> {
        let branch = self.branch(branch)?.id;
        if !self.settings.is_registered(component) {
            return Err(ConfigurationsError::ComponentNotRegistered {
                component: component.to_string(),
            });
        }
        Ok(ComponentIn {
            service: self,
            branch,
            component: component.to_string(),
        })
    }

    /// The default branch is not stored: its id comes from the settings, its time from the store.
    fn default_branch(&self) -> Result<Branch> {
        Ok(Branch {
            id: self.settings.project.default_branch_id.clone(),
            name: "Main".to_string(),
            description: String::new(),
            is_default: true,
            created: self.store.created_time()?,
        })
    }
}

/// The configurations of a registered component in an existing branch.
pub struct ComponentIn<'a> {
    service: &'a Configurations,
    /// The branch's id.
    branch: String,
    component: String,
}

impl ComponentIn<'_> {
    /// Every configuration, in id order.
    pub fn list(&self) -> Result<Vec<Configuration>> {
        let store = &self.service.store;
        Ok(store.configurations(&self.branch, Some(&self.component))?)
    }

    pub fn get(&self, id: &str) -> Result<Configuration> {
        let store = &self.service.store;
        store
            .configuration(&self.branch, &self.component, id)?
            .ok_or_else(|| self.not_found(id))
    }

    /// A new configuration at version 1 with what `changes` give (empty or `{}` elsewhere);
    /// `id` chooses its id, else the store's sequence does.
    pub fn create(&self, id: Option<String>, changes: Changes) -> Result<Configuration> {
        let changes = self.sealed(changes);
        // A configuration starts with what a row starts with, plus its component, branch and rows.
        let new = new_row(id.unwrap_or_default(), &changes);
        let configuration = Configuration {
            component: self.component.clone(),
            branch_id: self.branch.clone(),
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
        Ok(self.service.store.create_configuration(configuration)?)
    }

    /// Sets what `changes` give; `rows_order` puts the rows it names first, in its order.
    pub fn update(
        &self,
        id: &str,
        changes: Changes,
        rows_order: Option<&[String]>,
    ) -> Result<Configuration> {
        let changes = self.sealed(changes);
        self.update_with(id, |configuration, _| {
            apply(&changes, editable!(configuration));
            match rows_order {
                Some(order) => sort_rows(configuration, order),
                None => Ok(()),
            }
        })
    }

    /// Deletes a configuration with its rows.
    pub fn delete(&self, id: &str) -> Result<()> {
        let store = &self.service.store;
        match store.delete_configuration(&self.branch, &self.component, id)? {
            true => Ok(()),
            false => Err(self.not_found(id)),
        }
    }

    /// Replaces the configuration's state; the version stays.
    pub fn set_state(&self, config: &str, state: Value) -> Result<Configuration> {
        self.save_state(config, None, state)
    }

    pub fn row(&self, config: &str, row: &str) -> Result<Row> {
        find_row(&self.get(config)?, row).cloned()
    }

    /// A new row at version 1, last; `id` chooses its id, else the store's sequence does.
    pub fn create_row(&self, config: &str, id: Option<String>, changes: Changes) -> Result<Row> {
        let changes = self.sealed(changes);
        let mut created = String::new();
        let updated = self.update_with(config, |configuration, next_id| {
            let row = new_row(id.unwrap_or_else(next_id), &changes);
            configuration.change_description = describe(&changes, &row.id, "added");
            created.clone_from(&row.id);
            configuration.rows.push(row);
            Ok(())
        })?;
        find_row(&updated, &created).cloned()
    }

    /// Sets what `changes` give on the row; its version goes up with the configuration's.
    pub fn update_row(&self, config: &str, row: &str, changes: Changes) -> Result<Row> {
        let changes = self.sealed(changes);
        let updated = self.update_with(config, |configuration, _| {
            let changed = find_row_mut(configuration, row)?;
            apply(&changes, editable!(changed));
            changed.version += 1;
            configuration.change_description = describe(&changes, row, "changed");
            Ok(())
        })?;
        find_row(&updated, row).cloned()
    }

    pub fn delete_row(&self, config: &str, row: &str) -> Result<()> {
        self.update_with(config, |configuration, _| {
            find_row_mut(configuration, row)?;
            configuration.rows.retain(|r| r.id != row);
            configuration.change_description = format!("Row {row} deleted");
            Ok(())
        })?;
        Ok(())
    }

    /// Replaces a row's state; the versions stay.
    pub fn set_row_state(&self, config: &str, row: &str, state: Value) -> Result<Row> {
        let saved = self.save_state(config, Some(row), state)?;
        find_row(&saved, row).cloned()
    }

    /// Seals and stores `state` as the configuration's (`row: None`) or a row's.
    fn save_state(
        &self,
        config: &str,
        row: Option<&str>,
        mut state: Value,
    ) -> Result<Configuration> {
        self.seal(&mut state);
        let store = &self.service.store;
        let saved = store.update_state(&self.branch, &self.component, config, |configuration| {
            let target = match row {
                None => &mut configuration.state,
                Some(row) => &mut find_row_mut(configuration, row)?.state,
            };
            *target = state;
            Ok::<_, ConfigurationsError>(())
        })?;
        Ok(saved)
    }

    /// Read-modify-write of configuration `id` in one transaction; its version goes up.
    fn update_with(
        &self,
        id: &str,
        f: impl FnOnce(&mut Configuration, &mut dyn FnMut() -> String) -> Result<()>,
    ) -> Result<Configuration> {
        let store = &self.service.store;
        Ok(store.update_configuration(&self.branch, &self.component, id, f)?)
    }

    /// `changes` with their secrets sealed.
    fn sealed(&self, mut changes: Changes) -> Changes {
        for value in [&mut changes.configuration, &mut changes.state]
            .into_iter()
            .flatten()
        {
            self.seal(value);
        }
        changes
    }

    /// Encrypts every `#` value of a configuration, row or state before it is stored: answers
    /// and the store only ever hold ciphertexts.
    fn seal(&self, value: &mut Value) {
        let scope = secrets::Scope::Project {
            component: self.component.clone(),
            project: self.service.settings.project.id.clone(),
        };
        self.service.secrets.encrypt_json(value, &scope);
    }

    fn not_found(&self, config: &str) -> ConfigurationsError {
        StoreError::ConfigurationNotFound {
            branch: self.branch.clone(),
            component: self.component.clone(),
            config: config.to_string(),
        }
        .into()
    }
}

fn find_row<'c>(configuration: &'c Configuration, row: &str) -> Result<&'c Row> {
    configuration
        .row(row)
        .ok_or_else(|| row_not_found(configuration, row))
}

fn find_row_mut<'c>(configuration: &'c mut Configuration, row: &str) -> Result<&'c mut Row> {
    let missing = row_not_found(configuration, row);
    configuration.row_mut(row).ok_or(missing)
}

fn row_not_found(configuration: &Configuration, row: &str) -> ConfigurationsError {
    StoreError::RowNotFound {
        branch: configuration.branch_id.clone(),
        component: configuration.component.clone(),
        config: configuration.id.clone(),
        row: row.to_string(),
    }
    .into()
}

/// A row at version 1 with what `changes` give, empty or `{}` where they give nothing.
fn new_row(id: String, changes: &Changes) -> Row {
    let mut row = Row {
        id,
        version: 1,
        configuration: json!({}),
        state: json!({}),
        created: now_micros(),
        ..Row::default()
    };
    apply(changes, editable!(row));
    row
}

/// Puts the rows `order` names first, in that order; the others keep theirs after them.
fn sort_rows(configuration: &mut Configuration, order: &[String]) -> Result<()> {
    if let Some(unknown) = order.iter().find(|id| configuration.row(id).is_none()) {
        return Err(ConfigurationsError::UnknownRowInSortOrder {
            config: configuration.id.clone(),
            row: unknown.clone(),
        });
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

/// Sets what `changes` give; `changeDescription` describes this change only.
fn apply(changes: &Changes, record: Editable<'_>) {
    let set = |target: &mut String, given: &Option<String>| {
        if let Some(given) = given {
            target.clone_from(given);
        }
    };
    set(record.name, &changes.name);
    set(record.description, &changes.description);
    *record.change_description = changes.change_description.clone().unwrap_or_default();
    if let Some(disabled) = changes.is_disabled {
        *record.is_disabled = disabled;
    }
    if let Some(configuration) = &changes.configuration {
        record.configuration.clone_from(configuration);
    }
    if let Some(state) = &changes.state {
        record.state.clone_from(state);
    }
}

/// The configuration's change description for a change of one of its rows.
fn describe(changes: &Changes, row: &str, what: &str) -> String {
    changes
        .change_description
        .clone()
        .unwrap_or_else(|| format!("Row {row} {what}"))
}
