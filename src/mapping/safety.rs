//! Nothing a component writes may make jobq read or write outside the job folder: every path
//! from `out/`, a manifest or a mapping is checked here before it is used.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

/// What a checked entry of `out/tables` or `out/files` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    File,
    /// A sliced table: a folder of plain files.
    Folder,
}

/// A file whose allocated blocks cover less than this share of its length is refused as sparse.
const SPARSE_RATIO: u64 = 2;
/// Files up to this size are not judged sparse (small files may share blocks, or have none).
const SPARSE_MIN_BYTES: u64 = 1 << 20;

/// Checks one entry written by the component: a regular file or a folder of regular files;
/// never a symbolic link, FIFO, socket or device, never a sparse file pretending to be large.
/// The error names the path relative to `root` (the job's data folder).
pub fn check_entry(root: &Path, path: &Path) -> Result<Entry, String> {
    let shown = shown(root, path);
    let metadata =
        fs::symlink_metadata(path).map_err(|error| format!("Cannot read \"{shown}\": {error}"))?;
    let kind = metadata.file_type();
    if kind.is_symlink() {
        return Err(format!(
            "\"{shown}\" is a symbolic link; a component may only write plain files and folders."
        ));
    }
    if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device() {
        return Err(format!(
            "\"{shown}\" is not a plain file (a FIFO, socket or device); a component may only write plain files and folders."
        ));
    }
    if kind.is_dir() {
        let entries =
            fs::read_dir(path).map_err(|error| format!("Cannot read \"{shown}\": {error}"))?;
        for entry in entries {
            let entry = entry.map_err(|error| format!("Cannot read \"{shown}\": {error}"))?;
            if check_entry(root, &entry.path())? == Entry::Folder {
                return Err(format!(
                    "\"{}\" is a folder inside a sliced table; slices must be plain files.",
                    self::shown(root, &entry.path())
                ));
            }
        }
        return Ok(Entry::Folder);
    }
    let length = metadata.len();
    let allocated = metadata.blocks() * 512;
    if length > SPARSE_MIN_BYTES && allocated * SPARSE_RATIO < length {
        return Err(format!(
            "\"{shown}\" is a sparse file ({length} bytes long, {allocated} bytes stored); write the data itself."
        ));
    }
    Ok(Entry::File)
}

/// A name from a manifest or a mapping that becomes a path under a folder: a single plain file
/// name, or a relative path without `..`; never absolute.
pub fn check_relative(what: &str, name: &str) -> Result<(), String> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !plain || name.contains('\0') {
        return Err(format!(
            "The {what} \"{name}\" is not a plain relative name: no \"..\", no absolute path."
        ));
    }
    Ok(())
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_and_folders_pass() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("t.csv"), "a\n1\n").unwrap();
        fs::create_dir(dir.path().join("sliced")).unwrap();
        fs::write(dir.path().join("sliced/part1"), "1\n").unwrap();
        assert_eq!(
            check_entry(dir.path(), &dir.path().join("t.csv")),
            Ok(Entry::File)
        );
        assert_eq!(
            check_entry(dir.path(), &dir.path().join("sliced")),
            Ok(Entry::Folder)
        );
    }

    #[test]
    fn links_fifos_and_nested_folders_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.csv")).unwrap();
        let error = check_entry(dir.path(), &dir.path().join("link.csv")).unwrap_err();
        assert!(error.contains("\"link.csv\" is a symbolic link"), "{error}");

        let fifo = dir.path().join("pipe.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = check_entry(dir.path(), &fifo).unwrap_err();
        assert!(
            error.contains("\"pipe.csv\" is not a plain file"),
            "{error}"
        );

        fs::create_dir_all(dir.path().join("sliced/deeper")).unwrap();
        let error = check_entry(dir.path(), &dir.path().join("sliced")).unwrap_err();
        assert!(error.contains("sliced/deeper"), "{error}");

        fs::create_dir_all(dir.path().join("s2")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("s2/part")).unwrap();
        let error = check_entry(dir.path(), &dir.path().join("s2")).unwrap_err();
        assert!(error.contains("s2/part"), "{error}");
    }

    #[test]
    fn a_huge_sparse_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.csv");
        let file = fs::File::create(&path).unwrap();
        file.set_len(10 * 1024 * 1024 * 1024).unwrap();
        let error = check_entry(dir.path(), &path).unwrap_err();
        assert!(error.contains("\"sparse.csv\" is a sparse file"), "{error}");
    }

    #[test]
    fn names_with_parents_or_roots_are_refused() {
        assert!(check_relative("destination", "table.csv").is_ok());
        assert!(check_relative("destination", "folder/table.csv").is_ok());
        for bad in ["../x.csv", "/etc/passwd", "a/../../b", "", "./x"] {
            let error = check_relative("destination", bad).unwrap_err();
            assert!(
                error.contains("not a plain relative name"),
                "{bad}: {error}"
            );
        }
    }
}
