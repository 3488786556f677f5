//! [`Acquire`]: one configured acquisition, a future of a [`LockGuard`].

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::acquire::{Ask, Engine, NoCallOff};
use super::guard::LockGuard;
use crate::category::Category;
use crate::error::LockError;
use crate::mode::LockMode;

/// The started acquisition inside an [`Acquire`].
type Running = Pin<Box<dyn Future<Output = Result<LockGuard, LockError>> + Send>>;

/// Targets this long or shorter (in bytes) are kept inside the [`Acquire`]
/// itself: an acquisition taken at once then allocates nothing for its
/// target, a visible share of an uncontended one. Most paths are shorter.
/// (128: one of the sizes `smallvec` takes without its const-generics
/// feature.)
const INLINE_TARGET: usize = 128;

/// The target as the caller spelled it, its bytes inline up to
/// [`INLINE_TARGET`].
struct Target(smallvec::SmallVec<[u8; INLINE_TARGET]>);

impl Target {
    fn new(path: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        Target(smallvec::SmallVec::from_slice(path.as_os_str().as_bytes()))
    }

    fn as_path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    /// The target shared, for an acquisition that outlives its first poll.
    fn shared(&self) -> Arc<Path> {
        Arc::from(self.as_path())
    }
}

/// One configured acquisition, from [`crate::Locks::acquire`], [`crate::Locks::lock`] or
/// [`crate::Locks::lock_shared`]: a future of a [`LockGuard`]. Configure it, then
/// await it (or hand it to `select!`, `timeout`, `block_on`).
///
/// # Cancel safety
///
/// Cancel safe: see [`crate::Locks::lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{Category, Locks};
/// use std::time::Duration;
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let target = dir.path().join("state.db");
/// let reader = locks.acquire(Category::Sqlite, &target).shared().await?;
/// let second = tokio::spawn({
///     let (locks, target) = (locks.clone(), target.clone());
///     async move { locks.acquire(Category::Sqlite, &target).shared().await }
/// })
/// .await
/// .unwrap()?;
/// let writer = tokio::spawn({
///     let (locks, target) = (locks.clone(), target.clone());
///     async move { locks.acquire(Category::Sqlite, &target).timeout(Duration::from_millis(50)).await }
/// });
/// let err = writer.await.unwrap().unwrap_err();
/// assert!(err.is_timeout());
/// # drop((reader, second));
/// # Ok(()) }
/// ```
#[must_use = "an acquisition does nothing until awaited"]
pub struct Acquire {
    engine: Arc<Engine>,
    category: Category,
    target: Target,
    mode: LockMode,
    timeout: Option<Duration>,
    stage: Stage,
}

/// Where an [`Acquire`] is.
enum Stage {
    /// Not polled yet.
    New,
    /// The lock was not free at once: the async acquisition.
    Running(Running),
    /// Ended on its first poll (the lock was free at once, or an error).
    Ended,
}

impl std::fmt::Debug for Acquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("category", &self.category)
            .field("target", &self.target.as_path())
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("started", &!matches!(self.stage, Stage::New))
            .finish()
    }
}

impl Acquire {
    pub(crate) fn new(
        engine: Arc<Engine>,
        category: Category,
        target: &Path,
        timeout: Option<Duration>,
    ) -> Self {
        Acquire {
            engine,
            category,
            target: Target::new(target),
            mode: LockMode::Exclusive,
            timeout,
            stage: Stage::New,
        }
    }

