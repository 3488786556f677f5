//! The lock file: opened (never through a symlink), checked to still be the
//! file at the lock path once locked, and removed on release only while it
//! is.
//!
//! Lock file identity: after locking, the descriptor is checked to still be
//! linked (see [`confirm`]; for a descriptor kept open between holdings,
//! only when its watch tells of a change, see [`super::identity`]); before
//! removing a lock file on release, that it is still the file at the lock
//! path (device and inode). A holder may remove
//! the lock file on release while others wait on the old inode; they see it
//! and retry on the new file, so exclusion holds across removal. (Python's
//! filelock removed on release without such a check and had to revert it.)

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::flock::{try_flock, unlock};
use super::hot::{HotSet, max_hot_files};
use super::identity::{self, Watch, Watching};
use crate::backend::dirs::{self, LockDirFd};
use crate::backend::{HeldLock, LockRequest, tokens};
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::mode::LockMode;
use crate::per_process::PerProcess;
use crate::sys::fork_generation;

/// For a lock file found busy: refused if it is not ours (or the shared
/// group's), as [`confirm`] refuses it once locked. Returns whether it is
/// still linked: a descriptor of a removed lock file (kept open since an
/// earlier holding) is busy only with a holder of the old file, and must
/// be opened afresh, not waited on.
pub(super) fn check_busy_lock_file(
    lock_file: &LockFile,
    req: &LockRequest,
) -> Result<bool, LockError> {
    let path = &*req.lock_path;
    let meta = lock_file
        .metadata()
        .map_err(|e| LockError::io("inspect lock file", path, e))?;
    lock_file
        .dir
        .check_lock_file(path, &meta, req.shared_group)?;
    Ok(meta.nlink() > 0)
}

/// An open lock file, with the checked lock dir it was opened in (through
/// which it is removed on release).
#[derive(Debug)]
pub(super) struct LockFile {
    file: File,
    dir: Arc<LockDirFd>,
    /// How its identity is told between holdings, once it is kept.
    identity: Identity,
}

/// How a lock file's identity is checked after its `flock`.
#[derive(Debug)]
enum Identity {
    /// By `fstat`; not watched yet: `keeps` times kept so far.
    Unwatched { keeps: u32 },
    /// By `fstat`: it cannot be watched.
    Unwatchable,
    /// Watched ([`super::identity`]): once checked in full for a shared
    /// group (`checked_for`: the ownership check depends on it), when the
    /// watch's count was `seen`, by asking the watch.
    Watched {
        watch: Arc<Watch>,
        checked_for: Option<Option<u32>>,
        seen: u64,
    },
}

/// A lock file is watched from its this-many-th keeping on: a hot lock of
/// a long-running process. Making and ending a watch costs about what 35
/// holdings save, so a descriptor the hot set evicts before it is used
/// again is never watched; and a process whose inotify instance has
/// watches takes up to about 20 ms longer to exit (the kernel waits for a
/// grace period to free it), about what 100,000 holdings save, which a
/// command that takes a lock a few hundred times and ends should not pay.
const WATCH_AFTER_KEEPS: u32 = 1024;

impl std::ops::Deref for LockFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

/// This process's lock files kept open between holdings (see
/// [`super::hot`]; a forked child starts with none of its own).
fn kept() -> &'static HotSet<LockFile> {
    static KEPT: PerProcess<HotSet<LockFile>> = PerProcess::new();
    KEPT.get(HotSet::default)
}

/// The lock file of `req`, checked out: the descriptor kept for it (see
/// [`super::hot`]) if its lock dir is still the trusted one, else opened
/// ([`open_lock_file`]). Out of descriptors, the kept ones are closed and
/// the open tried once more.
pub(super) fn open_kept(req: &LockRequest) -> Result<LockFile, LockError> {
    if let Some(file) = kept().take(&req.lock_path) {
        if file.dir.is_current_for(req.shared_group) {
            return Ok(file);
        }
        if let Some((dir, _)) = split_lock_path(&req.lock_path)
            && let Ok(trusted) = dirs::lock_dir(dir, req)
            && Arc::ptr_eq(&file.dir, &trusted)
        {
            return Ok(file);
        }
        // The lock dir was checked again since (once a second): the
        // descriptor is of the old check, and opened afresh.
        drop(file);
    }
    match open_lock_file(req) {
        Err(e) if e.is_out_of_descriptors() => {
            if close_kept() == 0 {
                return Err(e);
            }
            open_lock_file(req)
        }
        opened => opened,
    }
}

