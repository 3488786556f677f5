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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::{Holder, LockError};
use crate::fencing::FencingToken;
use crate::mode::LockMode;

pub(crate) mod auto;
pub(crate) mod dirs;
mod lost;
pub(crate) mod os;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod soft;
pub(crate) mod tokens;

pub(crate) use lost::LostSignal;

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
    /// What to do when the lock dir is on a network filesystem.
    pub network_fs: NetworkFsPolicy,
    /// Whether holders remove the lock file on release (this process's
    /// policy for the lock's category, as an artifact's): a waiter then
    /// hears the release as the file's removal. A lock file that stays may
    /// be kept open by its holder, whose release after a brief holding no
    /// file event tells (see `os::hot`).
    pub removed_on_release: bool,
    /// Whether a holder of this process let go of this lock moments ago,
    /// after a brief holding (`lock::acquire::JUST_RELEASED`,
    /// `BRIEF_HOLDING`): the process takes it back to back, and a wait of its had better not take the lock from under
    /// another process doing the same (the OS backend's kernel wait then
    /// gives up wake-up preemption, see `os::waits`). Set for waits only.
    pub just_released: bool,
}

#[cfg(test)]
impl LockRequest {
    /// An exclusive request for `dir/<name>.lock` guarding `dir/<name>`,
    /// with private modes: for the backend's unit tests.
    pub(crate) fn exclusive_in(dir: &Path, name: &str) -> Self {
        LockRequest {
            lock_path: dir.join(format!("{name}.lock")).into(),
            target: dir.join(name).into(),
            mode: LockMode::Exclusive,
            file_mode: 0o600,
            dir_mode: 0o700,
            create_dir_parents: false,
            shared_group: None,
            network_fs: Default::default(),
            removed_on_release: false,
            just_released: false,
        }
    }
}

/// Which backend holds the locks of a [`crate::Locks`] handle
/// ([`crate::LocksBuilder::backend`], or `ASYNC_FILELOCK_BACKEND` =
/// `os` | `soft` | `auto`).
///
/// ```
/// use async_filelock::{BackendChoice, Locks};
/// use std::time::Duration;
/// let locks = Locks::builder()
///     .backend(BackendChoice::Soft)
///     .soft_lease(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(locks.backend(), BackendChoice::Soft);
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// `flock(2)` on a lock file (the default): released by the kernel when
    /// the holder dies, no lease to renew.
    #[default]
    Os,
    /// PostgreSQL advisory locks (cargo feature `postgres`), for hosts that
    /// share files but not a kernel: set the server with
    /// [`crate::LocksBuilder::postgres`] or `ASYNC_FILELOCK_PG_URL`.
    Postgres,
    /// Soft locks: a lock file created with `O_EXCL` holding an owner
    /// record, kept by a lease, broken when its owner is gone or its lease
    /// ran out. For filesystems where `flock` is refused or only local.
    /// Every soft lock is exclusive (a shared request takes it alone).
    Soft,
    /// The OS backend, falling back to soft locks (with a warning, once per
    /// lock dir) where the filesystem refuses `flock`.
    Auto,
}

impl BackendChoice {
    /// Its name, as `ASYNC_FILELOCK_BACKEND` spells it.
    ///
    /// ```
    /// assert_eq!(async_filelock::BackendChoice::Auto.name(), "auto");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Os => "os",
            BackendChoice::Soft => "soft",
            BackendChoice::Auto => "auto",
            BackendChoice::Postgres => "postgres",
        }
    }
}

/// Settings of the PostgreSQL backend (plain data, present without the
/// feature so that configuration parses the same everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostgresSettings {
    /// A libpq-style connection string or URL, once named.
    pub url: Option<String>,
    /// Keeps applications sharing a server apart.
    pub namespace: i32,
    /// Sessions a handle opens at most.
    pub connections: usize,
    /// How often each session is checked, and how long a check may take.
    pub heartbeat: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: None,
            namespace: 0x6166,
            connections: 4,
            heartbeat: Duration::from_secs(5),
        }
    }
}

#[cfg(feature = "postgres")]
impl PostgresSettings {
    /// The server as errors may name it: host, port and database, never a
    /// password.
    pub(crate) fn server_name(&self) -> String {
        redact(self.url.as_deref().unwrap_or(""))
    }
}

