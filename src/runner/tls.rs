//! Mutual TLS to a `tcp://` Swarm manager: its PEM files checked before the daemon starts (the
//! TLS client reads the certificate and key only at a handshake, and would then send none), and
//! the client that connects with them.

use std::path::Path;

use bollard::Docker;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::RunnerError;
use crate::settings::SwarmTls;

/// How long a request to the manager may take, as bollard's other connections allow.
const TIMEOUT_SECONDS: u64 = 120;

/// Whether the three files of `tls` hold what they must: certificates in `ca_file` and
/// `cert_file`, a private key in `key_file`.
pub fn check(tls: &SwarmTls) -> Result<(), RunnerError> {
    certificates(
        "swarm.ca_file",
        &tls.ca_file,
        "the CA certificate that signed the manager's certificate",
    )?;
    certificates(
        "swarm.cert_file",
        &tls.cert_file,
        "jobq's client certificate",
    )?;
    PrivateKeyDer::from_pem_file(&tls.key_file)
        .map(|_| ())
        .map_err(|error| {
            file_error(
                "swarm.key_file",
                &tls.key_file,
                "the private key of `swarm.cert_file`",
                error,
            )
        })
}

/// A client of the engine at `host` (`tcp://host:port`) over TLS: it trusts the server
/// certificates `ca_file` signed and shows `cert_file` with `key_file`.
pub fn connect(host: &str, tls: &SwarmTls) -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_ssl(
        host,
        &tls.key_file,
        &tls.cert_file,
        &tls.ca_file,
        TIMEOUT_SECONDS,
        bollard::API_DEFAULT_VERSION,
    )
}

fn certificates(
    setting: &'static str,
    path: &Path,
    expected: &'static str,
) -> Result<(), RunnerError> {
    let found = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .and_then(|certificates| match certificates.is_empty() {
            true => Err(rustls_pki_types::pem::Error::NoItemsFound),
            false => Ok(()),
        });
    found.map_err(|error| file_error(setting, path, expected, error))
}

fn file_error(
    setting: &'static str,
    path: &Path,
    expected: &'static str,
    error: rustls_pki_types::pem::Error,
) -> RunnerError {
    RunnerError::TlsFile {
        setting,
        path: path.to_path_buf(),
        expected,
        problem: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";

    fn files(dir: &Path, ca: &str, cert: &str, key: &str) -> SwarmTls {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        SwarmTls {
            ca_file: write("ca.pem", ca),
            cert_file: write("cert.pem", cert),
            key_file: write("key.pem", key),
        }
    }

    #[test]
    fn each_file_must_hold_what_its_setting_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(&files(dir.path(), CERTIFICATE, CERTIFICATE, KEY)).is_ok());

        let swapped = files(dir.path(), CERTIFICATE, KEY, CERTIFICATE);
        assert_eq!(
            check(&swapped).unwrap_err().to_string(),
            format!(
                "cannot use `swarm.cert_file` {} (no items found); it must be a PEM file of \
                 jobq's client certificate",
                swapped.cert_file.display()
            )
        );

        let keyless = files(dir.path(), CERTIFICATE, CERTIFICATE, CERTIFICATE);
        assert_eq!(
            check(&keyless).unwrap_err().to_string(),
            format!(
                "cannot use `swarm.key_file` {} (no items found); it must be a PEM file of the \
                 private key of `swarm.cert_file`",
                keyless.key_file.display()
            )
        );

        let missing = SwarmTls {
            ca_file: dir.path().join("absent.pem"),
            ..files(dir.path(), CERTIFICATE, CERTIFICATE, KEY)
        };
        let message = check(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "cannot use `swarm.ca_file` {} (I/O error: No such file",
                missing.ca_file.display()
            )),
            "{message}"
        );
    }
}
