//! Async, cross-process file locks for tokio services.
//!
//! Services that download and record things run many tasks and many
//! processes against the same files. `async-filelock` gives them OS-level
//! locks that are awaited without blocking the runtime, queue fairly within a
//! process, time out per category, and are cancellation safe.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
//! use async_filelock::manifest_lock;
//! let dir = tempfile::tempdir().unwrap();
//! let manifest = dir.path().join("manifest.jsonl");
//! let guard = manifest_lock(&manifest).await?; // lock file in `.locks/` beside it
//! // … append to the manifest while `guard` lives …
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # What is in it
//!
//! * Locks: [`Locks`] (and the free functions [`artifact_lock`] …),
//!   [`LockGuard`], shared and exclusive, [`Locks::lock_many`] in lock order.
//! * Writers that can only commit while holding their lock:
//!   [`ArtifactWriter`] (stream to `.part`, verify, rename),
//!   [`JsonlSink`] (whole lines, group commit, rotation) and
//!   [`JsonlReader`], [`write_atomic`], [`update_json`] with revisions;
//!   each has a `_with` form (or a builder's `.locks(..)`) taking an
//!   explicit [`Locks`] handle.
//! * Observability: [`Metrics`] per handle (its `Display` is a table a
//!   person reads), with the backend's own counters in
//!   [`Metrics::backend`]; tracing spans and events; with the `metrics`
//!   feature, every event recorded through the `metrics` crate facade.
//! * Tools: [`doctor`], the logic of the `lock-doctor` program (feature
//!   `cli`): list who holds what in a lock dir, clean what crashed
//!   processes left, report the effective configuration, probe whether
//!   locking works on a filesystem.
//! * Testing: `test_util` (feature `test-util`): a [`Locks`] in a temporary
//!   directory, a lock held by another process until you release it, a
//!   wait until a lock is contended.
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! |---|---|
//! | `cli` | the `lock-doctor` program (`cargo install async-filelock --features cli`) |
//! | `metrics` | every acquisition, timeout, release and hold over budget also recorded through the [`metrics`](https://docs.rs/metrics) facade: counters and histograms labelled by category (`describe_metrics` names them) |
//! | `postgres` | the PostgreSQL advisory-lock backend, for hosts that share files but not a kernel |
//! | `test-util` | `test_util`, for your own test suites |
//!
//! The download service in one command shows it all working together:
//! `cargo run --release --example download_service` in the repository (a
//! local HTTP server, worker processes downloading one catalog into one
//! directory, and checks at the end).
//!
//! # Guide
//!
//! ## What to lock, and with which category
//!
//! Lock the file other processes must not see half-done, by its own path,
//! in the category that says what it is. The lock is a separate lock file
//! (law 1), so the data file is never opened for locking, and every
//! spelling of the path meets on one lock (law 2). The category sets the
//! default timeout, whether the lock file is removed on release, and the
//! lock's place in the lock order:
//!
//! | category | for | default timeout | when it is busy |
//! |---|---|---|---|
//! | [`Category::Artifact`] | downloaded files, written by [`ArtifactWriter`] | 30 s | someone else is downloading it: skip it and come back ([`OnBusy::Skip`]), or wait and find it present ([`Artifact::AlreadyPresent`]) |
//! | [`Category::Manifest`], [`Category::Telemetry`] | JSONL logs, appended by [`JsonlSink`] | 5 s | wait: a record is never dropped; a timeout means a stuck holder, so fail loudly |
//! | [`Category::Sqlite`] | a SQLite database, one transaction or batch per hold | 10 s | wait; on a timeout, put the batch back and retry later |
//! | [`Category::Summary`] | small files replaced whole: [`write_atomic`], [`update_json`] | 5 s | wait; a summary update that times out may be skipped when the next carries the totals |
//!
//! Hold a lock for one unit of work (one download, one batch, one
//! replace), never across waits for something else. The writers take and
//! release their locks themselves; take a lock by hand for files you write
//! yourself, such as the SQLite database.
//!
//! ## Failure policy: wait, bail, or retry later
//!
//! Every wait is bounded by its category's timeout unless told otherwise,
//! and a timeout is an error that names the lock file, the wait and the
//! holder (`held by pid 4121 (python3) for 12.4 s`), fit for a log line:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
//! use async_filelock::{Artifact, ArtifactWriter, Category, Locks, OnBusy};
//! use std::time::Duration;
//! let dir = tempfile::tempdir().unwrap();
//! let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
//!
//! // Bail: someone else is downloading it; do other work, come back later.
//! let open = ArtifactWriter::builder(dir.path().join("model.bin"))
//!     .locks(locks.clone())
//!     .on_busy(OnBusy::Skip)
//!     .open()
//!     .await?;
//! if let Artifact::Busy = open { /* requeue it */ }
//!
//! // Retry later: a bounded wait, and a timeout is not fatal.
//! let db = dir.path().join("state.db");
//! match locks.acquire(Category::Sqlite, &db).timeout(Duration::from_secs(2)).await {
//!     Ok(guard) => { /* one transaction */ guard.release().await? }
//!     Err(e) if e.is_timeout() => { /* log e (it names the holder); retry the batch later */ }
//!     Err(e) => return Err(e),
//! }
//!
//! // Never wait: `None` when someone holds it.
//! let maybe = locks.try_lock(Category::Summary, dir.path().join("summary.json")).await?;
//! # drop(maybe); Ok(()) }
//! ```
//!
//! Timeouts per category come from the builder
//! ([`LocksBuilder::timeout`], [`LocksBuilder::wait_forever`]) or the
//! environment (`ASYNC_FILELOCK_TIMEOUT_SQLITE=20`); per call from
//! [`Acquire::timeout`]. A hold longer than the category's budget logs a
//! warning and counts in [`CategoryMetrics::over_budget`].
//!
//! ## Lock order
//!
//! A task that holds one lock and waits for another can deadlock with a
//! task doing the opposite. Take several locks with [`Locks::lock_many`],
//! which takes them in one global order: artifact, manifest, telemetry,
//! sqlite, summary, then by lock path. A task that takes locks one by one
//! against that order is warned about ([`OrderCheck::Warn`], the default)
//! or refused ([`OrderCheck::Error`]). [`ArtifactWriter::commit_then`]
//! runs its step (a manifest row, a database row) while the artifact lock
//! is held, which is in order.
//!
//! ## What happens on a crash
//!
//! * **OS locks** (`flock`, the default backend) belong to open
//!   descriptors: the kernel releases them when the process dies, however
//!   it dies. The lock file stays (harmless; artifacts' are removed on
//!   release; `lock-doctor clean` removes old free ones).
//! * **Soft locks** stay on disk: the next waiter reads the owner record,
//!   and breaks the lock at once if its owner is gone on this host (pid and
//!   process start time), or once its lease ran out if it is on another.
//! * **Artifacts**: the target is untouched (only a verified `.part` is
//!   renamed over it). The `.part` stays, with a marker in the lock dir;
//!   the next writer starts over ([`Leftover::Discard`], the default) or
//!   continues it ([`Leftover::Resume`], with [`ArtifactWriter::resume_from`]
//!   for an HTTP `Range` request, and the digest of the whole verified at
//!   commit).
//! * **JSONL**: a line torn by a crash mid-write is moved to
//!   `<log>.torn-<offset>` by the next [`JsonlSink`] to open the log; every
//!   other line is whole.
//! * **Whole files** ([`write_atomic`], [`update_json`]): the old file is
//!   intact; a temp file `.<name>.<random>.tmp` may remain beside it
//!   (`lock-doctor clean` removes it under the lock).
//!
//! ## Network filesystems
//!
//! `flock` on NFS is emulated with byte-range locks (NFSv4 makes them work
//! across clients); on SMB, CephFS or FUSE mounts it may be refused, or
//! local to one client. When every process runs on one host, put the lock
//! dir on a local disk (`ASYNC_FILELOCK_DIR=/run/user/1000/locks`) and keep
//! the data where it is. Where processes on several hosts share a
//! directory, use soft locks there ([`BackendChoice::Soft`], or
//! [`BackendChoice::Auto`] to fall back only where `flock` is refused), or
//! locks kept by a PostgreSQL server (feature `postgres`). A
//! lock dir on a network filesystem is warned about once
//! ([`NetworkFsPolicy`]: warn, refuse or allow), and file work under a
//! network mount leaves the runtime thread (see "Network filesystems"
//! below).
//!
//! ## Soft locks and fencing tokens
//!
//! A soft lock is a lock file created whole with an owner record and kept
//! by a lease that a crate thread renews. A holder that stalls longer than
//! its lease (stopped, swapped out, a hung mount) loses it: its guard says
//! so ([`LockGuard::is_lost`], [`LockGuard::lost`]) and no writer of this
//! crate commits under it. Between the check and the write there is
//! always a moment, so give stores a [`FencingToken`]: every holding of a
//! lock gets a larger one ([`LockGuard::token`], [`CommitReport::token`],
//! [`JsonlSinkBuilder::record_token`] stamps it on each record), and a
//! store that keeps the largest token it has seen can refuse a write from
//! a superseded holder. Tokens are issued for every backend.
//!
//! ## The lock dir's security
//!
//! Whoever can write the lock dir can hold your locks forever, or swap a
//! lock file under you. So lock dirs are made 0700 and lock files 0600
//! (configurable), a lock path that is a symlink is never followed, and a
//! lock dir (or a configured lock dir's parent, unless sticky) that
//! another user owns or may write is refused with [`LockError::Untrusted`],
//! which says what to change. Several users share lock dirs through one
//! group ([`LocksBuilder::shared_group`], with `dir_mode(0o2770)` and
//! `file_mode(0o660)`). Prefer a per-user directory (`$XDG_RUNTIME_DIR`)
//! to a fixed name in a world-writable one such as `/tmp`, where another
//! user could create it first (you would be refused, not fooled).
//!
//! ## Testing code that uses the crate
//!
//! With the `test-util` feature (for dev-dependencies), `test_util` has
//! what a test of "another process holds it" needs, with no harness of your
//! own: `TempLocks` (a [`Locks`] in a fresh temporary directory, read from
//! the environment, so `ASYNC_FILELOCK_BACKEND=soft cargo test` runs the
//! suite on soft locks), `ChildHolder` (the lock held by a child process,
//! which is your test program run again through a hook you add with one
//! line, until you release it or kill it), and `wait_until_contended`
//! (returns once your code waits for the lock, instead of a sleep). Its
//! module documentation has a whole test file.
//!
//! # How it works
//!
//! The crate is built in layers (writers, then [`Locks`], then backends);
//! `ARCHITECTURE.md` in the repository describes them, numbers the laws the
//! code keeps ("law N" below), and names the test that proves each.
//!
//! * **Lock files, not data files** (law 1): each target has a lock file
//!   `<lock dir>/<category>.<sha256 of the normalised target>.lock`, so every
//!   spelling of one target meets on one lock. The file records the target.
//!   The target's directory is resolved, its final component is not: a
//!   symlink is locked as the link, and the writers that rename
//!   ([`ArtifactWriter`], [`write_atomic`], [`update_json`]) may read through
//!   it but replace the link itself, never writing the file it leads to; a
//!   [`JsonlSink`], which appends in place, refuses one.
//! * **In-process queue** (law 5): all tasks of a process waiting for one lock
//!   queue FIFO on a fair async lock; only the head talks to the OS, so a
//!   thousand tasks waiting on one lock cost one wait.
//! * **Try inline, wait elsewhere** (law 3): an uncontended lock is one
//!   non-blocking `flock` on the calling thread. A contended one becomes a
//!   wait that never touches tokio's blocking pool (law 11): up to
//!   [`max_wait_threads`] (16) crate threads block in a real `flock`, which
//!   the kernel wakes at every release; every wait beyond those costs no thread,
//!   woken by file events (inotify) with a backoff poll as the backstop
//!   (which also finds the release of a lock file that stays after a
//!   holding under 20 µs: that unlock tells no event).
//! * **Fair hand-over across processes**: a kernel wait that finds the lock
//!   freed since its task's attempt (the release fell into the hand-off to
//!   the wait thread) stands aside 50 µs for the waiter that release woke,
//!   then queues ([`OsMetrics::waits_stood_aside`] counts it).
//! * **Cancellation** (law 4): dropping any future of this crate at any await
//!   point leaves no lock held. No signal is used, so nothing another part
//!   of the program does to signal handlers or masks matters: a dropped
//!   event wait is forgotten at once, and a dropped kernel wait lets go of
//!   the lock the moment it is granted (or is adopted by the next wait on
//!   the same lock), within the thread bound. A runtime shutting down never
//!   waits for a lock.
//! * **fork()**: a child made by `fork()` without `exec` gets fresh waits,
//!   a fresh in-process table, name cache and lock-order record on first
//!   use (the parent's threads do not exist in it, and may have held their
//!   locks at the fork); metrics of handles made before the fork are not
//!   recorded in the child. The child inherits the parent's descriptors,
//!   and `flock` locks belong to open descriptors: a lock the parent held
//!   at the fork, or is granted later through a wait whose lock file was
//!   open at the fork, stays held until the child has closed that
//!   descriptor too (exited or exec'd). So a child should not use or drop
//!   guards it inherited, and should exec or exit soon; its own new
//!   acquisitions work normally.
//! * **Removable lock files**: after locking, the descriptor is checked to be
//!   the file still at the lock path, so lock files can be removed on release
//!   (the default for artifacts) without two holders ending up on two inodes.
//!
//! # Platform
//!
//! Unix. Linux is what the test suite runs on. Other Unix systems compile
//! the same code with a documented fallback for Linux's extras: timeouts
//! cannot name the holder (no `/proc/locks`), artifacts are not
//! preallocated (no `fallocate` keep-size), and waits beyond the kernel-wait
//! threads poll every 1 to 50 ms instead of being woken by file events, and
//! no path is known to be on a network filesystem (no mount table) unless
//! `ASYNC_FILELOCK_NETWORK_FS` names it. On filesystems without `flock`
//! support the OS reports an error naming the lock file.
//!
//! **Network filesystems.** On a local disk an acquisition's file calls
//! (resolving the target's directory, creating the lock dir and lock file,
//! `flock`) run on the calling runtime thread: they cannot hang there, and
//! a thread hop would double an uncontended lock's cost. When the target or
//! the lock dir is on a network filesystem (NFS, SMB, Ceph, network FUSE such as sshfs, …; Linux
//! reads the mount table, and `ASYNC_FILELOCK_NETWORK_FS` names more places,
//! separated by `:`), they run on tokio's blocking pool, so a hung server
//! stalls only the acquisitions that need it
//! ([`CategoryMetrics::off_runtime`] counts them), and a [`JsonlSink`] there
//! reopens its file for each commit: NFS gives close-to-open consistency,
//! and an append through a descriptor kept open writes at the size this host
//! last saw, over another host's lines. [`LocksBuilder::build`] resolves a
//! configured lock dir on the calling thread.
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(unix))]
compile_error!("async-filelock supports Unix platforms only for now");