    /// Waits at most `limit` (zero: one attempt, then [`LockError::Timeout`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// use std::time::Duration;
    /// let db = dir.path().join("state.db");
    /// let _held = locks.lock(Category::Sqlite, &db).await?;
    /// let other = tokio::spawn(locks.acquire(Category::Sqlite, &db).timeout(Duration::from_millis(20)));
    /// assert!(other.await.unwrap().unwrap_err().is_timeout());
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Waits as long as it takes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let guard = locks.acquire(Category::Artifact, dir.path().join("big.bin")).wait_forever().await?;
    /// # Ok(()) }
    /// ```
    pub fn wait_forever(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Asks for a shared lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let db = dir.path().join("state.db");
    /// let a = locks.acquire(Category::Sqlite, &db).shared().await?;
    /// let b = locks.acquire(Category::Sqlite, &db).shared().await?; // readers together
    /// assert!(a.mode().is_shared() && b.mode().is_shared());
    /// # Ok(()) }
    /// ```
    pub fn shared(mut self) -> Self {
        self.mode = LockMode::Shared;
        self
    }

    /// Asks for an exclusive lock (the default).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::{Category, LockMode};
    /// let g = locks.acquire(Category::Sqlite, dir.path().join("state.db")).shared().exclusive().await?;
    /// assert_eq!(g.mode(), LockMode::Exclusive);
    /// # Ok(()) }
    /// ```
    pub fn exclusive(mut self) -> Self {
        self.mode = LockMode::Exclusive;
        self
    }

    /// One attempt that never waits for a holder; `Ok(None)` when the lock
    /// is busy.
    ///
    /// # Errors
    ///
    /// As [`crate::Locks::try_lock`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it completes without waiting for a holder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let db = dir.path().join("state.db");
    /// let first = locks.acquire(Category::Sqlite, &db).try_now().await?;
    /// assert!(first.is_some());
    /// assert!(locks.acquire(Category::Sqlite, &db).try_now().await?.is_none(), "busy: no wait");
    /// # Ok(()) }
    /// ```
    pub async fn try_now(self) -> Result<Option<LockGuard>, LockError> {
        let ask = Ask {
            category: self.category,
            target: self.target.as_path(),
            mode: self.mode,
            owner: None,
        };
        self.engine.try_acquire(ask).await
    }
}

impl Future for Acquire {
    type Output = Result<LockGuard, LockError>;

    /// The first poll starts the acquisition; configuration methods consume
    /// the `Acquire`, so they cannot run after it.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Stage::New = this.stage {
            // Free at once: no boxed future, no async state.
            let started = Instant::now();
            let ask = Ask {
                category: this.category,
                target: this.target.as_path(),
                mode: this.mode,
                owner: None,
            };
            match this.engine.acquire_at_once(ask, started, this.timeout) {
                Ok(None) => this.stage = Stage::Running(this.start(started)),
                Ok(Some(guard)) => {
                    this.stage = Stage::Ended;
                    return Poll::Ready(Ok(guard));
                }
                Err(e) => {
                    this.stage = Stage::Ended;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut this.stage {
            Stage::Running(running) => running.as_mut().poll(cx),
            // Polled again after it ended on its first poll: never a second
            // lock; a misuse, told as an `async fn` tells it.
            Stage::New | Stage::Ended => panic!("`Acquire` polled after it completed"),
        }
    }
}

impl Acquire {
    /// The acquisition as a future, for when the lock was not free at once.
    fn start(&self, started: Instant) -> Running {
        {
            let (engine, category, target, mode, timeout) = (
                Arc::clone(&self.engine),
                self.category,
                // Shared, not copied: a waiter carries one copy of its path.
                self.target.shared(),
                self.mode,
                self.timeout,
            );
            Box::pin(async move {
                // No named locals: each would be kept across the await.
                match engine
                    .acquire(
                        Ask {
                            category,
                            target: &target,
                            mode,
                            owner: None,
                        },
                        started,
                        timeout,
                        NoCallOff,
                    )
                    .await?
                {
                    Ok(guard) => Ok(guard),
                    Err(never) => match never {},
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short target is kept inline and a long one shared, and both read
    /// back exactly as spelled, non-UTF-8 bytes and all.
    #[test]
    fn a_target_reads_back_as_spelled_inline_or_shared() {
        use std::os::unix::ffi::OsStrExt;
        let short = Path::new(std::ffi::OsStr::from_bytes(b"/data/\xffpaper.pdf"));
        let at_bound = format!("/{}", "a".repeat(INLINE_TARGET - 1));
        let long = format!("/{}", "b".repeat(INLINE_TARGET));
        for (path, inline) in [
            (short, true),
            (Path::new(&at_bound), true),
            (Path::new(&long), false),
        ] {
            let target = Target::new(path);
            assert_eq!(!target.0.spilled(), inline, "{path:?}");
            assert_eq!(target.as_path(), path);
            assert_eq!(&*target.shared(), path);
        }
    }

    /// Through the public API: a target too long to keep inline is taken
    /// at once and by waiting like any other.
    #[tokio::test]
    async fn a_long_target_is_taken_at_once_and_by_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = crate::Locks::builder()
            .lock_dir(dir.path().join("locks"))
            .build()
            .expect("locks");
        let target = dir
            .path()
            .join(format!("{}.json", "t".repeat(INLINE_TARGET)));
        let first = locks
            .lock(Category::Summary, &target)
            .await
            .expect("at once");
        let second = tokio::spawn(locks.lock(Category::Summary, &target));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "it waits for the first");
        drop(first);
        let second = second.await.expect("join").expect("by waiting");
        assert_eq!(
            second.target(),
            dir.path()
                .canonicalize()
                .expect("dir")
                .join(target.file_name().expect("name"))
        );
    }
}
