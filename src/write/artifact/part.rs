//! A `.part` and the marker that says it is this crate's.
//!
//! `<target>.part` is only a name: a real file can be called that (an
//! artifact whose own name ends in `.part`). So before a writer creates a
//! `.part` it records a marker in the lock dir, `<lock dir>/artifact.<hash>.part`
//! (the artifact's lock file name with `.part` for `.lock`), then creates
//! the `.part` exclusively and records its inode (and birth time, where the
//! filesystem keeps one) in the marker;
//! the marker goes once the `.part` is gone (renamed over the target, or
//! removed). A `.part` is resumed or removed only while the target's lock
//! is held and its marker names it. The lock dir is this user's (or the
//! shared group's, law 10), so nobody outside them can forge a marker. A
//! crash between the marker and the `.part`'s creation leaves a `pending`
//! marker, which takes the next `.part` found for its own; a marker is
//! cleared whenever the lock finds no `.part`, and kept (as evidence) when
//! the `.part` found is not the one it names.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a target's `.part` and its marker are. Crate-visible for tools
/// that clean a lock dir (`lock-doctor clean`), which remove a `.part` only
/// under its artifact lock and only if [`PartPaths::is_ours`], as a writer
/// does.
#[derive(Debug, Clone)]
pub(crate) struct PartPaths {
    /// `<target>.part`, beside the target.
    pub part: PathBuf,
    /// The marker in the lock dir.
    pub marker: PathBuf,
}

impl PartPaths {
    /// The `.part` of `target`, whose artifact lock file is `lock_path`.
    pub(crate) fn new(target: &Path, lock_path: &Path) -> Self {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".part");
        PartPaths {
            part: target.with_file_name(name),
            marker: lock_path.with_extension("part"),
        }
    }

    /// Whether `found`, the `.part` found now, is this crate's: its marker
    /// is there and names it by inode. The device is not compared: it is
    /// numbered afresh by a remount, and differs between NFS clients. On a
    /// network filesystem, where inodes may be made up per mount (SMB,
    /// FUSE), a marker names its `.part` by path alone. A marker left
    /// `pending` (a crash before the `.part`'s identity was recorded) takes
    /// what it finds for its own; one that says anything else names no
    /// file.
    pub(crate) fn is_ours(&self, found: &std::fs::Metadata) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let text = match std::fs::read(&self.marker) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if crate::mounts::may_hang(&self.part) {
            return Ok(true);
        }
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        if first == b"pending" {
            return Ok(true);
        }
        let Some(line) = std::str::from_utf8(first).ok() else {
            return Ok(false);
        };
        let mut fields = line.split(' ');
        let (_dev, ino, born) = (fields.next(), fields.next(), fields.next());
        if ino.and_then(|i| i.parse::<u64>().ok()) != Some(found.ino()) {
            return Ok(false);
        }
        // An inode number is reused once its file is gone: where the
        // filesystem keeps a birth time, it tells the new file apart.
        Ok(
            match (
                born.and_then(|b| b.parse::<u128>().ok()),
                birth_nanos(found),
            ) {
                (Some(recorded), Some(now)) => recorded == now,
                _ => true,
            },
        )
    }

    /// Records the marker, before the `.part` is created: `pending`, then
    /// the `.part`'s path, for people and tools.
    pub(super) fn mark(&self) -> io::Result<()> {
        self.write_marker(b"pending")
    }

    /// Records the identity of the `.part` just created in its marker, so
    /// that a later file of that name is not taken for it. Best effort:
    /// a marker left `pending` still marks the `.part` as ours.
    pub(super) fn record(&self, part: &std::fs::File) {
        use std::os::unix::fs::MetadataExt;
        let recorded = part.metadata().and_then(|meta| {
            let born = birth_nanos(&meta).map_or_else(|| "-".to_owned(), |n| n.to_string());
            self.write_marker(format!("{} {} {born}", meta.dev(), meta.ino()).as_bytes())
        });
        if let Err(e) = recorded {
            tracing::debug!(marker = %self.marker.display(), error = %e, "marker left pending");
        }
    }

    /// Writes the marker in place, then cuts it to length: a write that
    /// fails (a full disk) leaves the previous content whole, never an empty
    /// or half-written marker.
    fn write_marker(&self, first_line: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let marker = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.marker)?;
        let mut record = first_line.to_vec();
        record.push(b'\n');
        record.extend_from_slice(self.part.as_os_str().as_encoded_bytes());
        record.push(b'\n');
        marker.write_all_at(&record, 0)?;
        marker.set_len(record.len() as u64)
    }

    /// Removes the `.part` (if there), then its marker: never a marker
    /// without removing its `.part` first, so a `.part` is never left
    /// unmarked.
    pub(crate) fn remove(&self) -> io::Result<()> {
        remove_if_exists(&self.part)?;
        self.unmark();
        Ok(())
    }

    /// Removes the marker once the `.part` is gone (renamed or removed).
    /// Best effort: a marker without a `.part` is harmless.
    pub(crate) fn unmark(&self) {
        if let Err(e) = remove_if_exists(&self.marker) {
            tracing::warn!(marker = %self.marker.display(), error = %e, "could not remove a .part marker");
        }
    }
}

