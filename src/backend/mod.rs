//! Backends: what holds a lock between processes (or hosts).
//!
//! Layer 1 of ARCHITECTURE.md. A backend knows lock paths, modes, deadlines
//! and cancellation tokens; nothing of categories, policies, the in-process
//! queue, metrics per category or writers. It may use the vocabulary
//! (`error`, `mode`), `sys` and `blocking`; only `lock` uses it.
//!
//! The contract ([`Backend`]) speaks of requests and outcomes, not of threads
//! or signals, so that a lock file taken with `flock` ([`os`]), a lock file
//! created with `O_EXCL` plus a lease, or an advisory lock on a database
//! server can each implement it without pretending. Whatever machinery a
//! backend needs to wait (the OS backend's waker thread and signals) stays
//! behind it.
//!
//! The lock layer guarantees that for one lock path at most one task of
//! this process talks to the backend at a time (law 5), so a backend never
//! sees two concurrent requests for the same path from one process.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::LockError;
use crate::mode::LockMode;

pub(crate) mod dirs;
pub(crate) mod os;

/// How long before a timed wait's deadline a backend is told to read who
/// holds the lock ([`Backend::prefetch_holders`]), so the timeout names the
/// holder at once.
pub(crate) const HOLDER_READ_AHEAD: std::time::Duration = std::time::Duration::from_millis(50);

/// What a backend needs to take one lock.
#[derive(Debug, Clone)]
pub(crate) struct LockRequest {
    /// The lock file (or, for a backend without files, the lock's name).
    pub lock_path: Arc<Path>,
    /// The file it guards, recorded in the lock file for people and tools.
    pub target: Arc<Path>,
    pub mode: LockMode,
    /// Permission bits of a new lock file.
    pub file_mode: u32,
    /// Permission bits of a new lock directory.
    pub dir_mode: u32,
    /// Whether a missing lock directory may be created with its parents
    /// (a configured lock dir), or only itself (`.locks` beside a target,
    /// whose directory must exist).
    pub create_dir_parents: bool,
    /// A group that shares the lock dir and its lock files (besides this
    /// user); `None`: they must be this user's alone.
    pub shared_group: Option<u32>,
}

/// A lock backend. Object safe; held as `Arc<dyn Backend>` by the lock layer.
///
/// Waits end in one of three ways: the lock is granted (`Ok(Some(_))`), the
/// wait gave up (`Ok(None)`: the deadline passed or `cancel` was cancelled;
/// the caller knows which of its own two it was), or an error.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// One non-blocking attempt, cheap enough to run on a runtime thread.
    /// `Ok(None)` when another holder has it.
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError>;

    /// Waits until the lock is granted, `deadline` passes or `cancel` is
    /// cancelled, without blocking a runtime thread.
    ///
    /// Cancel safety: dropping the future stops the wait promptly (well
    /// under 100 ms) and leaves nothing held.
    async fn wait(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError>;

    /// Waits on the calling thread until the lock is granted, however long,
    /// if the backend's bound on such waits allows one now; `None` if not
    /// (use [`Backend::wait`]). Not interruptible: only for a thread of the
    /// crate's own that may block for as long as another holder keeps the
    /// lock (never a runtime's, never tokio's blocking pool), so that the
    /// thread granted the lock does the work with no hand-off in between.
    fn wait_here(&self, req: &LockRequest) -> Option<Result<Box<dyn HeldLock>, LockError>>;

    /// Best effort: the pid of a process holding `lock_path`, for a timeout
    /// error. Quick: it must not hold the timeout back noticeably.
    ///
    /// `since`: when the caller's wait began; what the backend learnt of
    /// the lock before then may concern another file (an inode reused).
    async fn holder(&self, lock_path: &Path, since: Instant) -> Option<u32>;

    /// A hint that a timeout may soon ask [`Backend::holder`]: a backend
    /// that answers from a snapshot reads one ahead.
    fn prefetch_holders(&self) {}

    /// This backend's own counters, for [`crate::Metrics::backend`].
    fn metrics(&self) -> BackendMetrics;
}

/// A lock a backend granted. Dropping it releases the lock without blocking
/// beyond closing a descriptor; [`HeldLock::release`] also removes the lock
/// file when asked, and may block.
pub(crate) trait HeldLock: Send + Sync + fmt::Debug {
    /// Releases the lock, first removing the lock file if `remove_file` and
    /// that is safe (nobody else holds it, it is still the file at the path).
    fn release(self: Box<Self>, remove_file: bool) -> Result<(), LockError>;
}

/// Counters that belong to the backend a [`crate::Locks`] handle uses, in
/// [`crate::Metrics::backend`]. One variant per backend; more will come.
///
/// ```
/// use async_filelock::{BackendMetrics, Locks};
/// let locks = Locks::builder().build()?;
/// match locks.metrics().backend() {
///     BackendMetrics::Os(os) => assert!(os.kernel_waits_peak >= os.kernel_waits_now),
///     _ => unreachable!("the default backend is the OS one"),
/// }
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendMetrics {
    /// The OS backend (`flock`).
    Os(OsMetrics),
}

impl BackendMetrics {
    /// The OS backend's counters, if this is the OS backend.
    pub fn os(&self) -> Option<&OsMetrics> {
        match self {
            BackendMetrics::Os(os) => Some(os),
        }
    }
}

/// Counters of the OS backend, process-wide (all handles share them).
///
/// A wait for a busy lock is either a *kernel wait* (a crate thread blocked
/// in `flock`; at most [`crate::max_wait_threads`] at once) or an *event
/// wait* (no thread of its own: woken by file events and a backoff poll).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OsMetrics {
    /// Kernel waits in progress now, abandoned ones included (at most one
    /// per contended lock path and mode).
    pub kernel_waits_now: u64,
    /// The most kernel waits at any one time since the process started.
    pub kernel_waits_peak: u64,
    /// Kernel waits whose future was dropped: their thread lets go of the
    /// lock the moment it is granted, unless a new wait adopts it first.
    pub abandoned_kernel_waits_now: u64,
    /// Event waits in progress now.
    pub event_waits_now: u64,
    /// Crate threads alive for kernel waits (idle ones exit after 10 s).
    pub wait_threads: u64,
    /// Kernel waits (since the process started) that found the lock
    /// released after their task's non-blocking attempt, and stood aside
    /// for about 50 µs so that a waiter the release woke could take it
    /// first, as it would from a plain blocking `flock`. Many of these mean
    /// a lock handed over at a high rate.
    pub waits_stood_aside: u64,
}
