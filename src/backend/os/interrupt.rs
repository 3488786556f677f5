//! Interruptible blocking waits: how a cancelled or timed-out `flock` gives
//! its thread back.
//!
//! A blocking `flock(2)` cannot be given a timeout and is not woken by closing
//! its descriptor; only a lock grant or a signal ends it. Parking a blocking
//! thread per abandoned waiter until some other process releases (what uv and
//! hf-hub do) exhausts tokio's blocking pool; polling with `LOCK_NB` (what
//! most async lock libraries do) adds up to a poll interval to every
//! hand-over. Instead the waiting thread blocks for real, and a cancelled
//! waiter is woken with a thread-directed signal whose handler does nothing
//! and is installed without `SA_RESTART` (`sys::install_wake_handler`), so
//! `flock` returns `EINTR`, the thread sees the cancellation flag and
//! returns to the pool. Where the handler cannot be installed (another
//! handler owns `SIGURG`, or the platform has no wake signal), waits poll
//! instead ([`signals_available`] is false).
//!
//! A signal sent just before the thread enters `flock` is lost (the handler
//! runs, then `flock` blocks). So a cancelled wait is handed to one watcher
//! thread for the whole process, which re-sends the signal every
//! [`RESEND_EVERY`] while the wait is still in `flock`. The watcher sends only
//! while holding the wait's mutex with `in_wait` set, which the waiting thread
//! must take to leave the wait, so a signal never reaches a thread that has
//! gone back to other work.
//!
//! This module holds no `unsafe`: the signal calls live in `crate::sys`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::sys::{self, WaitingThread};

/// How often the watcher re-sends to a cancelled wait still in `flock`.
const RESEND_EVERY: Duration = Duration::from_millis(2);

/// Shared between a blocking wait and whoever may cancel it.
#[derive(Debug)]
pub(crate) struct WaitControl {
    state: Mutex<WaitState>,
    cancelled: AtomicBool,
    finished: AtomicBool,
}

#[derive(Debug)]
struct WaitState {
    in_wait: bool,
    thread: Option<WaitingThread>,
}

impl WaitControl {
    pub fn new() -> Arc<Self> {
        Arc::new(WaitControl {
            state: Mutex::new(WaitState {
                in_wait: false,
                thread: None,
            }),
            cancelled: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        })
    }

    fn state(&self) -> MutexGuard<'_, WaitState> {
        // The state is two plain fields: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned mutex is still good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the waiting thread right before a blocking call. Returns
    /// false, without entering, when the wait was cancelled.
    pub fn enter(&self) -> bool {
        let mut state = self.state();
        if self.cancelled.load(Ordering::SeqCst) {
            return false;
        }
        state.in_wait = true;
        state.thread = Some(WaitingThread::current());
        true
    }

    /// Called by the waiting thread right after the blocking call returned.
    pub fn leave(&self) {
        self.state().in_wait = false;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Called by the waiting thread when it will not wait any more.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Cancels the wait at `deadline` unless it has finished by then: the
    /// timeout of a wait that runs on the calling thread.
    pub fn cancel_at(self: &Arc<Self>, deadline: Instant) {
        watcher().cancel_at(Arc::clone(self), deadline);
    }

    /// Asks the wait to stop: wakes it now and keeps waking it until it has.
    pub fn cancel(self: &Arc<Self>) {
        self.cancelled.store(true, Ordering::SeqCst);
        if self.poke() {
            watcher().watch(Arc::clone(self));
        }
    }

    /// Signals the waiting thread if it is inside the blocking call. Returns
    /// whether the wait has not finished yet.
    fn poke(&self) -> bool {
        let state = self.state();
        // `in_wait` is set only by the thread itself between `enter` and
        // `leave`, both under this mutex, which we hold: the thread is alive
        // and inside the blocking call, as `WaitingThread::wake` requires.
        if state.in_wait
            && let Some(thread) = state.thread
        {
            thread.wake();
        }
        !self.finished.load(Ordering::SeqCst)
    }
}

/// Whether cancelled waits can be woken by a signal. Installs the handler on
/// first use; false if the program already handles `SIGURG` itself, or the
/// platform has no wake signal.
pub(crate) fn signals_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(sys::install_wake_handler)
}

/// The process's one watcher thread: cancels waits whose deadline passed,
/// and keeps waking cancelled waits until they have left `flock`.
struct Watcher {
    state: Mutex<Watched>,
    wake: Condvar,
}

#[derive(Default)]
struct Watched {
    /// Cancelled waits to wake until they finish.
    cancelled: Vec<Arc<WaitControl>>,
    /// Waits to cancel at a deadline.
    deadlines: Vec<(Instant, Arc<WaitControl>)>,
}

fn watcher() -> &'static Watcher {
    static WATCHER: OnceLock<&'static Watcher> = OnceLock::new();
    WATCHER.get_or_init(|| {
        let w: &'static Watcher = Box::leak(Box::new(Watcher {
            state: Mutex::new(Watched::default()),
            wake: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("async-filelock-waker".into())
            .spawn(move || w.run());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the lock waker thread; a cancelled or timed lock wait may end only when the lock is released");
        }
        w
    })
}

impl Watcher {
    fn state(&self) -> MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self, ctl: Arc<WaitControl>) {
        self.state().cancelled.push(ctl);
        self.wake.notify_one();
    }

    fn cancel_at(&self, ctl: Arc<WaitControl>, deadline: Instant) {
        let mut state = self.state();
        // Finished waits leave here, so the list holds only live waits (and
        // a wait that finishes long before its deadline costs nothing later).
        state
            .deadlines
            .retain(|(_, c)| !c.finished.load(Ordering::SeqCst));
        // The watcher sleeps until the earliest deadline: wake it only if
        // this one comes sooner.
        let sooner = state.deadlines.iter().all(|(at, _)| deadline < *at);
        state.deadlines.push((deadline, ctl));
        drop(state);
        if sooner {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            state.deadlines.retain(|(at, ctl)| {
                if ctl.finished.load(Ordering::SeqCst) {
                    false
                } else if *at <= now {
                    due.push(Arc::clone(ctl));
                    false
                } else {
                    true
                }
            });
            for ctl in due {
                ctl.cancelled.store(true, Ordering::SeqCst);
                state.cancelled.push(ctl);
            }
            state.cancelled.retain(|ctl| ctl.poke());
            if !state.cancelled.is_empty() {
                drop(state);
                std::thread::sleep(RESEND_EVERY);
                state = self.state();
                continue;
            }
            let next = state.deadlines.iter().map(|(at, _)| *at).min();
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}
