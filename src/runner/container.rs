//! What a container runs with (image, user, memory, network, environment): the one description
//! a job's container, a synchronous action's container and `jobq replay`'s `docker run` share.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::size::Size;
use crate::settings::{Component, Confinement, Network, Settings};

/// A container's image, user, limits and environment; `/data` and `/tmp` are mounted beside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `repository:tag`.
    pub image: String,
    /// `uid:gid`, never root: the owner of the mounted folders, and the container's user unless
    /// the confinement lets it run as the image's own (`root_user`).
    pub user: String,
    /// Memory and memory with swap, in bytes (no swap beyond memory).
    pub memory_bytes: i64,
    /// CPUs in billionths (`--cpus`); 0: no limit (archives of older jobq versions).
    #[serde(default)]
    pub nano_cpus: i64,
    /// Docker's network: `bridge`, `none` or the `no-internet` network's name.
    pub network: String,
    /// `NAME=value` pairs (`KBC_*`; secrets are never in the environment, only in `config.json`).
    pub env: Vec<String>,
    /// Capabilities, privileges, processes, root file system and `/tmp`.
    #[serde(default)]
    pub confinement: Confinement,
}

impl ContainerSpec {
    /// `image` run for `component` (its network and confinement) with `size`, as `user` (unless
    /// the component runs as the image's user) with `env`.
    pub fn new(
        image: &str,
        component: &Component,
        size: Size,
        user: &str,
        env: Vec<String>,
        settings: &Settings,
    ) -> ContainerSpec {
        let confinement = component.confinement;
        ContainerSpec {
            image: image.to_string(),
            user: user.to_string(),
            memory_bytes: size.memory_bytes,
            nano_cpus: size.nano_cpus,
            network: match component.network {
                Network::Bridge => "bridge".to_string(),
                Network::None => "none".to_string(),
                Network::NoInternet => settings.no_internet_network.clone(),
            },
            env,
            confinement,
        }
    }

    /// The user the container runs as; `None`: the image's own.
    pub fn container_user(&self) -> Option<&str> {
        (!self.confinement.root_user).then_some(self.user.as_str())
    }

    /// The arguments of `docker run` that start this container again with `data` mounted at
    /// `/data` and `tmp` at `/tmp` (or a tmpfs there), as jobq starts it (an init process as
    /// PID 1, no swap, the same confinement).
    pub fn docker_run_args(&self, data: &Path, tmp: &Path) -> Vec<String> {
        let memory = self.memory_bytes.to_string();
        let mut args: Vec<String> = ["run", "--rm", "--init"].map(str::to_string).into();
        if let Some(user) = self.container_user() {
            args.extend(["--user".to_string(), user.to_string()]);
        }
        args.extend(
            [
                "--memory",
                &memory,
                "--memory-swap",
                &memory,
                "--network",
                &self.network,
            ]
            .map(str::to_string),
        );
        args.extend(super::confine::run_flags(self));
        for pair in &self.env {
            args.extend(["--env".to_string(), pair.clone()]);
        }
        args.extend(["--volume".to_string(), format!("{}:/data", data.display())]);
        if self.confinement.tmp_size.is_none() {
            args.extend(["--volume".to_string(), format!("{}:/tmp", tmp.display())]);
        }
        args.push(self.image.clone());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_run_args_carry_every_part_of_the_spec() {
        let spec = ContainerSpec {
            image: "local/ex:1.0.0".into(),
            user: "1000:1000".into(),
            memory_bytes: 128_000_000,
            nano_cpus: 1_500_000_000,
            network: "none".into(),
            env: vec!["KBC_RUNID=7".into(), "KBC_DATADIR=/data/".into()],
            confinement: Confinement::default(),
        };
        assert_eq!(
            spec.docker_run_args(Path::new("/s/stage_0"), Path::new("/s/tmp")),
            [
                "run",
                "--rm",
                "--init",
                "--user",
                "1000:1000",
                "--memory",
                "128000000",
                "--memory-swap",
                "128000000",
                "--network",
                "none",
                "--cpus",
                "1.5",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--pids-limit",
                "1024",
                "--env",
                "KBC_RUNID=7",
                "--env",
                "KBC_DATADIR=/data/",
                "--volume",
                "/s/stage_0:/data",
                "--volume",
                "/s/tmp:/tmp",
                "local/ex:1.0.0",
            ]
        );
    }

    #[test]
    fn relaxed_confinement_and_a_tmpfs_show_in_the_arguments() {
        let spec = ContainerSpec {
            image: "local/ex:1.0.0".into(),
            user: "1000:1000".into(),
            memory_bytes: 1000,
            nano_cpus: 0,
            network: "jobq-no-internet".into(),
            env: Vec::new(),
            confinement: Confinement {
                pids_limit: 50,
                drop_capabilities: false,
                no_new_privileges: false,
                read_only_rootfs: true,
                tmp_size: Some(64_000_000),
                root_user: true,
            },
        };
        assert_eq!(
            spec.docker_run_args(Path::new("/s/stage_0"), Path::new("/s/tmp")),
            [
                "run",
                "--rm",
                "--init",
                "--memory",
                "1000",
                "--memory-swap",
                "1000",
                "--network",
                "jobq-no-internet",
                "--pids-limit",
                "50",
                "--read-only",
                "--tmpfs",
                "/tmp:size=64000000,mode=1777",
                "--volume",
                "/s/stage_0:/data",
                "local/ex:1.0.0",
            ]
        );
    }
}
