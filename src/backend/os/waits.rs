//! The process's pending OS waits, and where each is served.
//!
//! A wait for a busy lock is served in one of two places:
//!
//! * **a kernel wait**: one of a bounded number of crate-owned threads
//!   ([`super::kernel`]) blocks in a real `flock` for it, so the kernel
//!   wakes it at every release, as it wakes any blocking `flock` caller
//!   (Linux wakes every waiter of the lock; the first to run takes it);
//! * **an event wait**: no thread of its own. The one event thread
//!   ([`super::events`]) keeps its lock file open, watches it for the
//!   events a release causes (closed, read, removed) and tries a
//!   non-blocking `flock` on each, with a backoff poll as the backstop for
//!   holders that unlock without telling and filesystems without events.
//!
//! A new wait gets a kernel wait while fewer than [`max_kernel_waits`] are
//! in progress, and an event wait otherwise; a kernel thread that comes
//! free takes over the oldest event wait. Tokio's blocking pool is never
//! used, so `tokio::fs` and `spawn_blocking` never queue behind lock waits,
//! and a runtime shutting down never waits for one.
//!
//! A kernel thread that serves a back-to-back taker's wait (this process
//! let go of the lock, after a brief holding, just before the wait began:
//! [`LockRequest::just_released`]) wakes
//! without preempting the thread that released the lock (`SCHED_BATCH`,
//! see ARCHITECTURE.md, "Kernel-wait threads of back-to-back takers wake
//! without preempting"): otherwise a release often handed it the lock ahead
//! of the releaser's own next attempt, and between processes that both
//! take the lock back to back it changed process twice as often as between
//! plain `flock` callers. Other waits keep the normal policy, so that their
//! grants run at once on a busy CPU.
//!
//! Nothing interrupts a kernel wait: no signal, so no process-wide setting
//! that other code can change decides whether cancellation works. A wait
//! whose future is dropped is *abandoned*: an event wait is forgotten at
//! once; a kernel wait stays in `flock`, counted against the bound, and
//! lets go the moment it is granted. The next wait on the same path and
//! mode *adopts* an abandoned kernel wait instead of starting another, so a
//! storm of cancelled waits on one lock costs one thread.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};

use rustc_hash::FxHashMap;

use super::events::Events;
use super::file::OsHeld;
use super::kernel::{lock_in_kernel, wait_in_kernel};
use super::pending::{Pending, Place};
use crate::backend::{LockRequest, OsMetrics};
use crate::error::LockError;
use crate::mode::LockMode;
use crate::path_key::PathKey;
use crate::per_process::PerProcess;

/// Kernel waits allowed at once, per process, unless configured.
pub(crate) const DEFAULT_KERNEL_WAITS: usize = 16;

/// The bound on kernel waits (threads blocked in `flock`) per process.
static MAX_KERNEL_WAITS: AtomicUsize = AtomicUsize::new(DEFAULT_KERNEL_WAITS);

/// Sets the bound on threads of this process that may block in `flock`
/// (at least 1). Waits beyond it are served by events, costing no thread.
pub(crate) fn set_max_kernel_waits(n: usize) {
    MAX_KERNEL_WAITS.store(n.max(1), Ordering::SeqCst);
}

/// The bound on kernel waits.
pub(crate) fn max_kernel_waits() -> usize {
    MAX_KERNEL_WAITS.load(Ordering::SeqCst)
}

/// Whether kernel threads serving back-to-back takers' waits give up
/// wake-up preemption (the default).
static BATCH_KERNEL_THREADS: AtomicBool = AtomicBool::new(true);

/// Sets whether a kernel thread serving a wait marked
/// [`LockRequest::just_released`] gives up wake-up preemption (Linux's
/// `SCHED_BATCH`, see ARCHITECTURE.md, "Kernel-wait threads of
/// back-to-back takers wake without preempting"). Each thread applies it
/// before its next wait.
pub(crate) fn set_batch_kernel_threads(on: bool) {
    BATCH_KERNEL_THREADS.store(on, Ordering::SeqCst);
}

/// See [`set_batch_kernel_threads`].
pub(crate) fn batch_kernel_threads() -> bool {
    BATCH_KERNEL_THREADS.load(Ordering::SeqCst)
}

