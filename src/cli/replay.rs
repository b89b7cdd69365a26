//! A debug job's stages for a component developer: `jobq replay` turns a stage archive into the
//! exact `docker run` the job used (and may run it), `jobq debug --datadirtest` turns a debug
//! run into a keboola/datadirtest functional test (`source/data`, `expected/data/out`,
//! `expected-code`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cli::client::ApiClient;
use crate::cli::jobs::get;
use crate::cli::run::{self, RunError, Unpacked};
use crate::runner::workspace::hand_over;

/// Why a stage cannot be replayed or exported.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(
        "job {job} has no debug archive {stage}{row}; `jobq debug {job}` lists the stages it has"
    )]
    NoStage {
        job: String,
        stage: String,
        row: String,
    },
    #[error("job {job} ran rows {rows}; choose one with --row")]
    WhichRow { job: String, rows: String },
    #[error(
        "the archive {stage} of job {job} does not say which container ran (a job archived by an \
         older jobq); run the job again in debug mode"
    )]
    NoContainer { job: String, stage: String },
    #[error(
        "cannot hand {path} to the container's user {user}; run jobq replay as root or as that user"
    )]
    HandOver {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A stage unpacked, with the `docker run` arguments that run its image on it again.
#[derive(Debug)]
pub struct Replay {
    /// The unpacked stage, mounted at `/data`.
    pub folder: PathBuf,
    /// The arguments of `docker` (`run ...`).
    pub args: Vec<String>,
}

/// Unpacks stage `stage` (of `row`, for a job with rows) of debug job `job` under `out` and
/// gives the `docker run` of the image that ran on it: its image, user, memory, network,
/// environment, with the unpacked folder at `/data` and an empty `tmp` beside it at `/tmp`.
pub async fn replay(
    client: &ApiClient,
    job: &str,
    stage: usize,
    row: Option<&str>,
    out: &Path,
) -> Result<Replay, ReplayError> {
    let unpacked = run::fetch(client, job, out).await?;
    let name = format!("stage_{stage}");
    let found = one_row(job, row, &unpacked)?;
    let Some(found) = unpacked
        .into_iter()
        .find(|u| u.stage == name && u.row == found)
    else {
        return Err(ReplayError::NoStage {
            job: job.to_string(),
            stage: name,
            row: row.map(|row| format!(" of row {row}")).unwrap_or_default(),
        });
    };
    let container = found.container.ok_or_else(|| ReplayError::NoContainer {
        job: job.to_string(),
        stage: name.clone(),
    })?;
    let folder = std::path::absolute(&found.folder).unwrap_or(found.folder);
    let tmp = folder.with_file_name(format!("{name}.tmp"));
    fs::create_dir_all(&tmp).map_err(|source| ReplayError::Write {
        path: tmp.clone(),
        source,
    })?;
    // The container's user must be able to write the folders, as in the job.
    let owner = container
        .user
        .split_once(':')
        .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)));
    for handed in [&folder, &tmp] {
        hand_over(handed, owner).map_err(|source| ReplayError::HandOver {
            path: handed.clone(),
            user: container.user.clone(),
            source,
        })?;
    }
    let args = container.docker_run_args(&folder, &tmp);
    Ok(Replay { folder, args })
}

/// Writes debug job `job` as keboola/datadirtest tests into `dir` (one test per row, in
/// `dir/<row>`, for a job with rows): `source/data` is stage 0 (what the first image got),
/// `expected/data/out` the `out/` of `stage_output` (what the row left), `expected-code` the
/// exit code its end means (0 success, 1 user error, 2 application error). The tests' folders.
pub async fn datadirtest(
    client: &ApiClient,
    job: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>, ReplayError> {
    let finished = get(client, &format!("/jobs/{job}"), "the job")
        .await
        .map_err(RunError::from)?;
    let code = match (
        finished["status"].as_str(),
        finished["result"]["error"]["type"].as_str(),
    ) {
        (Some("success"), _) => 0,
        (_, Some("user")) => 1,
        _ => 2,
    };
    let download = dir.join(".jobq-download");
    let unpacked = run::fetch(client, job, &download).await?;
    let mut tests = Vec::new();
    let mut rows: Vec<&str> = unpacked.iter().map(|u| u.row.as_str()).collect();
    rows.dedup();
    for row in rows {
        let stage = |name: &str| {
            unpacked
                .iter()
                .find(|u| u.row == row && u.stage == name)
                .ok_or_else(|| ReplayError::NoStage {
                    job: job.to_string(),
                    stage: name.to_string(),
                    row: if row.is_empty() {
                        String::new()
                    } else {
                        format!(" of row {row}")
                    },
                })
        };
        let test = if row.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(row)
        };
        let moves = [
            (stage("stage_0")?.folder.clone(), test.join("source/data")),
            (
                stage("stage_output")?.folder.join("out"),
                test.join("expected/data/out"),
            ),
        ];
        for (from, to) in moves {
            place(&from, &to)?;
        }
        let code_file = test.join("expected-code");
        fs::write(&code_file, code.to_string()).map_err(|source| ReplayError::Write {
            path: code_file,
            source,
        })?;
        tests.push(test);
    }
    let _ = fs::remove_dir_all(&download);
    Ok(tests)
}

/// The row to replay: `row`, or the job's only one.
fn one_row(job: &str, row: Option<&str>, unpacked: &[Unpacked]) -> Result<String, ReplayError> {
    if let Some(row) = row {
        return Ok(row.to_string());
    }
    let mut rows: Vec<&str> = unpacked.iter().map(|u| u.row.as_str()).collect();
    rows.dedup();
    match rows.as_slice() {
        [] => Ok(String::new()),
        [one] => Ok(one.to_string()),
        many => Err(ReplayError::WhichRow {
            job: job.to_string(),
            rows: many.join(", "),
        }),
    }
}

/// Moves the unpacked `from` to `to` (replacing what an earlier export left there).
fn place(from: &Path, to: &Path) -> Result<(), ReplayError> {
    let failed = |source| ReplayError::Write {
        path: to.to_path_buf(),
        source,
    };
    if to.exists() {
        fs::remove_dir_all(to).map_err(failed)?;
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(failed)?;
    }
    if from.exists() {
        fs::rename(from, to).map_err(failed)
    } else {
        fs::create_dir_all(to).map_err(failed)
    }
}

/// `args` as one shell command line, each argument quoted when it needs to be.
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |arg: &str| {
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
        if plain {
            arg.to_string()
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_quotes_only_what_needs_it() {
        let args = ["run", "--env", "A=b c", "it's", ""].map(str::to_string);
        assert_eq!(
            shell_line("docker", &args),
            r"docker run --env 'A=b c' 'it'\''s' ''"
        );
    }
}
