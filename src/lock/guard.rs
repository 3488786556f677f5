//! [`LockGuard`]: proof that a lock is held; releasing it is dropping it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use super::metrics::Recorder;
use super::order;
use super::owner::Owner;
use super::shared::SharedHeld;
use super::table::EntryRef;
use crate::backend::HeldLock;
use crate::category::Category;
use crate::error::LockError;
use crate::mode::LockMode;

/// A held lock. Dropping it releases the lock; so does [`LockGuard::release`],
/// which also reports errors.
///
/// Dropping never blocks beyond closing a descriptor: when the lock file is to
/// be removed on release (the default for artifacts), the removal is handed to
/// tokio's blocking pool and the lock is released right after it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{Category, LockMode, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let guard = locks.lock(Category::Manifest, dir.path().join("manifest.jsonl")).await?;
/// assert_eq!(guard.category(), Category::Manifest);
/// assert_eq!(guard.mode(), LockMode::Exclusive);
/// assert!(guard.lock_path().starts_with(dir.path().join("locks")));
/// assert!(guard.target().ends_with("manifest.jsonl"));
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "if unused the lock is released at once"]
pub struct LockGuard {
    inner: Option<GuardParts>,
}

/// What the guard holds, in the order it must be let go: the OS lock first,
/// then this process's queue, so the next local waiter finds the OS lock free.
pub(crate) enum Hold {
    Exclusive {
        os: Box<dyn HeldLock>,
        queue: OwnedRwLockWriteGuard<()>,
    },
    Shared {
        os: Arc<SharedHeld>,
        queue: OwnedRwLockReadGuard<()>,
    },
}

/// Everything a guard knows about its lock.
pub(crate) struct GuardParts {
    pub hold: Hold,
    pub entry: EntryRef,
    pub owner: Owner,
    pub category: Category,
    pub target: Arc<Path>,
    pub lock_path: Arc<Path>,
    pub waited: Duration,
    /// When the lock was granted (the end of `waited`).
    pub acquired: Instant,
    pub remove_on_release: bool,
    /// Whether this lock is in the per-owner held set of [`super::order`].
    pub track_order: bool,
    pub budget: Option<Duration>,
    pub recorder: Arc<Recorder>,
}

impl LockGuard {
    pub(crate) fn new(parts: GuardParts) -> Self {
        parts.entry.add_owner(parts.owner);
        if parts.track_order {
            order::record(parts.owner, parts.category, &parts.lock_path);
        }
        LockGuard { inner: Some(parts) }
    }

    fn parts(&self) -> &GuardParts {
        // `inner` is None only inside `release` and `drop`, which consume.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("guard used after release"))
    }

    /// The category of the lock.
    pub fn category(&self) -> Category {
        self.parts().category
    }

    /// Shared or exclusive.
    pub fn mode(&self) -> LockMode {
        match self.parts().hold {
            Hold::Exclusive { .. } => LockMode::Exclusive,
            Hold::Shared { .. } => LockMode::Shared,
        }
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.parts().lock_path
    }

    /// The file the lock guards, absolute and normalised.
    pub fn target(&self) -> &Path {
        &self.parts().target
    }

    /// How long the acquisition waited before the lock was granted.
    pub fn waited(&self) -> Duration {
        self.parts().waited
    }

    /// How long the lock has been held so far.
    pub fn held_for(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |parts| parts.acquired.elapsed())
    }

    /// Releases the lock now and reports any error (for example, failing to
    /// remove the lock file). The lock is released even when this errs.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] naming the lock file if it was to be removed and
    /// could not be (the lock is released all the same).
    ///
    /// # Cancel safety
    ///
    /// If this future is dropped before it completes, the release still
    /// happens, on the blocking pool.
    pub async fn release(mut self) -> Result<(), LockError> {
        let Some(inner) = self.take_disowned() else {
            return Ok(());
        };
        if !inner.remove_on_release {
            return inner.release();
        }
        let lock_path = Arc::clone(&inner.lock_path);
        crate::blocking::run("release lock", &lock_path, move || inner.release()).await
    }

    /// The parts, taken out (the guard is empty after) and no longer
    /// counted as held by their owner. `None` if taken before.
    fn take_disowned(&mut self) -> Option<GuardParts> {
        let inner = self.inner.take()?;
        inner.disown();
        Some(inner)
    }

    /// Releases the lock on this thread, which must be one that may block
    /// (the blocking pool). For work already there: dropping the guard
    /// would hand a lock-file removal to yet another blocking thread, after
    /// the work returned, and could only log its error.
    pub(crate) fn release_blocking(mut self) -> Result<(), LockError> {
        self.take_disowned().map_or(Ok(()), GuardParts::release)
    }

    /// [`Self::release_blocking`] after work whose outcome stands whatever
    /// the release says (what it wrote is committed): an error is logged, as
    /// on drop, not returned to a caller who might redo the work.
    pub(crate) fn release_blocking_or_warn(mut self) {
        if let Some(inner) = self.take_disowned() {
            inner.release_or_warn();
        }
    }
}

impl GuardParts {
    /// The holder has let go, even if the release itself finishes later on
    /// the blocking pool: it may ask for the lock again at once and queue
    /// behind that release, which is no deadlock.
    fn disown(&self) {
        self.entry.remove_owner(self.owner);
        if self.track_order {
            order::forget(self.owner, self.category, &self.lock_path);
        }
    }

    /// [`Self::release`] for a release nobody waits on: an error is logged.
    fn release_or_warn(self) {
        let lock_path = Arc::clone(&self.lock_path);
        if let Err(e) = self.release() {
            tracing::warn!(lock_path = %lock_path.display(), error = %e, "releasing lock");
        }
    }

    /// Lets go of everything; blocks only if the lock file is to be removed.
    fn release(self) -> Result<(), LockError> {
        let held = self.acquired.elapsed();
        let over = self.budget.is_some_and(|b| held > b);
        if over {
            tracing::warn!(
                category = self.category.name(),
                lock_path = %self.lock_path.display(),
                hold_ms = held.as_millis() as u64,
                budget_ms = self.budget.map_or(0, |b| b.as_millis() as u64),
                "lock held longer than its budget"
            );
        }
        let result = match self.hold {
            Hold::Exclusive { os, queue } => {
                let r = os.release(self.remove_on_release);
                drop(queue);
                r
            }
            Hold::Shared { os, queue } => {
                drop(os);
                drop(queue);
                Ok(())
            }
        };
        drop(self.entry);
        self.recorder.released(self.category, held, over);
        tracing::debug!(
            category = self.category.name(),
            lock_path = %self.lock_path.display(),
            hold_ms = held.as_secs_f64() * 1e3,
            "released"
        );
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(inner) = self.take_disowned() else {
            return;
        };
        if inner.remove_on_release
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn_blocking(move || inner.release_or_warn());
            return;
        }
        inner.release_or_warn();
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => f
                .debug_struct("LockGuard")
                .field("category", &inner.category)
                .field("mode", &self.mode())
                .field("target", &inner.target)
                .field("lock_path", &inner.lock_path)
                .field("waited", &inner.waited)
                .field("held_for", &inner.acquired.elapsed())
                .finish(),
            None => f.write_str("LockGuard(released)"),
        }
    }
}