/// A lock path's directory and file name, split at its last `/`. Lock
/// paths are built by this crate (`naming::lock_path_in`), absolute and
/// without `.` or `..`, so the bytes tell it all; `Path::parent` parses
/// components, a visible share of an uncontended acquisition. `None` for a
/// path that names no file in a directory.
fn split_lock_path(path: &Path) -> Option<(&Path, &OsStr)> {
    let bytes = path.as_os_str().as_bytes();
    let slash = bytes.iter().rposition(|b| *b == b'/')?;
    let name = &bytes[slash + 1..];
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    let mut dir = &bytes[..slash];
    while dir.len() > 1 && dir.ends_with(b"/") {
        dir = &dir[..dir.len() - 1];
    }
    let dir: &[u8] = if dir.is_empty() { b"/" } else { dir };
    Some((Path::new(OsStr::from_bytes(dir)), OsStr::from_bytes(name)))
}

/// Gives back a checked-out lock file that holds no lock (a busy try's, or
/// one just unlocked) for the next use of the same lock.
/// Not on a network filesystem, where file calls may hang.
pub(super) fn give_back(lock_path: &Arc<Path>, file: LockFile) {
    if crate::mounts::may_hang(lock_path) {
        return;
    }
    drop(kept().keep(Arc::clone(lock_path), file));
}

/// Closes every kept lock file; returns how many.
pub(super) fn close_kept() -> usize {
    kept().take_all().len()
}

/// Opens (creating) the lock file in its checked lock dir (see [`dirs`]),
/// through the directory's descriptor and never through a symlink,
/// creating the lock dir with `dir_mode` if it is missing.
pub(super) fn open_lock_file(req: &LockRequest) -> Result<LockFile, LockError> {
    let path = &*req.lock_path;
    let Some((dir, name)) = split_lock_path(path) else {
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
                    identity: Identity::Unwatched { keeps: 0 },
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
/// calls: open, flock, fstat, close; or, with the descriptor kept open since
/// the last holding (see [`super::hot`]), flock and fstat, then `LOCK_UN`
/// (and, after a holding that was not brief, a one-byte read) to release.
/// The same check makes a kept descriptor safe: a lock file removed while
/// it was kept (by a holder, or by hand) shows the link count of zero here.
/// It assumes lock files are not hard-linked elsewhere; nothing of this
/// crate does that. A kept descriptor whose file is watched
/// ([`super::identity`]) makes the check once, and from then on only where
/// the watch tells of a change: a holding of it is `flock`, one
/// `epoll_wait` with no timeout, and `LOCK_UN`.
pub(super) fn confirm(lock_file: LockFile, req: &LockRequest) -> Result<Option<OsHeld>, LockError> {
    let path = &*req.lock_path;
    let LockFile {
        file,
        dir,
        mut identity,
    } = lock_file;
    let watched = matches!(identity, Identity::Watched { .. });
    if let Identity::Watched {
        watch,
        checked_for,
        seen,
    } = &mut identity
    {
        if *checked_for == Some(req.shared_group) && watch.unchanged(*seen) {
            // Nothing about it changed since the full check below found it
            // linked, ours and recorded.
            return Ok(Some(OsHeld {
                file,
                dir,
                lock_path: Arc::clone(&req.lock_path),
                target: Arc::clone(&req.target),
                mode: req.mode,
                keep_open: !crate::mounts::may_hang(path),
                generation: fork_generation(),
                identity,
            }));
        }
        // Changes from here on are told to this descriptor's next holding.
        *seen = watch.checking();
        *checked_for = None;
    }
    let mine =
        rustix::fs::fstat(&file).map_err(|e| LockError::io("inspect lock file", path, e.into()))?;
    if FileType::from_raw_mode(mine.st_mode) != FileType::RegularFile {
        return Err(LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason: "it is not a regular file; remove it or choose another lock dir".into(),
        });
    }
    if mine.st_nlink == 0 {
        return Ok(None);
    }
    // A watched file is checked in full only after a change was told, so
    // the check can afford to ask its path too: renamed away (still
    // linked), it is no lock file any more.
    if watched && !is_at_its_path(&dir, path, &mine) {
        return Ok(None);
    }
    dir.check_lock_file(path, &mine, req.shared_group)?;
    let mut readable = mine.st_size > 0;
    if !readable {
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
        match file.write_all_at(&record, 0) {
            Ok(()) => readable = true,
            Err(e) => {
                tracing::debug!(lock_path = %path.display(), error = %e, "lock file left without its target record");
            }
        }
    }
    // Kept open after release only where a release can be told by a read
    // (see `tells_release`) and file calls cannot hang.
    let keep_open = readable && !crate::mounts::may_hang(path);
    if let Identity::Watched { checked_for, .. } = &mut identity
        && keep_open
    {
        *checked_for = Some(req.shared_group);
    }
    Ok(Some(OsHeld {
        file,
        dir,
        lock_path: Arc::clone(&req.lock_path),
        target: Arc::clone(&req.target),
        mode: req.mode,
        keep_open,
        generation: fork_generation(),
        identity,
    }))
}

/// Whether the file at `path` in `dir` is the one `mine` describes.
fn is_at_its_path(dir: &LockDirFd, path: &Path, mine: &rustix::fs::Stat) -> bool {
    let Some((_, name)) = split_lock_path(path) else {
        return false;
    };
    rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|now| now.st_dev == mine.st_dev && now.st_ino == mine.st_ino)
}

