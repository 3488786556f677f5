//! Blocking waits for an OS lock, on a thread that may block: a real
//! `flock` woken by a signal when cancelled (see [`super::interrupt`]), or
//! polling where no signal is available; and the fair hand-over across the
//! thread hop ([`yield_if_freed_meanwhile`]).

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fs4::TryLockError;

use super::file::{OsHeld, confirm, open_lock_file};
use super::flock::{flock_blocking, try_flock, unlock};
use super::interrupt::{WaitControl, signals_available};
use crate::backend::{LockRequest, OsMetrics};
use crate::error::LockError;
use crate::mode::LockMode;

/// Blocking waits in progress in this process, now and at the most, and
/// how many stood aside for a woken waiter (see [`yield_if_freed_meanwhile`]).
static WAITS_NOW: AtomicU64 = AtomicU64::new(0);
static WAITS_PEAK: AtomicU64 = AtomicU64::new(0);
static STOOD_ASIDE: AtomicU64 = AtomicU64::new(0);

/// The process-wide counts of threads waiting for an OS lock.
pub(super) fn metrics() -> OsMetrics {
    OsMetrics {
        blocking_waits_now: WAITS_NOW.load(Ordering::SeqCst),
        blocking_waits_peak: WAITS_PEAK.load(Ordering::SeqCst),
        blocking_waits_stood_aside: STOOD_ASIDE.load(Ordering::SeqCst),
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
pub(super) fn blocking_lock(
    req: &LockRequest,
    ctl: &WaitControl,
) -> Result<Option<OsHeld>, LockError> {
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
            unlock(file).map_err(|e| LockError::io("unlock", &*req.lock_path, e))?;
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
        let locked = flock_blocking(file, mode);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
