//! Dev branches and component configurations (rows inside) in the store, one write transaction per change.
//!
//! Configurations are keyed (branch id, component, configuration id), so the same id lives
//! independently in every branch. Ids the client does not choose (configurations, rows, dev
//! branches) come from one sequence in `meta`, skipping ids already taken. The default branch is
//! not stored: it is the settings' `project.default_branch_id`, and its configurations are
//! stored under that id. A change that raises a configuration's version keeps the version it
//! replaced in `CONFIGURATION_VERSIONS` (a schedule runs the version it was activated with);
//! they go with the configuration.

use std::cmp::Ordering;

use redb::{ReadableTable, WriteTransaction};

use super::tables::*;
use super::{codec, next_in_sequence, Fail, Store, StoreError, UpdateError};
use crate::model::{Branch, Configuration, Job};

impl Store {
    /// When the store file was made (Unix microseconds): the default branch's `created`.
    pub fn created_time(&self) -> Result<i64, StoreError> {
        self.read("reading the store's creation time", |txn| {
            let created = txn.open_table(META)?.get(META_CREATED_TIME)?;
            let created = created.ok_or_else(|| StoreError::Corrupt {
                record: "store metadata",
                detail: "the creation time is missing".to_string(),
            })?;
            Ok(created.value() as i64)
        })
    }

    /// The stored dev branches, in id order.
    pub fn branches(&self) -> Result<Vec<Branch>, StoreError> {
        self.read("listing branches", |txn| {
            let mut branches = Vec::new();
            for entry in txn.open_table(BRANCHES)?.iter()? {
                let (_, record) = entry?;
                branches.push(codec::decode_branch(record.value())?);
            }
            branches.sort_by(|a, b| id_order(&a.id, &b.id));
            Ok(branches)
        })
    }

    /// The stored dev branch `id`, if any.
    pub fn branch(&self, id: &str) -> Result<Option<Branch>, StoreError> {
        self.read("reading a branch", |txn| {
            let table = txn.open_table(BRANCHES)?;
            let Some(record) = table.get(id)? else {
                return Ok(None);
            };
            Ok(Some(codec::decode_branch(record.value())?))
        })
    }

    /// Stores the dev branch `make(id)` under the next id of the sequence, which never hands out
    /// `default_branch_id` (the unstored default branch's). `id` and `is_default` are forced.
    pub fn create_branch(
        &self,
        default_branch_id: &str,
        make: impl FnOnce(String) -> Branch,
    ) -> Result<Branch, StoreError> {
        self.write("creating a branch", |txn| {
            let id = loop {
                let id = next_configuration_id(txn)?;
                if id != default_branch_id {
                    break id;
                }
            };
            let mut branch = make(id.clone());
            branch.id = id;
            branch.is_default = false;
            txn.open_table(BRANCHES)?.insert(
                branch.id.as_str(),
                codec::encode_branch(&branch)?.as_slice(),
            )?;
            Ok(branch)
        })
    }

    /// Deletes the dev branch `id` and every configuration in it; `false` when there is none.
    pub fn delete_branch(&self, id: &str) -> Result<bool, StoreError> {
        self.write("deleting a branch", |txn| {
            if txn.open_table(BRANCHES)?.remove(id)?.is_none() {
                return Ok(false);
            }
            let mut table = txn.open_table(CONFIGURATIONS)?;
            for configuration in configurations_in(&table, id, None)? {
                table.remove(key(&configuration))?;
                remove_versions(txn, key(&configuration))?;
            }
            Ok(true)
        })
    }

    /// The configurations of `branch_id` (only `component`'s, when given), by component, then id.
    pub fn configurations(
        &self,
        branch_id: &str,
        component: Option<&str>,
    ) -> Result<Vec<Configuration>, StoreError> {
        self.read("listing configurations", |txn| {
            let mut found =
                configurations_in(&txn.open_table(CONFIGURATIONS)?, branch_id, component)?;
            found.sort_by(|a, b| {
                a.component
                    .cmp(&b.component)
                    .then_with(|| id_order(&a.id, &b.id))
            });
            Ok(found)
        })
    }

    /// The configuration `id` of `component` in `branch_id`, if any.
    pub fn configuration(
        &self,
        branch_id: &str,
        component: &str,
        id: &str,
    ) -> Result<Option<Configuration>, StoreError> {
        self.read("reading a configuration", |txn| {
            load_configuration(&txn.open_table(CONFIGURATIONS)?, (branch_id, component, id))
        })
    }

