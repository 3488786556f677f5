//! A `.part` and the marker that says it is this crate's.
//!
//! `<target>.part` is only a name: a real file can be called that (an
//! artifact whose own name ends in `.part`). So before a writer creates a
//! `.part` it records a marker in the lock dir, `<lock dir>/artifact.<hash>.part`
//! (the artifact's lock file name with `.part` for `.lock`), and removes
//! the marker once the `.part` is gone (renamed over the target, or
//! removed). A `.part` is resumed or removed only while the target's lock
//! is held and its marker is there; the lock dir is this user's alone
//! (law 10), so nobody else can forge a marker. A crash between writing
//! the marker and creating the `.part` leaves a marker without a `.part`,
//! which is harmless: the next writer overwrites it.

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a target's `.part` and its marker are.
#[derive(Debug, Clone)]
pub(super) struct PartPaths {
    /// `<target>.part`, beside the target.
    pub part: PathBuf,
    /// The marker in the lock dir.
    pub marker: PathBuf,
}

impl PartPaths {
    /// The `.part` of `target`, whose artifact lock file is `lock_path`.
    pub(super) fn new(target: &Path, lock_path: &Path) -> Self {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".part");
        PartPaths {
            part: target.with_file_name(name),
            marker: lock_path.with_extension("part"),
        }
    }

    /// Whether a `.part` found now is this crate's: its marker is there.
    pub(super) fn is_ours(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.marker) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the marker, before the `.part` is created. The `.part`'s
    /// path is written into it for people and tools, best effort (a full
    /// disk may refuse the bytes, not the empty file).
    pub(super) fn mark(&self) -> io::Result<()> {
        let mut marker = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.marker)?;
        let mut record = self.part.as_os_str().as_encoded_bytes().to_vec();
        record.push(b'\n');
        if let Err(e) = marker.write_all(&record) {
            tracing::debug!(marker = %self.marker.display(), error = %e, "marker left without its record");
        }
        Ok(())
    }

    /// Removes the `.part` (if there), then its marker: never a marker
    /// without removing its `.part` first, so a `.part` is never left
    /// unmarked.
    pub(super) fn remove(&self) -> io::Result<()> {
        remove_if_exists(&self.part)?;
        self.unmark();
        Ok(())
    }

    /// Removes the marker once the `.part` is gone (renamed or removed).
    /// Best effort: a marker without a `.part` is harmless.
    pub(super) fn unmark(&self) {
        if let Err(e) = remove_if_exists(&self.marker) {
            tracing::warn!(marker = %self.marker.display(), error = %e, "could not remove a .part marker");
        }
    }
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part_sits_beside_the_target_and_its_marker_beside_the_lock_file() {
        let paths = PartPaths::new(
            Path::new("/a/b.pdf"),
            Path::new("/a/.locks/artifact.0123.lock"),
        );
        assert_eq!(paths.part, Path::new("/a/b.pdf.part"));
        assert_eq!(paths.marker, Path::new("/a/.locks/artifact.0123.part"));
    }
}
