//! What every writer commits with: blocking work run under a guard, which
//! finishes (and releases the lock) even if the awaiting future is dropped;
//! and a directory fsync that makes a rename durable (law 6).

use std::fs::File;
use std::path::Path;

use crate::error::LockError;
use crate::lock::LockGuard;

/// Runs `work` on the blocking pool while `guard` is held, and releases the
/// guard there when `work` is done, even if the awaiting future was dropped.
/// A release error after `work` is logged, not returned: what `work` wrote
/// stands, and an error would invite a retry that writes it twice.
pub(crate) async fn with_guard<R, F>(guard: LockGuard, work: F) -> Result<R, LockError>
where
    F: FnOnce(&LockGuard) -> Result<R, LockError> + Send + 'static,
    R: Send + 'static,
{
    let lock_path = guard.lock_path().to_path_buf();
    crate::blocking::run("run locked work for", &lock_path, move || {
        let result = work(&guard);
        guard.release_blocking_or_warn();
        result
    })
    .await
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LockError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LockError::io("fsync directory", dir, e))
}

/// [`sync_dir`] after a rename that committed: the new name is in place and
/// visible, so a failed fsync is logged, not returned. An error means "not
/// written", and a caller who retried would write twice (a second manifest
/// row, a counter incremented twice).
pub(crate) fn sync_dir_after_commit(dir: &Path, committed: &Path) {
    if let Err(e) = sync_dir(dir) {
        tracing::warn!(path = %committed.display(), error = %e, "committed, but the directory fsync failed: the rename may not survive a power cut");
    }
}