/// The `.part` the marker at `marker` names (its second line), for tools
/// that find markers in a lock dir; `None` if the marker names none (cut
/// short by a crash). Read without following a symlink: the lock dir holds
/// none of this crate's.
pub(crate) fn part_named_by(marker: &Path) -> io::Result<Option<PathBuf>> {
    use std::io::Read as _;
    use std::os::unix::ffi::OsStrExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(marker)?;
    let mut text = Vec::new();
    // A marker is two short lines; more than this is not one.
    (&mut file).take(64 * 1024).read_to_end(&mut text)?;
    let mut lines = text.split(|b| *b == b'\n');
    let _identity = lines.next();
    Ok(lines
        .next()
        .filter(|line| line.starts_with(b"/"))
        .map(|line| PathBuf::from(std::ffi::OsStr::from_bytes(line))))
}

/// A file's birth time in nanoseconds since the epoch, where the
/// filesystem records one (`statx`).
fn birth_nanos(meta: &std::fs::Metadata) -> Option<u128> {
    let born = meta.created().ok()?;
    born.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
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

    /// The marker names its `.part` by inode, not device (a remount, or
    /// another NFS client, numbers the device afresh); `pending` claims
    /// what it finds; anything else names no file.
    #[test]
    fn a_marker_names_its_part_by_inode_and_nothing_else_claims() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = PartPaths::new(&dir.path().join("t.bin"), &dir.path().join("t.lock"));
        std::fs::write(&paths.part, b"x").unwrap();
        let found = std::fs::symlink_metadata(&paths.part).unwrap();
        assert!(!paths.is_ours(&found).unwrap(), "no marker");
        for (marker, ours) in [
            (format!("{} {}", found.dev() + 1, found.ino()), true),
            (format!("{} {}", found.dev(), found.ino() + 1), false),
            ("pending".to_owned(), true),
            (String::new(), false),
            ("garbage".to_owned(), false),
        ] {
            std::fs::write(&paths.marker, format!("{marker}\n")).unwrap();
            assert_eq!(paths.is_ours(&found).unwrap(), ours, "{marker:?}");
        }
        // A reused inode number with another birth time is another file.
        if birth_nanos(&found).is_some() {
            std::fs::write(&paths.marker, format!("0 {} 1\n", found.ino())).unwrap();
            assert!(!paths.is_ours(&found).unwrap());
        }
        let file = std::fs::File::open(&paths.part).unwrap();
        paths.record(&file);
        assert!(paths.is_ours(&found).unwrap());
        assert_eq!(
            part_named_by(&paths.marker).unwrap(),
            Some(paths.part.clone())
        );
        std::fs::write(&paths.marker, "pending\n").unwrap();
        assert_eq!(part_named_by(&paths.marker).unwrap(), None);
    }
}
