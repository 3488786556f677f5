//! [`LockGuard`]: proof that a lock is held; releasing it is dropping it.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use super::metrics::Recorder;
use super::order;
use super::owner::Owner;
use super::shared::SharedHeld;
use super::table::EntryRef;
use crate::backend::{HeldLock, LostSignal};
use crate::category::Category;
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::mode::LockMode;

/// A held lock. Dropping it releases the lock; so does [`LockGuard::release`],
/// which also reports errors.
///
/// Dropping never blocks beyond a few calls on the lock file's descriptor
/// (an unlock and, after a holding that was not brief, a one-byte read; or
/// a close): when the lock file is to be removed on release (the default
/// for artifacts), the removal is handed to tokio's blocking pool and the
/// lock is released right after it.
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
    /// Taken through a handle that checks the lock order: the holding then
    /// counts against later acquisitions of its owner (see
    /// [`super::order::later_held`]).
    pub order_checked: bool,
    pub budget: Option<Duration>,
    pub recorder: Arc<Recorder>,
    /// The fencing token, once issued.
    pub token: OnceLock<FencingToken>,
    /// How the backend tells the lock's loss, for a lock that can be lost.
    pub lost: Option<LostSignal>,
}

impl LockGuard {
    pub(crate) fn new(mut parts: GuardParts) -> Self {
        parts.lost = match &parts.hold {
            Hold::Exclusive { os, .. } => os.lost().cloned(),
            Hold::Shared { os, .. } => os.lost(),
        };
        order::record(
            parts.owner,
            parts.category,
            &parts.lock_path,
            parts.order_checked,
        );
        LockGuard { inner: Some(parts) }
    }

    fn parts(&self) -> &GuardParts {
        // `inner` is None only inside `release` and `drop`, which consume.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("guard used after release"))
    }

    /// The category of the lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Telemetry, dir.path().join("t.jsonl")).await?;
    /// assert_eq!(g.category(), Category::Telemetry);
    /// # Ok(()) }
    /// ```
    pub fn category(&self) -> Category {
        self.parts().category
    }

    /// Shared or exclusive.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::{Category, LockMode};
    /// let g = locks.lock_shared(Category::Sqlite, dir.path().join("db")).await?;
    /// assert_eq!(g.mode(), LockMode::Shared);
    /// # Ok(()) }
    /// ```
    pub fn mode(&self) -> LockMode {
        match self.parts().hold {
            Hold::Exclusive { .. } => LockMode::Exclusive,
            Hold::Shared { .. } => LockMode::Shared,
        }
    }

    /// The lock file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?;
    /// assert!(g.lock_path().file_name().unwrap().to_str().unwrap().starts_with("manifest."));
    /// # Ok(()) }
    /// ```
    pub fn lock_path(&self) -> &Path {
        &self.parts().lock_path
    }

    /// The file the lock guards, absolute and normalised.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Manifest, dir.path().join("./m.jsonl")).await?;
    /// assert_eq!(g.target(), dir.path().canonicalize().unwrap().join("m.jsonl"));
    /// # Ok(()) }
    /// ```
    pub fn target(&self) -> &Path {
        &self.parts().target
    }

    /// How long the acquisition waited before the lock was granted: zero
    /// for a lock taken on the first poll of its future (free at once).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?;
    /// assert!(g.waited().is_zero(), "free at once: no wait");
    /// # Ok(()) }
    /// ```
    pub fn waited(&self) -> Duration {
        self.parts().waited
    }

