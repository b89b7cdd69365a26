//! The confinement of every container jobq starts (jobs, actions, `jobq replay`): CPUs,
//! dropped capabilities, `no-new-privileges`, the process limit, a read-only root file system,
//! `/tmp` as a tmpfs; and the watch that ends a container at its process limit.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::HostConfig;
use bollard::query_parameters::StatsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::container::ContainerSpec;
use crate::settings::Confinement;

/// `spec`'s confinement in the engine's terms, added to `host`.
pub fn apply(spec: &ContainerSpec, host: &mut HostConfig) {
    let confinement = &spec.confinement;
    host.nano_cpus = (spec.nano_cpus > 0).then_some(spec.nano_cpus);
    host.pids_limit = Some(confinement.pids_limit);
    (host.cap_drop, host.cap_add) = capabilities(confinement);
    if confinement.no_new_privileges {
        host.security_opt = Some(vec!["no-new-privileges".to_string()]);
    }
    host.readonly_rootfs = Some(confinement.read_only_rootfs);
    if let Some(bytes) = confinement.tmp_size {
        host.tmpfs = Some(HashMap::from([("/tmp".to_string(), tmpfs_options(bytes))]));
    }
}

/// The capabilities dropped and added back: all dropped under `drop_capabilities`, and a root
/// container keeps `ROOT_CAPABILITY`.
pub fn capabilities(confinement: &Confinement) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if !confinement.drop_capabilities {
        return (None, None);
    }
    let added = confinement
        .root_user
        .then(|| vec![ROOT_CAPABILITY.to_string()]);
    (Some(vec!["ALL".to_string()]), added)
}

/// The same confinement as `docker run` flags.
pub fn run_flags(spec: &ContainerSpec) -> Vec<String> {
    let confinement = &spec.confinement;
    let mut flags = Vec::new();
    if spec.nano_cpus > 0 {
        flags.extend(["--cpus".to_string(), cpus_text(spec.nano_cpus)]);
    }
    let (dropped, added) = capabilities(confinement);
    for (flag, names) in [("--cap-drop", dropped), ("--cap-add", added)] {
        for name in names.into_iter().flatten() {
            flags.extend([flag.to_string(), name]);
        }
    }
    if confinement.no_new_privileges {
        flags.extend(["--security-opt", "no-new-privileges"].map(str::to_string));
    }
    flags.extend([
        "--pids-limit".to_string(),
        confinement.pids_limit.to_string(),
    ]);
    if confinement.read_only_rootfs {
        flags.push("--read-only".to_string());
    }
    if let Some(bytes) = confinement.tmp_size {
        flags.extend([
            "--tmpfs".to_string(),
            format!("/tmp:{}", tmpfs_options(bytes)),
        ]);
    }
    flags
}

/// Returns once the container `container_id` has `limit` processes (a fork past it fails):
/// asked of the engine every `PROCESS_WATCH_INTERVAL`. Never returns while the count stays below
/// (nor while the engine cannot say: the container's end is then found by the wait).
pub async fn process_limit_reached(docker: &Docker, container_id: &str, limit: i64) {
    let mut interval = tokio::time::interval(PROCESS_WATCH_INTERVAL);
    loop {
        interval.tick().await;
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = docker.stats(container_id, Some(options)).next().await;
        let current = stats
            .and_then(Result::ok)
            .and_then(|stats| stats.pids_stats)
            .and_then(|pids| pids.current);
        if current.is_some_and(|current| current as i64 >= limit) {
            return;
        }
    }
}

/// The one capability a root container keeps when all are dropped: without it root could not
/// reach its own job folder, which belongs to `container_user` with mode 0700.
const ROOT_CAPABILITY: &str = "DAC_OVERRIDE";

/// How often a running container's process count is read.
const PROCESS_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A tmpfs of `bytes` any user may write (sticky, as `/tmp` is).
fn tmpfs_options(bytes: i64) -> String {
    format!("size={bytes},mode=1777")
}

/// `1.5` for 1,500,000,000 nano CPUs.
fn cpus_text(nano_cpus: i64) -> String {
    let text = format!("{:.9}", nano_cpus as f64 / 1e9);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_written_as_docker_run_takes_them() {
        assert_eq!(cpus_text(2_000_000_000), "2");
        assert_eq!(cpus_text(1_500_000_000), "1.5");
        assert_eq!(cpus_text(10_000_000), "0.01");
    }
}
