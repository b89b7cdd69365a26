use std::path::Path;

use super::*;
use crate::store::StoreError;

fn open() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let store = Arc::new(Store::open(&dir.path().join("jobq.redb")).expect("a store"));
    let storage = Storage::open(store, dir.path()).expect("storage opens");
    (dir, storage)
}

fn bytes(csv: &str) -> LoadSource {
    LoadSource::Bytes(Bytes::from(csv.to_string()))
}

fn full(id: &str, csv: &str) -> LoadRequest {
    LoadRequest::new(id, bytes(csv))
}

fn incremental(id: &str, csv: &str) -> LoadRequest {
    LoadRequest {
        incremental: true,
        ..full(id, csv)
    }
}

fn with_key(request: LoadRequest, key: &[&str]) -> LoadRequest {
    LoadRequest {
        primary_key: key.iter().map(|c| c.to_string()).collect(),
        ..request
    }
}

fn export(storage: &Storage, id: &str, export: &Export) -> (String, ExportSummary) {
    let mut out = Vec::new();
    let summary = storage.export(id, export, &mut out).expect("export");
    (String::from_utf8(out).expect("UTF-8"), summary)
}

fn data(storage: &Storage, id: &str) -> String {
    export(storage, id, &Export::default()).0
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn full_load_makes_bucket_and_table_then_replaces_rows() {
    let (dir, storage) = open();
    let table = storage
        .load(&full(
            "in.c-main.people",
            "id,name\n1,Ann\n2,\"Bob, Jr.\"\n",
        ))
        .expect("loads");
    assert_eq!(table.id, "in.c-main.people");
    assert_eq!((table.bucket_id(), table.name()), ("in.c-main", "people"));
    assert_eq!(table.columns, strings(&["id", "name"]));
    assert_eq!(table.rows_count, 2);
    assert_eq!(table.data_version, 1);
    let stored = "\"id\",\"name\"\n\"1\",\"Ann\"\n\"2\",\"Bob, Jr.\"\n";
    assert_eq!(table.data_size_bytes, stored.len() as u64);
    assert_eq!(data(&storage, "in.c-main.people"), stored);

    let buckets = storage.buckets().expect("buckets");
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].id, "in.c-main");
    assert_eq!(
        (
            buckets[0].stage(),
            buckets[0].name(),
            buckets[0].display_name()
        ),
        ("in", "c-main", "main")
    );
    assert_eq!(
        storage.table("in.c-main.people").expect("read"),
        Some(table.clone())
    );

    let replaced = storage
        .load(&full("in.c-main.people", "name,id\nCid,3\n"))
        .expect("loads");
    assert_eq!(replaced.rows_count, 1);
    assert_eq!(replaced.data_version, 2);
    assert_eq!(replaced.created, table.created);
    assert!(replaced.last_import >= table.last_import);
    assert_eq!(
        data(&storage, "in.c-main.people"),
        "\"id\",\"name\"\n\"3\",\"Cid\"\n"
    );
    // The old version is gone once the new one is committed.
    let folder = dir.path().join("storage/tables/in.c-main.people");
    assert_eq!(names(&folder), ["2.csv"]);
}

#[test]
fn incremental_load_appends_and_adds_new_columns() {
    let (_dir, storage) = open();
    storage
        .load(&full("out.c-x.t", "a,b\n1,2\n"))
        .expect("loads");
    let table = storage
        .load(&incremental("out.c-x.t", "b,a,c\n4,3,5\n"))
        .expect("loads");
    assert_eq!(table.columns, strings(&["a", "b", "c"]));
    assert_eq!(table.rows_count, 2);
    assert_eq!(
        data(&storage, "out.c-x.t"),
        "\"a\",\"b\",\"c\"\n\"1\",\"2\",\"\"\n\"3\",\"4\",\"5\"\n"
    );
}

