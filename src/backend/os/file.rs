//! The lock file: opened (never through a symlink), checked to still be the
//! file at the lock path once locked, and removed on release only while it
//! is.
//!
//! Lock file identity: after locking, the descriptor is checked to still be
//! linked (see [`confirm`]); before removing a lock file on release, that it
//! is still the file at the lock path (device and inode). A holder may remove
//! the lock file on release while others wait on the old inode; they see it
//! and retry on the new file, so exclusion holds across removal. (Python's
//! filelock removed on release without such a check and had to revert it.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt as _, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::flock::try_flock;
use crate::backend::{HeldLock, LockRequest};
use crate::error::LockError;
use crate::mode::LockMode;

/// Opens (creating) the lock file, never through a symlink, creating the
/// lock directory with `dir_mode` if it is missing.
pub(super) fn open_lock_file(req: &LockRequest) -> Result<File, LockError> {
    let path = &*req.lock_path;
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(req.file_mode)
            // O_NOFOLLOW: law 10. O_NONBLOCK: a FIFO planted at the lock path
            // must not hang the open; it is refused just below.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            match std::fs::DirBuilder::new()
                .recursive(req.create_dir_parents)
                .mode(req.dir_mode)
                .create(dir)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(LockError::invalid_target(
                        &*req.target,
                        "its directory does not exist; create it first",
                    ));
                }
                Err(e) => return Err(dir_error(dir, e)),
            }
            open().map_err(|e| open_error(path, e))?
        }
        Err(e) => return Err(open_error(path, e)),
    };
    Ok(file)
}

fn open_error(path: &Path, e: io::Error) -> LockError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason:
                "it is a symlink, and lock files are never followed through symlinks; remove it"
                    .into(),
        },
        Some(libc::EISDIR) | Some(libc::ENXIO) => LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason: "it is not a regular file; remove it or choose another lock dir".into(),
        },
        Some(libc::ENOTDIR) => dir_error(path.parent().unwrap_or(path), e),
        _ => LockError::io("open lock file", path, e),
    }
}

fn dir_error(dir: &Path, e: io::Error) -> LockError {
    match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTDIR) => LockError::LockDir {
            path: dir.to_path_buf(),
            reason: "a path component is a file, not a directory; choose another lock dir".into(),
        },
        _ => LockError::io("create lock dir", dir, e),
    }
}

/// After locking: keeps the lock if the descriptor is a regular file still
/// linked into the filesystem, records the target in a new lock file, and
/// returns it; `None` (lock dropped) if the file was removed meanwhile.
///
/// Why `st_nlink` is enough: a process of this crate removes a lock file only
/// while holding its lock, so once our `flock` succeeds, any removal of the
/// inode we opened has already happened and shows as a link count of zero.
/// This costs no path walk (the `fstat` is needed anyway for the
/// regular-file check), which keeps an uncontended acquisition at four system
/// calls: open, flock, fstat, close. It assumes lock files are not
/// hard-linked elsewhere; nothing of this crate does that.
pub(super) fn confirm(file: File, req: &LockRequest) -> Result<Option<OsHeld>, LockError> {
    let path = &*req.lock_path;
    let mine = file
        .metadata()
        .map_err(|e| LockError::io("inspect lock file", path, e))?;
    if !mine.is_file() {
        return Err(LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason: "it is not a regular file; remove it or choose another lock dir".into(),
        });
    }
    if mine.nlink() == 0 {
        return Ok(None);
    }
    if mine.len() == 0 {
        let mut record = req.target.as_os_str().as_bytes().to_vec();
        record.push(b'\n');
        // Shared holders may both write: the bytes are the same. The record
        // is for people and tools, so it is best effort: on a full disk
        // (ENOSPC, EDQUOT, EFBIG) the lock still works, or every cleanup that
        // would free space would fail too.
        if let Err(e) = file.write_all_at(&record, 0) {
            tracing::debug!(lock_path = %path.display(), error = %e, "lock file left without its target record");
        }
    }
    Ok(Some(OsHeld {
        file,
        lock_path: Arc::clone(&req.lock_path),
        mode: req.mode,
    }))
}

/// A granted OS lock. Dropping it closes the descriptor, which releases.
#[derive(Debug)]
pub(super) struct OsHeld {
    file: File,
    lock_path: Arc<Path>,
    mode: LockMode,
}

impl HeldLock for OsHeld {
    fn release(self: Box<Self>, remove_file: bool) -> Result<(), LockError> {
        if !remove_file {
            return Ok(());
        }
        // A shared holder may remove only if no one else holds the file: try
        // to convert to exclusive without waiting. (The conversion is not
        // atomic on Linux, which is fine: we are letting go either way.)
        if self.mode == LockMode::Shared && try_flock(&self.file, LockMode::Exclusive).is_err() {
            return Ok(());
        }
        let path = &*self.lock_path;
        let mine = self
            .file
            .metadata()
            .map_err(|e| LockError::io("inspect lock file", path, e))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() == mine.dev() && now.ino() == mine.ino() => {
                match std::fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(LockError::io("remove lock file", path, e)),
                }
            }
            // Someone removed or replaced it: not ours to remove.
            _ => Ok(()),
        }
    }
}
