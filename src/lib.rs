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
//! * Observability: [`Metrics`] per handle, with the backend's own counters
//!   in [`Metrics::backend`]; tracing spans and events.
//! * Tools: [`doctor`], the logic of the `lock-doctor` program (feature
//!   `cli`): list who holds what in a lock dir, clean what crashed
//!   processes left, report the effective configuration, probe whether
//!   locking works on a filesystem.
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
//!   the kernel hands over fairly; every wait beyond those costs no thread,
//!   woken by file events (inotify) with a backoff poll as the backstop.
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
    Acquire, BESIDE_TARGET_DIR, CategoryMetrics, ENV_BACKEND, ENV_DIR, ENV_NETWORK_FS_POLICY,
    ENV_PG_CONNECTIONS, ENV_PG_NAMESPACE, ENV_PG_URL, ENV_SOFT_LEASE, ENV_TIMEOUT_PREFIX,
    ENV_WAIT_THREADS, LockGuard, LockSet, Locks, LocksBuilder, Metrics, OrderCheck, Percentiles,
    SameTask,
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

/// The bound set by [`set_max_wait_threads`].
///
/// ```
/// assert!(async_filelock::max_wait_threads() >= 1);
/// ```
pub fn max_wait_threads() -> usize {
    backend::os::waits::max_kernel_waits()
}

/// Number of lock paths this process currently holds or waits for, across
/// all handles. Entries leave the table when their last holder or waiter
/// goes, so this returns to zero when the process is idle.
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
