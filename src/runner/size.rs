//! Container sizes: a job's `backend.containerType` into its containers' memory and CPUs, as
//! the platform scales them, within the host's limits.

use serde_json::Value;

use crate::settings::{Component, ContainerType, Settings, DEFAULT_CONTAINER_TYPE};

/// The memory and CPUs of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Memory and memory with swap, in bytes.
    pub memory_bytes: i64,
    /// CPUs in billionths (the engine's `NanoCpus`); 0: no limit.
    pub nano_cpus: i64,
}

/// Why a job's containers cannot have the size it asks for: the job is refused (400) or fails
/// with a user error naming the type or the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "Backend container type \"{0}\" is unknown; use \"xsmall\", \"small\", \"medium\" or \"large\"."
    )]
    UnknownType(String),
    #[error(
        "Backend container type \"{kind}\" gives component \"{component}\" {memory} of memory, more \
         than this host allows (max_container_memory = {limit}); choose a smaller type."
    )]
    Memory {
        kind: String,
        component: String,
        memory: String,
        limit: String,
    },
    #[error(
        "Backend container type \"{kind}\" asks for {cpus} CPUs, more than this host allows \
         (max_container_cpus = {limit}); choose a smaller type."
    )]
    Cpus { kind: String, cpus: f64, limit: f64 },
}

/// The container type `backend` names (`containerType`; `small` when it names none), by name.
pub fn container_type(
    settings: &Settings,
    backend: &Value,
) -> Result<(String, ContainerType), SizeError> {
    let name = match backend.get("containerType") {
        None | Some(Value::Null) => DEFAULT_CONTAINER_TYPE.to_string(),
        Some(Value::String(name)) => name.clone(),
        Some(other) => return Err(SizeError::UnknownType(other.to_string())),
    };
    match settings.container_types.get(&name) {
        Some(kind) => Ok((name, *kind)),
        None => Err(SizeError::UnknownType(name)),
    }
}

/// The size of `component`'s containers in a job whose resolved `backend` is given: the
/// component's memory times the type's factor, the type's CPUs capped by the host's cores.
pub fn container_size(
    settings: &Settings,
    component: &Component,
    backend: &Value,
) -> Result<Size, SizeError> {
    let (name, kind) = container_type(settings, backend)?;
    // Whole megabytes, as the platform renders the scaled limit (`<bytes/10^6>M`).
    let scaled = component.memory_bytes as f64 * kind.memory_factor;
    let memory_bytes = if scaled >= 1e6 {
        (scaled / 1e6).floor() as i64 * 1_000_000
    } else {
        scaled as i64
    };
    if let Some(limit) = settings.max_container_memory {
        if memory_bytes > limit {
            return Err(SizeError::Memory {
                kind: name.clone(),
                component: component.id.clone(),
                memory: super::format_memory(memory_bytes),
                limit: super::format_memory(limit),
            });
        }
    }
    if let Some(limit) = settings.max_container_cpus {
        if kind.cpus > limit {
            return Err(SizeError::Cpus {
                kind: name.clone(),
                cpus: kind.cpus,
                limit,
            });
        }
    }
    let cpus = kind.cpus.min(host_cpus());
    Ok(Size {
        memory_bytes,
        nano_cpus: (cpus * 1e9).round() as i64,
    }
    .at_least_one_byte())
}

impl Size {
    /// A factor below 1 never leaves a container without memory.
    fn at_least_one_byte(self) -> Size {
        Size {
            memory_bytes: self.memory_bytes.max(1),
            ..self
        }
    }
}

/// The host's cores: the engine refuses `NanoCpus` above them.
pub fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(extra: &str) -> Settings {
        Settings::parse(&format!(
            "{extra}\n[[tokens]]\nid = \"1\"\ntoken = \"t\"\n\
             [[components]]\nid = \"c\"\nimage = \"i\"\ntag = \"1\"\nmemory = \"200m\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn types_scale_memory_and_set_cpus_capped_by_the_host() {
        let settings = settings("");
        let component = &settings.components[0];
        let cores = host_cpus();
        for (kind, memory, cpus) in [
            ("xsmall", 100_000_000, 1.0),
            ("small", 200_000_000, 2.0),
            ("medium", 400_000_000, 4.0),
            ("large", 1_420_000_000, 14.0),
        ] {
            let size =
                container_size(&settings, component, &json!({"containerType": kind})).unwrap();
            assert_eq!(size.memory_bytes, memory, "{kind}");
            assert_eq!(
                size.nano_cpus,
                (f64::min(cpus, cores) * 1e9) as i64,
                "{kind}"
            );
        }
        let default = container_size(&settings, component, &json!({})).unwrap();
        assert_eq!(default.memory_bytes, 200_000_000);
    }

    #[test]
    fn types_are_settings_and_limits_name_themselves() {
        let settings = settings(
            "max_container_memory = \"300m\"\nmax_container_cpus = 2\n\
             [container_types.medium]\nmemory_factor = 1.5\ncpus = 1",
        );
        let component = &settings.components[0];
        let medium = json!({"containerType": "medium"});
        let size = container_size(&settings, component, &medium).unwrap();
        assert_eq!(size.memory_bytes, 300_000_000);
        assert_eq!(size.nano_cpus, 1_000_000_000);
        assert_eq!(
            container_size(&settings, component, &json!({"containerType": "large"}))
                .unwrap_err()
                .to_string(),
            "Backend container type \"large\" gives component \"c\" 1420m of memory, more than \
             this host allows (max_container_memory = 300m); choose a smaller type."
        );
        assert_eq!(
            container_size(&settings, component, &json!({"containerType": "huge"}))
                .unwrap_err()
                .to_string(),
            "Backend container type \"huge\" is unknown; use \"xsmall\", \"small\", \"medium\" \
             or \"large\"."
        );
        let few = self::settings("max_container_cpus = 1.5");
        assert_eq!(
            container_size(&few, &few.components[0], &json!({"containerType": "small"}))
                .unwrap_err()
                .to_string(),
            "Backend container type \"small\" asks for 2 CPUs, more than this host allows \
             (max_container_cpus = 1.5); choose a smaller type."
        );
    }
}