// Layers, bottom up (ARCHITECTURE.md): each may use only those below it.
// Vocabulary shared by every layer.
mod category;
mod error;
mod fencing;
mod mode;
// Platform code (the only `unsafe`), blocking-pool glue, per-process state.
mod blocking;
mod mounts;
mod path_key;
mod per_process;
mod sys;
// Layer 1: what holds a lock between processes.
mod backend;
// Layer 2: Locks, the in-process queue, the acquisition core, guards.
mod lock;
// Layer 3: writers that commit only under a guard.
mod write;
// Layer 4: tools for operators (`lock-doctor`), over every layer below.
pub mod doctor;
// Layer 4: helpers for users' test suites (feature `test-util`).
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

use std::path::Path;

#[cfg(feature = "postgres")]
pub use backend::PostgresMetrics;
pub use backend::{BackendChoice, BackendMetrics, NetworkFsPolicy, OsMetrics, SoftMetrics};
pub use category::{Category, ParseCategoryError};
pub use error::{Holder, LockError};
pub use fencing::FencingToken;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use lock::describe_metrics;
pub use lock::{
    Acquire, BESIDE_TARGET_DIR, CategoryMetrics, ENV_BACKEND, ENV_BATCH_WAIT_THREADS, ENV_DIR,
    ENV_HOT_FILES, ENV_NETWORK_FS_POLICY, ENV_PG_CONNECTIONS, ENV_PG_NAMESPACE, ENV_PG_URL,
    ENV_SOFT_LEASE, ENV_TIMEOUT_PREFIX, ENV_WAIT_THREADS, LockGuard, LockSet, Locks, LocksBuilder,
    Metrics, OrderCheck, Percentiles, SameTask,
};
pub use mode::LockMode;
pub use write::{
    Artifact, ArtifactWriter, ArtifactWriterBuilder, CommitReport, FsyncPolicy, JsonlReader,
    JsonlSink, JsonlSinkBuilder, Leftover, OnBusy, PresentReport, Progress, Rotation, SinkStats,
    Versioned, load_json, load_json_with, save_if_revision, save_if_revision_with, update_json,
    update_json_with, write_atomic, write_atomic_with,
};

