//! The OS backend: `flock(2)` through fs4 on a separate lock file (law 1).
//!
//! This module is the only place that calls the OS lock functions
//! (`clippy.toml` disallows them elsewhere).
//!
//! Platform semantics: `flock` locks belong to an open file description, so
//! two descriptors in one process exclude each other like two processes do;
//! the in-process table keeps this process to one descriptor per lock path.
//! Locks vanish when the holder dies. On NFS, Linux emulates `flock` with
//! byte-range locks (works across clients with NFSv4); on filesystems without
//! locking, `flock` fails with `ENOLCK`/`ENOTSUP`, reported as an I/O error
//! naming the lock file (use the soft backend there).
//!
//! Lock file identity: after locking, the descriptor is checked to still be
//! linked (see [`confirm`]); before removing a lock file on release, that it
//! is still the file at the lock path (device and inode). A holder may remove
//! the lock file on release while others wait on the old inode; they see it
//! and retry on the new file, so exclusion holds across removal. (Python's
//! filelock removed on release without such a check and had to revert it.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt as _, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fs4::TryLockError;

use super::interrupt::{WaitControl, signals_available};
use super::{Backend, HeldLock, LockRequest};
use crate::{LockError, LockMode, naming};

/// How many times one attempt follows a lock file that was replaced under it
/// before giving up as "busy" (try) or going round again (wait).
const IDENTITY_RETRIES: usize = 16;

/// The OS lock backend.
#[derive(Debug, Default)]
pub(crate) struct OsBackend;

#[async_trait]
impl Backend for OsBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        for _ in 0..IDENTITY_RETRIES {
            let file = open_lock_file(req)?;
            match try_flock(&file, req.mode) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => {
                    return Err(LockError::io("lock", &*req.lock_path, e));
                }
            }
            if let Some(held) = confirm(file, req)? {
                return Ok(Some(Box::new(held)));
            }
        }
        Ok(None)
    }

    async fn lock(&self, req: &LockRequest) -> Result<Box<dyn HeldLock>, LockError> {
        let ctl = WaitControl::new();
        let cancel_on_drop = CancelOnDrop(Some(Arc::clone(&ctl)));
        let owned = req.clone();
        let waited = tokio::task::spawn_blocking(move || blocking_lock(&owned, &ctl)).await;
        cancel_on_drop.disarm();
        match waited {
            Ok(Ok(Some(held))) => Ok(Box::new(held)),
            // Only a cancelled wait returns None, and only our drop cancels.
            Ok(Ok(None)) => Err(LockError::io(
                "wait for lock",
                &*req.lock_path,
                io::Error::new(io::ErrorKind::Interrupted, "lock wait cancelled"),
            )),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(LockError::io(
                "wait for lock",
                &*req.lock_path,
                io::Error::other(join.to_string()),
            )),
        }
    }

    fn lock_blocking(
        &self,
        req: &LockRequest,
        ctl: &WaitControl,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        Ok(blocking_lock(req, ctl)?.map(|held| Box::new(held) as Box<dyn HeldLock>))
    }

    fn holder(&self, lock_path: &Path) -> Option<u32> {
        super::proc_locks::holder_of(lock_path)
    }
}

/// Cancels the blocking wait if the future awaiting it is dropped.
struct CancelOnDrop(Option<Arc<WaitControl>>);

impl CancelOnDrop {
    /// The wait ended on its own: nothing to cancel.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(ctl) = self.0.take() {
            ctl.cancel();
        }
    }
}

/// Blocking waits in progress in this process, now and at the most, and
/// how many stood aside for a woken waiter (see [`yield_if_freed_meanwhile`]).
static WAITS_NOW: AtomicU64 = AtomicU64::new(0);
static WAITS_PEAK: AtomicU64 = AtomicU64::new(0);
static STOOD_ASIDE: AtomicU64 = AtomicU64::new(0);

/// Process-wide counts of blocking-pool threads waiting for an OS lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockingWaits {
    pub now: u64,
    pub peak: u64,
    pub stood_aside: u64,
}

pub(crate) fn blocking_waits() -> BlockingWaits {
    BlockingWaits {
        now: WAITS_NOW.load(Ordering::SeqCst),
        peak: WAITS_PEAK.load(Ordering::SeqCst),
        stood_aside: STOOD_ASIDE.load(Ordering::SeqCst),
    }
}

struct WaitGauge;

impl WaitGauge {
    fn enter() -> Self {
        let now = WAITS_NOW.fetch_add(1, Ordering::SeqCst) + 1;
        WAITS_PEAK.fetch_max(now, Ordering::SeqCst);
        WaitGauge
    }
}

