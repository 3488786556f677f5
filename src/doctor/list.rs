//! [`list`]: one row per lock file of a lock dir, in the manner of
//! util-linux `lslocks`: who holds it (pid, command), how (shared or
//! exclusive), since when where that is known, and who waits.
//!
//! OS locks are found in the kernel's lock table by device and inode
//! (`sys::lock_table`); the table does not say since when a lock is held,
//! nor (elsewhere than on Linux) anything. Soft locks say all of it in
//! their owner record, and are judged stale as a waiter would judge them
//! (`backend::soft::record::judge`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::scan::{self, Kind};
use crate::backend::soft::DEFAULT_LEASE;
use crate::backend::soft::record::{self, OwnerRecord, Verdict};
use crate::category::Category;
use crate::error::LockError;
use crate::sys::{self, FileLocks, TableMode};

/// One lock file of a lock dir, as [`list`] found it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::doctor::{self, LockBackend, LockState};
/// use async_filelock::{Category, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let guard = locks.lock(Category::Summary, dir.path().join("summary.json")).await?;
/// let rows = doctor::list(&dir.path().join("locks"))?;
/// assert_eq!(rows.len(), 1);
/// assert_eq!(rows[0].category, Category::Summary);
/// assert_eq!(rows[0].backend, LockBackend::Os);
/// assert_eq!(rows[0].state, LockState::Write);
/// assert_eq!(rows[0].pid, Some(std::process::id()));
/// drop(guard);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The category, from the lock file's name.
    pub category: Category,
    /// The file the lock guards, as the lock file records it (`None`: not
    /// recorded yet).
    pub target: Option<PathBuf>,
    /// Held exclusively or shared, free, or stale.
    pub state: LockState,
    /// The holder's pid (for a lock held shared by several processes, the
    /// lowest); `None` when free or unknown. A soft lock of another host
    /// names a pid of that host.
    pub pid: Option<u32>,
    /// The holder's command name, where known.
    pub command: Option<String>,
    /// How long it has been held: known for soft locks (from the record),
    /// not for OS locks.
    pub held: Option<Duration>,
    /// Processes blocked waiting for it, where the OS tells (Linux, OS
    /// locks); soft locks are waited for by polling, which no table shows.
    pub waiters: Option<usize>,
    /// Which backend's lock file it is.
    pub backend: LockBackend,
    /// The lock file.
    pub lock_file: PathBuf,
}

impl LockInfo {
    /// Whether this is a problem to report: a stale soft lock.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let rows = async_filelock::doctor::list(dir.path())?;
    /// assert!(!rows.iter().any(|row| row.is_problem()));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn is_problem(&self) -> bool {
        self.state == LockState::Stale
    }
}

/// How a lock is held, in `lslocks`' words.
///
/// ```
/// use async_filelock::doctor::LockState;
/// assert_eq!(LockState::Write.to_string(), "WRITE");
/// assert_eq!(LockState::Free.to_string(), "-");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockState {
    /// Held exclusively (`WRITE`). Every soft lock is exclusive.
    Write,
    /// Held shared (`READ`).
    Read,
    /// Nobody holds it (`-`).
    Free,
    /// A soft lock whose owner is gone or whose lease ran out (`STALE`):
    /// the next waiter, or `lock-doctor clean`, breaks it.
    Stale,
    /// The OS does not tell (`?`): no lock table on this platform.
    Unknown,
}

impl fmt::Display for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            LockState::Write => "WRITE",
            LockState::Read => "READ",
            LockState::Free => "-",
            LockState::Stale => "STALE",
            LockState::Unknown => "?",
        })
    }
}

/// Which backend a lock file belongs to.
///
/// ```
/// assert_eq!(async_filelock::doctor::LockBackend::Soft.to_string(), "soft");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockBackend {
    /// An OS lock file (`flock`), recording its target.
    Os,
    /// A soft lock file, holding its owner record.
    Soft,
}

