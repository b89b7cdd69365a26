//! `jobq run`'s creation of a job, and `jobq debug <job>`: a debug job's stage archives
//! downloaded and unpacked into a folder (`jobq run --debug` does both).

use std::fs;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli::client::{ApiClient, ClientError, Streaming};
use crate::cli::jobs::{get, refused, CommandError};
use crate::runner::container::ContainerSpec;

/// Why `jobq run` or `jobq debug` could not run a job or fetch and unpack its stage archives.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("job {job} has no debug archives: run it with mode \"debug\" (jobq run --debug)")]
    NoArchives { job: String },
    #[error("cannot save the download of {name} in {path}")]
    Download {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot unpack {name} into {path}")]
    Unpack {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} is not a valid zip archive")]
    Zip {
        name: String,
        source: zip::result::ZipError,
    },
}

impl From<ClientError> for RunError {
    fn from(error: ClientError) -> RunError {
        RunError::Command(error.into())
    }
}

/// One unpacked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `stage_0`, ..., `stage_output`.
    pub stage: String,
    /// The row it belongs to; empty for a job without rows.
    pub row: String,
    pub folder: PathBuf,
    /// The container the image after this stage ran in (the archive's comment); none for
    /// `stage_output`.
    pub container: Option<ContainerSpec>,
}

/// Downloads every debug archive of `job` and unpacks each into
/// `<out>/<stage>` (or `<out>/<row>/<stage>` for jobs with rows).
pub async fn fetch(client: &ApiClient, job: &str, out: &Path) -> Result<Vec<Unpacked>, RunError> {
    let listing = get(
        client,
        &format!("/v2/storage/files?tags[]=jobId:{job}&limit=1000"),
        "the file listing",
    )
    .await?;
    let files: Vec<Value> = listing
        .as_array()
        .into_iter()
        .flatten()
        .filter(|file| tags(file).iter().any(|tag| tag == "debug"))
        .cloned()
        .collect();
    if files.is_empty() {
        return Err(RunError::NoArchives {
            job: job.to_string(),
        });
    }
    let mut unpacked = Vec::new();
    for file in files {
        let name = file["name"].as_str().unwrap_or_default().to_string();
        let stage = name.trim_end_matches(".zip").to_string();
        let row = tags(&file)
            .iter()
            .find_map(|tag| tag.strip_prefix("rowId:").map(str::to_string))
            .unwrap_or_default();
        let folder = if row.is_empty() {
            out.join(&stage)
        } else {
            out.join(&row).join(&stage)
        };
        let mut download = client
            .get_streaming(&format!("/v2/storage/files/{}/download", file["id"]))
            .await?;
        if download.status != 200 {
            let download = download.collect().await?;
            return Err(refused(&format!("the download of {name}"), &download).into());
        }
        let archive = save(&name, &mut download, out).await?;
        let comment = unpack(&name, archive, &folder)?;
        let container = serde_json::from_slice(&comment).ok();
        unpacked.push(Unpacked {
            stage,
            row,
            folder,
            container,
        });
    }
    unpacked.sort_by(|a, b| (&a.row, &a.stage).cmp(&(&b.row, &b.stage)));
    Ok(unpacked)
}

/// Creates a job from `request` (a `POST /jobs` body); the new job.
pub async fn create(client: &ApiClient, request: &Value) -> Result<Value, RunError> {
    let created = client.post_json("/jobs", request).await?;
    if created.status != 201 {
        return Err(refused("the new job", &created).into());
    }
    Ok(created.json())
}

fn tags(file: &Value) -> Vec<String> {
    file["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tag| tag.as_str().map(str::to_string))
        .collect()
}

/// Writes a download to a temporary file in `out` as it arrives (an archive may be larger than
/// memory; `out` will hold it unpacked anyway) and returns the file, ready to read from its start.
/// The file has no name: it goes when it is closed, or when jobq ends, however it ends.
async fn save(
    name: &str,
    download: &mut Streaming,
    out: &Path,
) -> Result<BufReader<fs::File>, RunError> {
    let io_error = |source| RunError::Download {
        name: name.to_string(),
        path: out.to_path_buf(),
        source,
    };
    fs::create_dir_all(out).map_err(io_error)?;
    let mut file = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(out).map_err(io_error)?);
    while let Some(chunk) = download.chunk().await? {
        file.write_all(&chunk).map_err(io_error)?;
    }
    let mut file = file
        .into_inner()
        .map_err(|error| io_error(error.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    Ok(BufReader::new(file))
}

/// Unpacks a zip into `folder`; entries whose names would leave it are refused. The archive's
/// comment.
fn unpack(name: &str, archive: impl Read + Seek, folder: &Path) -> Result<Vec<u8>, RunError> {
    let zip_error = |source| RunError::Zip {
        name: name.to_string(),
        source,
    };
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        let name = name.to_string();
        move |source| RunError::Unpack { name, path, source }
    };
    let mut archive = zip::ZipArchive::new(archive).map_err(zip_error)?;
    fs::create_dir_all(folder).map_err(io_error(folder))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_error)?;
        let Some(relative) = entry.enclosed_name() else {
            continue;
        };
        let path = folder.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(io_error(&path))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let mut file = fs::File::create(&path).map_err(io_error(&path))?;
        std::io::copy(&mut entry, &mut file).map_err(io_error(&path))?;
    }
    Ok(archive.comment().to_vec())
}