/// A holding this long or longer has its release told to other processes'
/// event waits (see [`tells_release`]).
pub(super) const TOLD_AFTER: Duration = Duration::from_micros(20);

/// Whether a release that keeps its descriptor reads one byte of the lock
/// file after its `LOCK_UN`, which inotify reports (`IN_ACCESS`) to other
/// processes' event waits; an unlock it does not report. Not after a brief
/// holding (under [`TOLD_AFTER`]): the read costs about 0.2 µs, a seventh
/// of an uncontended holding, and a lock held that briefly and not taken
/// again at once is free most of the time, which an event wait's poll (at
/// most 50 ms apart for a lock file that stays, see `events`) finds; brief
/// holdings back to back may keep it from finding the lock free
/// (ARCHITECTURE.md, "Known limits"). After a longer holding it costs
/// under 1%, and a waiter whose polls found the lock always held (held
/// long, one holder after another) is woken at the release. A release whose
/// holding is not known (`None`: shared holders', tools') is told.
pub(super) fn tells_release(held_for: Option<Duration>) -> bool {
    held_for.is_none_or(|held| held >= TOLD_AFTER)
}

/// A granted OS lock. Dropping it closes the descriptor, which releases;
/// [`HeldLock::release`] without removal unlocks and keeps the descriptor
/// (see [`super::hot`]) where it can.
#[derive(Debug)]
pub(super) struct OsHeld {
    file: File,
    /// The lock dir it was opened in: removal goes through it.
    dir: Arc<LockDirFd>,
    lock_path: Arc<Path>,
    /// Rewritten before the token line when a token is issued.
    target: Arc<Path>,
    mode: LockMode,
    /// Whether a release without removal unlocks and keeps the descriptor
    /// for the next holding (see [`super::hot`]) instead of closing it.
    keep_open: bool,
    /// The fork generation that took the lock: a forked child shares the
    /// open file description, and must not unlock the parent's lock.
    generation: u64,
    /// How its identity is told at its next holding, once kept.
    identity: Identity,
}