    /// How long the lock has been held so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?;
    /// tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    /// assert!(g.held_for() >= std::time::Duration::from_millis(2));
    /// # Ok(()) }
    /// ```
    pub fn held_for(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |parts| parts.acquired.elapsed())
    }

    /// The fencing token of this holding: strictly greater than every token
    /// issued for this lock before it, across holders, processes and
    /// restarts (ARCHITECTURE.md, "Fencing tokens", says exactly how far for
    /// each backend). Give it with every write to a store that can keep the
    /// largest token seen and refuse smaller ones: a holder that lost its
    /// lock while stalled then cannot overwrite its successor's work.
    ///
    /// Issued on the first call and the same after. A shared guard gets the
    /// token of the last exclusive holder (shared holders issue none). For
    /// an OS lock the first call reads and rewrites one line of the lock
    /// file on this thread, a few microseconds on a local disk; on a network
    /// mount call it where blocking is allowed. A soft lock's token was
    /// issued with the lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use async_filelock::{Category, Locks};
    /// let dir = tempfile::tempdir().unwrap();
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let target = dir.path().join("state.db");
    /// let first = locks.lock(Category::Sqlite, &target).await?;
    /// let t1 = first.token()?;
    /// assert_eq!(first.token()?, t1, "one token per holding");
    /// first.release().await?;
    /// let second = locks.lock(Category::Sqlite, &target).await?;
    /// assert!(second.token()? > t1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] if the lock was lost before a token was issued.
    /// Storing the token is best effort and never an error: a token whose
    /// store failed is still larger than every earlier one, by the clock.
    pub fn token(&self) -> Result<FencingToken, LockError> {
        let parts = self.parts();
        if let Some(token) = parts.token.get() {
            return Ok(*token);
        }
        if self.is_lost() {
            return Err(parts.lost_error());
        }
        let token = match &parts.hold {
            Hold::Exclusive { os, .. } => os.token(),
            Hold::Shared { os, .. } => os.token(),
        }
        .map_err(|e| parts.named(e))?;
        Ok(*parts.token.get_or_init(|| token))
    }

    /// Whether the lock was lost while held: a soft lock whose lease ran
    /// out before it was renewed (the process was stopped, say) or whose
    /// file another process took after judging it stale. An OS lock is
    /// never lost while its guard lives. Writers check this before they
    /// commit and refuse with [`LockError::Lost`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let guard = async_filelock::artifact_lock(dir.path().join("a.bin")).await?;
    /// assert!(!guard.is_lost());
    /// # Ok(()) }
    /// ```
    pub fn is_lost(&self) -> bool {
        self.inner
            .as_ref()
            .and_then(|p| p.lost.as_ref())
            .is_some_and(LostSignal::is_lost)
    }

    /// A future that resolves when the lock is lost (never, for a lock that
    /// cannot be: an OS lock), for `tokio::select!` against the work done
    /// under it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let guard = async_filelock::artifact_lock(dir.path().join("a.bin")).await?;
    /// tokio::select! {
    ///     () = guard.lost() => unreachable!("an OS lock is not lost while held"),
    ///     () = tokio::time::sleep(Duration::from_millis(10)) => {}
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it changes nothing.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = self.inner.as_ref().and_then(|p| p.lost.clone());
        async move {
            match signal {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        }
    }

    /// [`LockError::Lost`] for this guard if its lock was lost: what
    /// writers return instead of committing.
    pub(crate) fn check_not_lost(&self) -> Result<(), LockError> {
        if self.is_lost() {
            return Err(self.parts().lost_error());
        }
        Ok(())
    }

    /// Releases the lock now and reports any error (for example, failing to
    /// remove the lock file). The lock is released even when this errs.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] naming the lock file if it was to be removed and
    /// could not be (the lock is released all the same);
    /// [`LockError::Lost`] if the lock was lost while held (what was
    /// committed under it before the loss stands; see
    /// [`LockGuard::is_lost`]).
    ///
    /// # Cancel safety
    ///
    /// If this future is dropped before it completes, the release still
    /// happens, on the blocking pool.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let g = locks.lock(Category::Artifact, dir.path().join("a.bin")).await?;
    /// let lock_file = g.lock_path().to_path_buf();
    /// g.release().await?;
    /// assert!(!lock_file.exists(), "artifact lock files are removed on release");
    /// # Ok(()) }
    /// ```
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
            inner.release_or_warn(false);
        }
    }
}

impl GuardParts {
    /// [`LockError::Lost`] naming this lock.
    fn lost_error(&self) -> LockError {
        LockError::Lost {
            category: self.category,
            target: self.target.to_path_buf(),
            lock_path: self.lock_path.to_path_buf(),
            why: self
                .lost
                .as_ref()
                .and_then(LostSignal::why)
                .unwrap_or_else(|| "it was released".into()),
        }
    }

    /// A backend's error, with this lock's category and target where the
    /// backend could not know them.
    fn named(&self, e: LockError) -> LockError {
        match e {
            LockError::Lost { why, .. } => LockError::Lost {
                category: self.category,
                target: self.target.to_path_buf(),
                lock_path: self.lock_path.to_path_buf(),
                why,
            },
            other => other,
        }
    }

    /// The holder has let go, even if the release itself finishes later on
    /// the blocking pool: it may ask for the lock again at once and queue
    /// behind that release, which is no deadlock.
    fn disown(&self) {
        drop(Disowning::of(self.owner, self.category, &self.lock_path));
    }

    /// [`Self::release`] (of parts not yet disowned if `disown`) for a
    /// release nobody waits on: an error is logged.
    fn release_or_warn(self, disown: bool) {
        // The error was logged where the lock path is at hand.
        let _ = self.release_then(disown, true);
    }

    /// Lets go of everything; blocks only if the lock file is to be removed.
    fn release(self) -> Result<(), LockError> {
        self.release_then(false, false)
    }

