//! The one way this crate runs blocking file work from async code (law 3):
//! on tokio's blocking pool, with a pool failure (panic, shutdown) reported
//! as an I/O error naming the path, like every other error. Lock waits never
//! come here (see the OS backend's waits): only file work, which ends.

use std::io;
use std::path::Path;

use crate::error::LockError;

/// Runs `work` on the blocking pool. If the awaiting future is dropped,
/// `work` still runs to completion: callers rely on that to finish commits
/// and cleanups under the lock they moved into it.
pub(crate) async fn run<R, F>(op: &'static str, path: &Path, work: F) -> Result<R, LockError>
where
    F: FnOnce() -> Result<R, LockError> + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LockError::io(op, path, io::Error::other(e.to_string())))?
}