/// The README's examples, compiled as doctests so the quickstart cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Sets how many threads of this process may block in the kernel waiting
/// for OS locks (default 16, at least 1), across all handles and writers.
/// Waits beyond that many cost no thread: they are woken by file events
/// (inotify on Linux) with a backoff poll as the backstop. Also set by
/// `ASYNC_FILELOCK_WAIT_THREADS` when a handle reads the environment.
///
/// ```
/// async_filelock::set_max_wait_threads(4);
/// assert_eq!(async_filelock::max_wait_threads(), 4);
/// async_filelock::set_max_wait_threads(16);
/// ```
pub fn set_max_wait_threads(n: usize) {
    backend::os::waits::set_max_kernel_waits(n);
}

/// Sets whether a back-to-back taker's waits give up wake-up preemption
/// (on by default); no other wait ever does. A wait that begins within
/// 100 µs of this process's own release of the same lock, after a holding
/// under 100 µs, is a back-to-back taker's; on Linux its kernel
/// wait (one of at most [`max_wait_threads`] threads blocked in `flock`)
/// then runs as `SCHED_BATCH`: same nice level, same share of the CPU, no
/// preemption on wake-up. Such a thread is woken by every release of the
/// lock; preempting the releasing thread, it took the lock from that
/// thread's next attempt, and between processes that all take one lock
/// back to back the lock changed hands twice as often as between plain
/// `flock` callers. Other waits keep the normal policy, so that their
/// threads run at once on a busy CPU; a back-to-back taker's thread, woken
/// on a busy CPU, runs when the running thread blocks or its slice ends
/// (about 1.5 ms on 2 CPUs), and may find the lock taken again by then.
/// Threads of another policy (real-time, idle, or batch: the program's,
/// `chrt`'s) are left as they are; other systems have no such policy.
/// Each wait thread applies the setting before its next wait; a wait
/// already in `flock` keeps the policy it began with. Also
/// set by `ASYNC_FILELOCK_BATCH_WAIT_THREADS` when a handle reads the
/// environment.
///
/// ```
/// async_filelock::set_batch_wait_threads(false);
/// assert!(!async_filelock::batch_wait_threads());
/// async_filelock::set_batch_wait_threads(true);
/// ```
pub fn set_batch_wait_threads(on: bool) {
    backend::os::waits::set_batch_kernel_threads(on);
}