#[test]
fn primary_key_upserts_and_deduplicates() {
    let (_dir, storage) = open();
    let request = with_key(full("in.c-c.t", "id,v\n1,a\n2,b\n2,b2\n"), &["id"]);
    let table = storage.load(&request).expect("loads");
    assert_eq!(table.primary_key, strings(&["id"]));
    assert_eq!(table.rows_count, 2);
    assert_eq!(
        data(&storage, "in.c-c.t"),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b2\"\n"
    );

    // No key given: the table's applies.
    let table = storage
        .load(&incremental("in.c-c.t", "id,v\n2,new\n3,c\n"))
        .expect("loads");
    assert_eq!(table.rows_count, 3);
    assert_eq!(
        data(&storage, "in.c-c.t"),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"new\"\n\"3\",\"c\"\n"
    );

    let error = storage
        .load(&with_key(incremental("in.c-c.t", "id,v\n4,d\n"), &["v"]))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Table \"in.c-c.t\" has the primary key [id], but the load gives [v]: load with the \
         table's primary key (or none), or delete the table first"
    );
    let error = storage
        .load(&with_key(full("in.c-c.other", "id\n1\n"), &["key"]))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "The primary key of table \"in.c-c.other\" names column \"key\", which the table does \
         not have; its columns are id"
    );
    assert_eq!(storage.table("in.c-c.other").expect("read"), None);
}

#[test]
fn a_missing_column_is_an_error_naming_it_and_changes_nothing() {
    let (_dir, storage) = open();
    storage
        .load(&full("in.c-m.t", "id,name,age\n1,a,3\n"))
        .expect("loads");
    let before = storage.table("in.c-m.t").expect("read");
    for request in [
        incremental("in.c-m.t", "id\n2\n"),
        full("in.c-m.t", "id\n2\n"),
    ] {
        let error = storage.load(&request).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Some columns are missing in the data of table \"in.c-m.t\". Missing columns: \
             name,age. Expected columns: id,name,age. Check the header and the delimiter of the \
             data."
        );
    }
    assert_eq!(storage.table("in.c-m.t").expect("read"), before);
    assert_eq!(
        data(&storage, "in.c-m.t"),
        "\"id\",\"name\",\"age\"\n\"1\",\"a\",\"3\"\n"
    );
}

#[test]
fn delete_where_removes_rows_before_an_incremental_load() {
    let (_dir, storage) = open();
    let rows = "id,day\n1,mon\n2,tue\n3,wed\n";
    for (operator, kept) in [
        (Operator::Eq, "\"3\",\"wed\"\n"),
        (Operator::Ne, "\"1\",\"mon\"\n\"2\",\"tue\"\n"),
    ] {
        storage.load(&full("in.c-d.t", rows)).expect("loads");
        let request = LoadRequest {
            delete_where: Some(RowFilter {
                column: "day".to_string(),
                values: strings(&["mon", "tue"]),
                operator,
            }),
            ..incremental("in.c-d.t", "id,day\n9,sun\n")
        };
        storage.load(&request).expect("loads");
        assert_eq!(
            data(&storage, "in.c-d.t"),
            format!("\"id\",\"day\"\n{kept}\"9\",\"sun\"\n"),
            "{operator:?}"
        );
    }
    let request = LoadRequest {
        delete_where: Some(RowFilter {
            column: "month".to_string(),
            values: strings(&["x"]),
            operator: Operator::Eq,
        }),
        ..incremental("in.c-d.t", "id,day\n9,sun\n")
    };
    let error = storage.load(&request).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("The delete_where of table \"in.c-d.t\" names column \"month\""),
        "{error}"
    );
}

#[test]
fn sliced_tables_and_headless_files_take_the_given_columns() {
    let (dir, storage) = open();
    let slices = dir.path().join("sliced");
    std::fs::create_dir(&slices).expect("folder");
    std::fs::write(slices.join("part1"), "1;\"a;b\"\n2;c\n").expect("slice");
    std::fs::write(slices.join("part0"), "0;z\n").expect("slice");
    std::fs::write(slices.join(".hidden"), "not;data;at all\n").expect("hidden");
    std::fs::write(slices.join("part2"), "").expect("empty slice");
    let request = LoadRequest {
        columns: Some(strings(&["id", "v"])),
        delimiter: ';',
        ..LoadRequest::new("in.c-s.t", LoadSource::Path(slices.clone()))
    };
    let table = storage.load(&request).expect("loads");
    assert_eq!(table.rows_count, 3);
    assert_eq!(
        data(&storage, "in.c-s.t"),
        "\"id\",\"v\"\n\"0\",\"z\"\n\"1\",\"a;b\"\n\"2\",\"c\"\n"
    );

    let error = storage
        .load(&LoadRequest::new(
            "in.c-s.t",
            LoadSource::Path(slices.clone()),
        ))
        .unwrap_err();
    assert!(matches!(error, StorageError::NoColumns { .. }), "{error}");

    let file = dir.path().join("headless.csv");
    std::fs::write(&file, "7\t'x\ty'\n").expect("file");
    let request = LoadRequest {
        columns: Some(strings(&["id", "v"])),
        delimiter: '\t',
        enclosure: Some('\''),
        ..LoadRequest::new("in.c-s.h", LoadSource::Path(file))
    };
    storage.load(&request).expect("loads");
    assert_eq!(data(&storage, "in.c-s.h"), "\"id\",\"v\"\n\"7\",\"x\ty\"\n");

    let request = LoadRequest {
        enclosure: None,
        ..full("in.c-s.raw", "a,b\n\"q,x\n")
    };
    storage.load(&request).expect("loads");
    assert_eq!(
        data(&storage, "in.c-s.raw"),
        "\"a\",\"b\"\n\"\"\"q\",\"x\"\n"
    );
}

