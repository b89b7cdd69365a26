//! A small real file system for host-fault tests: a tmpfs of a few MiB mounted on a folder
//! (root only: CI runs as root), with a ballast file that fills it and frees it again. Unmounted
//! when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at `path`.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if missing); fails the test saying why
    /// when it cannot (the tests that need it run as root).
    pub fn mount(path: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(path).expect("the mount point");
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            output.status.success(),
            "cannot mount a {mib} MiB tmpfs at {} (host-fault tests need root, as CI has): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free for an unprivileged writer.
    pub fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.path).expect("statvfs");
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a ballast file until at most `leave` bytes are free (writes that fail with "no
    /// space left" end it early: the disk is as full as it gets).
    pub fn fill(&self, leave: u64) {
        let chunk = vec![0u8; 1 << 16];
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast())
            .expect("the ballast file");
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let size = (free - leave).min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..size]).is_err() {
                break;
            }
            let _ = file.flush();
        }
    }

    /// Deletes the ballast file.
    pub fn free_ballast(&self) {
        let _ = std::fs::remove_file(self.ballast());
    }

    fn ballast(&self) -> PathBuf {
        self.path.join("ballast")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