    /// Version `version` of configuration `id` of `component` in `branch_id`: the current one,
    /// or one a later change replaced; `None` when there is no such version (any more).
    pub fn configuration_version(
        &self,
        branch_id: &str,
        component: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Configuration>, StoreError> {
        self.read("reading a configuration version", |txn| {
            let current =
                load_configuration(&txn.open_table(CONFIGURATIONS)?, (branch_id, component, id))?;
            let Some(current) = current else {
                return Ok(None);
            };
            if current.version == version {
                return Ok(Some(current));
            }
            let versions = txn.open_table(CONFIGURATION_VERSIONS)?;
            match versions.get((branch_id, component, id, version))? {
                Some(record) => Ok(Some(codec::decode_configuration(record.value())?)),
                None => Ok(None),
            }
        })
    }

    /// The name of the stored configuration `job` belongs to (its `config`, whatever
    /// `configData` it runs), if there is one.
    pub fn configuration_name(&self, job: &Job) -> Result<Option<String>, StoreError> {
        let Some(config) = &job.config else {
            return Ok(None);
        };
        let found = self.configuration(&job.branch_id, &job.component, config)?;
        Ok(found.map(|configuration| configuration.name))
    }

    /// Stores `new` as a new configuration with `version` 1. An empty `new.id` gets the next id of
    /// the sequence that is free in its branch and component; a given id already taken is
    /// `StoreError::ConfigurationExists`, and so is a row id used twice (`RowExists`).
    pub fn create_configuration(&self, new: Configuration) -> Result<Configuration, StoreError> {
        self.write("creating a configuration", |txn| {
            let mut configuration = new;
            configuration.version = 1;
            let mut table = txn.open_table(CONFIGURATIONS)?;
            if configuration.id.is_empty() {
                loop {
                    configuration.id = next_configuration_id(txn)?;
                    if table.get(key(&configuration))?.is_none() {
                        break;
                    }
                }
            } else if table.get(key(&configuration))?.is_some() {
                return Err(StoreError::ConfigurationExists {
                    branch: configuration.branch_id,
                    component: configuration.component,
                    config: configuration.id,
                }
                .into());
            }
            check_row_ids(&configuration)?;
            table.insert(
                key(&configuration),
                codec::encode_configuration(&configuration)?.as_slice(),
            )?;
            Ok(configuration)
        })
    }

    /// Read-modify-write of one configuration in one write transaction; its `version` goes up by
    /// one (a row's own `version` is `f`'s to raise). `f` gets a source of new row ids: the
    /// sequence's, skipping the configuration's row ids.
    ///
    /// `f` returning `Err` aborts (nothing is written) and comes back as `UpdateError::Rejected`.
    /// A missing configuration is `UpdateError::Store(StoreError::ConfigurationNotFound)`, a row
    /// id used twice `StoreError::RowExists`. `f` cannot change the key (branch, component, id).
    pub fn update_configuration<E>(
        &self,
        branch_id: &str,
        component: &str,
        id: &str,
        f: impl FnOnce(&mut Configuration, &mut dyn FnMut() -> String) -> Result<(), E>,
    ) -> Result<Configuration, UpdateError<E>> {
        let key = (branch_id, component, id);
        self.change_configuration("updating a configuration", key, true, f)
    }

    /// `update_configuration` for state only: of what `f` changes, only the configuration's and
    /// its rows' `state` is kept. State is not versioned: no `version` changes, as in the public
    /// Storage API.
    pub fn update_state<E>(
        &self,
        branch_id: &str,
        component: &str,
        id: &str,
        f: impl FnOnce(&mut Configuration) -> Result<(), E>,
    ) -> Result<Configuration, UpdateError<E>> {
        let key = (branch_id, component, id);
        self.change_configuration("saving a state", key, false, |configuration, _| {
            let mut changed = configuration.clone();
            f(&mut changed)?;
            configuration.state = std::mem::take(&mut changed.state);
            for row in &mut configuration.rows {
                if let Some(changed) = changed.row_mut(&row.id) {
                    row.state = std::mem::take(&mut changed.state);
                }
            }
            Ok(())
        })
    }

    /// Deletes a configuration with its rows; `false` when there is none.
    pub fn delete_configuration(
        &self,
        branch_id: &str,
        component: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.write("deleting a configuration", |txn| {
            let mut table = txn.open_table(CONFIGURATIONS)?;
            let removed = table.remove((branch_id, component, id))?.is_some();
            remove_versions(txn, (branch_id, component, id))?;
            Ok(removed)
        })
    }

    /// `update_configuration`, raising `version` only when `bump`.
    fn change_configuration<E>(
        &self,
        action: &'static str,
        (branch_id, component, id): (&str, &str, &str),
        bump: bool,
        f: impl FnOnce(&mut Configuration, &mut dyn FnMut() -> String) -> Result<(), E>,
    ) -> Result<Configuration, UpdateError<E>> {
        let outcome = self.write_or_abort(action, |txn| {
            let mut table = txn.open_table(CONFIGURATIONS)?;
            let Some(old) = load_configuration(&table, (branch_id, component, id))? else {
                return Err(StoreError::ConfigurationNotFound {
                    branch: branch_id.to_string(),
                    component: component.to_string(),
                    config: id.to_string(),
                }
                .into());
            };
            let mut configuration = old.clone();
            let mut row_ids = RowIds::start(txn, &old)?;
            if let Err(rejection) = f(&mut configuration, &mut || row_ids.next()) {
                return Ok(Err(rejection));
            }
            row_ids.finish(txn)?;
            if bump {
                configuration.version = old.version + 1;
                txn.open_table(CONFIGURATION_VERSIONS)?.insert(
                    (branch_id, component, id, old.version),
                    codec::encode_configuration(&old)?.as_slice(),
                )?;
            }
            configuration.branch_id = old.branch_id;
            configuration.component = old.component;
            configuration.id = old.id;
            check_row_ids(&configuration)?;
            table.insert(
                key(&configuration),
                codec::encode_configuration(&configuration)?.as_slice(),
            )?;
            Ok(Ok(configuration))
        })?;
        outcome.map_err(UpdateError::Rejected)
    }
}

/// Makes the tables of this module and stamps the store's creation time; part of `Store::open`.
pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), Fail> {
    txn.open_table(BRANCHES)?;
    txn.open_table(CONFIGURATIONS)?;
    txn.open_table(CONFIGURATION_VERSIONS)?;
    let mut meta = txn.open_table(META)?;
    if meta.get(META_CREATED_TIME)?.is_none() {
        meta.insert(META_CREATED_TIME, crate::model::now_micros().max(0) as u64)?;
    }
    Ok(())
}

