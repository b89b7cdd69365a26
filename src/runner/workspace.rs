//! The job folder a component sees: `data/` with `config.json`, in/out folders and state, plus its environment.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::mapping::input::Inputs;
use crate::model::Job;
use crate::secrets;
use crate::settings::{Component, Settings};

/// What one container of a job runs: the effective configuration (rows merged, variables
/// replaced), its state, and the folder it runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub configuration: Value,
    /// The component state given as `in/state.json`.
    pub state: Value,
    pub row_id: Option<String>,
    /// `jobs/<id>` for a job without rows, `jobs/<id>/rows/<row>` for a row.
    pub folder: PathBuf,
    pub config_version: Option<u64>,
}

/// The folders of one job run on the host.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Mounted at `/data`.
    pub data: PathBuf,
    /// Mounted at `/tmp`.
    pub tmp: PathBuf,
}

impl Workspace {
    /// The folders of the job whose folder is `job_dir`.
    pub fn of(job_dir: &Path) -> Workspace {
        Workspace {
            data: job_dir.join("data"),
            tmp: job_dir.join("tmp"),
        }
    }
}

/// The sub-folders every component may rely on; `keboola.component` does not create them itself.
pub const DATA_FOLDERS: [&str; 5] = [
    "in/tables",
    "in/files",
    "in/user",
    "out/tables",
    "out/files",
];

/// Creates `<folder>/data` and `<folder>/tmp` with `in/state.json`. Every folder made on the
/// way (`jobs/`, the job's, the row's) is private to its owner (0700): while the job runs, its
/// folder holds its decrypted secrets.
pub fn prepare(folder: &Path, state: &Value) -> std::io::Result<Workspace> {
    let workspace = Workspace::of(folder);
    // A folder left by an earlier attempt of this job must not leak into this one.
    if workspace.data.exists() {
        fs::remove_dir_all(&workspace.data)?;
    }
    for folder in DATA_FOLDERS {
        create_private(&workspace.data.join(folder))?;
    }
    create_private(&workspace.tmp)?;
    let _ = fs::remove_file(folder.join(ROTATION_MARKER));
    let _ = fs::remove_file(folder.join(COMPONENT_STATE_FILE));
    fs::write(
        workspace.data.join("in/state.json"),
        serde_json::to_vec(state)?,
    )?;
    Ok(workspace)
}

/// Creates `path` and the folders above it that are missing, each readable by its owner only.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// The input mapping's result is kept beside the row's folder (`inputs.json`, outside `data/`),
/// so that a row re-attached after a restart still reports its `result.input.tables`.
const INPUTS_FILE: &str = "inputs.json";

/// Keeps what the input mapping of the row in `folder` put into `in/`.
pub fn save_inputs(folder: &Path, inputs: &Inputs) -> std::io::Result<()> {
    fs::write(folder.join(INPUTS_FILE), serde_json::to_vec(inputs)?)
}

