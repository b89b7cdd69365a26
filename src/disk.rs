//! Free space on the file system under `data_dir`: what the store's write gate, the scheduler's
//! `min_free_space` and the space checks before big writes (debug archives, Storage files) read.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The free space of the file system holding a path, as an unprivileged process may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// Bytes a process without root's reserve may still write.
    pub free: u64,
    /// The mount point of that file system (the highest ancestor on the same device).
    pub mount: PathBuf,
}

/// The free space of the file system holding `path` (which must exist).
pub fn space(path: &Path) -> std::io::Result<Space> {
    Ok(Space {
        free: free_bytes(path)?,
        mount: mount_point(path),
    })
}

/// Only the free bytes of `space` (one `statvfs`, no walk to the mount point).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether `needed` bytes fit on the file system holding `path`, keeping `reserve` free;
/// `Err` with the space there when they do not.
pub fn fits(path: &Path, needed: u64, reserve: u64) -> std::io::Result<Result<(), Space>> {
    let space = space(path)?;
    if needed.saturating_add(reserve) <= space.free {
        Ok(Ok(()))
    } else {
        Ok(Err(space))
    }
}

/// The bytes of the files under `path` (links not followed), for a write that copies them.
pub fn size_of_tree(path: &Path) -> std::io::Result<u64> {
    let metadata = std::fs::symlink_metadata(path)?;
    if !metadata.is_dir() {
        return Ok(metadata.len());
    }
    let mut total = 0u64;
    for entry in std::fs::read_dir(path)? {
        total = total.saturating_add(size_of_tree(&entry?.path())?);
    }
    Ok(total)
}

/// A byte count as people read it: `512 B`, `3.2 MiB`, `1.5 GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A size setting: a whole number of bytes, or with a binary unit (`KiB`, `MiB`, `GiB`, `TiB`);
/// blanks around and between are ignored, units in any case. `"0"` is 0.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(factor)
}

/// The highest ancestor of `path` on the same device: where its file system is mounted.
fn mount_point(path: &Path) -> PathBuf {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(device) = std::fs::metadata(&path).map(|m| m.dev()) else {
        return path;
    };
    let mut mount = path.as_path();
    while let Some(parent) = mount.parent() {
        match std::fs::metadata(parent) {
            Ok(metadata) if metadata.dev() == device => mount = parent,
            _ => break,
        }
    }
    mount.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size(" 2 gib "), Some(2 << 30));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("12B"), Some(12));
        assert_eq!(parse_size("256m"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("-1MiB"), None);
        assert_eq!(parse_size("99999999999TiB"), None);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 << 20).to_string(), "3.0 MiB");
        assert_eq!(Bytes(1536 << 20).to_string(), "1.5 GiB");
    }

    #[test]
    fn space_names_the_mount_and_a_tree_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("y"), vec![0u8; 24]).unwrap();
        assert_eq!(size_of_tree(dir.path()).unwrap(), 1024);
        let space = space(dir.path()).unwrap();
        assert!(space.free > 0);
        assert!(dir.path().canonicalize().unwrap().starts_with(&space.mount));
        assert!(matches!(fits(dir.path(), u64::MAX / 2, 0), Ok(Err(_))));
        assert!(matches!(fits(dir.path(), 1, 0), Ok(Ok(()))));
    }
}
