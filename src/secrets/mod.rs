//! Secrets: `#` values encrypted with XChaCha20-Poly1305 under the daemon's key, each ciphertext
//! bound to its scope (component, project, configuration), and kept out of logs and events.
//!
//! A ciphertext is `KBC::<Scope>Secure::<base64(nonce || ciphertext || tag)>` (standard base64
//! with padding, a random 24-byte nonce). The associated data is the scope's kind and ids, so a
//! ciphertext moved to another component, project or configuration, or relabelled with another
//! prefix, fails authentication.
//!
//! Like Keboola's encryptor, only scalars directly under a key starting with `#` are secrets:
//! objects and arrays are walked at any depth for their own `#` keys, but an array under a `#`
//! key is not a secret itself. Strings are encrypted as they are, numbers and booleans as their
//! JSON text (they decrypt to strings); `null`, empty strings and values that already are
//! ciphertexts pass through.

mod key;
mod redact;

use std::convert::Infallible;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;

pub use key::{Key, KEY_FILE};
pub use redact::{register, RedactedLine, Redacting, Redactor, Registration, HIDDEN};

/// Encrypts and decrypts `#` values with the daemon's key.
pub struct Secrets {
    cipher: XChaCha20Poly1305,
}

/// Whom a ciphertext is for: every id of the scope is bound to it as associated data.
///
/// To decrypt, give the widest scope the reader has (for a job: [`Scope::for_job`]); a
/// ciphertext's own scope is read from its prefix and filled with the reader's ids, so a
/// `ProjectWide` value decrypts for any component of its project, a `Component` value for its
/// component in any project, and a `Config` value only for a job of that configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `KBC::ProjectSecure::`: one component in one project (the default for configurations and
    /// state).
    Project { component: String, project: String },
    /// `KBC::ComponentSecure::`: one component in any project.
    Component { component: String },
    /// `KBC::ConfigSecure::`: one configuration of one component in one project.
    Config {
        component: String,
        project: String,
        config: String,
    },
    /// `KBC::ProjectWideSecure::`: any component in one project.
    ProjectWide { project: String },
}

/// Why a key cannot be had, or a `#` value cannot be decrypted. Decryption errors are the
/// user's: they name the value's key (its path, like `parameters.#password`).
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "cannot read the encryption key file {path}: {source}; make it readable by jobq, or give \
         `encryption_key` in the settings"
    )]
    ReadKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create the encryption key file {path}: {source}; make `data_dir` writable, or \
         give `encryption_key` in the settings"
    )]
    CreateKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the encryption key file {path} does not hold 64 hex characters; restore it from a \
         backup (values encrypted with another key cannot be decrypted)"
    )]
    BadKeyFile { path: std::path::PathBuf },
    #[error(
        "`{key}` is not encrypted: a `#` value must be a KBC::...Secure:: ciphertext; save it \
         again through the API, which encrypts it, or encrypt it with POST /encrypt"
    )]
    NotEncrypted { key: String },
    #[error(
        "`{key}` cannot be decrypted: its {prefix} value was not encrypted for {reader} (but \
         for another component, project or configuration, or with another key); encrypt it \
         again with POST /encrypt for {reader}"
    )]
    Undecryptable {
        key: String,
        prefix: &'static str,
        reader: Scope,
    },
}

impl Secrets {
    /// Uses the key given in the settings, else loads `<data_dir>/secret.key`, creating it with
    /// a new random key (mode 0600) on first start.
    pub fn open(data_dir: &Path, configured: Option<&Key>) -> Result<Secrets, SecretsError> {
        let key = match configured {
            Some(key) => key.clone(),
            None => key::load_or_create(data_dir)?,
        };
        Ok(Secrets {
            cipher: XChaCha20Poly1305::new(&key.bytes().into()),
        })
    }