/// What `save_inputs` kept for the row in `folder` (nothing, if it kept nothing).
pub fn load_inputs(folder: &Path) -> Inputs {
    fs::read(folder.join(INPUTS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// After an image ended: its `config.json` keeps no decrypted secret (the next image's is
/// written afresh).
pub fn hide_config(workspace: &Workspace) {
    if let Err(error) = secrets::hide_in_file(&workspace.data.join("config.json")) {
        tracing::error!(%error, "cannot hide the secrets of an image's config.json");
    }
}

/// Where the component's own `out/state.json` is kept when processors run after it: they never
/// see it (between images `out/state.json` is dropped), and the state a job stores is the
/// component's, as on the platform.
const COMPONENT_STATE_FILE: &str = "component-state.json";

/// Moves the component's `out/state.json` beside the folder, after the component's image ended
/// and before processors run after it. A rename: a link is moved, never followed.
pub fn keep_component_state(folder: &Path) -> std::io::Result<PathBuf> {
    let kept = folder.join(COMPONENT_STATE_FILE);
    match fs::rename(Workspace::of(folder).data.join("out/state.json"), &kept) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let _ = fs::remove_file(&kept);
        }
        other => other?,
    }
    Ok(kept)
}

/// The state file a job stores for the row in `folder`: the one the component left.
pub fn component_state_path(folder: &Path) -> PathBuf {
    let kept = folder.join(COMPONENT_STATE_FILE);
    if kept.exists() {
        kept
    } else {
        Workspace::of(folder).data.join("out/state.json")
    }
}

/// Writes the `config.json` the next image reads.
pub fn write_config(workspace: &Workspace, config: &Value) -> std::io::Result<()> {
    fs::write(
        workspace.data.join("config.json"),
        serde_json::to_vec_pretty(config)?,
    )
}

/// Records which image the folder was last rotated for (it lives outside `data/`).
const ROTATION_MARKER: &str = "rotated-for-stage";

/// Between two images: `out/tables` and `out/files` become `in/tables` and `in/files`,
/// `out/state.json` is dropped, and empty `out/tables`, `out/files`, `in/user` and `tmp` are
/// made again. Done once for `image_index`, even if asked again after a crash.
pub fn rotate(folder: &Path, image_index: usize) -> std::io::Result<()> {
    let marker = folder.join(ROTATION_MARKER);
    if fs::read_to_string(&marker).is_ok_and(|done| done.trim() == image_index.to_string()) {
        return Ok(());
    }
    let workspace = Workspace::of(folder);
    let data = &workspace.data;
    for name in ["tables", "files"] {
        let input = data.join("in").join(name);
        if input.exists() {
            fs::remove_dir_all(&input)?;
        }
        let output = data.join("out").join(name);
        if output.exists() {
            fs::rename(&output, &input)?;
        }
    }
    let state = data.join("out/state.json");
    if state.exists() {
        fs::remove_file(state)?;
    }
    for reset in [data.join("in/user"), workspace.tmp.clone()] {
        if reset.exists() {
            fs::remove_dir_all(&reset)?;
        }
    }
    for folder in DATA_FOLDERS {
        create_private(&data.join(folder))?;
    }
    create_private(&workspace.tmp)?;
    fs::write(marker, image_index.to_string())
}

/// A processor's `config.json`: only its `parameters`, its `image_parameters` and `action`.
pub fn processor_config(parameters: &Value, component: &Component) -> Value {
    json!({
        "parameters": if parameters.is_object() { parameters.clone() } else { json!({}) },
        "image_parameters": component.image_parameters,
        "action": "run",
    })
}

/// Hands the prepared folder to the container's user (`uid`, `gid`) when one is given.
pub fn hand_over(folder: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) => chown_tree(folder, uid, gid),
        None => Ok(()),
    }
}

/// Who the container runs as, and who must own the job folder: the configured non-root user when
/// the daemon is root (it hands the folder over), else the daemon's own user (never root).
pub fn container_identity(settings: &Settings) -> std::io::Result<Identity> {
    let (uid, gid) = own_ids(&settings.data_dir)?;
    if uid != 0 {
        return Ok(Identity {
            user: format!("{uid}:{gid}"),
            owner: None,
        });
    }
    let (uid, gid) = settings.container_user;
    Ok(Identity {
        user: format!("{uid}:{gid}"),
        owner: Some((uid, gid)),
    })
}

/// The user a container runs as, and the owner its folder is handed to (none: already ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub owner: Option<(u32, u32)>,
}

/// `config.json` of a job's task: its configuration as `component_config` gives it, for `run`.
pub fn config_json(job: &Job, component: &Component, task: &Task) -> Value {
    component_config(&task.configuration, &job.project_id, component, "run")
}

