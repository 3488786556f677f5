//! The lease thread: one crate thread per process renews every soft lock
//! it holds (moves the lock file's mtime) a third of a lease after the last
//! renewal, after checking that the file at the lock path is still its own.
//! A lock whose file is gone or another's, or whose lease ran out before
//! the thread got to it (the process was stopped, the filesystem hung), is
//! lost: its guard hears it and writers refuse to commit under it.
//!
//! A thread, not a task: renewals must go on whichever runtime the guard
//! was made on (or none), and a renewal on a hung network mount must stall
//! only this thread. It sleeps while nothing is held.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_NOW};

use super::metrics;
use crate::backend::LostSignal;
use crate::backend::dirs::LockDirFd;
use crate::per_process::PerProcess;

/// One held soft lock, as the lease thread sees it.
#[derive(Debug)]
pub(crate) struct Lease {
    pub dir: Arc<LockDirFd>,
    pub name: OsString,
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub lease: Duration,
    pub signal: LostSignal,
    pub lock_path: Arc<Path>,
    renewed: Mutex<Instant>,
    /// After a failed renewal: when to try again (not at once, which would
    /// spin until the lease runs out).
    retry_at: Mutex<Option<Instant>>,
    released: AtomicBool,
}

impl Lease {
    pub(crate) fn new(
        dir: Arc<LockDirFd>,
        name: OsString,
        file: File,
        lease: Duration,
        lock_path: Arc<Path>,
    ) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        let now = Instant::now();
        Ok(Lease {
            dir,
            name,
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            lease,
            signal: LostSignal::with_lease(now.checked_add(lease)),
            lock_path,
            renewed: Mutex::new(now),
            retry_at: Mutex::new(None),
            released: AtomicBool::new(false),
        })
    }

    /// Whether the file at the lock path is still this lease's.
    pub(crate) fn still_mine(&self) -> bool {
        matches!(
            rustix::fs::statat(self.dir.fd(), &self.name, AtFlags::SYMLINK_NOFOLLOW),
            Ok(st) if st.st_dev == self.dev && st.st_ino == self.ino
        )
    }

    fn due(&self) -> Instant {
        if let Some(at) = *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) {
            return at;
        }
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        // A lease too long for the clock is renewed once a day.
        renewed
            .checked_add(self.lease / 3)
            .unwrap_or_else(|| renewed + Duration::from_secs(86_400))
    }

    /// One renewal: lost if the lease ran out already, or the file is not
    /// ours any more.
    fn renew(&self) {
        if self.signal.is_lost() {
            metrics::lost();
            self.released.store(true, Ordering::SeqCst);
            return;
        }
        if !self.still_mine() {
            metrics::lost();
            self.signal.mark("its lock file was removed or replaced: another process judged it stale and took the lock");
            self.released.store(true, Ordering::SeqCst);
            return;
        }
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        };
        let times = Timestamps {
            last_access: now,
            last_modification: now,
        };
        let at = Instant::now();
        let expired_by = {
            let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            renewed.checked_add(self.lease)
        };
        let renewed = rustix::fs::futimens(&self.file, &times);
        // A renewal that returns after the lease ran out (a hung mount, a
        // descheduled thread) may come after a breaker took the lock: it
        // renews nothing, and the lock is lost. So is one whose file was
        // replaced while it ran.
        if expired_by.is_some_and(|end| Instant::now() >= end) || !self.still_mine() {
            metrics::lost();
            self.signal
                .mark("its lease ran out before it was renewed (the process or its lease thread was stalled)");
            self.released.store(true, Ordering::SeqCst);
            return;
        }
        match renewed {
            Ok(()) => {
                *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = at;
                *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Some(expires) = at.checked_add(self.lease) {
                    self.signal.renewed(expires);
                }
                metrics::renewed();
            }
            Err(e) => {
                tracing::warn!(lock_path = %self.lock_path.display(), error = %e, "could not renew a soft lock's lease; trying again shortly");
                // Tried again after a tenth of the lease (at most a
                // second); lost if the lease runs out first.
                let retry = (self.lease / 10).min(Duration::from_secs(1));
                *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(at.checked_add(retry).unwrap_or(at));
            }
        }
    }

    /// The guard let go: the thread forgets it (and its descriptor) now.
    pub(crate) fn end(&self) {
        self.released.store(true, Ordering::SeqCst);
        keeper().wake.notify_one();
    }
}

#[derive(Debug, Default)]
struct Keeper {
    held: Mutex<KeeperState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct KeeperState {
    leases: Vec<Arc<Lease>>,
    running: bool,
}

fn keeper() -> &'static Keeper {
    static KEEPER: PerProcess<Keeper> = PerProcess::new();
    KEEPER.get(Keeper::default)
}

/// Hands `lease` to the lease thread, starting it if needed.
pub(crate) fn keep(lease: Arc<Lease>) -> std::io::Result<()> {
    let keeper = keeper();
    let mut state = keeper.held.lock().unwrap_or_else(|p| p.into_inner());
    // Started before the lease is kept: one that failed to start keeps
    // nothing (the caller releases the lock and reports it).
    if !state.running {
        std::thread::Builder::new()
            .name("async-filelock-lease".into())
            .spawn(move || run(keeper))?;
        state.running = true;
    }
    state.leases.push(lease);
    drop(state);
    keeper.wake.notify_one();
    Ok(())
}

fn run(keeper: &'static Keeper) {
    let mut state = keeper.held.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        state.leases.retain(|l| !l.released.load(Ordering::SeqCst));
        if state.leases.is_empty() {
            state = keeper.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let now = Instant::now();
        let due: Vec<Arc<Lease>> = state
            .leases
            .iter()
            .filter(|l| l.due() <= now)
            .cloned()
            .collect();
        if !due.is_empty() {
            // Renewed without the list locked: a renewal on a slow
            // filesystem must not hold up acquisitions registering theirs.
            drop(state);
            for lease in &due {
                lease.renew();
            }
            state = keeper.held.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let next = state
            .leases
            .iter()
            .map(|l| l.due())
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        let (s, _) = keeper
            .wake
            .wait_timeout(state, next.saturating_duration_since(now))
            .unwrap_or_else(|p| p.into_inner());
        state = s;
    }
}