/// This process's waits (a forked child gets its own, see `PerProcess`).
pub(super) fn waits() -> &'static Waits {
    static WAITS: PerProcess<Waits> = PerProcess::new();
    WAITS.get(Waits::default)
}

/// The registry of pending waits.
#[derive(Debug, Default)]
pub(super) struct Waits {
    state: Mutex<State>,
    /// Idle kernel threads wait here for a job.
    jobs: Condvar,
    /// The event thread, started on first use; a failure to start it is
    /// not kept (descriptors may be short for a moment), the next event
    /// wait tries again.
    events: Mutex<Option<Arc<Events>>>,
    next_seq: AtomicU64,
}

/// A pending wait's key: one wait per lock path and mode per process (the
/// lock layer's queue lets only one task at a time talk to the backend).
type Key = (PathKey, LockMode);

#[derive(Debug, Default)]
struct State {
    pending: FxHashMap<Key, Arc<Pending>>,
    /// Waits served by kernel threads, abandoned ones included.
    kernel_busy: usize,
    kernel_peak: usize,
    abandoned_in_kernel: usize,
    /// Kernel threads alive, and how many of them wait for a job.
    kernel_threads: usize,
    idle: usize,
    /// Jobs handed to idle kernel threads.
    jobs: VecDeque<Arc<Pending>>,
    /// Event waits, oldest first (the sequence grows with time).
    event_waits: BTreeMap<u64, Arc<Pending>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters and queues, replaced whole: a panic elsewhere cannot
    // leave them half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Waits {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Starts (or adopts) the wait for `req` and returns its future.
    pub(super) fn start(&'static self, req: &LockRequest) -> Result<OsWait, LockError> {
        let key = (PathKey(Arc::clone(&req.lock_path)), req.mode);
        let mut state = self.state();
        if let Some(existing) = state.pending.get(&key) {
            let mut inner = existing.inner();
            if !inner.wanted && inner.place == Place::Kernel {
                inner.wanted = true;
                drop(inner);
                let adopted = Arc::clone(existing);
                state.abandoned_in_kernel -= 1;
                return Ok(OsWait {
                    waits: self,
                    pending: Some(adopted),
                });
            }
        }
        let kernel = state.kernel_busy < max_kernel_waits();
        let pending = Arc::new(Pending::new(
            req.clone(),
            self.next_seq.fetch_add(1, Ordering::SeqCst),
            if kernel { Place::Kernel } else { Place::Events },
        ));
        state.pending.insert(key, Arc::clone(&pending));
        if kernel {
            state.kernel_busy += 1;
            state.kernel_peak = state.kernel_peak.max(state.kernel_busy);
            if state.idle > 0 {
                state.idle -= 1;
                state.jobs.push_back(Arc::clone(&pending));
                drop(state);
                self.jobs.notify_one();
            } else {
                state.kernel_threads += 1;
                drop(state);
                if let Err(e) = spawn_kernel_thread(self, Arc::clone(&pending)) {
                    tracing::warn!(error = %e, "could not start a lock wait thread; waiting by events instead");
                    let mut state = self.state();
                    state.kernel_threads -= 1;
                    state.kernel_busy -= 1;
                    pending.inner().place = Place::Events;
                    self.to_events(state, &pending)?;
                }
            }
        } else {
            self.to_events(state, &pending)?;
        }
        Ok(OsWait {
            waits: self,
            pending: Some(pending),
        })
    }

    /// Serves `pending` by events.
    fn to_events(
        &'static self,
        mut state: MutexGuard<'_, State>,
        pending: &Arc<Pending>,
    ) -> Result<(), LockError> {
        state.event_waits.insert(pending.seq, Arc::clone(pending));
        drop(state);
        match self.events() {
            Ok(events) => {
                events.add(Arc::clone(pending));
                Ok(())
            }
            Err(e) => {
                self.forget(pending);
                Err(LockError::io(
                    "start the lock event thread for",
                    &*pending.req.lock_path,
                    e,
                ))
            }
        }
    }

    /// The event thread, started on first use.
    fn events(&'static self) -> std::io::Result<Arc<Events>> {
        let mut events = lock(&self.events);
        if let Some(events) = events.as_ref() {
            return Ok(Arc::clone(events));
        }
        crate::sys::raise_fd_limit();
        let started = Events::start()?;
        *events = Some(Arc::clone(&started));
        Ok(started)
    }