impl OsHeld {
    /// Lets go by `LOCK_UN`, tells other processes' event waits of it
    /// unless the holding was brief (see [`tells_release`]), and gives the
    /// descriptor back to the hot set. Anything amiss, and the descriptor is
    /// closed instead, which lets go as always.
    fn unlock_and_keep(self, held_for: Option<Duration>) {
        if !self.keep_open || max_hot_files() == 0 {
            return;
        }
        if unlock(&self.file).is_err() {
            return;
        }
        if tells_release(held_for) {
            let mut byte = [0u8; 1];
            if !matches!(self.file.read_at(&mut byte, 0), Ok(1)) {
                return;
            }
        }
        let OsHeld {
            file,
            dir,
            lock_path,
            identity,
            ..
        } = self;
        // Watched from its `WATCH_AFTER_KEEPS`th keeping on; the next
        // holding checks it in full once (`checked_for: None`).
        let identity = match identity {
            Identity::Unwatched { keeps } if keeps + 1 >= WATCH_AFTER_KEEPS => {
                match identity::watch(&file) {
                    Watching::Watched(watch) => Identity::Watched {
                        watch,
                        checked_for: None,
                        seen: 0,
                    },
                    Watching::Never => Identity::Unwatchable,
                    Watching::NotNow => Identity::Unwatched { keeps: 0 },
                }
            }
            Identity::Unwatched { keeps } => Identity::Unwatched { keeps: keeps + 1 },
            known => known,
        };
        // `keep_open` said the filesystem is local when the lock was taken.
        drop(kept().keep(
            lock_path,
            LockFile {
                file,
                dir,
                identity,
            },
        ));
    }
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