    /// The ciphertext of `plain` for `scope`; an empty string or a ciphertext is returned as is.
    pub fn encrypt_value(&self, plain: &str, scope: &Scope) -> String {
        if plain.is_empty() || is_encrypted(plain) {
            return plain.to_string();
        }
        let nonce = XNonce::generate();
        let aad = scope.associated_data();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: &aad,
        };
        // Only a message or associated data over 256 GiB could fail.
        let sealed = self
            .cipher
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 encrypts any value below 256 GiB");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{}{}", scope.kind().prefix(), STANDARD.encode(bytes))
    }

    /// The plain text of a ciphertext that `reader` may read (an empty string stays empty);
    /// errors name the value as `key`.
    pub fn decrypt_value(
        &self,
        key: &str,
        value: &str,
        reader: &Scope,
    ) -> Result<String, SecretsError> {
        if value.is_empty() {
            return Ok(String::new());
        }
        let (kind, encoded) = Kind::split(value).ok_or_else(|| SecretsError::NotEncrypted {
            key: key.to_string(),
        })?;
        let undecryptable = || SecretsError::Undecryptable {
            key: key.to_string(),
            prefix: kind.prefix(),
            reader: reader.clone(),
        };
        let scope = reader.narrowed(kind).ok_or_else(undecryptable)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| undecryptable())?;
        let (nonce, sealed) = bytes
            .split_at_checked(NONCE_LEN)
            .ok_or_else(undecryptable)?;
        let nonce = XNonce::try_from(nonce).map_err(|_| undecryptable())?;
        let aad = scope.associated_data();
        let payload = Payload {
            msg: sealed,
            aad: &aad,
        };
        let plain = self
            .cipher
            .decrypt(&nonce, payload)
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain).map_err(|_| undecryptable())
    }

    /// Encrypts every scalar under a `#` key, at any depth, for `scope`.
    pub fn encrypt_json(&self, value: &mut Value, scope: &Scope) {
        let Ok(()) = visit_secrets::<Infallible>(value, &mut |_, secret| {
            let plain = match secret {
                Value::String(text) => text.clone(),
                Value::Number(_) | Value::Bool(_) => secret.to_string(),
                _ => return Ok(()),
            };
            *secret = Value::String(self.encrypt_value(&plain, scope));
            Ok(())
        });
    }

    /// Decrypts every ciphertext under a `#` key, at any depth, for `reader`, and adds each
    /// non-empty plain value to `found` (for redaction). A `#` scalar that is not a ciphertext
    /// `reader` may read is an error naming its path (`parameters.#password`,
    /// `rows[0].#token`); `value` may then be partly decrypted and must not be used.
    pub fn decrypt_json(
        &self,
        value: &mut Value,
        reader: &Scope,
        found: &mut Vec<String>,
    ) -> Result<(), SecretsError> {
        visit_secrets(value, &mut |path, secret| {
            let plain = match secret {
                Value::Null => return Ok(()),
                Value::String(text) => self.decrypt_value(path, text, reader)?,
                _ => {
                    return Err(SecretsError::NotEncrypted {
                        key: path.to_string(),
                    })
                }
            };
            if !plain.is_empty() {
                found.push(plain.clone());
            }
            *secret = Value::String(plain);
            Ok(())
        })
    }
}

impl Scope {
    /// The widest scope a job reads secrets with: its configuration's when it runs a stored
    /// configuration, else its component's in its project.
    pub fn for_job(component: &str, project: &str, config: Option<&str>) -> Scope {
        match config {
            Some(config) => Scope::Config {
                component: component.to_string(),
                project: project.to_string(),
                config: config.to_string(),
            },
            None => Scope::Project {
                component: component.to_string(),
                project: project.to_string(),
            },
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Scope::Project { .. } => Kind::Project,
            Scope::Component { .. } => Kind::Component,
            Scope::Config { .. } => Kind::Config,
            Scope::ProjectWide { .. } => Kind::ProjectWide,
        }
    }

    /// The scope of `kind` with this scope's ids, if it has them all.
    fn narrowed(&self, kind: Kind) -> Option<Scope> {
        let (component, project, config) = match self {
            Scope::Project { component, project } => (Some(component), Some(project), None),
            Scope::Component { component } => (Some(component), None, None),
            Scope::Config {
                component,
                project,
                config,
            } => (Some(component), Some(project), Some(config)),
            Scope::ProjectWide { project } => (None, Some(project), None),
        };
        Some(match kind {
            Kind::Project => Scope::Project {
                component: component?.clone(),
                project: project?.clone(),
            },
            Kind::Component => Scope::Component {
                component: component?.clone(),
            },
            Kind::Config => Scope::Config {
                component: component?.clone(),
                project: project?.clone(),
                config: config?.clone(),
            },
            Kind::ProjectWide => Scope::ProjectWide {
                project: project?.clone(),
            },
        })
    }

