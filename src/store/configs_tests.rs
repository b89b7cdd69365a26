//! Unit tests of stored branches and configurations against real redb files.

use std::convert::Infallible;

use serde_json::json;

use super::*;
use crate::model::Row;

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("jobq.redb")).expect("open store");
    (dir, store)
}

/// A new configuration of `component` in `branch`; an empty `id` asks the store for one.
fn configuration(branch: &str, component: &str, id: &str) -> Configuration {
    Configuration {
        component: component.to_string(),
        branch_id: branch.to_string(),
        id: id.to_string(),
        name: format!("{component} {id}"),
        description: String::new(),
        change_description: String::new(),
        version: 0,
        is_disabled: false,
        configuration: json!({"parameters": {"rows": [1, {"x": null}], "name": "ünï"}}),
        state: json!({}),
        rows: Vec::new(),
        created: 100,
    }
}

fn create(store: &Store, branch: &str, component: &str, id: &str) -> Configuration {
    store
        .create_configuration(configuration(branch, component, id))
        .expect("create")
}

fn row(id: String) -> Row {
    Row {
        id,
        name: String::new(),
        description: String::new(),
        change_description: String::new(),
        version: 1,
        is_disabled: false,
        configuration: json!({"parameters": {"table": "t"}}),
        state: json!({}),
        created: 200,
    }
}

fn branch(name: &str) -> impl FnOnce(String) -> Branch + '_ {
    move |id| Branch {
        id,
        name: name.to_string(),
        description: String::new(),
        is_default: false,
        created: 300,
    }
}

fn add_row(store: &Store, branch: &str, config: &str, id: Option<&str>) -> Configuration {
    store
        .update_configuration(branch, "c", config, |configuration, next_id| {
            let id = id.map_or_else(next_id, str::to_string);
            configuration.rows.push(row(id));
            Ok::<(), Infallible>(())
        })
        .expect("add a row")
}

fn ids(configurations: &[Configuration]) -> Vec<&str> {
    configurations.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn create_and_read_round_trip_with_generated_ids() {
    let (_dir, store) = open_temp();
    let created = create(&store, "1", "c", "");
    assert_eq!((created.id.as_str(), created.version), ("1", 1));
    let read = store
        .configuration("1", "c", "1")
        .expect("read")
        .expect("present");
    assert_eq!(read, created);
    assert_eq!(store.configuration("1", "c", "2").expect("read"), None);
    assert_eq!(store.configuration("1", "other", "1").expect("read"), None);
    assert_eq!(store.configurations("1", None).expect("list"), [created]);
}

#[test]
fn a_chosen_id_is_kept_and_a_taken_one_refused() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "2");
    let error = store
        .create_configuration(configuration("1", "c", "2"))
        .expect_err("taken");
    assert!(
        matches!(&error, StoreError::ConfigurationExists { config, .. } if config == "2"),
        "{error:?}"
    );
    assert!(error.to_string().contains("send none"), "{error}");
    // The sequence skips the taken "2".
    let first = create(&store, "1", "c", "");
    let second = create(&store, "1", "c", "");
    assert_eq!((first.id.as_str(), second.id.as_str()), ("1", "3"));
}

#[test]
fn listing_filters_by_branch_and_component_in_numeric_order() {
    let (_dir, store) = open_temp();
    for (branch, component, id) in [
        ("1", "b", "10"),
        ("1", "b", "9"),
        ("1", "a", "5"),
        ("2", "b", "1"),
        ("10", "b", "7"),
    ] {
        create(&store, branch, component, id);
    }
    assert_eq!(
        ids(&store.configurations("1", None).unwrap()),
        ["5", "9", "10"]
    );
    assert_eq!(
        ids(&store.configurations("1", Some("b")).unwrap()),
        ["9", "10"]
    );
    assert_eq!(
        ids(&store.configurations("1", Some("bb")).unwrap()),
        [] as [&str; 0]
    );
    assert_eq!(ids(&store.configurations("10", None).unwrap()), ["7"]);
    assert_eq!(
        ids(&store.configurations("3", None).unwrap()),
        [] as [&str; 0]
    );
}

#[test]
fn updates_bump_the_version_and_keep_the_key() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "7");
    let updated = store
        .update_configuration("1", "c", "7", |configuration, _| {
            configuration.name = "renamed".to_string();
            configuration.id = "8".to_string();
            configuration.branch_id = "2".to_string();
            configuration.version = 40;
            Ok::<(), Infallible>(())
        })
        .expect("update");
    assert_eq!((updated.name.as_str(), updated.version), ("renamed", 2));
    assert_eq!(
        (updated.branch_id.as_str(), updated.id.as_str()),
        ("1", "7")
    );
    assert_eq!(store.configuration("1", "c", "7").unwrap(), Some(updated));
    assert_eq!(store.configuration("2", "c", "8").unwrap(), None);
}