#[test]
fn a_failed_load_keeps_the_old_data_and_leaves_no_file() {
    let (dir, storage) = open();
    storage
        .load(&full("in.c-f.t", "id,v\n1,a\n"))
        .expect("loads");
    let before = storage.table("in.c-f.t").expect("read");
    let error = storage
        .load(&incremental("in.c-f.t", "id,v\n2,b\n3,c,extra\n4,d\n"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the uploaded data is not valid CSV: line 3 has 3 values, but there are 2 columns (id,v)"
    );
    let invalid = LoadSource::Bytes(Bytes::from_static(b"id,v\n2,\xff\n"));
    let error = storage
        .load(&LoadRequest::new("in.c-f.t", invalid))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the uploaded data is not valid CSV: line 2: invalid utf-8"),
        "{error}"
    );
    assert_eq!(storage.table("in.c-f.t").expect("read"), before);

    let before = storage.table("in.c-f.t").expect("read");
    let contents = data(&storage, "in.c-f.t");
    for bad in [
        "",
        "id,v,id\n1,2,3\n",
        "id,\"first name\"\n1,a\n",
        "id,_v\n1,a\n",
    ] {
        assert!(storage.load(&full("in.c-f.t", bad)).is_err(), "{bad:?}");
    }
    assert_eq!(storage.table("in.c-f.t").expect("read"), before);
    assert_eq!(data(&storage, "in.c-f.t"), contents);
    let folder = dir.path().join("storage/tables/in.c-f.t");
    assert_eq!(
        names(&folder),
        [format!("{}.csv", before.unwrap().data_version)]
    );
}

#[test]
fn export_picks_columns_filters_and_limits() {
    let (_dir, storage) = open();
    storage
        .load(&full("in.c-e.t", "id,kind,v\n1,a,x\n2,b,y\n3,a,z\n4,a,w\n"))
        .expect("loads");
    let filter = RowFilter {
        column: "kind".to_string(),
        values: strings(&["a"]),
        operator: Operator::Eq,
    };
    let (text, summary) = export(
        &storage,
        "in.c-e.t",
        &Export {
            columns: strings(&["v", "id"]),
            filter: Some(filter.clone()),
            limit: Some(2),
            changed_since: None,
        },
    );
    assert_eq!(text, "\"v\",\"id\"\n\"x\",\"1\"\n\"z\",\"3\"\n");
    assert_eq!(
        summary,
        ExportSummary {
            rows: 2,
            bytes: text.len() as u64
        }
    );

    let ne = RowFilter {
        operator: Operator::Ne,
        ..filter
    };
    let (text, _) = export(
        &storage,
        "in.c-e.t",
        &Export {
            filter: Some(ne),
            ..Export::default()
        },
    );
    assert_eq!(text, "\"id\",\"kind\",\"v\"\n\"2\",\"b\",\"y\"\n");

    let future = now_micros() + 60_000_000;
    let (text, summary) = export(
        &storage,
        "in.c-e.t",
        &Export {
            changed_since: Some(future),
            ..Export::default()
        },
    );
    assert_eq!(
        (text.as_str(), summary.rows),
        ("\"id\",\"kind\",\"v\"\n", 0)
    );
    let (_, summary) = export(
        &storage,
        "in.c-e.t",
        &Export {
            changed_since: Some(0),
            ..Export::default()
        },
    );
    assert_eq!(summary.rows, 4);

    let error = storage
        .export(
            "in.c-e.t",
            &Export {
                columns: strings(&["nope"]),
                ..Export::default()
            },
            Vec::new(),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "The export of table \"in.c-e.t\" names column \"nope\", which the table does not have; \
         its columns are id,kind,v"
    );
    let error = storage
        .export("in.c-e.missing", &Export::default(), Vec::new())
        .unwrap_err();
    assert_eq!(error.to_string(), "Table \"in.c-e.missing\" not found");
}

