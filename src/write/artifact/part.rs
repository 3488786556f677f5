//! A `.part` and the marker that says it is this crate's.
//!
//! `<target>.part` is only a name: a real file can be called that (an
//! artifact whose own name ends in `.part`). So before a writer creates a
//! `.part` it records a marker in the lock dir, `<lock dir>/artifact.<hash>.part`
//! (the artifact's lock file name with `.part` for `.lock`), then creates
//! the `.part` exclusively and records its device and inode in the marker;
//! the marker goes once the `.part` is gone (renamed over the target, or
//! removed). A `.part` is resumed or removed only while the target's lock
//! is held and its marker names it. The lock dir is this user's (or the
//! shared group's, law 10), so nobody outside them can forge a marker. A
//! crash between the marker and the `.part`'s creation leaves a `pending`
//! marker, which takes the next `.part` found for its own; a stale marker
//! is cleared whenever the lock finds no `.part` or one it does not name.

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

    /// Whether `found`, the `.part` found now, is this crate's: its marker
    /// is there and names it (device and inode). A marker written before a
    /// crash that came before the `.part`'s identity was recorded names
    /// none, and takes what it finds for its own.
    pub(super) fn is_ours(&self, found: &std::fs::Metadata) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let text = match std::fs::read(&self.marker) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let Some((dev, ino)) = std::str::from_utf8(first)
            .ok()
            .and_then(|line| line.split_once(' '))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)))
        else {
            return Ok(true);
        };
        Ok(dev == found.dev() && ino == found.ino())
    }

    /// Whether a marker is there (whatever it names).
    pub(super) fn is_marked(&self) -> bool {
        std::fs::symlink_metadata(&self.marker).is_ok_and(|m| m.is_file())
    }

    /// Records the marker, before the `.part` is created: `pending`, then
    /// the `.part`'s path, for people and tools (best effort: a full disk
    /// may refuse the bytes, not the empty file).
    pub(super) fn mark(&self) -> io::Result<()> {
        self.write_marker(b"pending")
    }

    /// Records the identity of the `.part` just created in its marker, so
    /// that a later file of that name is not taken for it. Best effort:
    /// a marker left `pending` still marks the `.part` as ours.
    pub(super) fn record(&self, part: &std::fs::File) {
        use std::os::unix::fs::MetadataExt;
        let recorded = part.metadata().and_then(|meta| {
            self.write_marker(format!("{} {}", meta.dev(), meta.ino()).as_bytes())
        });
        if let Err(e) = recorded {
            tracing::debug!(marker = %self.marker.display(), error = %e, "marker left pending");
        }
    }

    fn write_marker(&self, first_line: &[u8]) -> io::Result<()> {
        let mut marker = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.marker)?;
        let mut record = first_line.to_vec();
        record.push(b'\n');
        record.extend_from_slice(self.part.as_os_str().as_encoded_bytes());
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