#[test]
fn a_rejected_update_writes_nothing_and_a_missing_one_is_named() {
    let (_dir, store) = open_temp();
    let created = create(&store, "1", "c", "7");
    let rejected = store.update_configuration("1", "c", "7", |configuration, next_id| {
        configuration.rows.push(row(next_id()));
        Err("no")
    });
    assert!(matches!(rejected, Err(UpdateError::Rejected("no"))));
    assert_eq!(store.configuration("1", "c", "7").unwrap(), Some(created));
    // The rejected update drew no id for good.
    assert_eq!(add_row(&store, "1", "7", None).rows[0].id, "1");

    let missing = store
        .update_configuration("1", "c", "8", |_, _| Ok::<(), Infallible>(()))
        .expect_err("missing");
    let message = missing.to_string();
    assert!(
        matches!(
            missing,
            UpdateError::Store(StoreError::ConfigurationNotFound { .. })
        ),
        "{message}"
    );
    for part in ["\"8\"", "\"c\"", "branch \"1\""] {
        assert!(message.contains(part), "{message} lacks {part}");
    }
}

#[test]
fn row_ids_are_distinct_and_never_repeat_a_taken_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    {
        let store = Store::open(&path).expect("open");
        create(&store, "1", "c", "");
        add_row(&store, "1", "1", Some("3"));
        add_row(&store, "1", "1", None);
        let updated = store
            .update_configuration("1", "c", "1", |configuration, next_id| {
                configuration.rows.push(row(next_id()));
                configuration.rows.push(row(next_id()));
                Ok::<(), Infallible>(())
            })
            .expect("two rows at once");
        let row_ids: Vec<&str> = updated.rows.iter().map(|r| r.id.as_str()).collect();
        // "1" is the configuration's id, "3" the chosen row id.
        assert_eq!(row_ids, ["3", "2", "4", "5"]);
        assert_eq!(updated.version, 4);
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(add_row(&store, "1", "1", None).rows[4].id, "6");
    assert_eq!(create(&store, "1", "c", "").id, "7");

    let duplicate = store
        .update_configuration("1", "c", "1", |configuration, _| {
            configuration.rows.push(row("3".to_string()));
            Ok::<(), Infallible>(())
        })
        .expect_err("a row id twice");
    assert!(
        matches!(&duplicate, UpdateError::Store(StoreError::RowExists { row, .. }) if row == "3"),
        "{duplicate:?}"
    );
    assert_eq!(
        store
            .configuration("1", "c", "1")
            .unwrap()
            .unwrap()
            .rows
            .len(),
        5
    );
}

#[test]
fn state_is_saved_without_a_new_version_and_nothing_else_changes() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "7");
    add_row(&store, "1", "7", Some("r"));
    add_row(&store, "1", "7", Some("s"));
    let saved = store
        .update_state("1", "c", "7", |configuration| {
            configuration.state = json!({"component": {"cursor": 5}});
            configuration.row_mut("s").expect("row s").state = json!({"component": {"row": 1}});
            // Everything but state is out of reach.
            configuration.name = "renamed".to_string();
            configuration.rows[0].version = 9;
            configuration.rows.remove(0);
            Ok::<(), Infallible>(())
        })
        .expect("save states");
    assert_eq!(saved.state, json!({"component": {"cursor": 5}}));
    assert_eq!(saved.rows[1].state, json!({"component": {"row": 1}}));
    assert_eq!(saved.rows[0].state, json!({}));
    assert_eq!((saved.name.as_str(), saved.version), ("c 7", 3));
    assert_eq!((saved.rows.len(), saved.rows[0].version), (2, 1));
    assert_eq!(store.configuration("1", "c", "7").unwrap(), Some(saved));

    let rejected = store.update_state("1", "c", "7", |configuration| {
        configuration.state = json!({"lost": true});
        Err("no")
    });
    assert!(matches!(rejected, Err(UpdateError::Rejected("no"))));
    let missing = store
        .update_state("1", "c", "8", |_| Ok::<(), Infallible>(()))
        .expect_err("no such configuration");
    assert!(missing.is_not_found(), "{missing:?}");
    assert_eq!(
        store.configuration("1", "c", "7").unwrap().unwrap().state,
        json!({"component": {"cursor": 5}})
    );
}

