//! Backends: what actually holds a lock between processes (or hosts).
//!
//! A backend knows lock paths and modes, nothing of categories, policies or
//! writers (DESIGN.md, layers). The in-process table in [`crate::table`]
//! guarantees that for one lock path at most one task of this process talks
//! to the backend at a time, so a backend never sees two concurrent requests
//! for the same path from one process.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{LockError, LockMode};

mod interrupt;
pub(crate) use interrupt::WaitControl;
#[allow(clippy::disallowed_methods)] // the one module allowed to take OS locks
pub(crate) mod os;
pub(crate) mod proc_locks;

/// What a backend needs to take one lock.
#[derive(Debug, Clone)]
pub(crate) struct LockRequest {
    /// The lock file.
    pub lock_path: Arc<Path>,
    /// The file it guards, recorded in the lock file for people and the doctor.
    pub target: Arc<Path>,
    pub mode: LockMode,
    /// Permission bits of a new lock file.
    pub file_mode: u32,
    /// Permission bits of a new lock directory.
    pub dir_mode: u32,
    /// Whether a missing lock directory may be created with its parents
    /// (a configured lock dir), or only itself (`.locks` beside a target,
    /// whose directory must exist).
    pub create_dir_parents: bool,
}

/// A lock backend. Object safe; held as `Arc<dyn Backend>` by [`crate::Locks`].
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// One non-blocking attempt, cheap enough to run on a runtime thread.
    /// `Ok(None)` when another holder has it.
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError>;

    /// Waits until the lock is granted, without blocking a runtime thread.
    ///
    /// Cancel safety: dropping the future stops the wait promptly (well under
    /// 100 ms) and leaves nothing held.
    async fn lock(&self, req: &LockRequest) -> Result<Box<dyn HeldLock>, LockError>;

    /// Waits on the calling thread until the lock is granted, or `ctl` is
    /// cancelled (`Ok(None)`; by its owner, or at a deadline set with
    /// [`WaitControl::cancel_at`]). For work that runs on the blocking pool
    /// anyway: the thread that gets the lock does the work, with no hand-off
    /// between the grant and the work, so the lock is held only as long as
    /// the work.
    fn lock_blocking(
        &self,
        req: &LockRequest,
        ctl: &WaitControl,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError>;

    /// Best effort: the pid of a process holding `lock_path`. May block
    /// briefly; call it from the blocking pool.
    fn holder(&self, lock_path: &Path) -> Option<u32>;
}

/// A lock a backend granted. Dropping it releases the lock without blocking
/// beyond closing a descriptor; [`HeldLock::release`] also removes the lock
/// file when asked, and may block.
pub(crate) trait HeldLock: Send + Sync + fmt::Debug {
    /// Releases the lock, first removing the lock file if `remove_file` and
    /// that is safe (nobody else holds it, it is still the file at the path).
    fn release(self: Box<Self>, remove_file: bool) -> Result<(), LockError>;
}