    /// The kind and ids as a JSON array: unambiguous whatever characters the ids hold.
    fn associated_data(&self) -> Vec<u8> {
        let ids: Vec<&str> = match self {
            Scope::Project { component, project } => vec![component, project],
            Scope::Component { component } => vec![component],
            Scope::Config {
                component,
                project,
                config,
            } => vec![component, project, config],
            Scope::ProjectWide { project } => vec![project],
        };
        let mut parts = vec![self.kind().prefix()];
        parts.extend(ids);
        serde_json::to_vec(&parts).expect("strings serialize")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Project { component, project } => {
                write!(f, "component {component} in project {project}")
            }
            Scope::Component { component } => write!(f, "component {component}"),
            Scope::Config {
                component,
                project,
                config,
            } => write!(
                f,
                "configuration {config} of component {component} in project {project}"
            ),
            Scope::ProjectWide { project } => write!(f, "project {project}"),
        }
    }
}

/// Whether `value` is a ciphertext (has one of the four scope prefixes).
pub fn is_encrypted(value: &str) -> bool {
    Kind::split(value).is_some()
}

const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Project,
    Component,
    Config,
    ProjectWide,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Project,
        Kind::Component,
        Kind::Config,
        Kind::ProjectWide,
    ];

    fn prefix(self) -> &'static str {
        match self {
            Kind::Project => "KBC::ProjectSecure::",
            Kind::Component => "KBC::ComponentSecure::",
            Kind::Config => "KBC::ConfigSecure::",
            Kind::ProjectWide => "KBC::ProjectWideSecure::",
        }
    }

    /// The kind of a ciphertext and its base64 part.
    fn split(value: &str) -> Option<(Kind, &str)> {
        Kind::ALL
            .into_iter()
            .find_map(|kind| Some((kind, value.strip_prefix(kind.prefix())?)))
    }
}

/// Replaces every scalar under a `#` key, at any depth, with `[hidden]` (for debug archives).
pub fn hide(value: &mut Value) {
    let Ok(()) = visit_secrets::<Infallible>(value, &mut |_, secret| {
        if !secret.is_null() {
            *secret = Value::String(HIDDEN.to_string());
        }
        Ok(())
    });
}

/// The files of a data folder that hold decrypted `#` values while a job runs.
pub const SECRET_FILES: [&str; 3] = ["config.json", "in/state.json", "out/state.json"];

impl Secrets {
    /// After a row's container ended, its data folder keeps no decrypted secret: `config.json`
    /// and `in/state.json` get `[hidden]` for every `#` value, `out/state.json` (the state the
    /// job may still store) ciphertexts for `scope`. Idempotent.
    pub fn seal_folder(&self, data: &Path, scope: &Scope) -> std::io::Result<()> {
        hide_in_file(&data.join("config.json"))?;
        hide_in_file(&data.join("in/state.json"))?;
        self.encrypt_file(&data.join("out/state.json"), scope)
    }

    /// Encrypts every `#` value of the JSON file at `path` for `scope` (see `rewrite_json`).
    pub fn encrypt_file(&self, path: &Path, scope: &Scope) -> std::io::Result<()> {
        rewrite_json(path, |value| self.encrypt_json(value, scope))
    }
}

/// Replaces every `#` value of the JSON file at `path` with `[hidden]` (see `rewrite_json`).
pub fn hide_in_file(path: &Path) -> std::io::Result<()> {
    rewrite_json(path, hide)
}

/// Rewrites the JSON file at `path` with `change` applied. The file is replaced by a rename, so
/// a link a component put there is replaced, never followed; anything but a regular file, or a
/// file that is not JSON, is removed (it may hold what it should not). A missing file is fine.
fn rewrite_json(path: &Path, change: impl FnOnce(&mut Value)) -> std::io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let parsed = match metadata.is_file() {
        true => serde_json::from_slice::<Value>(&std::fs::read(path)?).ok(),
        false => None,
    };
    let Some(mut value) = parsed else {
        return match metadata.is_dir() {
            true => std::fs::remove_dir_all(path),
            false => std::fs::remove_file(path),
        };
    };
    change(&mut value);
    // A new file of a random name (never an existing one), renamed over the old.
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(folder)?;
    std::io::Write::write_all(&mut temporary, &serde_json::to_vec_pretty(&value)?)?;
    temporary
        .persist(path)
        .map(drop)
        .map_err(|error| error.error)
}