/// The setting of [`set_batch_wait_threads`].
///
/// ```
/// assert!(async_filelock::batch_wait_threads());
/// ```
pub fn batch_wait_threads() -> bool {
    backend::os::waits::batch_kernel_threads()
}

/// Sets how many lock-file descriptors this process keeps open between
/// holdings (default 64, across all handles; 0 keeps none). A lock
/// released without removing its file (every category but artifacts, by
/// default) lets go by `LOCK_UN` and keeps its descriptor, so taking it
/// again costs a `flock` and an `fstat` instead of an `open`, a `flock`,
/// an `fstat` and a `close`; the identity check stays (a lock file removed
/// meanwhile is opened anew). Past the bound the least recently used is
/// closed; a process out of descriptors closes them all before an open
/// fails. Also set by `ASYNC_FILELOCK_HOT_FILES` when a handle reads the
/// environment.
///
/// ```
/// async_filelock::set_max_hot_lock_files(0);
/// assert_eq!(async_filelock::max_hot_lock_files(), 0);
/// async_filelock::set_max_hot_lock_files(64);
/// ```
pub fn set_max_hot_lock_files(n: usize) {
    backend::os::set_max_hot_files(n);
}

/// The bound set by [`set_max_hot_lock_files`].
///
/// ```
/// let n = async_filelock::max_hot_lock_files();
/// assert!(n <= 1 << 20);
/// ```
pub fn max_hot_lock_files() -> usize {
    backend::os::hot::max_hot_files()
}