#[test]
fn ids_cannot_leave_the_storage_folder() {
    let (dir, storage) = open();
    for id in [
        "../x",
        "in.c-a/../../x.t",
        "in.c-../x",
        "in.c-a..t",
        "in.c-a.b.c",
        "in.c-a.",
        "sys.c-a.t",
        "in.a.t",
        "in.c-a.t/x",
        "",
    ] {
        let error = storage.load(&full(id, "a\n1\n")).unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidTableId { .. }),
            "{id}: {error}"
        );
        assert!(storage.table(id).is_err(), "{id}");
        assert!(storage.delete_table(id).is_err(), "{id}");
    }
    for id in ["..", "in.c-", "in.c-a/b", "in.c-a.b", "out.x"] {
        assert!(
            matches!(
                storage.delete_bucket(id, true),
                Err(StorageError::InvalidBucketId { .. })
            ),
            "{id}"
        );
    }
    let long = format!("in.c-a.{}", "t".repeat(97));
    assert!(storage.load(&full(&long, "a\n1\n")).is_err());
    assert_eq!(
        names(&dir.path().join("storage/tables")),
        Vec::<String>::new()
    );

    let file = storage
        .upload_file("../../etc/pass wd", &[], &b"x"[..], 1)
        .expect("uploads");
    assert_eq!(file.name, ".._.._etc_pass_wd");
    assert_eq!(
        storage.file_path(&file),
        dir.path().join(format!("storage/files/{}", file.id))
    );
}

#[test]
fn tables_and_buckets_are_deleted_with_their_data() {
    let (dir, storage) = open();
    storage.load(&full("in.c-del.a", "x\n1\n")).expect("loads");
    storage.load(&full("in.c-del.b", "x\n1\n")).expect("loads");
    storage
        .load(&full("in.c-other.c", "x\n1\n"))
        .expect("loads");
    assert_eq!(storage.tables(Some("in.c-del")).expect("tables").len(), 2);
    assert_eq!(storage.tables(None).expect("tables").len(), 3);

    assert!(storage.delete_table("in.c-del.a").expect("deletes"));
    assert!(!storage.delete_table("in.c-del.a").expect("deletes"));
    assert!(!dir.path().join("storage/tables/in.c-del.a").exists());

    let error = storage.delete_bucket("in.c-del", false).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::Store(StoreError::BucketNotEmpty { tables: 1, .. })
        ),
        "{error}"
    );
    assert!(storage.table("in.c-del.b").expect("read").is_some());
    assert!(storage.delete_bucket("in.c-del", true).expect("deletes"));
    assert!(!storage.delete_bucket("in.c-del", true).expect("deletes"));
    assert!(!dir.path().join("storage/tables/in.c-del.b").exists());
    assert_eq!(storage.tables(None).expect("tables").len(), 1);
    let ids: Vec<String> = storage
        .buckets()
        .expect("buckets")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, ["in.c-other"]);
}

#[test]
fn files_keep_content_and_tags() {
    let (_dir, storage) = open();
    let tags = |t: &[&str]| strings(t);
    let first = storage
        .upload_file("a.txt", &tags(&["x", "y", "x", ""]), &b"alpha"[..], 5)
        .expect("uploads");
    let second = storage
        .upload_file("b.bin", &tags(&["x"]), &b"beta!"[..], 5)
        .expect("uploads");
    assert_eq!(first.tags, tags(&["x", "y"]));
    assert_eq!((first.size_bytes, second.id), (5, first.id + 1));
    assert_eq!(
        std::fs::read(storage.file_path(&first)).expect("content"),
        b"alpha"
    );

    let ids = |files: Vec<StoredFile>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(
        ids(storage.files(&[]).expect("files")),
        [second.id, first.id]
    );
    assert_eq!(
        ids(storage.files(&tags(&["x"])).expect("files")),
        [second.id, first.id]
    );
    assert_eq!(
        ids(storage.files(&tags(&["x", "y"])).expect("files")),
        [first.id]
    );
    assert_eq!(
        ids(storage.files(&tags(&["z"])).expect("files")),
        Vec::<u64>::new()
    );
    assert_eq!(storage.file(first.id).expect("read"), Some(first));
    assert_eq!(storage.file(999).expect("read"), None);
}