type Key<'a> = (&'a str, &'a str, &'a str);

fn key(configuration: &Configuration) -> Key<'_> {
    (
        configuration.branch_id.as_str(),
        configuration.component.as_str(),
        configuration.id.as_str(),
    )
}

/// Generated ids are numbers: shorter first puts them in numeric order.
fn id_order(a: &str, b: &str) -> Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

fn next_configuration_id(txn: &WriteTransaction) -> Result<String, Fail> {
    Ok(next_in_sequence(txn, META_LAST_CONFIGURATION_ID, "configuration")?.to_string())
}

fn load_configuration(
    table: &impl ReadableTable<Key<'static>, &'static [u8]>,
    wanted: Key<'_>,
) -> Result<Option<Configuration>, Fail> {
    let Some(record) = table.get(wanted)? else {
        return Ok(None);
    };
    let configuration = codec::decode_configuration(record.value())?;
    if key(&configuration) != wanted {
        return Err(StoreError::Corrupt {
            record: "configuration record",
            detail: format!(
                "the record under {wanted:?} says it is {:?}",
                key(&configuration)
            ),
        }
        .into());
    }
    Ok(Some(configuration))
}

/// The configurations under `branch_id` (and `component`), in key order.
fn configurations_in(
    table: &impl ReadableTable<Key<'static>, &'static [u8]>,
    branch_id: &str,
    component: Option<&str>,
) -> Result<Vec<Configuration>, Fail> {
    let mut found = Vec::new();
    for entry in table.range((branch_id, component.unwrap_or(""), "")..)? {
        let (stored, record) = entry?;
        let (stored_branch, stored_component, _) = stored.value();
        if stored_branch != branch_id || component.is_some_and(|c| c != stored_component) {
            break;
        }
        found.push(codec::decode_configuration(record.value())?);
    }
    Ok(found)
}

/// Removes the replaced versions kept of configuration `key`.
fn remove_versions(txn: &WriteTransaction, (branch, component, id): Key<'_>) -> Result<(), Fail> {
    let mut versions = txn.open_table(CONFIGURATION_VERSIONS)?;
    versions.retain_in(
        (branch, component, id, 0)..=(branch, component, id, u64::MAX),
        |_, _| false,
    )?;
    Ok(())
}

fn check_row_ids(configuration: &Configuration) -> Result<(), StoreError> {
    for (i, row) in configuration.rows.iter().enumerate() {
        if configuration.rows[..i].iter().any(|r| r.id == row.id) {
            return Err(StoreError::RowExists {
                branch: configuration.branch_id.clone(),
                component: configuration.component.clone(),
                config: configuration.id.clone(),
                row: row.id.clone(),
            });
        }
    }
    Ok(())
}

/// New row ids during one update: the sequence read once before and written once after, so the
/// id source needs no transaction of its own.
struct RowIds {
    last: u64,
    drawn: bool,
    exhausted: bool,
    taken: Vec<String>,
}

impl RowIds {
    fn start(txn: &WriteTransaction, configuration: &Configuration) -> Result<RowIds, Fail> {
        let last = txn
            .open_table(META)?
            .get(META_LAST_CONFIGURATION_ID)?
            .map_or(0, |v| v.value());
        Ok(RowIds {
            last,
            drawn: false,
            exhausted: false,
            taken: configuration
                .rows
                .iter()
                .map(|row| row.id.clone())
                .collect(),
        })
    }

    fn next(&mut self) -> String {
        loop {
            self.drawn = true;
            match self.last.checked_add(1) {
                Some(next) => self.last = next,
                None => {
                    self.exhausted = true;
                    return String::new();
                }
            }
            let id = self.last.to_string();
            if !self.taken.contains(&id) {
                return id;
            }
        }
    }

    fn finish(self, txn: &WriteTransaction) -> Result<(), Fail> {
        if self.exhausted {
            return Err(StoreError::SequenceExhausted {
                sequence: "configuration",
            }
            .into());
        }
        if self.drawn {
            txn.open_table(META)?
                .insert(META_LAST_CONFIGURATION_ID, self.last)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "configs_tests.rs"]
mod tests;