/// `config.json` of a component: `configuration` without `runtime`/`processors`, with `action`,
/// `image_parameters` and `authorization.context`; `storage` dropped when empty.
pub fn component_config(
    configuration: &Value,
    project_id: &str,
    component: &Component,
    action: &str,
) -> Value {
    let mut config = match configuration {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    config.remove("runtime");
    config.remove("processors");
    if config.get("storage").is_some_and(is_empty) {
        config.remove("storage");
    }
    if config.get("parameters").is_none_or(|p| !p.is_object()) {
        config.insert("parameters".into(), json!({}));
    }
    let mut authorization = match config.remove("authorization") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    authorization.insert(
        "context".into(),
        json!(format!("{project_id}_{}", component.id)),
    );
    config.insert("authorization".into(), Value::Object(authorization));
    config.insert(
        "image_parameters".into(),
        component.image_parameters.clone(),
    );
    config.insert("action".into(), json!(action));
    Value::Object(config)
}

/// Whom a container runs for, as its `KBC_*` environment tells it.
pub struct RunContext<'a> {
    pub run_id: String,
    pub project_id: &'a str,
    pub config_id: String,
    pub config_version: String,
    pub component_id: &'a str,
    pub branch_id: &'a str,
    /// `run` or `debug`.
    pub run_mode: &'static str,
    pub row_id: Option<&'a str>,
}

/// The environment of a job's task (docs/runner.md, Environment), as `NAME=value` pairs.
pub fn environment(
    job: &Job,
    component: &Component,
    task: &Task,
    settings: &Settings,
) -> Vec<String> {
    let config_id = match &job.config {
        Some(id) => id.clone(),
        None => parameters_hash(&task.configuration),
    };
    let context = RunContext {
        run_id: job.id.to_string(),
        project_id: &job.project_id,
        config_id,
        config_version: task
            .config_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        component_id: &component.id,
        branch_id: &job.branch_id,
        run_mode: job.mode.component_run_mode(),
        row_id: task.row_id.as_deref(),
    };
    let mut env = kbc_environment(&context, settings);
    if component.forward_token {
        if let Some(token) = settings.token_of(&job.token_id) {
            env.push(format!("KBC_TOKEN={token}"));
            env.push(format!("KBC_URL={}", settings.public_url));
        }
    }
    env
}

/// The `KBC_*` environment of docs/runner.md (Environment) for `context`.
pub fn kbc_environment(context: &RunContext<'_>, settings: &Settings) -> Vec<String> {
    let mut pairs = vec![
        ("KBC_DATADIR", "/data/".to_string()),
        ("KBC_RUNID", context.run_id.clone()),
        ("KBC_PROJECTID", context.project_id.to_string()),
        ("KBC_CONFIGID", context.config_id.clone()),
        ("KBC_CONFIGVERSION", context.config_version.clone()),
        ("KBC_COMPONENTID", context.component_id.to_string()),
        ("KBC_STACKID", settings.stack_id.clone()),
        ("KBC_BRANCHID", context.branch_id.to_string()),
        ("KBC_COMPONENT_RUN_MODE", context.run_mode.to_string()),
        ("KBC_PROJECT_FEATURE_GATES", "queuev2".to_string()),
        ("KBC_STAGING_FILE_PROVIDER", "local".to_string()),
    ];
    if let Some(row) = context.row_id {
        pairs.push(("KBC_CONFIGROWID", row.to_string()));
    }
    pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// `KBC_CONFIGID` of a configData-only job: a stable hash of its parameters.
pub fn parameters_hash(config_data: &Value) -> String {
    let text = config_data
        .get("parameters")
        .unwrap_or(&Value::Null)
        .to_string();
    // FNV-1a: stable across runs and builds, unlike std's randomly seeded hasher.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Reads `out/usage.json` when the component wrote one.
pub fn usage_data(workspace: &Workspace) -> Option<Value> {
    let text = fs::read(workspace.data.join("out/usage.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The daemon's effective uid and gid, read off a file it creates (no libc needed).
fn own_ids(dir: &Path) -> std::io::Result<(u32, u32)> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(".jobq-owner-probe");
    fs::write(&probe, b"")?;
    let metadata = fs::metadata(&probe)?;
    fs::remove_file(&probe)?;
    Ok((metadata.uid(), metadata.gid()))
}