    /// The event thread, if it runs.
    fn running_events(&self) -> Option<Arc<Events>> {
        lock(&self.events).clone()
    }

    /// Removes a finished or forgotten wait from the registry (if it is
    /// still the one registered for its key) and from the event waits.
    pub(super) fn forget(&self, pending: &Arc<Pending>) {
        let mut state = self.state();
        self.forget_locked(&mut state, pending);
    }

    fn forget_locked(&self, state: &mut State, pending: &Arc<Pending>) {
        let key = (
            PathKey(Arc::clone(&pending.req.lock_path)),
            pending.req.mode,
        );
        if state
            .pending
            .get(&key)
            .is_some_and(|p| Arc::ptr_eq(p, pending))
        {
            state.pending.remove(&key);
        }
        state.event_waits.remove(&pending.seq);
    }

    /// A kernel thread is done with `pending`: `held` is the lock if it was
    /// granted. Returns the thread's next job, if any: a queued one, or the
    /// oldest event wait, taken over.
    fn kernel_finished(
        &'static self,
        pending: &Arc<Pending>,
        result: Result<Option<OsHeld>, LockError>,
    ) -> Option<Arc<Pending>> {
        let mut state = self.state();
        // The thread gave up on a wait it saw unwanted; if a new wait
        // adopted it since (under this lock), serve it again: nobody else
        // will, and the adopter is waiting.
        if matches!(result, Ok(None)) && pending.wanted() {
            return Some(Arc::clone(pending));
        }
        state.kernel_busy -= 1;
        let (unwanted, waker) = {
            let mut inner = pending.inner();
            if inner.wanted {
                let waker = match result {
                    Ok(Some(held)) => inner.finish(Ok(held)),
                    Err(e) => inner.finish(Err(e)),
                    // Stopped without a result: only when unwanted (and
                    // not adopted, checked above).
                    Ok(None) => {
                        inner.place = Place::Done;
                        None
                    }
                };
                (None, waker)
            } else {
                state.abandoned_in_kernel -= 1;
                inner.place = Place::Done;
                // Granted to nobody: released below, outside the locks.
                (result.ok().flatten(), None)
            }
        };
        self.forget_locked(&mut state, pending);
        let next = self.take_over_oldest_event_wait(&mut state);
        drop(state);
        drop(unwanted);
        if let Some(waker) = waker {
            waker.wake();
        }
        next
    }

    /// Moves the oldest event wait still wanted to a kernel thread.
    fn take_over_oldest_event_wait(&'static self, state: &mut State) -> Option<Arc<Pending>> {
        while let Some((_, oldest)) = state.event_waits.pop_first() {
            let mut inner = oldest.inner();
            if inner.wanted && inner.place == Place::Events {
                inner.place = Place::Kernel;
                drop(inner);
                state.kernel_busy += 1;
                state.kernel_peak = state.kernel_peak.max(state.kernel_busy);
                if let Some(events) = self.running_events() {
                    events.remove(Arc::clone(&oldest));
                }
                return Some(oldest);
            }
        }
        None
    }

    /// The future of `pending` was dropped before it took an outcome.
    fn abandon(&self, pending: &Arc<Pending>) {
        let mut state = self.state();
        let (granted, place) = {
            let mut inner = pending.inner();
            inner.wanted = false;
            inner.waker = None;
            (inner.outcome.take(), inner.place)
        };
        match place {
            Place::Kernel => state.abandoned_in_kernel += 1,
            Place::Events => {
                pending.inner().place = Place::Done;
                self.forget_locked(&mut state, pending);
                if let Some(events) = self.running_events() {
                    events.remove(Arc::clone(pending));
                }
            }
            Place::Done => self.forget_locked(&mut state, pending),
        }
        drop(state);
        // A lock granted to a future that is gone: let go at once.
        drop(granted);
    }

    /// A kernel wait on the calling thread, if the bound allows one now
    /// (`None`: it does not). Not interruptible: for a caller on a thread
    /// of its own that waits until granted (a JSONL commit).
    pub(super) fn wait_here(&self, req: &LockRequest) -> Option<Result<OsHeld, LockError>> {
        {
            let mut state = self.state();
            if state.kernel_busy >= max_kernel_waits() {
                return None;
            }
            state.kernel_busy += 1;
            state.kernel_peak = state.kernel_peak.max(state.kernel_busy);
        }
        let result = lock_in_kernel(req);
        self.state().kernel_busy -= 1;
        Some(result)
    }

