//! The OS backend: `flock(2)` through fs4 on a separate lock file (law 1).
//!
//! Platform semantics: `flock` locks belong to an open file description, so
//! two descriptors in one process exclude each other like two processes do;
//! the lock layer keeps this process to one descriptor per lock path. Locks
//! vanish when the holder dies. On NFS, Linux emulates `flock` with
//! byte-range locks (works across clients with NFSv4); on filesystems without
//! locking, `flock` fails with `ENOLCK`/`ENOTSUP`, reported as an I/O error
//! naming the lock file.
//!
//! * [`flock`]: the only calls of the OS lock functions.
//! * [`file`]: opening the lock file and its identity checks.
//! * [`wait`]: blocking waits on a thread that may block, and the fair
//!   hand-over across the thread hop.
//! * [`interrupt`]: how a cancelled or timed-out blocking wait is woken.
//!
//! An async wait runs the blocking wait on tokio's blocking pool (one thread
//! per contended lock path, law 5) and cancels it when the deadline passes,
//! the token is cancelled, or the future is dropped.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use fs4::TryLockError;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendMetrics, HeldLock, LockRequest, on_cancel};
use crate::error::LockError;
use interrupt::WaitControl;

mod file;
mod flock;
mod interrupt;
mod wait;

/// How many times one attempt follows a lock file that was replaced under it
/// before giving up as "busy".
const IDENTITY_RETRIES: usize = 16;

/// The OS lock backend.
#[derive(Debug, Default)]
pub(crate) struct OsBackend;

#[async_trait]
impl Backend for OsBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        for _ in 0..IDENTITY_RETRIES {
            let lock_file = file::open_lock_file(req)?;
            match flock::try_flock(&lock_file, req.mode) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => {
                    return Err(LockError::io("lock", &*req.lock_path, e));
                }
            }
            if let Some(held) = file::confirm(lock_file, req)? {
                return Ok(Some(Box::new(held)));
            }
        }
        Ok(None)
    }

    async fn wait(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        let ctl = WaitControl::new();
        // Ends the blocking wait on every way out of this future: the
        // deadline, the token, a drop.
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&ctl));
        let owned = req.clone();
        let waiting = Arc::clone(&ctl);
        let joined = tokio::task::spawn_blocking(move || wait::blocking_lock(&owned, &waiting));
        let gave_up = async {
            let deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let cancelled = async {
                match cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = deadline => {}
                () = cancelled => {}
            }
        };
        let waited = tokio::select! {
            biased;
            waited = joined => waited,
            // A lock granted in the race is dropped with the task's output,
            // on the blocking pool: nothing stays held.
            () = gave_up => return Ok(None),
        };
        match waited {
            Ok(Ok(held)) => Ok(held.map(|held| Box::new(held) as Box<dyn HeldLock>)),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(LockError::io(
                "wait for lock",
                &*req.lock_path,
                std::io::Error::other(join.to_string()),
            )),
        }
    }

    fn wait_blocking(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        let ctl = WaitControl::new();
        let _on_token = cancel.map(|token| {
            let ctl = Arc::clone(&ctl);
            on_cancel(token, move || ctl.cancel())
        });
        if let Some(at) = deadline {
            ctl.cancel_at(at);
        }
        Ok(wait::blocking_lock(req, &ctl)?.map(|held| Box::new(held) as Box<dyn HeldLock>))
    }

    fn holder(&self, lock_path: &Path) -> Option<u32> {
        crate::sys::holder_of(lock_path)
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::Os(wait::metrics())
    }
}

/// Cancels the blocking wait if the future awaiting it is dropped. Also
/// harmless after the wait ended: cancelling a finished wait does nothing.
struct CancelOnDrop(Arc<WaitControl>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
