//! The OS backend: `flock(2)` through fs4 on a separate lock file (law 1).
//!
//! Platform semantics: `flock` locks belong to an open file description, so
//! two descriptors in one process exclude each other like two processes do;
//! the lock layer keeps this process to one holding per lock path, and a
//! descriptor kept open between holdings ([`hot`]) has one user at a time.
//! Locks
//! vanish when the holder dies. On NFS, Linux emulates `flock` with
//! byte-range locks (works across clients with NFSv4); on filesystems without
//! locking, `flock` fails with `ENOLCK`/`ENOTSUP`, reported as an I/O error
//! naming the lock file.
//!
//! * [`flock`]: the only calls of the OS lock functions.
//! * [`file`](mod@file): opening the lock file (in a lock dir checked by
//!   [`crate::backend::dirs`]) and its identity checks, told by
//!   [`identity`] for the lock files kept open between holdings.
//! * [`waits`]: the process's pending waits and where each is served:
//!   [`kernel`] threads blocked in `flock` (bounded), or the [`events`]
//!   thread (file events and a backoff poll, no thread per wait).
//! * [`holders`]: who holds a lock, for timeout errors.
//! * [`scratch`]: the bare `flock` on a caller's file, for tools that test
//!   a filesystem.
//!
//! An uncontended lock is one non-blocking `flock` on the calling thread
//! ([`Backend::try_lock`]); only a busy one becomes a wait.
//!
//! May use: the backend contract (`super`), `per_process`, `sys`, the
//! vocabulary (`error`, `mode`); nothing of the lock layer or the writers.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use fs4::TryLockError;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendMetrics, HOLDER_READ_AHEAD, HeldLock, LockRequest};
use crate::error::{Holder, LockError};

mod events;
mod file;
pub(crate) mod flock;
mod holders;
pub(crate) mod hot;
mod identity;
mod kernel;
mod pending;
pub(crate) mod scratch;
pub(crate) mod waits;

/// How many times one attempt follows a lock file that was replaced under it
/// before giving up as "busy".
const IDENTITY_RETRIES: usize = 16;

/// Sets how many lock-file descriptors this process keeps open between
/// holdings (0: none, and those kept are closed now); see [`hot`].
pub(crate) fn set_max_hot_files(n: usize) {
    hot::set_max(n);
    if n == 0 {
        file::close_kept();
    }
}

/// The OS lock backend.
#[derive(Debug, Default)]
pub(crate) struct OsBackend;

#[async_trait]
impl Backend for OsBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        for _ in 0..IDENTITY_RETRIES {
            let lock_file = file::open_kept(req)?;
            match flock::try_flock(&lock_file, req.mode) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // Before waiting: another user's lock file is refused
                    // while they hold it too (they could hold it forever),
                    // not only once it is free.
                    if !file::check_busy_lock_file(&lock_file, req)? {
                        // A kept descriptor of a removed lock file: try the
                        // file at the path.
                        continue;
                    }
                    // The next attempt (a kernel wait's, usually) takes
                    // this descriptor instead of opening another.
                    file::give_back(&req.lock_path, lock_file);
                    return Ok(None);
                }
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
        let wait = waits::waits().start(req)?;
        let expired = async {
            match deadline {
                Some(at) => {
                    // Who holds the lock is read shortly before the
                    // deadline, so the timeout names it without waiting.
                    if let Some(ahead) = at.checked_sub(HOLDER_READ_AHEAD) {
                        tokio::time::sleep_until(ahead.into()).await;
                        holders::prefetch();
                    }
                    tokio::time::sleep_until(at.into()).await
                }
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            match cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // Giving up drops `wait`, which abandons it (see `waits`).
        tokio::select! {
            biased;
            held = wait => held.map(|held| Some(Box::new(held) as Box<dyn HeldLock>)),
            () = expired => Ok(None),
            () = cancelled => Ok(None),
        }
    }

    fn wait_here(&self, req: &LockRequest) -> Option<Result<Box<dyn HeldLock>, LockError>> {
        let held = waits::waits().wait_here(req)?;
        Some(held.map(|held| Box::new(held) as Box<dyn HeldLock>))
    }

    async fn holder(&self, lock_path: &Path, since: Instant) -> Option<Holder> {
        holders::holder(lock_path, since).await.map(Holder::process)
    }

    fn prefetch_holders(&self) {
        holders::prefetch();
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::Os(waits::waits().metrics())
    }
}
