//! Builds the fixture component's image locally through bollard (no registry needed).

use std::collections::HashMap;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

/// The statically linked fixture component, built by build.rs for the host's own Linux target;
/// empty where it could not be built (see [`FIXTURE_UNAVAILABLE`]).
pub const FIXTURE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture"));

/// Why build.rs could not build the fixture component on this host; empty when it did.
pub const FIXTURE_UNAVAILABLE: &str = env!("JOBQ_FIXTURE_UNAVAILABLE");

/// Image label holding [`fixture_hash`] of the binary the image was built from.
pub const HASH_LABEL: &str = "jobq.fixture.sha";

/// How many trailing lines of the build output an error message keeps.
const BUILD_LOG_TAIL: usize = 20;

/// Why the fixture image could not be made available; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The engine rejected the reference itself.
    #[error(
        "{reference:?} is not a valid image reference ({message}); use a lowercase name with a tag, \
         e.g. \"local/jobq-fixture:1.0.0\""
    )]
    InvalidReference { reference: String, message: String },
    /// The engine could not be asked about the image.
    #[error(
        "cannot inspect image {reference}; check that the Docker engine is running and \
         that jobq may use its socket"
    )]
    Inspect {
        reference: String,
        #[source]
        source: DockerError,
    },
    /// The build request failed at the transport or API level.
    #[error(
        "cannot build image {reference} through the Docker engine; check that the engine \
         is running, that jobq may use its socket and that the reference is a valid image name \
         (e.g. \"local/jobq-fixture:1.0.0\")"
    )]
    BuildRequest {
        reference: String,
        #[source]
        source: DockerError,
    },
    /// The engine ran the build and reported it failed.
    #[error(
        "the Docker engine failed to build image {reference}: {message}; check the engine's disk \
         space and logs (build output follows)\n{log}"
    )]
    BuildFailed {
        reference: String,
        message: String,
        log: String,
    },
    /// The build reported success but the image is not there or not labelled as built.
    #[error(
        "image {reference} was built but the engine does not show it with label {HASH_LABEL}={expected}; \
         remove the image (`docker rmi {reference}`) and restart jobq"
    )]
    NotBuilt { reference: String, expected: String },
    /// This jobq was built on a host where the fixture component could not be built.
    #[error(
        "this jobq has no fixture component: {reason}; build jobq on x86_64 or aarch64 Linux \
         with static glibc (libc6-dev) to run the demo and the tests that run containers"
    )]
    FixtureUnavailable { reason: String },
    /// The in-memory build context could not be assembled.
    #[error("cannot assemble the build context of the fixture image")]
    Context(#[from] std::io::Error),
}

