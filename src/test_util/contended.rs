//! Is anyone waiting for a lock? For tests that must act once a task (or
//! another process) waits, instead of sleeping for a guessed while.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::category::Category;
use crate::error::LockError;
use crate::lock::Locks;
use crate::lock::table;
use crate::sys;

/// How often [`wait_until_contended`] looks.
const POLL: Duration = Duration::from_millis(5);

/// Waits until someone waits for the lock on `target` in `category` (as
/// `locks` names it), up to `limit`; returns whether someone did.
///
/// "Someone waits" means: an acquisition of this process has asked for the
/// lock and does not hold it (queued behind a holder of this process, or
/// waiting for another process), whatever the backend; or, on Linux,
/// another process blocks in `flock` for the lock file (`/proc/locks`).
/// Not seen: waits of other processes that do not block in `flock` (soft
/// locks, which poll; OS waits beyond the kernel-wait threads, which are
/// woken by file events).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::Category;
/// use async_filelock::test_util::{TempLocks, wait_until_contended};
/// use std::time::Duration;
/// let locks = TempLocks::new()?;
/// let summary = locks.path("summary.json");
/// let held = locks.lock(Category::Summary, &summary).await?;
/// let waiter = tokio::spawn({
///     let (locks, summary) = (locks.locks().clone(), summary.clone());
///     async move { locks.lock(Category::Summary, &summary).await.map(drop) }
/// });
/// assert!(wait_until_contended(&locks, Category::Summary, &summary, Duration::from_secs(10)).await?);
/// drop(held);
/// waiter.await.expect("task")?;
/// assert!(!wait_until_contended(&locks, Category::Summary, &summary, Duration::ZERO).await?);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`Locks::lock_path`]: an invalid target.
///
/// # Cancel safety
///
/// Cancel safe: it only looks.
pub async fn wait_until_contended(
    locks: &Locks,
    category: Category,
    target: impl AsRef<Path>,
    limit: Duration,
) -> Result<bool, LockError> {
    let lock_path = locks.lock_path(category, target)?;
    let deadline = Instant::now().checked_add(limit);
    loop {
        if contended(&lock_path) {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether someone waits for the lock on `target` in `category` now; see
/// [`wait_until_contended`] for who is seen.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::Category;
/// use async_filelock::test_util::{TempLocks, is_contended};
/// let locks = TempLocks::new()?;
/// let db = locks.path("state.db");
/// let _held = locks.lock(Category::Sqlite, &db).await?;
/// assert!(!is_contended(&locks, Category::Sqlite, &db)?, "held, but nobody waits");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`Locks::lock_path`]: an invalid target.
pub fn is_contended(
    locks: &Locks,
    category: Category,
    target: impl AsRef<Path>,
) -> Result<bool, LockError> {
    Ok(contended(&locks.lock_path(category, target)?))
}

fn contended(lock_path: &Path) -> bool {
    table::asking(lock_path) > 0 || blocked_in_flock(lock_path)
}

/// Whether the OS lists a process blocked waiting for `lock_path`.
fn blocked_in_flock(lock_path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(lock_path) else {
        return false;
    };
    sys::lock_table()
        .and_then(|t| t.get(&sys::holder_key(meta.dev(), meta.ino())).cloned())
        .is_some_and(|locks| !locks.waiters.is_empty())
}