impl fmt::Display for LockBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockBackend::Os => "os",
            LockBackend::Soft => "soft",
        })
    }
}

/// One row per lock file in `lock_dir`, sorted by lock file. Files that
/// are not named like this crate's lock files (tokens, break doors,
/// `.part` markers, anything else) are not listed; nor is a file named
/// like one that is not a regular file.
///
/// # Errors
///
/// [`LockError::LockDir`] if `lock_dir` does not exist or is not a
/// directory; [`LockError::Io`] naming it if it cannot be listed.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(async_filelock::doctor::list(dir.path())?.is_empty());
/// assert!(async_filelock::doctor::list(&dir.path().join("missing")).is_err());
/// # Ok::<(), async_filelock::LockError>(())
/// ```
pub fn list(lock_dir: &Path) -> Result<Vec<LockInfo>, LockError> {
    let scan = scan::scan(lock_dir)?;
    // Read only if an OS lock file is there: the table costs about a
    // millisecond per thousand locks held on the host.
    let table = scan
        .lock_files
        .iter()
        .any(|f| matches!(f.kind, Kind::Os { .. }))
        .then(sys::lock_table)
        .flatten();
    let now = SystemTime::now();
    let mut rows = Vec::with_capacity(scan.lock_files.len());
    for file in scan.lock_files {
        let age = now.duration_since(file.modified).unwrap_or(Duration::ZERO);
        let row = match file.kind {
            Kind::Os { target, .. } => {
                let locks = table
                    .as_ref()
                    .map(|t| t.get(&sys::holder_key(file.dev, file.ino)).cloned());
                os_row(file.category, target, file.path, locks)
            }
            Kind::Soft(record) => soft_row(file.category, &record, age, file.path, now),
            Kind::UnreadableSoft => LockInfo {
                category: file.category,
                target: None,
                state: match record::judge(None, age, DEFAULT_LEASE) {
                    Verdict::Live => LockState::Write,
                    Verdict::Stale(_) => LockState::Stale,
                },
                pid: None,
                command: None,
                held: None,
                waiters: None,
                backend: LockBackend::Soft,
                lock_file: file.path,
            },
            Kind::Other(_) => continue,
        };
        rows.push(row);
    }
    Ok(rows)
}

/// The row of an OS lock file; `locks`: `None` when the OS has no table to
/// ask, `Some(None)` when no lock is taken on the file.
fn os_row(
    category: Category,
    target: Option<PathBuf>,
    lock_file: PathBuf,
    locks: Option<Option<FileLocks>>,
) -> LockInfo {
    let mut row = LockInfo {
        category,
        target,
        state: LockState::Unknown,
        pid: None,
        command: None,
        held: None,
        waiters: None,
        backend: LockBackend::Os,
        lock_file,
    };
    let Some(locks) = locks else {
        return row;
    };
    let locks = locks.unwrap_or_default();
    row.waiters = Some(locks.waiters.len());
    row.state = if locks.holders.iter().any(|(_, m)| *m == TableMode::Write) {
        LockState::Write
    } else if locks.holders.is_empty() {
        LockState::Free
    } else {
        LockState::Read
    };
    row.pid = locks.holders.first().map(|(pid, _)| *pid);
    row.command = row.pid.and_then(sys::command_name);
    row
}

/// The row of a soft lock file whose record is `record` and whose mtime
/// (its last renewal) is `age` old.
fn soft_row(
    category: Category,
    record: &OwnerRecord,
    age: Duration,
    lock_file: PathBuf,
    now: SystemTime,
) -> LockInfo {
    LockInfo {
        category,
        target: Some(PathBuf::from(&record.target)),
        state: match record::judge(Some(record), age, DEFAULT_LEASE) {
            Verdict::Live => LockState::Write,
            Verdict::Stale(_) => LockState::Stale,
        },
        pid: Some(record.pid),
        command: record.command.clone(),
        held: Some(record.held_for(now)),
        waiters: None,
        backend: LockBackend::Soft,
        lock_file,
    }
}
