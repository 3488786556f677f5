//! [`AutoBackend`]: the OS backend, falling back to soft locks in a lock
//! dir whose filesystem refuses `flock` (`ENOLCK`, `EOPNOTSUPP`, `ENOSYS`),
//! saying so once per lock dir in a warning.
//!
//! The fallback is per lock dir and for the life of the process: once a
//! filesystem refused `flock`, every lock in that dir is a soft lock, so
//! processes agree by the filesystem they meet, not by luck of timing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use rustc_hash::FxHashSet;
use tokio_util::sync::CancellationToken;

use super::os::OsBackend;
use super::soft::{self, SoftBackend};
use super::{Backend, BackendMetrics, HeldLock, LockRequest};
use crate::error::{Holder, LockError};

/// The OS backend with a fallback to soft locks.
#[derive(Debug, Default)]
pub(crate) struct AutoBackend {
    os: OsBackend,
    soft: SoftBackend,
    /// Lock dirs whose filesystem refused `flock`.
    soft_dirs: Mutex<FxHashSet<PathBuf>>,
}

/// Whether `e` says the filesystem does not do `flock` at all.
pub(crate) fn is_unsupported(e: &LockError) -> bool {
    match e {
        LockError::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        ),
        _ => false,
    }
}

impl AutoBackend {
    pub(crate) fn new(soft: SoftBackend) -> Self {
        AutoBackend {
            os: OsBackend,
            soft,
            soft_dirs: Mutex::default(),
        }
    }

    fn is_soft(&self, lock_path: &Path) -> bool {
        let Some(dir) = lock_path.parent() else {
            return false;
        };
        let dirs = self.soft_dirs.lock().unwrap_or_else(|p| p.into_inner());
        !dirs.is_empty() && dirs.contains(dir)
    }

    /// Records that `req`'s lock dir refused `flock` with `e`, warning the
    /// first time.
    fn fall_back(&self, req: &LockRequest, e: &LockError) {
        let Some(dir) = req.lock_path.parent() else {
            return;
        };
        let first = self
            .soft_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf());
        if first {
            soft::metrics::fell_back();
            tracing::warn!(
                lock_dir = %dir.display(),
                error = %e,
                "this filesystem refuses flock: using soft locks (lock files with an owner record and a lease) in this lock dir from now on"
            );
        }
    }
}

#[async_trait]
impl Backend for AutoBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        if self.is_soft(&req.lock_path) {
            return self.soft.try_lock(req);
        }
        match self.os.try_lock(req) {
            Err(e) if is_unsupported(&e) => {
                self.fall_back(req, &e);
                self.soft.try_lock(req)
            }
            other => other,
        }
    }

    async fn wait(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        if !self.is_soft(&req.lock_path) {
            match self.os.wait(req, deadline, cancel).await {
                Err(e) if is_unsupported(&e) => self.fall_back(req, &e),
                other => return other,
            }
        }
        self.soft.wait(req, deadline, cancel).await
    }

    fn wait_here(&self, req: &LockRequest) -> Option<Result<Box<dyn HeldLock>, LockError>> {
        if self.is_soft(&req.lock_path) {
            return None;
        }
        match self.os.wait_here(req) {
            Some(Err(e)) if is_unsupported(&e) => {
                self.fall_back(req, &e);
                None
            }
            other => other,
        }
    }

    async fn holder(&self, lock_path: &Path, since: Instant) -> Option<Holder> {
        if self.is_soft(lock_path) {
            self.soft.holder(lock_path, since).await
        } else {
            self.os.holder(lock_path, since).await
        }
    }

    fn prefetch_holders(&self) {
        self.os.prefetch_holders();
    }

    fn releases_by_removal(&self, req: &LockRequest) -> bool {
        self.is_soft(&req.lock_path)
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::Auto {
            os: self.os.metrics().os().copied().unwrap_or_default(),
            soft: soft::metrics::snapshot(),
        }
    }
}
