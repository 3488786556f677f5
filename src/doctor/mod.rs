//! The logic of `lock-doctor`, the operator's tool for lock dirs: what is
//! held and by whom ([`list()`]), removing what crashed processes left
//! ([`clean()`]), the configuration this environment gives ([`policy`]), and
//! whether locking works on a filesystem ([`probe()`]). The program
//! (`src/bin/lock-doctor.rs`, cargo feature `cli`) only parses arguments,
//! prints and picks the exit code; this module builds without the feature.
//!
//! Layer 4 of ARCHITECTURE.md, "tools": above the writers, it may use every
//! layer below, and nothing of the crate uses it. It reads lock dirs as the
//! layers below write them, and changes them only through their own code:
//! a lock is taken with the crate's engine or backend before anything it
//! guards is removed, a stale soft lock is broken through the breakers'
//! door, and nothing is removed that its name and content do not prove to
//! be this crate's.
//!
//! * `scan.rs`: a lock dir read once: lock files classified, `.part`
//!   markers.
//! * `list.rs`: one row per lock file ([`list()`]), as `lslocks` shows
//!   locks; `output.rs`: rows as an aligned [`table`], raw, or [`json`].
//! * `clean.rs`: stale soft locks, free old OS lock files, orphaned
//!   `.part`s and atomic-write temps ([`clean()`]).
//! * `config.rs`: the effective configuration ([`policy`]); `fs.rs`: a
//!   filesystem's type and whether `flock` works there.
//! * `postgres.rs` (feature `postgres`): the advisory locks of a namespace
//!   on a PostgreSQL server ([`list_postgres`]).
//! * `probe.rs`: exclusion tried with child processes ([`probe()`]), which
//!   run `probe_child.rs` ([`serve_probe_child`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
//! use async_filelock::doctor::{self, CleanOptions, Column, Layout};
//! let dir = tempfile::tempdir().unwrap();
//! let lock_dir = dir.path().join("locks");
//! std::fs::create_dir(&lock_dir).unwrap();
//! let rows = doctor::list(&lock_dir)?;
//! print!("{}", doctor::table(&rows, &Column::ALL, Layout::Aligned, true));
//! let report = doctor::clean(&lock_dir, &CleanOptions::default()).await?;
//! print!("{report}");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::error::LockError;
use crate::lock::Locks;
use crate::lock::naming;
use crate::lock::policy::{BESIDE_TARGET_DIR, LockDir};

pub(crate) mod clean;
pub(crate) mod config;
pub(crate) mod fs;
pub(crate) mod list;
pub(crate) mod output;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod probe;
pub(crate) mod probe_child;
pub(crate) mod scan;

pub use clean::{CleanOptions, CleanReport, Cleaned, Left, Orphan, clean};
pub use config::{PolicyReport, policy};
pub use fs::{Filesystem, FlockCheck};
pub use list::{LockBackend, LockInfo, LockState, list};
pub use output::{Column, Layout, UnknownColumn, json, parse_columns, table};
#[cfg(feature = "postgres")]
pub use postgres::{AdvisoryLock, list_postgres, postgres_json, postgres_table};
pub use probe::{Outcome, ProbeCheck, ProbeCommand, ProbeReport, probe};
pub use probe_child::serve_probe_child;

/// The lock dir this environment uses: `ASYNC_FILELOCK_DIR` (resolved as a
/// [`crate::Locks`] handle resolves it) if set, else `.locks` in the
/// current directory (where the lock files of targets in it go).
///
/// # Errors
///
/// [`LockError::Config`] for an invalid environment; [`LockError::Io`]
/// if the current directory is gone.
///
/// ```
/// let dir = async_filelock::doctor::default_lock_dir()?;
/// assert!(dir.is_absolute());
/// # Ok::<(), async_filelock::LockError>(())
/// ```
pub fn default_lock_dir() -> Result<PathBuf, LockError> {
    let locks = Locks::builder().env()?.build()?;
    match &locks.policy().lock_dir {
        LockDir::Fixed(dir) => Ok(dir.clone()),
        LockDir::BesideTarget => Ok(std::env::current_dir()
            .map_err(|e| LockError::io("read current directory for", ".", e))?
            .join(BESIDE_TARGET_DIR)),
    }
}

/// `dir` made absolute with its parent resolved and its last component as
/// spelled, as a configured lock dir is (so that the lock paths computed
/// for targets compare equal to the files found in it).
pub(crate) fn resolve_lock_dir(dir: &Path) -> Result<PathBuf, LockError> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| LockError::io("read current directory for lock dir", dir, e))?
            .join(dir)
    };
    let resolved = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => naming::resolve_dir(parent).map(|p| p.join(name)),
        _ => naming::resolve_dir(&absolute),
    };
    resolved.map_err(|e| LockError::io("resolve lock dir", dir, e))
}