/// The bound set by [`set_max_wait_threads`].
///
/// ```
/// assert!(async_filelock::max_wait_threads() >= 1);
/// ```
pub fn max_wait_threads() -> usize {
    backend::os::waits::max_kernel_waits()
}

/// Number of lock paths this process currently holds or waits for, across
/// all handles. A path counts while a holder or waiter has it (a few idle
/// ones are kept for reuse, uncounted), so this returns to zero when the
/// process is idle.
///
/// ```
/// assert_eq!(async_filelock::paths_in_use(), 0);
/// ```
pub fn paths_in_use() -> usize {
    lock::table::len()
}

/// Exclusive artifact lock on `target` from the process-wide default
/// [`Locks`] (see [`Locks::global`]), waiting up to the artifact timeout.
///
/// # Errors
///
/// As [`Locks::lock`], plus [`LockError::Config`] for an invalid environment.
///
/// # Cancel safety
///
/// Cancel safe, as [`Locks::lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let guard = async_filelock::artifact_lock(dir.path().join("paper.pdf")).await?;
/// assert!(guard.lock_path().starts_with(dir.path().join(".locks")));
/// # Ok(()) }
/// ```
pub async fn artifact_lock(target: impl AsRef<Path>) -> Result<LockGuard, LockError> {
    Locks::global()?.lock(Category::Artifact, target).await
}