    /// [`Self::release`], and for parts not yet disowned (`disown`): the OS
    /// lock goes first, then the owner's records, then this process's queue
    /// (so that no other task of it can ask the backend while the records
    /// still name this owner). Other processes wait on the OS lock alone,
    /// which is so held no longer than the caller held the guard. An error
    /// is also logged if `warn` (nobody waits on this release).
    fn release_then(self, disown: bool, warn: bool) -> Result<(), LockError> {
        let lost = self.lost.clone();
        let lost_error = |why: String| LockError::Lost {
            category: self.category,
            target: self.target.to_path_buf(),
            lock_path: self.lock_path.to_path_buf(),
            why,
        };
        // Held until the release began: the release's own work (a removal,
        // a soft lock's door) is not the holder's.
        let ended = Instant::now();
        let held = ended.saturating_duration_since(self.acquired);
        // For this process's next wait on it (see `acquire::JUST_RELEASED`);
        // a shared holder's release may leave the OS lock to its siblings.
        if let Hold::Exclusive { .. } = self.hold {
            self.entry.note_release(ended, held);
        }
        // Cleared right after the OS lock is let go, or while unwinding if
        // letting go panics: records of a holding that ended never stay.
        let disowning = disown.then(|| Disowning::of(self.owner, self.category, &self.lock_path));
        // This process's queue is let go last.
        let (result, queue) = match self.hold {
            Hold::Exclusive { os, queue } => (
                os.release(self.remove_on_release, Some(held)),
                (Some(queue), None),
            ),
            Hold::Shared { os, queue } => {
                drop(os);
                (Ok(()), (None, Some(queue)))
            }
        };
        drop(disowning);
        drop(queue);
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
        // Read after the backend let go: the release itself may find the
        // lock taken (a soft lock's file replaced).
        let why = lost
            .as_ref()
            .filter(|l| l.is_lost())
            .and_then(LostSignal::why);
        let result = match (result, why) {
            (Err(LockError::Lost { why, .. }), _) => Err(lost_error(why)),
            (Err(e), _) => Err(e),
            (Ok(()), Some(why)) => Err(lost_error(why)),
            (Ok(()), None) => Ok(()),
        };
        drop(self.entry);
        self.recorder.released(self.category, held, over);
        tracing::debug!(
            category = self.category.name(),
            lock_path = %self.lock_path.display(),
            hold_ms = held.as_secs_f64() * 1e3,
            "released"
        );
        if warn && let Err(e) = &result {
            tracing::warn!(lock_path = %self.lock_path.display(), error = %e, "releasing lock");
        }
        result
    }
}

/// Clears a holding's record (who holds it, for the same-task check and
/// the lock order) when dropped (see [`GuardParts::disown`]).
struct Disowning<'a> {
    owner: Owner,
    category: Category,
    lock_path: &'a Path,
}

impl<'a> Disowning<'a> {
    fn of(owner: Owner, category: Category, lock_path: &'a Path) -> Self {
        Disowning {
            owner,
            category,
            lock_path,
        }
    }
}

impl Drop for Disowning<'_> {
    fn drop(&mut self) {
        order::forget(self.owner, self.category, self.lock_path);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.remove_on_release
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // Let go now (see `disown`); the removal follows on the pool.
            inner.disown();
            handle.spawn_blocking(move || inner.release_or_warn(false));
            return;
        }
        inner.release_or_warn(true);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::table;

    /// A backend whose release panics.
    #[derive(Debug)]
    struct PanicsOnRelease;

    impl HeldLock for PanicsOnRelease {
        fn release(
            self: Box<Self>,
            _remove_file: bool,
            _held_for: Option<Duration>,
        ) -> Result<(), LockError> {
            panic!("the backend's release panicked");
        }

        fn token(&self) -> Result<FencingToken, LockError> {
            unreachable!("not asked in this test")
        }
    }

    /// A guard dropped whose backend release panics leaves no record of the
    /// holding behind: not as the entry's owner (a same-task warning or
    /// refusal forever after) nor in the lock order (false violations).
    /// Found in review when the records came to be cleared after the OS
    /// release.
    #[test]
    fn a_release_that_panics_leaves_no_owner_records() {
        let lock_path: Arc<Path> =
            Path::new(&format!("/run/guard-test-{}/s.lock", std::process::id())).into();
        let entry = table::enter(&lock_path);
        let queue = Arc::clone(&entry.queue)
            .try_write_owned()
            .expect("a fresh entry's queue is free");
        let probe = table::enter(&lock_path);
        let owner = Owner::current();
        let guard = LockGuard::new(GuardParts {
            hold: Hold::Exclusive {
                os: Box::new(PanicsOnRelease),
                queue,
            },
            entry,
            owner,
            category: Category::Summary,
            target: Path::new("/run/guard-test/s.json").into(),
            lock_path: Arc::clone(&lock_path),
            waited: Duration::ZERO,
            acquired: Instant::now(),
            remove_on_release: false,
            order_checked: true,
            budget: None,
            recorder: Arc::new(Recorder::new()),
            token: OnceLock::new(),
            lost: None,
        });
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(guard)));
        assert!(dropped.is_err(), "the release panicked");
        assert!(!probe.is_held_by(owner), "owner record left behind");
        let later = order::later_held(owner, Category::Artifact, Path::new("/run/a.lock"));
        assert!(later.is_none(), "lock-order record left behind: {later:?}");
    }
}