/// A hex FNV-1a 64 hash of the embedded fixture binary; an image labelled with it is up to date.
pub fn fixture_hash() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in FIXTURE_BINARY {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Makes sure `reference` (e.g. "local/jobq-fixture:1.0.0") is a local image of the fixture binary; builds it when missing or stale.
pub async fn ensure_fixture_image(docker: &Docker, reference: &str) -> Result<(), ImageError> {
    if FIXTURE_BINARY.is_empty() {
        return Err(ImageError::FixtureUnavailable {
            reason: FIXTURE_UNAVAILABLE.to_string(),
        });
    }
    let hash = fixture_hash();
    let stale_id = match docker.inspect_image(reference).await {
        Ok(image) => {
            if image_hash(&image).as_deref() == Some(hash.as_str()) {
                tracing::debug!(image = reference, hash = %hash, "fixture image is up to date");
                return Ok(());
            }
            image.id
        }
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(DockerError::DockerResponseServerError {
            status_code: 400,
            message,
        }) => {
            return Err(ImageError::InvalidReference {
                reference: reference.to_owned(),
                message,
            })
        }
        Err(source) => {
            return Err(ImageError::Inspect {
                reference: reference.to_owned(),
                source,
            })
        }
    };

    tracing::info!(image = reference, hash = %hash, "building the fixture image");
    let context = build_context(FIXTURE_BINARY, &hash)?;
    let labels = HashMap::from([(HASH_LABEL, hash.as_str())]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(reference)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    let message = detail.message.unwrap_or_else(|| "unknown error".to_owned());
                    return Err(build_failed(reference, message, &log));
                }
                for text in [info.stream, info.status].into_iter().flatten() {
                    log.extend(
                        text.lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(str::to_owned),
                    );
                }
                if log.len() > BUILD_LOG_TAIL {
                    log.drain(..log.len() - BUILD_LOG_TAIL);
                }
            }
            // bollard turns a build's `errorDetail` item into this error.
            Err(DockerError::DockerStreamError { error }) => {
                return Err(build_failed(reference, error, &log));
            }
            Err(source) => {
                return Err(ImageError::BuildRequest {
                    reference: reference.to_owned(),
                    source,
                });
            }
        }
    }

    let built = docker
        .inspect_image(reference)
        .await
        .map_err(|source| ImageError::Inspect {
            reference: reference.to_owned(),
            source,
        })?;
    if image_hash(&built).as_deref() != Some(hash.as_str()) {
        return Err(ImageError::NotBuilt {
            reference: reference.to_owned(),
            expected: hash,
        });
    }
    tracing::info!(
        image = reference,
        id = built.id.as_deref().unwrap_or("?"),
        "built the fixture image"
    );

    // The stale image lost its tag; remove it unless something (e.g. a container) still uses it.
    if let Some(old) = stale_id.filter(|old| built.id.as_ref() != Some(old)) {
        let options = RemoveImageOptionsBuilder::default().build();
        if let Err(err) = docker.remove_image(&old, Some(options), None).await {
            tracing::debug!(image = %old, error = %err, "kept the stale fixture image");
        }
    }
    Ok(())
}

fn image_hash(image: &bollard::models::ImageInspect) -> Option<String> {
    image
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .cloned()
}

fn build_failed(reference: &str, message: String, log: &[String]) -> ImageError {
    ImageError::BuildFailed {
        reference: reference.to_owned(),
        message,
        log: log.join("\n"),
    }
}

/// The Dockerfile of the fixture image.
fn dockerfile(hash: &str) -> String {
    format!(
        "FROM scratch\n\
         LABEL {HASH_LABEL}={hash}\n\
         COPY fixture /fixture\n\
         ENTRYPOINT [\"/fixture\"]\n"
    )
}

/// An in-memory tar build context: `Dockerfile` and the `fixture` binary (mode 0755).
fn build_context(binary: &[u8], hash: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = dockerfile(hash);
    for (name, mode, data) in [
        ("Dockerfile", 0o644, dockerfile.as_bytes()),
        ("fixture", 0o755, binary),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn context_holds_dockerfile_and_executable_fixture() {
        let context = build_context(b"\x7fELF fake", "00ff").unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut entries = HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.insert(path, (mode, data));
        }
        assert_eq!(entries.len(), 2);
        let (mode, dockerfile) = &entries["Dockerfile"];
        assert_eq!(*mode, 0o644);
        let dockerfile = String::from_utf8(dockerfile.clone()).unwrap();
        assert!(dockerfile.starts_with("FROM scratch\n"));
        assert!(dockerfile.contains("\nLABEL jobq.fixture.sha=00ff\n"));
        assert!(dockerfile.contains("\nCOPY fixture /fixture\n"));
        assert!(dockerfile.contains("\nENTRYPOINT [\"/fixture\"]\n"));
        assert_eq!(entries["fixture"], (0o755, b"\x7fELF fake".to_vec()));
    }

    #[test]
    fn embedded_fixture_is_an_elf_of_this_machine_and_hash_is_stable() {
        assert!(
            !FIXTURE_BINARY.is_empty(),
            "the fixture component was not built: {FIXTURE_UNAVAILABLE}"
        );
        assert!(FIXTURE_BINARY.starts_with(b"\x7fELF"));
        // e_machine, little-endian at offset 18: the engine runs it on this machine.
        let machine = u16::from_le_bytes([FIXTURE_BINARY[18], FIXTURE_BINARY[19]]);
        let expected = if cfg!(target_arch = "aarch64") {
            0xb7
        } else {
            0x3e
        };
        assert_eq!(machine, expected);
        assert_eq!(fixture_hash(), fixture_hash());
        assert_eq!(fixture_hash().len(), 16);
    }
}
