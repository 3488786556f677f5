//! [`AutoBackend`]: the OS backend, falling back to soft locks in a lock
//! dir whose filesystem refuses `flock` (`ENOLCK`, `EOPNOTSUPP`, `ENOSYS`),
//! saying so once per lock dir in a warning.
//!
//! The choice is made per lock dir, once per process, before its first
//! lock: a `flock` on a probe file in the lock dir ([`PROBE`]) says whether
//! the filesystem does `flock`. So no OS lock file is made (and left empty)
//! where soft locks will be used, and processes agree by the filesystem
//! they meet. A lock that still meets a refusal later (a transient
//! `ENOLCK` where the probe passed) falls back for that one attempt only;
//! soft and OS holders of one lock file exclude each other anyway (a soft
//! lock file carries a `flock` where it works, and a soft waiter never
//! takes a file someone holds with `flock`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use rustix::fs::{Mode, OFlags};

use super::os::OsBackend;
use super::os::flock::try_flock;
use super::soft::{self, SoftBackend};
use super::{Backend, BackendMetrics, HeldLock, LockRequest};
use crate::error::{Holder, LockError};
use crate::mode::LockMode;

/// The name of the probe file in a lock dir.
pub(crate) const PROBE: &str = ".flock-probe";

/// The OS backend with a fallback to soft locks.
#[derive(Debug, Default)]
pub(crate) struct AutoBackend {
    os: OsBackend,
    soft: SoftBackend,
    /// Lock dirs probed, and whether soft locks are used there.
    probed: Mutex<FxHashMap<PathBuf, bool>>,
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
            probed: Mutex::default(),
        }
    }

    /// Whether `lock_path`'s lock dir uses soft locks, as far as probed.
    fn is_soft(&self, lock_path: &Path) -> bool {
        let Some(dir) = lock_path.parent() else {
            return false;
        };
        self.probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
            .copied()
            .unwrap_or(false)
    }

    /// Whether `req`'s lock dir uses soft locks: probed the first time (a
    /// `flock` on [`PROBE`] there), and warned about once if so.
    fn soft_here(&self, req: &LockRequest) -> Result<bool, LockError> {
        let Some(dir) = req.lock_path.parent() else {
            return Ok(false);
        };
        if let Some(soft) = self
            .probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
        {
            return Ok(*soft);
        }
        let dir_fd = crate::backend::dirs::lock_dir(dir, req)?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let refused = match rustix::fs::openat(
            dir_fd.fd(),
            PROBE,
            flags,
            Mode::from_raw_mode(req.file_mode),
        ) {
            Ok(fd) => {
                let probe = std::fs::File::from(fd);
                // Shared with a group: usable by its other members too.
                if req.shared_group.is_some() {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = probe.set_permissions(std::fs::Permissions::from_mode(req.file_mode));
                }
                match try_flock(&probe, LockMode::Exclusive) {
                    Err(fs4::TryLockError::Error(e)) => {
                        Some(LockError::io("probe flock in", dir, e))
                    }
                    _ => None,
                }
            }
            // Not even a probe file: let the OS backend say what is wrong.
            Err(_) => None,
        };
        let soft = refused.as_ref().is_some_and(is_unsupported);
        self.probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), soft);
        if let (true, Some(e)) = (soft, refused) {
            soft::metrics::fell_back();
            tracing::warn!(
                lock_dir = %dir.display(),
                error = %e,
                "this filesystem refuses flock: using soft locks (lock files with an owner record and a lease) in this lock dir"
            );
        }
        Ok(soft)
    }

    /// A refusal met after the probe passed (a transient `ENOLCK`): this
    /// attempt falls back, and says so.
    fn fall_back_once(&self, req: &LockRequest, e: &LockError) {
        tracing::warn!(
            lock_path = %req.lock_path.display(),
            error = %e,
            "flock refused where it worked before: taking a soft lock this time"
        );
    }
}

#[async_trait]
impl Backend for AutoBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        if self.soft_here(req)? {
            return self.soft.try_lock(req);
        }
        match self.os.try_lock(req) {
            Err(e) if is_unsupported(&e) => {
                self.fall_back_once(req, &e);
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
        if !self.soft_here(req)? {
            match self.os.wait(req, deadline, cancel).await {
                Err(e) if is_unsupported(&e) => self.fall_back_once(req, &e),
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
                self.fall_back_once(req, &e);
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

    fn names_holders_off_runtime(&self) -> bool {
        // Per lock dir; the OS backend's lookup is not, so neither is this.
        false
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