/// A connection string with any password taken out, for messages.
#[cfg(feature = "postgres")]
pub(crate) fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        // `user:password@host…`: keep what follows the `@`.
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        return format!("postgres://{host}");
    }
    url.split_whitespace()
        .filter(|part| !part.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What to do when a lock dir is on a network or FUSE filesystem (NFS,
/// SMB/CIFS, Lustre, GPFS, CephFS, FUSE, …; on Linux by `statfs` magic),
/// where `flock` may be refused, emulated, or local to one client.
///
/// ```
/// use async_filelock::{Locks, NetworkFsPolicy};
/// let locks = Locks::builder().network_fs(NetworkFsPolicy::Refuse).build()?;
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NetworkFsPolicy {
    /// Warn once per lock dir, naming the filesystem and the remedies (the
    /// default).
    #[default]
    Warn,
    /// Refuse to lock there ([`LockError::LockDir`] naming the filesystem):
    /// for operators who want to fail closed.
    Refuse,
    /// Say nothing (the operator knows, and chose the backend for it).
    Allow,
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

    /// Whether an attempt is a round trip to a server: then the lock layer
    /// awaits [`Backend::try_lock_async`] instead of calling
    /// [`Backend::try_lock`], and never asks [`Backend::wait_here`].
    fn attempts_are_async(&self) -> bool {
        false
    }

    /// One attempt that never waits for a holder, awaited (for a backend
    /// whose attempts are round trips). Cancel safety: dropping the future
    /// leaves nothing held.
    async fn try_lock_async(
        &self,
        req: &LockRequest,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        self.try_lock(req)
    }

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

    /// Best effort: who holds `lock_path`, for a timeout error. Quick: it
    /// must not hold the timeout back noticeably.
    ///
    /// `since`: when the caller's wait began; what the backend learnt of
    /// the lock before then may concern another file (an inode reused).
    async fn holder(&self, lock_path: &Path, since: Instant) -> Option<Holder>;

    /// Whether releasing a lock of `req` removes its lock file whatever the
    /// category's setting (a soft lock is its file), so that the lock layer
    /// releases it where blocking is allowed.
    fn releases_by_removal(&self, _req: &LockRequest) -> bool {
        false
    }

    /// Whether [`Backend::holder`] keeps its own file work off the runtime
    /// and within a bound, so that it may be asked on a network mount too
    /// (the OS backend's lookup stats the lock file on the calling thread:
    /// not asked there).
    fn names_holders_off_runtime(&self) -> bool {
        false
    }

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
    /// `held_for` is how long its holder kept it, if the caller knows: a
    /// backend may tell waiters of a brief holding's release differently.
    /// A lock lost while held is released as far as it is still ours and
    /// reported as [`LockError::Lost`].
    fn release(
        self: Box<Self>,
        remove_file: bool,
        held_for: Option<Duration>,
    ) -> Result<(), LockError>;

    /// The fencing token of this holding: issued now (once; the lock layer
    /// keeps it) for an exclusive lock, the last one issued for a shared
    /// one. May do file I/O on the lock's files.
    fn token(&self) -> Result<FencingToken, LockError>;

    /// How this lock tells its loss, for a lock that can be lost while
    /// held; `None` for one that cannot (an OS lock is held until its
    /// descriptor closes).
    fn lost(&self) -> Option<&LostSignal> {
        None
    }
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
    /// Soft locks (lock files with an owner record and a lease).
    Soft(SoftMetrics),
    /// PostgreSQL advisory locks (cargo feature `postgres`).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(PostgresMetrics),
    /// The OS backend, falling back to soft locks in lock dirs whose
    /// filesystem refuses `flock` ([`crate::BackendChoice::Auto`]).
    Auto {
        /// The OS backend's counters.
        os: OsMetrics,
        /// The soft backend's counters.
        soft: SoftMetrics,
    },
}

impl BackendMetrics {
    /// The OS backend's counters, if an OS backend is in use.
    pub fn os(&self) -> Option<&OsMetrics> {
        match self {
            BackendMetrics::Os(os) | BackendMetrics::Auto { os, .. } => Some(os),
            _ => None,
        }
    }

    /// The soft backend's counters, if soft locks may be in use.
    ///
    /// ```
    /// use async_filelock::Locks;
    /// let locks = Locks::builder().build()?;
    /// assert!(locks.metrics().backend().soft().is_none(), "the OS backend has none");
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn soft(&self) -> Option<&SoftMetrics> {
        match self {
            BackendMetrics::Soft(soft) | BackendMetrics::Auto { soft, .. } => Some(soft),
            _ => None,
        }
    }
}

/// Counters of a PostgreSQL backend (one per handle).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresMetrics {
    /// Database sessions open now (at most the configured number).
    pub connections_now: u64,
    /// Sessions opened since the handle was made.
    pub connects: u64,
    /// Sessions found lost (ended, or missed a heartbeat): every lock on
    /// one was lost with it.
    pub sessions_lost: u64,
    /// Advisory locks held through this handle now.
    pub held_now: u64,
}

/// Counters of soft locks, process-wide (all handles share them).
///
/// ```
/// use async_filelock::{BackendChoice, Locks};
/// let locks = Locks::builder().backend(BackendChoice::Soft).build()?;
/// let soft = *locks.metrics().backend().soft().expect("a soft handle");
/// assert_eq!(soft.held_now, 0, "nothing held yet");
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SoftMetrics {
    /// Soft locks this process holds now.
    pub held_now: u64,
    /// Stale soft locks this process broke (owner gone, or lease run out).
    pub stale_broken: u64,
    /// Soft locks of this process lost while held (lease run out, or the
    /// file taken by another process).
    pub lost: u64,
    /// Lease renewals done.
    pub renewals: u64,
    /// Lock dirs where the OS backend met a filesystem refusing `flock`
    /// and fell back to soft locks.
    pub fallbacks: u64,
    /// Soft waits woken by a file event (the busy lock file released)
    /// rather than by their backoff poll.
    pub woken_by_events: u64,
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
    /// Event waits (since the process started) granted on a try that a
    /// file event caused (a release told by a close, a removal or, from a
    /// holder that keeps its descriptor open, a read after a holding that
    /// was not brief), not by the backoff poll.
    pub granted_on_events: u64,
}
