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

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};

use super::flock::try_flock;
use crate::backend::dirs::{self, LockDirFd};
use crate::backend::{HeldLock, LockRequest, tokens};
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::mode::LockMode;

/// For a lock file found busy: refused if it is not ours (or the shared
/// group's), as [`confirm`] refuses it once locked.
pub(super) fn check_busy_lock_file(
    lock_file: &LockFile,
    req: &LockRequest,
) -> Result<(), LockError> {
    let path = &*req.lock_path;
    let meta = lock_file
        .metadata()
        .map_err(|e| LockError::io("inspect lock file", path, e))?;
    lock_file.dir.check_lock_file(path, &meta, req.shared_group)
}

/// An open lock file, with the checked lock dir it was opened in (through
/// which it is removed on release).
#[derive(Debug)]
pub(super) struct LockFile {
    file: File,
    dir: Arc<LockDirFd>,
}

impl std::ops::Deref for LockFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

/// Opens (creating) the lock file in its checked lock dir (see [`dirs`]),
/// through the directory's descriptor and never through a symlink,
/// creating the lock dir with `dir_mode` if it is missing.
pub(super) fn open_lock_file(req: &LockRequest) -> Result<LockFile, LockError> {
    let path = &*req.lock_path;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason: "it names no file in a directory".into(),
        });
    };
    // O_NOFOLLOW: law 10. O_NONBLOCK: a FIFO planted at the lock path must
    // not hang the open; it is refused in `confirm`.
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(req.file_mode);
    let mut retried = false;
    loop {
        let dir_fd = dirs::lock_dir(dir, req)?;
        match rustix::fs::openat(dir_fd.fd(), name, flags, mode) {
            Ok(fd) => {
                return Ok(LockFile {
                    file: File::from(fd),
                    dir: dir_fd,
                });
            }
            // The lock dir was removed since it was checked (creating in a
            // removed directory fails so): check the one now at its path.
            Err(rustix::io::Errno::NOENT) if !retried => {
                dirs::forget(dir);
                retried = true;
            }
            Err(e) => return Err(open_error(path, e.into())),
        }
    }
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
        Some(libc::ENOTDIR) => dirs::dir_error(path.parent().unwrap_or(path), e),
        _ => LockError::io("open lock file", path, e),
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
pub(super) fn confirm(lock_file: LockFile, req: &LockRequest) -> Result<Option<OsHeld>, LockError> {
    let path = &*req.lock_path;
    let LockFile { file, dir } = lock_file;
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
    dir.check_lock_file(path, &mine, req.shared_group)?;
    if mine.len() == 0 {
        // A new lock file shared with a group gets the mode asked for, not
        // what the umask left of it. Best effort, as the record.
        if req.shared_group.is_some() && dir.check_lock_file(path, &mine, None).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(req.file_mode));
        }
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
        dir,
        lock_path: Arc::clone(&req.lock_path),
        target: Arc::clone(&req.target),
        mode: req.mode,
    }))
}

/// A granted OS lock. Dropping it closes the descriptor, which releases.
#[derive(Debug)]
pub(super) struct OsHeld {
    file: File,
    /// The lock dir it was opened in: removal goes through it.
    dir: Arc<LockDirFd>,
    lock_path: Arc<Path>,
    /// Rewritten before the token line when a token is issued.
    target: Arc<Path>,
    mode: LockMode,
}

impl HeldLock for OsHeld {
    fn token(&self) -> Result<FencingToken, LockError> {
        Ok(match self.mode {
            // No exclusive holder can issue one while we hold it shared.
            LockMode::Shared => tokens::last(&self.file),
            LockMode::Exclusive => {
                let mut head = self.target.as_os_str().as_bytes().to_vec();
                head.push(b'\n');
                tokens::issue(&self.file, &head, &self.lock_path)
                    .ok_or_else(|| tokens::exhausted(&self.lock_path))?
            }
        })
    }

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
        let Some(name) = path.file_name() else {
            return Ok(());
        };
        let mine = self
            .file
            .metadata()
            .map_err(|e| LockError::io("inspect lock file", path, e))?;
        // Through the lock dir's descriptor, like the open: what is removed
        // is the name in the directory that was checked.
        match rustix::fs::statat(self.dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == mine.dev() && now.st_ino == mine.ino() => {
                match rustix::fs::unlinkat(self.dir.fd(), name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(LockError::io("remove lock file", path, e.into())),
                }
            }
            // Someone removed or replaced it: not ours to remove.
            _ => Ok(()),
        }
    }
}
