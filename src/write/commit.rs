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
    open_dir(dir)?.sync()
}

/// A directory opened before a commit's rename, so that the fsync after it
/// cannot fail for want of a descriptor (`EMFILE`) once the new file is in
/// place: an error means "not written", and a caller told so after the
/// rename would write twice (an `update_json` retried applies its change
/// twice).
#[derive(Debug)]
pub(crate) struct OpenDir<'a> {
    dir: File,
    path: &'a Path,
}

/// Opens `dir` for [`OpenDir::sync`]; call before the rename.
pub(crate) fn open_dir(dir: &Path) -> Result<OpenDir<'_>, LockError> {
    File::open(dir)
        .map(|d| OpenDir { dir: d, path: dir })
        .map_err(|e| LockError::io("open directory to fsync", dir, e))
}

impl OpenDir<'_> {
    /// Makes the renames done in the directory durable.
    pub(crate) fn sync(self) -> Result<(), LockError> {
        self.dir
            .sync_all()
            .map_err(|e| LockError::io("fsync directory", self.path, e))
    }
}
