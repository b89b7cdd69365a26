//! Debug stage archives: a job's data folder zipped as it is before each image (`stage_<i>.zip`) and
//! after the last one (`stage_output.zip`), with every secret in `config.json` and the state
//! files replaced by `[hidden]`. Archives stream: memory stays flat whatever the folder's size.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use zip::write::SimpleFileOptions;
use zip::ZipWriter;

use crate::mapping::safety::{self, Entry};
use crate::secrets::{self, HIDDEN, SECRET_FILES};

/// Why an archive could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("cannot read {path} for the debug archive")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the debug archive {path}; check free disk space in data_dir")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the debug archive {path}")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
}

/// What went into an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archived {
    pub files: u64,
    pub folders: u64,
    /// Entries left out, with why: links are never followed, FIFOs never read.
    pub skipped: Vec<String>,
}

/// `stage_<index>.zip`, or `stage_output.zip` for the state after the last image.
pub fn stage_name(index: Option<usize>) -> String {
    match index {
        Some(index) => format!("stage_{index}.zip"),
        None => "stage_output.zip".to_string(),
    }
}

/// Zips everything under `data` (files, empty folders, temporary files) into `target`, with
/// `comment` as the archive's comment (a stage archive's container: see `jobq replay`).
pub fn archive(data: &Path, target: &Path, comment: &str) -> Result<Archived, DebugError> {
    let file = File::create(target).map_err(|source| DebugError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut archived = Archived::default();
    add_folder(&mut zip, data, data, &mut archived, target)?;
    zip.set_comment(comment).map_err(|source| DebugError::Zip {
        path: target.to_path_buf(),
        source,
    })?;
    let mut writer = zip.finish().map_err(|source| DebugError::Zip {
        path: target.to_path_buf(),
        source,
    })?;
    writer.flush().map_err(|source| DebugError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    Ok(archived)
}

fn add_folder(
    zip: &mut ZipWriter<BufWriter<File>>,
    root: &Path,
    folder: &Path,
    archived: &mut Archived,
    target: &Path,
) -> Result<(), DebugError> {
    let read_error = |source| DebugError::Read {
        path: folder.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(folder)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    let zip_error = |source| DebugError::Zip {
        path: target.to_path_buf(),
        source,
    };
    let options = SimpleFileOptions::default().large_file(true);
    for path in entries {
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let metadata = fs::symlink_metadata(&path).map_err(|source| DebugError::Read {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            zip.add_directory(format!("{relative}/"), options)
                .map_err(zip_error)?;
            archived.folders += 1;
            add_folder(zip, root, &path, archived, target)?;
            continue;
        }
        // A component may leave links, FIFOs or sparse files: never followed, never read.
        if let Err(reason) = safety::check_entry(root, &path).and_then(|entry| match entry {
            Entry::File => Ok(()),
            Entry::Folder => Err("not a file".to_string()),
        }) {
            archived.skipped.push(reason);
            continue;
        }
        zip.start_file(relative.as_str(), options)
            .map_err(zip_error)?;
        let write_error = |source| DebugError::Write {
            path: target.to_path_buf(),
            source,
        };
        if SECRET_FILES.contains(&relative.as_str()) {
            let text = fs::read(&path).map_err(|source| DebugError::Read {
                path: path.clone(),
                source,
            })?;
            let hidden = match serde_json::from_slice::<Value>(&text) {
                Ok(mut value) => {
                    secrets::hide(&mut value);
                    serde_json::to_vec_pretty(&value).unwrap_or_default()
                }
                // Not JSON: nothing can be told apart from a secret, so nothing is kept.
                Err(_) => HIDDEN.as_bytes().to_vec(),
            };
            zip.write_all(&hidden).map_err(write_error)?;
        } else {
            let file = File::open(&path).map_err(|source| DebugError::Read {
                path: path.clone(),
                source,
            })?;
            std::io::copy(&mut BufReader::with_capacity(1 << 20, file), zip)
                .map_err(write_error)?;
        }
        archived.files += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn entries(path: &Path) -> Vec<(String, String)> {
        let mut archive = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut entry = archive.by_index(i).unwrap();
                let mut text = String::new();
                if entry.is_file() {
                    entry.read_to_string(&mut text).unwrap();
                }
                (entry.name().unwrap().to_string(), text)
            })
            .collect()
    }

    #[test]
    fn everything_goes_in_with_secrets_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("in/tables")).unwrap();
        fs::create_dir_all(data.join("out/files/empty")).unwrap();
        fs::write(
            data.join("config.json"),
            json!({"parameters": {"#password": "s3cret", "user": "me", "list": [{"#token": "t0ken"}]}}).to_string(),
        )
        .unwrap();
        fs::write(
            data.join("in/state.json"),
            json!({"#cursor": "c1", "n": 1}).to_string(),
        )
        .unwrap();
        fs::write(data.join("in/tables/t.csv"), "a\n1\n").unwrap();
        fs::write(data.join("out/files/.tmp-file"), "scratch").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("out/files/link")).unwrap();
        let target = dir.path().join("stage_0.zip");
        let archived = archive(&data, &target, "a comment").unwrap();
        assert_eq!(archived.files, 4);
        assert_eq!(archived.skipped.len(), 1);
        assert!(archived.skipped[0].contains("out/files/link"));

        let entries = entries(&target);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "config.json",
                "in/",
                "in/state.json",
                "in/tables/",
                "in/tables/t.csv",
                "out/",
                "out/files/",
                "out/files/.tmp-file",
                "out/files/empty/",
            ]
        );
        let config: Value = serde_json::from_str(&entries[0].1).unwrap();
        assert_eq!(config["parameters"]["#password"], HIDDEN);
        assert_eq!(config["parameters"]["user"], "me");
        assert_eq!(config["parameters"]["list"][0]["#token"], HIDDEN);
        let state: Value = serde_json::from_str(&entries[2].1).unwrap();
        assert_eq!(state, json!({"#cursor": HIDDEN, "n": 1}));
        assert_eq!(entries[4].1, "a\n1\n");
        let raw = fs::read(&target).unwrap();
        for secret in ["s3cret", "t0ken", "c1\""] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} leaked"
            );
        }
    }

    #[test]
    fn stage_names() {
        assert_eq!(stage_name(Some(2)), "stage_2.zip");
        assert_eq!(stage_name(None), "stage_output.zip");
    }
}