    /// This process's counters.
    pub(super) fn metrics(&self) -> OsMetrics {
        let state = self.state();
        OsMetrics {
            kernel_waits_now: state.kernel_busy as u64,
            kernel_waits_peak: state.kernel_peak as u64,
            abandoned_kernel_waits_now: state.abandoned_in_kernel as u64,
            event_waits_now: state.event_waits.len() as u64,
            wait_threads: state.kernel_threads as u64,
            waits_stood_aside: super::kernel::stood_aside(),
            granted_on_events: self
                .running_events()
                .map_or(0, |events| events.granted_on_events()),
        }
    }
}

/// How long an idle kernel thread waits for a job before it exits.
const IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts a kernel thread whose first job is `first`.
fn spawn_kernel_thread(waits: &'static Waits, first: Arc<Pending>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("async-filelock-wait".into())
        .spawn(move || kernel_thread(waits, first))
        .map(drop)
}

/// A kernel thread: serves one wait at a time, then takes over the oldest
/// event wait or a queued job, or exits after [`IDLE_FOR`] idle.
fn kernel_thread(waits: &'static Waits, first: Arc<Pending>) {
    let mut job = Some(first);
    let mut policy = ThreadPolicy::Unchanged;
    while let Some(pending) = job.take().or_else(|| next_job(waits)) {
        // Woken by every release of its lock, a back-to-back taker's wait
        // would otherwise take the lock from the releaser's next attempt.
        policy.set_for(batch_kernel_threads() && pending.req.just_released);
        let result = wait_in_kernel(&pending);
        job = waits.kernel_finished(&pending, result);
    }
}

/// A kernel thread's scheduling policy as this crate left it: whether a
/// wait gives up wake-up preemption (ARCHITECTURE.md, "Kernel-wait threads
/// of back-to-back takers wake without preempting").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThreadPolicy {
    /// As the thread was started (inherited from the thread that spawned
    /// it), or moved back to it by this crate.
    Unchanged,
    /// Moved to batch by this crate (from the normal policy).
    Batch,
    /// Not ours to change: started with another policy (real-time, idle,
    /// batch chosen by the program), or a change was refused.
    Left,
}

impl ThreadPolicy {
    /// Sets the calling thread up for a wait that should (`batch`) or
    /// should not give up wake-up preemption: only a thread this crate
    /// moved to batch is moved back, and a refusal is not asked again.
    fn set_for(&mut self, batch: bool) {
        if batch == (*self == ThreadPolicy::Batch) || *self == ThreadPolicy::Left {
            return;
        }
        *self = match crate::sys::set_wake_up_preemption(!batch) {
            Ok(true) if batch => ThreadPolicy::Batch,
            Ok(true) => ThreadPolicy::Unchanged,
            Ok(false) => ThreadPolicy::Left,
            Err(e) => {
                tracing::debug!(error = %e, batch, "kernel-wait thread's policy left as it is");
                ThreadPolicy::Left
            }
        };
    }
}

/// The next job handed to this idle thread; `None` (and the thread's
/// count is given back) after [`IDLE_FOR`] without one.
fn next_job(waits: &'static Waits) -> Option<Arc<Pending>> {
    let mut state = waits.state();
    state.idle += 1;
    loop {
        if let Some(job) = state.jobs.pop_front() {
            // The starter counted this thread out of `idle` when it queued.
            return Some(job);
        }
        let (next, timeout) = waits
            .jobs
            .wait_timeout(state, IDLE_FOR)
            .unwrap_or_else(|p| p.into_inner());
        state = next;
        if timeout.timed_out() && state.jobs.is_empty() {
            state.idle -= 1;
            state.kernel_threads -= 1;
            return None;
        }
    }
}

/// The future of one wait: the lock, or the error that ended the wait.
/// Dropping it abandons the wait (see the module docs).
#[derive(Debug)]
pub(super) struct OsWait {
    waits: &'static Waits,
    pending: Option<Arc<Pending>>,
}