/// Exclusive manifest lock on `target` from the default [`Locks`]; see
/// [`artifact_lock`].
///
/// # Errors
///
/// As [`artifact_lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let _guard = async_filelock::manifest_lock(dir.path().join("manifest.jsonl")).await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Cancel safe, as [`Locks::lock`].
pub async fn manifest_lock(target: impl AsRef<Path>) -> Result<LockGuard, LockError> {
    Locks::global()?.lock(Category::Manifest, target).await
}

/// Exclusive telemetry lock on `target` from the default [`Locks`]; see
/// [`artifact_lock`].
///
/// # Errors
///
/// As [`artifact_lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let _guard = async_filelock::telemetry_lock(dir.path().join("metrics.jsonl")).await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Cancel safe, as [`Locks::lock`].
pub async fn telemetry_lock(target: impl AsRef<Path>) -> Result<LockGuard, LockError> {
    Locks::global()?.lock(Category::Telemetry, target).await
}

/// Exclusive SQLite lock on `target` (the database file) from the default
/// [`Locks`]; hold it for one transaction or batch. See [`artifact_lock`].
///
/// # Errors
///
/// As [`artifact_lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let _guard = async_filelock::sqlite_lock(dir.path().join("state.db")).await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Cancel safe, as [`Locks::lock`].
pub async fn sqlite_lock(target: impl AsRef<Path>) -> Result<LockGuard, LockError> {
    Locks::global()?.lock(Category::Sqlite, target).await
}

/// Exclusive summary lock on `target` from the default [`Locks`]; see
/// [`artifact_lock`].
///
/// # Errors
///
/// As [`artifact_lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let _guard = async_filelock::summary_lock(dir.path().join("summary.json")).await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Cancel safe, as [`Locks::lock`].
pub async fn summary_lock(target: impl AsRef<Path>) -> Result<LockGuard, LockError> {
    Locks::global()?.lock(Category::Summary, target).await
}