/// Calls `f` with the path and value of every scalar (or `null`) under a `#` key.
fn visit_secrets<E>(
    value: &mut Value,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    fn walk<E>(
        value: &mut Value,
        path: &mut String,
        f: &mut dyn FnMut(&str, &mut Value) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = path.len();
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if start > 0 {
                        path.push('.');
                    }
                    path.push_str(key);
                    if child.is_object() || child.is_array() {
                        walk(child, path, f)?;
                    } else if key.starts_with('#') {
                        f(path, child)?;
                    }
                    path.truncate(start);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    walk(child, path, f)?;
                    path.truncate(start);
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(value, &mut String::new(), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets() -> Secrets {
        Secrets::open(
            Path::new("/nonexistent"),
            Some(&Key::from_hex(&"ab".repeat(32)).unwrap()),
        )
        .unwrap()
    }

    fn project(component: &str, project: &str) -> Scope {
        Scope::Project {
            component: component.into(),
            project: project.into(),
        }
    }

    fn all_scopes() -> Vec<Scope> {
        vec![
            project("keboola.a", "1"),
            Scope::Component {
                component: "keboola.a".into(),
            },
            Scope::Config {
                component: "keboola.a".into(),
                project: "1".into(),
                config: "daily".into(),
            },
            Scope::ProjectWide {
                project: "1".into(),
            },
        ]
    }

    #[test]
    fn every_scope_round_trips_with_its_prefix() {
        let secrets = secrets();
        let prefixes = [
            "KBC::ProjectSecure::",
            "KBC::ComponentSecure::",
            "KBC::ConfigSecure::",
            "KBC::ProjectWideSecure::",
        ];
        for (scope, prefix) in all_scopes().iter().zip(prefixes) {
            let sealed = secrets.encrypt_value("pässwörd \"x\"", scope);
            assert!(sealed.starts_with(prefix), "{sealed}");
            assert!(is_encrypted(&sealed));
            assert!(!sealed.contains("pässwörd"));
            assert_eq!(
                secrets.decrypt_value("#p", &sealed, scope).unwrap(),
                "pässwörd \"x\""
            );
        }
    }

    #[test]
    fn each_scope_decrypts_for_the_readers_that_share_its_ids() {
        let secrets = secrets();
        let job = Scope::for_job("keboola.a", "1", Some("daily"));
        let other_config = Scope::for_job("keboola.a", "1", Some("weekly"));
        let other_component = Scope::for_job("keboola.b", "1", Some("daily"));
        let other_project = Scope::for_job("keboola.a", "2", Some("daily"));
        let no_config = Scope::for_job("keboola.a", "1", None);
        // For each scope: which of the four other readers may decrypt it.
        let expected = [
            // Project: same component and project.
            [true, false, false, true],
            // Component: same component, any project.
            [true, false, true, true],
            // Config: only this configuration.
            [false, false, false, false],
            // ProjectWide: any component of the project.
            [true, true, false, true],
        ];
        for (scope, readable) in all_scopes().iter().zip(expected) {
            let sealed = secrets.encrypt_value("s3cret", scope);
            assert_eq!(
                secrets.decrypt_value("#p", &sealed, &job).unwrap(),
                "s3cret"
            );
            let readers = [&other_config, &other_component, &other_project, &no_config];
            for (reader, readable) in readers.into_iter().zip(readable) {
                let decrypted = secrets.decrypt_value("#p", &sealed, reader);
                assert_eq!(decrypted.is_ok(), readable, "{scope:?} read by {reader:?}");
            }
        }
    }

    #[test]
    fn a_value_of_another_component_fails_naming_the_key() {
        let secrets = secrets();
        let sealed = secrets.encrypt_value("s3cret", &project("keboola.a", "1"));
        let error = secrets
            .decrypt_value("parameters.#password", &sealed, &project("keboola.b", "1"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "`parameters.#password` cannot be decrypted: its KBC::ProjectSecure:: value was not \
             encrypted for component keboola.b in project 1 (but for another component, project \
             or configuration, or with another key); encrypt it again with POST /encrypt for \
             component keboola.b in project 1"
        );
    }

    #[test]
    fn a_ciphertext_under_another_prefix_or_key_or_tampered_fails() {
        let secrets = secrets();
        let scope = Scope::ProjectWide {
            project: "keboola.a".into(),
        };
        let sealed = secrets.encrypt_value("s3cret", &scope);
        let payload = sealed.strip_prefix("KBC::ProjectWideSecure::").unwrap();
        // The same ids under another kind: the kind is part of the associated data.
        let relabelled = format!("KBC::ComponentSecure::{payload}");
        let reader = Scope::for_job("keboola.a", "keboola.a", None);
        assert!(secrets.decrypt_value("#p", &relabelled, &reader).is_err());
        let mut bytes = STANDARD.decode(payload).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("KBC::ProjectWideSecure::{}", STANDARD.encode(&bytes));
        for bad in [
            tampered,
            "KBC::ProjectWideSecure::not base64!".to_string(),
            "KBC::ProjectWideSecure::AAAA".to_string(),
        ] {
            let error = secrets.decrypt_value("#p", &bad, &reader).unwrap_err();
            assert!(matches!(error, SecretsError::Undecryptable { .. }), "{bad}");
        }
        let other_key = Secrets::open(
            Path::new("/nonexistent"),
            Some(&Key::from_hex(&"cd".repeat(32)).unwrap()),
        )
        .unwrap();
        assert!(other_key.decrypt_value("#p", &sealed, &reader).is_err());
    }

    #[test]
    fn ciphertexts_and_empty_strings_pass_through_and_nonces_differ() {
        let secrets = secrets();
        let scope = project("keboola.a", "1");
        let sealed = secrets.encrypt_value("s3cret", &scope);
        assert_eq!(secrets.encrypt_value(&sealed, &scope), sealed);
        let foreign = "KBC::ConfigSecure::made-elsewhere";
        assert_eq!(secrets.encrypt_value(foreign, &scope), foreign);
        assert_eq!(secrets.encrypt_value("", &scope), "");
        assert_eq!(secrets.decrypt_value("#p", "", &scope).unwrap(), "");
        let again = secrets.encrypt_value("s3cret", &scope);
        assert_ne!(again, sealed, "a random nonce each time");
        assert_eq!(
            secrets.decrypt_value("#p", &again, &scope).unwrap(),
            "s3cret"
        );
    }

    #[test]
    fn json_secrets_are_encrypted_at_any_depth_and_decrypted_back() {
        let secrets = secrets();
        let scope = project("keboola.a", "1");
        let original = json!({
            "#top": "t0p-secret",
            "parameters": {
                "user": "plain",
                "#password": "pa55word",
                "#port": 5432,
                "#flag": true,
                "#none": null,
                "#empty": "",
                "#list": ["not", "secrets"],
                "accounts": [{"#token": "tok-1", "name": "one"}, {"nested": {"#key": "k3y-2"}}]
            },
            "#object": {"#inner": "inn3r", "outer": "visible"}
        });
        let mut value = original.clone();
        secrets.encrypt_json(&mut value, &scope);
        let p = &value["parameters"];
        for sealed in [
            &value["#top"],
            &p["#password"],
            &p["#port"],
            &p["#flag"],
            &p["accounts"][0]["#token"],
            &p["accounts"][1]["nested"]["#key"],
            &value["#object"]["#inner"],
        ] {
            assert!(is_encrypted(sealed.as_str().unwrap()), "{sealed}");
        }
        assert_eq!(p["user"], "plain");
        assert_eq!(p["#none"], Value::Null);
        assert_eq!(p["#empty"], "");
        assert_eq!(p["#list"], json!(["not", "secrets"]));
        assert_eq!(p["accounts"][0]["name"], "one");
        assert_eq!(value["#object"]["outer"], "visible");

        let encrypted = value.clone();
        secrets.encrypt_json(&mut value, &scope);
        assert_eq!(value, encrypted, "encrypting twice changes nothing");

        let mut found = Vec::new();
        secrets
            .decrypt_json(
                &mut value,
                &Scope::for_job("keboola.a", "1", Some("c")),
                &mut found,
            )
            .unwrap();
        let mut expected = original;
        expected["parameters"]["#port"] = json!("5432");
        expected["parameters"]["#flag"] = json!("true");
        assert_eq!(value, expected);
        found.sort();
        assert_eq!(
            found,
            [
                "5432",
                "inn3r",
                "k3y-2",
                "pa55word",
                "t0p-secret",
                "tok-1",
                "true"
            ]
        );
    }

    #[test]
    fn json_values_that_cannot_be_decrypted_name_their_path() {
        let secrets = secrets();
        let scope = project("keboola.a", "1");
        let foreign = secrets.encrypt_value("x1234", &project("keboola.b", "1"));
        let cases = [
            (
                json!({"parameters": {"#password": "plain"}}),
                "`parameters.#password` is not encrypted",
            ),
            (
                json!({"rows": [{}, {"#token": 12}]}),
                "`rows[1].#token` is not encrypted",
            ),
            (
                json!({"a": {"b": [[{"#c": foreign}]]}}),
                "`a.b[0][0].#c` cannot be decrypted",
            ),
        ];
        for (mut value, message) in cases {
            let error = secrets
                .decrypt_json(&mut value, &scope, &mut Vec::new())
                .unwrap_err();
            assert!(error.to_string().starts_with(message), "{error}");
        }
    }
}