impl Future for OsWait {
    type Output = Result<OsHeld, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(pending) = self.pending.as_ref() else {
            return Poll::Pending;
        };
        let mut inner = pending.inner();
        if let Some(outcome) = inner.outcome.take() {
            drop(inner);
            if let Some(pending) = self.pending.take() {
                self.waits.forget(&pending);
            }
            return Poll::Ready(outcome);
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OsWait {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.waits.abandon(&pending);
        }
    }
}

/// For tests that look at the kernel-wait threads' scheduling policy, here
/// and in the lock layer's.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod policy_probe {
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard};

    /// The policy from a `stat` line: field 41, counted from 1 with the
    /// name in parentheses (which may hold anything) as field 2.
    fn policy_in_stat(stat: &str) -> Option<u32> {
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(41 - 3)?.parse().ok()
    }

    /// This thread's scheduling policy.
    pub(crate) fn own_policy() -> Option<u32> {
        policy_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
    }

    /// Whether the policy tests can run here: threads inherit the
    /// process's policy (one of another policy is left as it is), and
    /// `/proc/<tid>/syscall` is missing on some kernels and sandboxes.
    pub(crate) fn policies_are_visible() -> bool {
        let normal = own_policy() == Some(libc::SCHED_OTHER as u32);
        let syscall = std::fs::read_to_string("/proc/thread-self/syscall").is_ok();
        if !(normal && syscall) {
            eprintln!(
                "skipped: policy {:?}, or no /proc/<tid>/syscall",
                own_policy()
            );
        }
        normal && syscall
    }

    /// Each thread of this process blocked in `flock` on a descriptor of
    /// `lock_path` (the call's first argument), with its policy. Other
    /// tests' threads, on other lock files, are not counted.
    pub(crate) fn threads_in_flock_on(lock_path: &Path) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return found;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let syscall = read("syscall");
            let mut call = syscall.split_whitespace();
            if call.next() != Some(libc::SYS_flock.to_string().as_str()) {
                continue;
            }
            let Some(fd) = call
                .next()
                .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            else {
                continue;
            };
            let on = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            if on != lock_path {
                continue;
            }
            if let Some(policy) = policy_in_stat(&read("stat")) {
                found.push((dir.display().to_string(), policy));
            }
        }
        found
    }

    /// Held by each test that reads or changes the process-wide switch, so
    /// that none sees another's change; puts the switch back when dropped,
    /// a failed assertion included.
    pub(crate) struct SwitchHeld(#[allow(dead_code)] MutexGuard<'static, ()>);

    pub(crate) fn hold_switch() -> SwitchHeld {
        static SWITCH: Mutex<()> = Mutex::new(());
        SwitchHeld(SWITCH.lock().unwrap_or_else(|p| p.into_inner()))
    }

    impl Drop for SwitchHeld {
        fn drop(&mut self) {
            crate::backend::os::waits::set_batch_kernel_threads(true);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use super::policy_probe::{hold_switch, own_policy, policies_are_visible, threads_in_flock_on};
    use super::*;
    use crate::backend::os::file::open_lock_file;
    use crate::backend::os::flock::try_flock;
    use std::path::Path;
    use std::time::Duration;

    fn request(dir: &Path, i: usize) -> LockRequest {
        LockRequest::exclusive_in(dir, &format!("r{i}"))
    }

    /// The thread of `waits` that waits for lock `i` in `dir` (held
    /// meanwhile by another descriptor), and its policy. Returns once that
    /// thread is idle again.
    #[cfg(target_os = "linux")]
    fn kernel_wait(
        waits: &'static Waits,
        dir: &Path,
        i: usize,
        just_released: bool,
    ) -> (String, u32) {
        let req = LockRequest {
            just_released,
            ..request(dir, i)
        };
        let holder = open_lock_file(&req).expect("open");
        try_flock(&holder, LockMode::Exclusive).expect("hold");
        let wait = waits.start(&req).expect("start");
        let place = wait.pending.as_ref().map(|p| p.inner().place);
        assert_eq!(place, Some(Place::Kernel), "not a kernel wait");
        // As `/proc` names the descriptor's file.
        let lock_path = std::fs::canonicalize(&req.lock_path).expect("lock file");
        let since = std::time::Instant::now();
        let mut found = threads_in_flock_on(&lock_path);
        while found.is_empty() && since.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
            found = threads_in_flock_on(&lock_path);
        }
        drop(wait);
        drop(holder);
        let idle = || {
            let state = waits.state();
            state.idle == state.kernel_threads
        };
        while !idle() && since.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(idle(), "the kernel thread did not come free");
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    /// A back-to-back taker's kernel wait must not preempt the thread that
    /// released the lock: woken by every release, it took the lock in the
    /// gap before the releaser's next attempt, and hand-overs between
    /// processes (each a thread wake more than plain `flock`'s) doubled.
    /// Any other wait keeps the normal policy (its grant runs at once on a
    /// busy CPU), and so does every wait once switched off. One thread
    /// (of a registry of this test's own) serves the waits in turn, so each
    /// change is made on a thread that served the other kind before.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_back_to_back_takers_kernel_wait_gives_up_wake_up_preemption() {
        let _switch = hold_switch();
        if !policies_are_visible() {
            return;
        }
        let (batch, normal) = (libc::SCHED_BATCH as u32, libc::SCHED_OTHER as u32);
        let waits: &'static Waits = Box::leak(Box::default());
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(batch_kernel_threads(), "the default");
        let first = kernel_wait(waits, dir.path(), 0, true);
        assert_eq!(first.1, batch);
        let thread = first.0;
        assert_eq!(
            kernel_wait(waits, dir.path(), 1, false),
            (thread.clone(), normal)
        );
        assert_eq!(
            kernel_wait(waits, dir.path(), 2, true),
            (thread.clone(), batch)
        );
        set_batch_kernel_threads(false);
        assert_eq!(kernel_wait(waits, dir.path(), 3, true), (thread, normal));
    }

    /// A thread the program runs as batch itself (`chrt -b`, say) stays so
    /// after a wait that is not a back-to-back taker's: only what this
    /// crate moved to batch is moved back (found in review).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_that_was_batch_already_is_left_batch() {
        if !policies_are_visible() {
            return;
        }
        let policies = std::thread::spawn(|| {
            let mut policy = ThreadPolicy::Unchanged;
            policy.set_for(true);
            let ours = (policy, own_policy());
            policy.set_for(false);
            let back = (policy, own_policy());
            // As if started batch by the program.
            crate::sys::set_wake_up_preemption(false).expect("batch");
            let mut policy = ThreadPolicy::Unchanged;
            policy.set_for(false);
            let left_alone = own_policy();
            policy.set_for(true);
            (ours, back, left_alone, (policy, own_policy()))
        })
        .join()
        .expect("thread");
        let (batch, normal) = (libc::SCHED_BATCH as u32, libc::SCHED_OTHER as u32);
        assert_eq!(policies.0, (ThreadPolicy::Batch, Some(batch)));
        assert_eq!(policies.1, (ThreadPolicy::Unchanged, Some(normal)));
        assert_eq!(policies.2, Some(batch), "a batch thread was made normal");
        assert_eq!(policies.3, (ThreadPolicy::Left, Some(batch)));
    }

    /// A wait started and dropped at once leaves an abandoned kernel wait;
    /// a second wait on the same lock adopts it, at varying moments around
    /// the kernel thread's own look at whether the wait is still wanted.
    /// The adopted wait must be granted once the lock is free, every time.
    /// (Found in review: one adoption in about a thousand was lost.)
    #[test]
    fn an_adopted_kernel_wait_is_always_granted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lost = 0;
        for i in 0..3000 {
            let req = request(dir.path(), i);
            let holder = open_lock_file(&req).expect("open");
            try_flock(&holder, LockMode::Exclusive).expect("hold");
            let waits = waits();
            drop(waits.start(&req).expect("start"));
            let spin = std::time::Instant::now();
            let gap = Duration::from_nanos((i as u64 * 7919) % 120_000);
            while spin.elapsed() < gap {
                std::hint::spin_loop();
            }
            let adopted = waits.start(&req).expect("start");
            drop(holder);
            // Generous: it catches a wait that is never granted.
            match rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), adopted).await })
            {
                Ok(Ok(held)) => drop(held),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => lost += 1,
            }
        }
        assert_eq!(lost, 0, "{lost} adopted waits of 3000 were never granted");
    }
}