#[test]
fn files_are_deleted_with_their_content() {
    let (_dir, storage) = open();
    let upload = |name: &str| {
        storage
            .upload_file(name, &strings(&["debug"]), &b"zip"[..], 3)
            .expect("uploads")
    };
    let (first, second, third) = (upload("a"), upload("b"), upload("c"));
    let deleted = storage
        .delete_files(&[third.id, 999, first.id])
        .expect("deletes");
    assert_eq!(deleted, [third.clone(), first.clone()]);
    for gone in [&first, &third] {
        assert_eq!(storage.file(gone.id).expect("read"), None);
        assert!(!storage.file_path(gone).exists());
    }
    assert!(storage.file_path(&second).exists());
    assert_eq!(storage.files(&[]).expect("files"), [second]);
    assert!(storage.delete_files(&[first.id]).expect("again").is_empty());
}

#[test]
fn opening_removes_what_an_interrupted_load_or_upload_left() {
    let (dir, storage) = open();
    storage.load(&full("in.c-o.t", "x\n1\n")).expect("loads");
    storage.load(&full("in.c-o.t", "x\n2\n")).expect("loads");
    let file = storage
        .upload_file("f", &[], &b"keep"[..], 4)
        .expect("uploads");
    let root = dir.path().join("storage");
    for leftover in [
        "tables/in.c-o.t/1.csv",
        "tables/in.c-o.t/.tmpXYZ",
        "files/.tmpABC",
        "files/77",
    ] {
        std::fs::write(root.join(leftover), "left over").expect("write");
    }
    std::fs::create_dir_all(root.join("tables/in.c-gone.t")).expect("folder");
    std::fs::write(root.join("tables/in.c-gone.t/1.csv"), "x\n").expect("write");

    let store = Arc::clone(&storage.store);
    drop(storage);
    let storage = Storage::open(store, dir.path()).expect("reopens");
    assert_eq!(names(&root.join("tables")), ["in.c-o.t"]);
    assert_eq!(names(&root.join("tables/in.c-o.t")), ["2.csv"]);
    assert_eq!(names(&root.join("files")), [file.id.to_string()]);
    assert_eq!(data(&storage, "in.c-o.t"), "\"x\"\n\"2\"\n");
}

#[test]
fn dialects_and_headers_are_checked() {
    let (_dir, storage) = open();
    for (delimiter, enclosure) in [('é', Some('"')), (',', Some(',')), ('\n', None)] {
        let request = LoadRequest {
            delimiter,
            enclosure,
            ..full("in.c-h.t", "a\n1\n")
        };
        assert!(
            matches!(storage.load(&request), Err(StorageError::Dialect { .. })),
            "{delimiter:?}"
        );
    }
    let table = storage
        .load(&full("in.c-h.t", "\u{feff}a,b\n1,2\n"))
        .expect("loads");
    assert_eq!(table.columns, strings(&["a", "b"]));
    let error = storage.load(&full("in.c-h.t", "a,a\n1,2\n")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Column \"a\" is given twice in the uploaded data; every column needs its own name"
    );
    let error = storage
        .load(&full("in.c-h.t", "a,first name\n1,2\n"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Invalid column name \"first name\" in the uploaded data: use letters, digits and '_' \
         (not first), at most 64 characters"
    );
}

#[test]
fn an_upload_or_load_that_would_fill_the_disk_is_refused_before_writing() {
    let (dir, storage) = open();
    let free = crate::disk::space(dir.path()).expect("statvfs").free;
    let error = storage
        .upload_file("huge.bin", &[], &b"x"[..], free)
        .expect_err("does not fit");
    let StorageError::NoSpace { what, needed, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!((what.as_str(), *needed), ("the file \"huge.bin\"", free));
    let message = error.to_string();
    assert!(
        message.starts_with(
            "Not enough free space in data_dir for the file \"huge.bin\": it needs about "
        ),
        "{message}"
    );
    assert!(
        message.ends_with(
            "(jobq keeps 16.0 MiB free for its store). Free some space, or make the data smaller."
        ),
        "{message}"
    );
    assert!(storage.files(&[]).expect("files").is_empty());
    let files = std::fs::read_dir(dir.path().join("storage/files")).expect("files dir");
    assert_eq!(files.count(), 0, "nothing was written");

    // A table's kept rows count too: an incremental load needs room for both.
    storage.load(&full("in.c-o.t", "x\n1\n")).expect("loads");
    let table = storage.table("in.c-o.t").unwrap().unwrap();
    let mut request = full("in.c-o.t", "x\n2\n");
    request.incremental = true;
    storage.load(&request).expect("small enough");
    assert_eq!(
        storage.table("in.c-o.t").unwrap().unwrap().rows_count,
        table.rows_count + 1
    );
}
