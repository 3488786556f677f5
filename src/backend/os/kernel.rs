//! A kernel wait: what one of the crate's wait threads does for one wait
//! (see [`super::waits`] for the threads and which waits get one). Not on
//! tokio's blocking pool: those threads are for the program's own file
//! work, and a runtime shutting down waits for them.
//!
//! A kernel wait is never interrupted (no signals). If its future is
//! dropped, the wait is abandoned: the thread stays in `flock` until the
//! lock is granted and then lets go at once, unless a new wait on the same
//! lock adopted it meanwhile.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fs4::TryLockError;

use super::file::{OsHeld, confirm};
use super::flock::{flock_blocking, try_flock, unlock};
use super::pending::Pending;
use crate::backend::LockRequest;
use crate::error::LockError;

/// Kernel waits that stood aside for a woken waiter, since the process
/// started (see [`yield_if_freed_meanwhile`]).
static STOOD_ASIDE: AtomicU64 = AtomicU64::new(0);

pub(super) fn stood_aside() -> u64 {
    STOOD_ASIDE.load(Ordering::SeqCst)
}

/// Opens, stands aside if the lock came free since the caller's attempt,
/// blocks in `flock`, and checks the file is still the lock file, until
/// granted; `Ok(None)` if the wait was abandoned before its next `flock`.
pub(super) fn wait_in_kernel(pending: &Pending) -> Result<Option<OsHeld>, LockError> {
    lock_while(&pending.req, || pending.wanted())
}

/// A kernel wait on the calling thread for a caller that waits until it
/// is granted, however long (see `Waits::wait_here`).
pub(super) fn lock_in_kernel(req: &LockRequest) -> Result<OsHeld, LockError> {
    match lock_while(req, || true)? {
        Some(held) => Ok(held),
        None => unreachable!("a wait that is always wanted ends only granted or failed"),
    }
}

/// Attempts until granted, while `wanted` says so before each one; a lock
/// file removed while we waited is waited on anew.
fn lock_while(req: &LockRequest, wanted: impl Fn() -> bool) -> Result<Option<OsHeld>, LockError> {
    let mut first = true;
    loop {
        if !wanted() {
            return Ok(None);
        }
        if let Some(held) = attempt(req, std::mem::take(&mut first))? {
            return Ok(Some(held));
        }
    }
}

/// Opens the lock file, stands aside on the `first` attempt if the lock
/// came free since the caller's try, blocks in `flock`, and keeps the lock
/// if the file is still the lock file (`None`: it was replaced).
fn attempt(req: &LockRequest, first: bool) -> Result<Option<OsHeld>, LockError> {
    let file = super::file::open_kept(req)?;
    if first && yield_if_freed_meanwhile(&file, req, || std::thread::sleep(COURTESY))? {
        STOOD_ASIDE.fetch_add(1, Ordering::SeqCst);
    }
    loop {
        match flock_blocking(&file, req.mode) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LockError::io("lock", &*req.lock_path, e)),
        }
    }
    confirm(file, req)
}

/// How long a wait that found the lock freed since its caller's attempt
/// stands aside: long enough for a waiter the release woke to be scheduled
/// and take the lock (tens of microseconds, even on a small VM, where a CPU
/// is free: a back-to-back taker's kernel wait, which gives up wake-up
/// preemption, may not run that soon on a busy one), short enough not to
/// matter when nobody was waiting.
const COURTESY: Duration = Duration::from_micros(50);

/// Keeps the kernel's queue fair across the hand-off to this thread.
///
/// A blocking wait starts after the caller's non-blocking attempt failed
/// and a kernel-wait thread picked it up, tens of microseconds later. If the lock was released in between, a `flock` now would take it
/// ahead of the waiter the release woke, which queued long before this one
/// and has not yet been scheduled. Plain blocking `flock` callers have no
/// such gap; with it, two processes whose think time matches their hold
/// time pass the lock back and forth while a third starves (`cargo bench
/// --bench ratios -- --contend 4 1000 1000` showed p99 waits of 2x the
/// plain lock's). So a wait that finds the lock free at once gives it back,
/// lets a woken waiter run (`pause`), and then queues like everyone else.
/// A wait that finds the lock busy queues at once. Returns whether it stood
/// aside.
fn yield_if_freed_meanwhile(
    file: &File,
    req: &LockRequest,
    pause: impl FnOnce(),
) -> Result<bool, LockError> {
    match try_flock(file, req.mode) {
        Ok(()) => {
            unlock(file).map_err(|e| LockError::io("unlock", &*req.lock_path, e))?;
            pause();
            Ok(true)
        }
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(LockError::io("lock", &*req.lock_path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::open_lock_file;
    use super::*;
    use crate::mode::LockMode;
    use std::path::Path;

    fn request(dir: &Path) -> LockRequest {
        LockRequest::exclusive_in(dir, "manifest.test")
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
    fn a_kernel_wait_that_starts_after_a_release_stands_aside_once_then_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
        // The lock is free when the kernel wait starts: the release fell
        // into the gap after the caller's own attempt.
        let pending = Pending::new(req.clone(), 0, super::super::pending::Place::Kernel);
        let before = stood_aside();
        let held = wait_in_kernel(&pending)
            .expect("no error")
            .expect("granted");
        assert_eq!(stood_aside(), before + 1, "stood aside exactly once");
        let rival = open_lock_file(&req).expect("open");
        assert!(
            matches!(
                try_flock(&rival, LockMode::Exclusive),
                Err(TryLockError::WouldBlock)
            ),
            "the kernel wait holds the lock"
        );
        drop(held);
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
