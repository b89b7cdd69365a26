//! What a container runs with (image, user, memory, network, environment): the one description
//! a job's container, a synchronous action's container and `jobq replay`'s `docker run` share.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::settings::Component;

/// A container's image, user, limits and environment; `/data` and `/tmp` are mounted beside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `repository:tag`.
    pub image: String,
    /// `uid:gid`, never root.
    pub user: String,
    /// Memory and memory with swap, in bytes (no swap beyond memory).
    pub memory_bytes: i64,
    /// Docker's network mode: `bridge` or `none`.
    pub network: String,
    /// `NAME=value` pairs (`KBC_*`; secrets are never in the environment, only in `config.json`).
    pub env: Vec<String>,
}

impl ContainerSpec {
    /// `image` run for `component` (its memory and network) as `user` with `env`.
    pub fn new(image: &str, component: &Component, user: &str, env: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            image: image.to_string(),
            user: user.to_string(),
            memory_bytes: component.memory_bytes,
            // `no-internet` components are refused before a container is described.
            network: component
                .network
                .docker_mode()
                .unwrap_or("none")
                .to_string(),
            env,
        }
    }

    /// The arguments of `docker run` that start this container again with `data` mounted at
    /// `/data` and `tmp` at `/tmp`, as jobq starts it (an init process as PID 1, no swap).
    pub fn docker_run_args(&self, data: &Path, tmp: &Path) -> Vec<String> {
        let memory = self.memory_bytes.to_string();
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--init",
            "--user",
            &self.user,
            "--memory",
            &memory,
            "--memory-swap",
            &memory,
            "--network",
            &self.network,
        ]
        .map(str::to_string)
        .into();
        for pair in &self.env {
            args.extend(["--env".to_string(), pair.clone()]);
        }
        for (host, inside) in [(data, "/data"), (tmp, "/tmp")] {
            args.extend([
                "--volume".to_string(),
                format!("{}:{inside}", host.display()),
            ]);
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
            network: "none".into(),
            env: vec!["KBC_RUNID=7".into(), "KBC_DATADIR=/data/".into()],
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
}