impl Drop for WaitGauge {
    fn drop(&mut self) {
        WAITS_NOW.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs on the blocking pool: open, wait, confirm identity, until locked or
/// cancelled (`Ok(None)`).
fn blocking_lock(req: &LockRequest, ctl: &WaitControl) -> Result<Option<OsHeld>, LockError> {
    let _gauge = WaitGauge::enter();
    // The wait is finished however it ends, an error included: the waker
    // thread forgets finished waits.
    let result = wait_for_lock(req, ctl);
    ctl.finish();
    result
}

fn wait_for_lock(req: &LockRequest, ctl: &WaitControl) -> Result<Option<OsHeld>, LockError> {
    let mut first = true;
    loop {
        let file = open_lock_file(req)?;
        if std::mem::take(&mut first) {
            yield_if_freed_meanwhile(&file, req, || std::thread::sleep(COURTESY))?;
        }
        let locked = if signals_available() {
            wait_interruptible(&file, req.mode, ctl)
        } else {
            wait_polling(&file, req.mode, ctl)
        };
        match locked {
            Ok(true) if ctl.is_cancelled() => return Ok(None),
            Ok(true) => {
                if let Some(held) = confirm(file, req)? {
                    return Ok(Some(held));
                }
            }
            Ok(false) => return Ok(None),
            Err(e) => return Err(LockError::io("lock", &*req.lock_path, e)),
        }
    }
}

/// How long a wait that found the lock freed since its caller's attempt
/// stands aside: long enough for a waiter the release woke to be scheduled
/// and take the lock (tens of microseconds, even on a small VM), short
/// enough not to matter when nobody was waiting.
const COURTESY: Duration = Duration::from_micros(50);

/// Keeps the kernel's queue fair across the hand-off to this thread.
///
/// A blocking wait starts after the caller's non-blocking attempt failed
/// and a thread of the blocking pool picked it up, tens of microseconds
/// later. If the lock was released in between, a `flock` now would take it
/// ahead of the waiter the release woke, which queued long before this one
/// and has not yet been scheduled. Plain blocking `flock` callers have no
/// such gap; with it, two processes whose think time matches their hold
/// time pass the lock back and forth while a third starves (`cargo bench
/// --bench ratios -- --contend 4 1000 1000` showed p99 waits of 2x the
/// plain lock's). So a wait that finds the lock free at once gives it back,
/// lets a woken waiter run (`pause`), and then queues like everyone else.
/// A wait that finds the lock busy queues at once.
fn yield_if_freed_meanwhile(
    file: &File,
    req: &LockRequest,
    pause: impl FnOnce(),
) -> Result<(), LockError> {
    match try_flock(file, req.mode) {
        Ok(()) => {
            fs4::FileExt::unlock(file).map_err(|e| LockError::io("unlock", &*req.lock_path, e))?;
            STOOD_ASIDE.fetch_add(1, Ordering::SeqCst);
            pause();
            Ok(())
        }
        Err(TryLockError::WouldBlock) => Ok(()),
        Err(TryLockError::Error(e)) => Err(LockError::io("lock", &*req.lock_path, e)),
    }
}

/// A real blocking `flock`, woken by a signal when cancelled. `Ok(false)` when
/// cancelled before the lock was granted.
fn wait_interruptible(file: &File, mode: LockMode, ctl: &WaitControl) -> io::Result<bool> {
    loop {
        if !ctl.enter() {
            return Ok(false);
        }
        let locked = match mode {
            LockMode::Exclusive => fs4::FileExt::lock(file),
            LockMode::Shared => fs4::FileExt::lock_shared(file),
        };
        ctl.leave();
        match locked {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Fallback when no wake signal can be installed: non-blocking tries with
/// backoff from 1 ms to 50 ms, checking for cancellation in between.
fn wait_polling(file: &File, mode: LockMode, ctl: &WaitControl) -> io::Result<bool> {
    let mut delay = Duration::from_millis(1);
    loop {
        if ctl.is_cancelled() {
            return Ok(false);
        }
        match try_flock(file, mode) {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

fn try_flock(file: &File, mode: LockMode) -> Result<(), TryLockError> {
    match mode {
        LockMode::Exclusive => fs4::FileExt::try_lock(file),
        LockMode::Shared => fs4::FileExt::try_lock_shared(file),
    }
}

/// Opens (creating) the lock file, never through a symlink, creating the
/// lock directory with `dir_mode` if it is missing.
fn open_lock_file(req: &LockRequest) -> Result<File, LockError> {
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
        Some(libc::EEXIST) | Some(libc::ENOTDIR) => LockError::Config {
            key: format!("lock dir {}", dir.display()),
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
fn confirm(file: File, req: &LockRequest) -> Result<Option<OsHeld>, LockError> {
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
        let mut record = naming::path_bytes(&req.target).to_vec();
        record.push(b'\n');
        // Shared holders may both write: the bytes are the same.
        file.write_all_at(&record, 0)
            .map_err(|e| LockError::io("record target in lock file", path, e))?;
    }
    Ok(Some(OsHeld {
        file,
        lock_path: Arc::clone(&req.lock_path),
        mode: req.mode,
    }))
}

/// A granted OS lock. Dropping it closes the descriptor, which releases.
#[derive(Debug)]
struct OsHeld {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dir: &Path) -> LockRequest {
        LockRequest {
            lock_path: dir.join("manifest.test.lock").into(),
            target: dir.join("target").into(),
            mode: LockMode::Exclusive,
            file_mode: 0o600,
            dir_mode: 0o700,
            create_dir_parents: false,
        }
    }

    #[test]
    fn a_wait_that_finds_the_lock_freed_lets_another_descriptor_take_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
        let ours = open_lock_file(&req).expect("open");
        let rival = open_lock_file(&req).expect("open");
        let mut rival_got_it = false;
        yield_if_freed_meanwhile(&ours, &req, || {
            rival_got_it = try_flock(&rival, LockMode::Exclusive).is_ok();
        })
        .expect("courtesy");
        assert!(rival_got_it, "the lock stayed ours during the pause");
        assert!(
            matches!(
                try_flock(&ours, LockMode::Exclusive),
                Err(TryLockError::WouldBlock)
            ),
            "the waiter that stood aside must queue behind the rival"
        );
    }

    #[test]
    fn a_wait_that_finds_the_lock_busy_queues_without_pausing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
        let holder = open_lock_file(&req).expect("open");
        try_flock(&holder, LockMode::Exclusive).expect("holder locks");
        let ours = open_lock_file(&req).expect("open");
        let mut paused = false;
        yield_if_freed_meanwhile(&ours, &req, || paused = true).expect("courtesy");
        assert!(!paused, "a busy lock has no woken waiter to wait for");
    }
}
