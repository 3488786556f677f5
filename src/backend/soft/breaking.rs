//! Breaking a stale soft lock so that exactly one breaker wins, and a
//! fresh lock taken meanwhile is never removed by a breaker that judged an
//! older one (the race Python's filelock had to redesign for).
//!
//! The rule: only the process that creates `<lock file>.break.<key>` with
//! `O_EXCL` may remove the holding `key` names (a record's nonce, unique
//! per holding; see [`Found::key`]); its owner's own release goes through
//! the same door. Having won the door, the breaker reads the lock file
//! again: if it is still that holding, nobody else can have removed it, so
//! the removal that follows removes that holding and no other. If it is
//! another holding (the old one was released and the lock taken afresh),
//! the breaker leaves it alone.
//!
//! A door left behind by a breaker that died inside it would keep that
//! holding from being broken: a door older than [`DOOR_STALE`] (or the
//! lease, if longer) is removed. Two breakers doing that at the same
//! moment, while a third process died inside the door, could both go
//! through: that needs a crash in a window of microseconds plus two
//! contenders, and is the one case this protocol does not exclude.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::found::{self, Found};
use super::record::{self, Verdict};
use crate::backend::dirs::LockDirFd;
use crate::error::LockError;

/// How old a door must be before it is taken for a dead breaker's.
pub(crate) const DOOR_STALE: Duration = Duration::from_secs(10);

/// The door for the holding `key` of lock file `name`.
pub(crate) fn door_name(name: &OsStr, key: &str) -> OsString {
    let mut door = name.to_os_string();
    door.push(".break.");
    door.push(key);
    door
}

/// What going through the door found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Door {
    /// Ours: the caller may act on the holding.
    Opened(OsString),
    /// Another process is at it now.
    Busy,
}

/// Tries to open the door for `key`: creates it with `O_EXCL`, recording
/// who did. A door older than the bound is removed (see the module docs)
/// and reported busy this time.
pub(crate) fn open_door(
    dir: &LockDirFd,
    name: &OsStr,
    key: &str,
    lease: Duration,
    lock_path: &Path,
) -> Result<Door, LockError> {
    let door = door_name(name, key);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir.fd(), &door, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => {
            let me = record::me();
            let mut file = std::fs::File::from(fd);
            // Who is in the door, for an operator; best effort.
            let _ = writeln!(file, "pid {} host {}", std::process::id(), me.host);
            Ok(Door::Opened(door))
        }
        Err(rustix::io::Errno::EXIST) => {
            // Never longer than five minutes: a huge lease must not make a
            // dead breaker's door stop every later break.
            let stale_after = DOOR_STALE.max(lease).min(Duration::from_secs(300));
            if let Ok(st) = rustix::fs::statat(dir.fd(), &door, AtFlags::SYMLINK_NOFOLLOW) {
                let modified = SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(st.st_mtime).unwrap_or(0),
                        u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                    );
                if SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age > stale_after)
                {
                    tracing::warn!(lock_path = %lock_path.display(), door = ?door, "removing a break door left by a breaker that died");
                    let _ = rustix::fs::unlinkat(dir.fd(), &door, AtFlags::empty());
                }
            }
            Ok(Door::Busy)
        }
        Err(e) => Err(LockError::io(
            "create soft lock break file",
            lock_path,
            e.into(),
        )),
    }
}

/// Closes a door opened by [`open_door`]. Best effort: a door left behind
/// names a holding that is gone, so it stops nothing.
pub(crate) fn close_door(dir: &LockDirFd, door: &OsStr) {
    let _ = rustix::fs::unlinkat(dir.fd(), door, AtFlags::empty());
}

/// Removes the lock file `name` if it is still the holding `judged`, which
/// was found stale; `Ok(true)` when it was removed. The caller retries
/// taking the lock either way.
pub(crate) fn break_stale(
    dir: &LockDirFd,
    name: &OsStr,
    lock_path: &Path,
    shared_group: Option<u32>,
    mut judged: Found,
    default_lease: Duration,
) -> Result<bool, LockError> {
    // Let go of the judged file's flock: the look again below takes it
    // anew and keeps it until the file is removed.
    judged.held = None;
    let lease = judged
        .record
        .as_ref()
        .map_or(default_lease, |r| Duration::from_millis(r.lease_ms));
    let door = match open_door(dir, name, &judged.key(), lease, lock_path)? {
        Door::Opened(door) => door,
        Door::Busy => return Ok(false),
    };
    let outcome = (|| {
        let Some(now) = found::inspect(dir, name, lock_path, shared_group)? else {
            return Ok(false);
        };
        // Judged again: its owner may have renewed since the first look.
        let Verdict::Stale(why) = now.verdict(default_lease) else {
            return Ok(false);
        };
        if !now.same_holding(&judged) {
            return Ok(false);
        }
        // Removed with `now` (and the flock it may hold) still alive.
        let removed = rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty());
        drop(now);
        match removed {
            Ok(()) => {
                tracing::warn!(lock_path = %lock_path.display(), reason = %why, "broke a stale soft lock");
                Ok(true)
            }
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(LockError::io(
                "remove stale soft lock file",
                lock_path,
                e.into(),
            )),
        }
    })();
    close_door(dir, &door);
    outcome
}