#[test]
fn the_same_id_in_two_branches_is_two_configurations() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "7");
    create(&store, "2", "c", "7");
    store
        .update_configuration("2", "c", "7", |configuration, _| {
            configuration.name = "dev only".to_string();
            Ok::<(), Infallible>(())
        })
        .expect("update dev");
    let main = store.configuration("1", "c", "7").unwrap().unwrap();
    let dev = store.configuration("2", "c", "7").unwrap().unwrap();
    assert_eq!((main.name.as_str(), main.version), ("c 7", 1));
    assert_eq!((dev.name.as_str(), dev.version), ("dev only", 2));
    assert!(store.delete_configuration("2", "c", "7").unwrap());
    assert!(!store.delete_configuration("2", "c", "7").unwrap());
    assert_eq!(store.configuration("1", "c", "7").unwrap(), Some(main));
}

#[test]
fn branch_ids_skip_the_default_branch_and_list_in_numeric_order() {
    let (_dir, store) = open_temp();
    let made: Vec<String> = (0..10)
        .map(|n| {
            store
                .create_branch("2", branch(&format!("b{n}")))
                .expect("create")
                .id
        })
        .collect();
    assert_eq!(made, ["1", "3", "4", "5", "6", "7", "8", "9", "10", "11"]);
    let listed: Vec<String> = store
        .branches()
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, made);
    let first = store.branch("1").unwrap().expect("stored");
    assert_eq!((first.name.as_str(), first.is_default), ("b0", false));
    assert_eq!(store.branch("2").unwrap(), None);
}

#[test]
fn deleting_a_branch_deletes_its_configurations_only() {
    let (_dir, store) = open_temp();
    let dev = store
        .create_branch("100", branch("dev"))
        .expect("branch")
        .id;
    let other = store
        .create_branch("100", branch("other"))
        .expect("branch")
        .id;
    for branch_id in ["100", dev.as_str(), other.as_str()] {
        create(&store, branch_id, "a", "x");
        create(&store, branch_id, "b", "y");
    }
    assert!(store.delete_branch(&dev).unwrap());
    assert!(!store.delete_branch(&dev).unwrap());
    assert_eq!(store.branch(&dev).unwrap(), None);
    assert!(store.configurations(&dev, None).unwrap().is_empty());
    assert_eq!(ids(&store.configurations("100", None).unwrap()), ["x", "y"]);
    assert_eq!(
        ids(&store.configurations(&other, None).unwrap()),
        ["x", "y"]
    );
}

#[test]
fn the_creation_time_is_kept_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobq.redb");
    let before = crate::model::now_micros();
    let created = Store::open(&path).unwrap().created_time().unwrap();
    assert!(created >= before, "{created} < {before}");
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(Store::open(&path).unwrap().created_time().unwrap(), created);
}

#[test]
fn a_configuration_from_a_newer_jobq_is_refused() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "7");
    let txn = store.db.for_read().unwrap().begin_write().expect("write");
    {
        let mut table = txn.open_table(CONFIGURATIONS).expect("table");
        let key = ("1", "c", "7");
        let mut record = table
            .get(key)
            .expect("get")
            .expect("present")
            .value()
            .to_vec();
        record[0] = codec::CONFIGURATION_VERSION + 1;
        table.insert(key, record.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
    let error = store
        .configuration("1", "c", "7")
        .expect_err("newer record");
    assert!(error.to_string().contains("too old"), "{error}");
}

#[test]
fn replaced_versions_are_kept_until_the_configuration_goes() {
    let (_dir, store) = open_temp();
    create(&store, "1", "c", "7");
    let rename = |name: &str| {
        store
            .update_configuration("1", "c", "7", |configuration, _| {
                configuration.name = name.to_string();
                Ok::<(), Infallible>(())
            })
            .expect("update")
    };
    rename("second");
    let third = rename("third");
    // State is not versioned: no version is kept for it.
    store
        .update_state("1", "c", "7", |configuration| {
            configuration.state = json!({"cursor": 1});
            Ok::<(), Infallible>(())
        })
        .expect("state");
    let name_at = |version| {
        store
            .configuration_version("1", "c", "7", version)
            .unwrap()
            .map(|c| (c.version, c.name))
    };
    assert_eq!(name_at(1), Some((1, "c 7".to_string())));
    assert_eq!(name_at(2), Some((2, "second".to_string())));
    assert_eq!(name_at(3), Some((3, third.name)));
    assert_eq!(name_at(4), None);
    assert_eq!(store.configuration_version("2", "c", "7", 1).unwrap(), None);
    assert!(store.delete_configuration("1", "c", "7").unwrap());
    assert_eq!(name_at(1), None);
    create(&store, "1", "c", "7");
    assert_eq!(
        name_at(2),
        None,
        "a new configuration of the same id has no old versions"
    );
}