    fn release(
        self: Box<Self>,
        remove_file: bool,
        held_for: Option<Duration>,
    ) -> Result<(), LockError> {
        if self.generation != fork_generation() {
            // A forked child's copy of its parent's holding: the open file
            // description, and so the lock and the file, are the parent's.
            // Closing the copy lets go of nothing.
            return Ok(());
        }
        if !remove_file {
            self.unlock_and_keep(held_for);
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

#[cfg(test)]
mod tests {
    use super::split_lock_path;
    use super::*;
    use crate::backend::Backend;
    use crate::backend::os::OsBackend;
    use std::path::Path;

    /// A release that keeps its descriptor is told to other processes'
    /// event waits by a read, which inotify reports, only after a holding
    /// that was not brief (or whose length is not known).
    // inotify: Linux's event source (elsewhere every wait polls).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_release_is_told_by_a_read_only_after_a_holding_that_was_not_brief() {
        assert!(!tells_release(Some(Duration::ZERO)));
        assert!(!tells_release(Some(TOLD_AFTER - Duration::from_nanos(1))));
        assert!(tells_release(Some(TOLD_AFTER)));
        assert!(tells_release(None));
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "manifest.test");
        let take = || OsBackend.try_lock(&req).expect("try").expect("free");
        // The first holding makes the file and its record.
        take().release(false, None).expect("release");
        let events = crate::sys::EventSource::new().expect("event source");
        let watch = events.watch(&req.lock_path).expect("watch");
        let mut ready = Vec::new();
        take()
            .release(false, Some(Duration::ZERO))
            .expect("release");
        events.wait(Some(Duration::from_millis(20)), &mut ready);
        assert!(
            !ready.contains(&watch),
            "a brief holding's release was told"
        );
        take().release(false, Some(TOLD_AFTER)).expect("release");
        events.wait(Some(Duration::from_secs(5)), &mut ready);
        assert!(
            ready.contains(&watch),
            "a longer holding's release was not told"
        );
    }

    /// Holdings enough for the lock file's kept descriptor to be watched
    /// and checked in full once: from then on its watch vouches for it.
    const WATCHED_AFTER: u32 = WATCH_AFTER_KEEPS + 1;

    /// `n` holdings of `req`'s lock through the backend, each let go
    /// (keeping the descriptor).
    #[cfg(target_os = "linux")]
    fn take_and_keep(req: &LockRequest, n: u32) {
        for _ in 0..n {
            OsBackend
                .try_lock(req)
                .expect("try")
                .expect("free")
                .release(false, None)
                .expect("release");
        }
    }

    /// With another holder of the file now at `req`'s lock path, `asked`
    /// must find the lock busy (`why`: what a grant would mean).
    #[cfg(target_os = "linux")]
    fn assert_busy_while_the_new_file_is_held(req: &LockRequest, asked: &LockRequest, why: &str) {
        let other = open_lock_file(req).expect("open the new file");
        try_flock(&other, LockMode::Exclusive).expect("another holds the new file");
        assert!(OsBackend.try_lock(asked).expect("try").is_none(), "{why}");
    }

    /// Two kept descriptors of one lock file share its watch (as an
    /// abandoned kernel wait's descriptor and a shared holder's do, below);
    /// after the file is removed, each must find it removed, whichever
    /// checks first.
    #[cfg(target_os = "linux")]
    #[test]
    fn two_descriptors_sharing_a_watch_each_find_their_file_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "two.test");
        let watched = |mut f: LockFile| -> LockFile {
            for _ in 0..WATCHED_AFTER {
                try_flock(&f, req.mode).expect("lock");
                let held = confirm(f, &req).expect("confirm").expect("linked");
                held.unlock_and_keep(None);
                f = kept().take(&req.lock_path).expect("kept");
            }
            f
        };
        let a = watched(open_lock_file(&req).expect("open"));
        let b = watched(open_lock_file(&req).expect("open"));
        match (&a.identity, &b.identity) {
            (
                Identity::Watched {
                    watch: wa,
                    checked_for: Some(_),
                    ..
                },
                Identity::Watched {
                    watch: wb,
                    checked_for: Some(_),
                    ..
                },
            ) => assert!(Arc::ptr_eq(wa, wb), "one watch"),
            other => panic!("not both watched and checked: {other:?}"),
        }
        std::fs::remove_file(&req.lock_path).expect("rm");
        try_flock(&a, req.mode).expect("lock a");
        assert!(confirm(a, &req).expect("confirm a").is_none(), "a: removed");
        try_flock(&b, req.mode).expect("lock b");
        assert!(
            confirm(b, &req).expect("confirm b").is_none(),
            "b: granted through a descriptor of a removed lock file"
        );
    }

    /// The same through the backend: an exclusive
    /// kernel wait checks out the kept descriptor and is abandoned; shared
    /// holdings open, keep and check a second one; another holder removes
    /// the file under its lock; the abandoned wait is granted on the
    /// removed file and lets go. A holder of the new file at the path must
    /// not be joined through the second descriptor.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_abandoned_kernel_wait_leaves_no_kept_descriptor_vouched_for() {
        use crate::backend::os::waits::waits;
        let dir = tempfile::tempdir().expect("tempdir");
        let exclusive = LockRequest::exclusive_in(dir.path(), "abandoned.test");
        let mut shared = exclusive.clone();
        shared.mode = LockMode::Shared;
        take_and_keep(&exclusive, WATCHED_AFTER);
        assert_kept_and_vouched_for(&exclusive);
        // Another process's hold (an open file description of its own).
        let rival = open_lock_file(&exclusive).expect("open");
        try_flock(&rival, LockMode::Shared).expect("rival holds it shared");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let wait = waits().start(&exclusive).expect("start");
            let _ = tokio::time::timeout(Duration::from_millis(200), wait).await;
        });
        assert!(
            kept().take(&exclusive.lock_path).is_none(),
            "the kept descriptor is in the abandoned kernel wait"
        );
        take_and_keep(&shared, WATCHED_AFTER);
        try_flock(&rival, LockMode::Exclusive).expect("rival exclusive");
        std::fs::remove_file(&exclusive.lock_path).expect("rm");
        drop(rival);
        // The abandoned wait is granted on the removed file and lets go.
        std::thread::sleep(Duration::from_millis(300));
        assert_busy_while_the_new_file_is_held(
            &exclusive,
            &shared,
            "granted through a kept descriptor of the removed file while the new one is held",
        );
    }

    /// Taking and letting go of a watched lock file (by this process or
    /// another) is no change of its identity: its watch still vouches.
    #[cfg(target_os = "linux")]
    #[test]
    fn locking_a_watched_lock_file_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "locked.test");
        let file = open_lock_file(&req).expect("open");
        let Watching::Watched(watch) = identity::watch(&file) else {
            panic!("not watched");
        };
        let seen = watch.checking();
        let other = open_lock_file(&req).expect("open");
        for f in [&file, &other] {
            try_flock(f, LockMode::Exclusive).expect("lock");
            unlock(f).expect("unlock");
        }
        // Other tests' events (the watcher is the process's) may be read
        // by this question, or another test's may be running: ask again.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut vouched = false;
        while !vouched && std::time::Instant::now() < deadline {
            vouched = watch.unchanged(seen);
        }
        assert!(vouched);
    }

    /// A kept lock file renamed away is still linked, so `fstat` alone
    /// cannot tell; its watch tells of the rename, and the full check that
    /// follows asks the path.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_watched_lock_file_renamed_away_is_not_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "moved.test");
        take_and_keep(&req, WATCHED_AFTER);
        assert_kept_and_vouched_for(&req);
        std::fs::rename(&req.lock_path, dir.path().join("moved.away")).expect("mv");
        assert_busy_while_the_new_file_is_held(&req, &req, "granted through the renamed-away file");
    }

    /// A lock file removed after the full check of the holding whose
    /// release makes its watch, and before the watch: the watch never
    /// tells of it, so the first holding through the new watch must check
    /// in full.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_file_removed_before_its_watch_was_made_is_not_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "late.test");
        take_and_keep(&req, WATCH_AFTER_KEEPS - 1);
        let held = OsBackend.try_lock(&req).expect("try").expect("free");
        std::fs::remove_file(&req.lock_path).expect("rm");
        held.release(false, None)
            .expect("release: the watch is made");
        let kept_file = kept().take(&req.lock_path).expect("kept");
        assert!(
            matches!(
                kept_file.identity,
                Identity::Watched {
                    checked_for: None,
                    ..
                }
            ),
            "the release did not make the watch: {:?}",
            kept_file.identity
        );
        give_back(&req.lock_path, kept_file);
        assert_busy_while_the_new_file_is_held(
            &req,
            &req,
            "granted through a descriptor of a file removed before its watch was made",
        );
    }

    /// The kept descriptor of `req`'s lock file, watched and checked in
    /// full since (so its watch vouches for it), given back to the set.
    #[cfg(target_os = "linux")]
    fn assert_kept_and_vouched_for(req: &LockRequest) {
        let kept_file = kept().take(&req.lock_path).expect("kept");
        assert!(
            matches!(
                kept_file.identity,
                Identity::Watched {
                    checked_for: Some(_),
                    ..
                }
            ),
            "not watched and checked: {:?}",
            kept_file.identity
        );
        give_back(&req.lock_path, kept_file);
    }

    #[test]
    fn a_lock_path_splits_as_path_parent_and_file_name_do() {
        for p in [
            "/run/locks/a.lock",
            "/a.lock",
            "/run//locks//a.lock",
            "/x/.locks/m.h.lock",
        ] {
            let path = Path::new(p);
            let (dir, name) = split_lock_path(path).expect("splits");
            // As bytes: the lock dir map is keyed by them (`Path`'s own
            // equality would let a stray `/` pass).
            let parent = path.parent().map(|d| d.as_os_str());
            assert_eq!(Some(dir.as_os_str()), parent, "{p}");
            assert_eq!(Some(name), path.file_name(), "{p}");
        }
        for p in ["/run/locks/", "/", "a.lock", "/run/.."] {
            assert!(split_lock_path(Path::new(p)).is_none(), "{p}");
        }
    }
}
