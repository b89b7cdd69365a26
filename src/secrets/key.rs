//! The daemon's encryption key: 32 bytes written as 64 hex characters, in the settings
//! (`encryption_key`) or in `<data_dir>/secret.key`, which the first start creates (mode 0600).

use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chacha20poly1305::aead::Generate;

use super::SecretsError;

/// The name of the key file in `data_dir`.
pub const KEY_FILE: &str = "secret.key";

/// A 256-bit key. Its `Debug` shows `[hidden]`, so settings and logs never carry it.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// A key from 64 hex characters (surrounding whitespace ignored); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Key> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Key(bytes))
    }

    pub(super) fn bytes(&self) -> [u8; 32] {
        self.0
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([hidden])")
    }
}

/// Reads the key file of `data_dir`, or creates it with a new random key. The file appears
/// whole or not at all (written aside, synced, then linked into place without replacing one
/// that another process made meanwhile).
pub(super) fn load_or_create(data_dir: &Path) -> Result<Key, SecretsError> {
    let path = data_dir.join(KEY_FILE);
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    let create = |source| SecretsError::CreateKey {
        path: path.clone(),
        source,
    };
    let key = Key(<[u8; 32]>::generate());
    let mut file = tempfile::Builder::new()
        .prefix(".secret.key.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(data_dir)
        .map_err(create)?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(create)?;
    match file.persist_noclobber(&path) {
        Ok(_) => {
            std::fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(create)?;
            tracing::info!(path = %path.display(), "created a new encryption key; back it up with the data dir");
            Ok(key)
        }
        Err(error) if error.error.kind() == ErrorKind::AlreadyExists => {
            read(&path)?.ok_or_else(|| SecretsError::BadKeyFile { path: path.clone() })
        }
        Err(error) => Err(create(error.error)),
    }
}

/// The key in `path`; `None` when there is no such file.
fn read(path: &Path) -> Result<Option<Key>, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Key::from_hex(&text)
            .map(Some)
            .ok_or_else(|| SecretsError::BadKeyFile {
                path: path.to_path_buf(),
            }),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretsError::ReadKey {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Scope, Secrets};

    #[test]
    fn hex_keys_are_64_hex_characters() {
        let hex = &"0123456789abcdefABCDEF".repeat(3)[..64];
        let key = Key::from_hex(&format!(" {hex}\n")).unwrap();
        assert_eq!(key.bytes()[..4], [0x01, 0x23, 0x45, 0x67]);
        assert_eq!(key.to_hex(), hex.to_ascii_lowercase());
        for bad in [
            "",
            "ab",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(66),
            &"é".repeat(32),
        ] {
            assert!(Key::from_hex(bad).is_none(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", Key::from_hex(&"ab".repeat(32)).unwrap()),
            "Key([hidden])"
        );
    }

    #[test]
    fn the_key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope::ProjectWide {
            project: "1".into(),
        };
        let first = Secrets::open(dir.path(), None).unwrap();
        let path = dir.path().join(KEY_FILE);
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(Key::from_hex(&text).is_some(), "{text}");
        let sealed = first.encrypt_value("s3cret", &scope);

        let second = Secrets::open(dir.path(), None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "kept");
        assert_eq!(
            second.decrypt_value("#p", &sealed, &scope).unwrap(),
            "s3cret"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the key file");
    }

    #[test]
    fn a_configured_key_wins_and_creates_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_hex(&"12".repeat(32)).unwrap();
        let scope = Scope::ProjectWide {
            project: "1".into(),
        };
        let sealed = Secrets::open(dir.path(), Some(&key))
            .unwrap()
            .encrypt_value("s3cret", &scope);
        assert!(!dir.path().join(KEY_FILE).exists());
        let again = Secrets::open(Path::new("/nonexistent"), Some(&key)).unwrap();
        assert_eq!(
            again.decrypt_value("#p", &sealed, &scope).unwrap(),
            "s3cret"
        );
        let from_file = Secrets::open(dir.path(), None).unwrap();
        assert!(from_file.decrypt_value("#p", &sealed, &scope).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "not a key").unwrap();
        let error = Secrets::open(dir.path(), None).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "the encryption key file {} does not hold 64 hex characters; restore it from a \
                 backup (values encrypted with another key cannot be decrypted)",
                path.display()
            )
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "not a key",
            "left alone"
        );
    }
}
