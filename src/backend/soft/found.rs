//! A soft lock file found at a lock path: its identity, its record, and how
//! long since its owner last renewed it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};

use super::record::{self, MAX_RECORD, OwnerRecord, Verdict};
use crate::backend::dirs::LockDirFd;
use crate::backend::os::flock::try_flock;
use crate::error::LockError;
use crate::mode::LockMode;

/// A lock file as read once.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i128,
    pub record: Option<OwnerRecord>,
    /// Empty, or not even the start of a JSON object: no soft lock of this
    /// crate (whose files appear whole, by a hard link) but an OS lock
    /// file (the target's path), a soft lock being created where hard
    /// links are refused, or a leftover.
    pub not_soft: bool,
    /// For a file that is no soft lock: whether someone holds a `flock` on
    /// it (an OS-backend holder, or a soft holder still writing its record).
    pub flock: FlockState,
    /// The descriptor holding that `flock` when it was granted: kept while
    /// this is, so that a breaker removes the file with nobody able to take
    /// it in between (an OS waiter blocked on it would otherwise hold a file
    /// about to be unlinked).
    pub held: Option<Arc<File>>,
    /// Since the last renewal (the mtime), by this host's clock; zero if
    /// the mtime is ahead of it.
    pub age: Duration,
}

/// What a non-blocking `flock` on a found file said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlockState {
    /// Busy: a holder has it.
    Held,
    /// Granted (and let go at once): nobody holds it.
    Free,
    /// Not asked (a soft record), or `flock` does not work here.
    Unknown,
}

impl Found {
    /// Names this holding among every other of the same lock file: the
    /// record's nonce, or for a file without a readable record its inode
    /// and change time (an inode number alone is reused at once).
    pub(crate) fn key(&self) -> String {
        match &self.record {
            Some(r) => format!("n{}", sanitize(&r.nonce)),
            None => format!("i{}-{}", self.ino, self.ctime_ns),
        }
    }

    /// What a waiter concludes (see [`record::judge`]); a file that is no
    /// soft lock at all holds nothing.
    pub(crate) fn verdict(&self, default_lease: Duration) -> Verdict {
        if self.not_soft {
            return match self.flock {
                FlockState::Held => Verdict::Live,
                FlockState::Free => Verdict::Stale(
                    "it is no soft lock (empty, or an OS lock file naming its target) and nobody holds its flock".into(),
                ),
                // `flock` failed: the file may be an OS holder's all the
                // same (a transient ENOLCK), or a soft lock being created
                // where links and `flock` are both refused. Judged as an
                // unreadable record is: by its age against the lease.
                FlockState::Unknown if self.age > default_lease => Verdict::Stale(format!(
                    "it is no soft lock (empty, or an OS lock file), flock does not answer, and it is unchanged for {:.1} s",
                    self.age.as_secs_f64()
                )),
                FlockState::Unknown => Verdict::Live,
            };
        }
        record::judge(self.record.as_ref(), self.age, default_lease)
    }

    /// Whether `other` is the same holding as this.
    pub(crate) fn same_holding(&self, other: &Found) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.key() == other.key()
    }
}

/// Keeps a nonce read from a file to characters safe in a file name.
fn sanitize(nonce: &str) -> String {
    nonce
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}

/// Reads the lock file `name` in `dir`: `None` if there is none. Refused
/// (as the OS backend refuses) if it is not a regular file or not ours.
pub(crate) fn inspect(
    dir: &LockDirFd,
    name: &OsStr,
    lock_path: &Path,
    shared_group: Option<u32>,
) -> Result<Option<Found>, LockError> {
    // Read-write where allowed: an exclusive `flock` emulated with POSIX
    // locks (NFS) needs a descriptor open for writing.
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let opened = match rustix::fs::openat(dir.fd(), name, flags | OFlags::RDWR, Mode::empty()) {
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::ROFS) => {
            rustix::fs::openat(dir.fd(), name, flags | OFlags::RDONLY, Mode::empty())
        }
        other => other,
    };
    let mut file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(LockError::UnsafeLockFile {
                path: lock_path.to_path_buf(),
                reason:
                    "it is a symlink, and lock files are never followed through symlinks; remove it"
                        .into(),
            });
        }
        Err(e) => return Err(LockError::io("open soft lock file", lock_path, e.into())),
    };
    let meta = file
        .metadata()
        .map_err(|e| LockError::io("inspect soft lock file", lock_path, e))?;
    if !meta.is_file() {
        return Err(LockError::UnsafeLockFile {
            path: lock_path.to_path_buf(),
            reason: "it is not a regular file; remove it or choose another lock dir".into(),
        });
    }
    dir.check_lock_file(lock_path, &meta, shared_group)?;
    let mut bytes = Vec::with_capacity(512);
    // A read error leaves the record unreadable (judged by age), never
    // "no soft lock": a flaky read must not break a live lock.
    let read = (&mut file).take(MAX_RECORD as u64).read_to_end(&mut bytes);
    let not_soft = read.is_ok() && !bytes.trim_ascii_start().starts_with(b"{");
    let flock = if not_soft {
        match try_flock(&file, LockMode::Exclusive) {
            Ok(()) => FlockState::Free,
            Err(fs4::TryLockError::WouldBlock) => FlockState::Held,
            Err(fs4::TryLockError::Error(_)) => FlockState::Unknown,
        }
    } else {
        FlockState::Unknown
    };
    let held = (flock == FlockState::Free).then(|| Arc::new(file));
    let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
    Ok(Some(Found {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        record: OwnerRecord::parse(&bytes),
        not_soft,
        flock,
        held,
        age: SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO),
    }))
}
