//! [`TempLocks`]: a [`Locks`] whose lock files go in a fresh temporary
//! directory, removed when the test is done.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::LockError;
use crate::lock::{Locks, LocksBuilder};

/// A [`Locks`] with its lock dir in a fresh temporary directory, and that
/// directory for the test's own files. Dereferences to the [`Locks`]; the
/// directory and everything in it is removed when this is dropped, so keep
/// it alive as long as the test uses the handle.
///
/// [`TempLocks::new`] reads the environment first (then sets the lock dir),
/// so `ASYNC_FILELOCK_BACKEND=soft cargo test` runs a suite on soft locks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::Category;
/// use async_filelock::test_util::TempLocks;
/// let locks = TempLocks::new()?;
/// let manifest = locks.path("manifest.jsonl");
/// let guard = locks.lock(Category::Manifest, &manifest).await?;
/// assert!(guard.lock_path().starts_with(locks.lock_dir()));
/// assert!(locks.try_lock(Category::Manifest, &manifest).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TempLocks {
    locks: Locks,
    dir: TempDir,
}

impl TempLocks {
    /// A handle configured by the environment (as [`Locks::from_env`]),
    /// with its lock dir `locks/` in a new temporary directory.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for an invalid environment; [`LockError::Io`]
    /// if the temporary directory cannot be made.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let locks = async_filelock::test_util::TempLocks::new()?;
    /// assert!(locks.lock_dir().starts_with(locks.dir()));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn new() -> Result<TempLocks, LockError> {
        TempLocks::with_builder(Locks::builder().env()?)
    }

    /// A handle with `builder`'s settings and its lock dir `locks/` in a new
    /// temporary directory (whatever lock dir the builder had).
    ///
    /// ```
    /// use async_filelock::test_util::TempLocks;
    /// use async_filelock::{BackendChoice, Category, Locks};
    /// use std::time::Duration;
    /// let builder = Locks::builder()
    ///     .backend(BackendChoice::Soft)
    ///     .timeout(Category::Sqlite, Duration::from_millis(200));
    /// let locks = TempLocks::with_builder(builder)?;
    /// assert_eq!(locks.backend(), BackendChoice::Soft);
    /// assert_eq!(locks.timeout(Category::Sqlite), Some(Duration::from_millis(200)));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TempLocks::new`], and as [`LocksBuilder::build`].
    pub fn with_builder(builder: LocksBuilder) -> Result<TempLocks, LockError> {
        let dir = tempfile::Builder::new()
            .prefix("async-filelock-test-")
            .tempdir()
            .map_err(|e| {
                LockError::io("create a temporary directory in", std::env::temp_dir(), e)
            })?;
        let locks = builder.lock_dir(dir.path().join("locks")).build()?;
        Ok(TempLocks { locks, dir })
    }

    /// The handle (also reached through `Deref`), to clone into tasks and
    /// pass to writers' `.locks(..)`.
    ///
    /// ```
    /// let locks = async_filelock::test_util::TempLocks::new()?;
    /// let handle: async_filelock::Locks = locks.locks().clone();
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    /// The temporary directory: put the test's targets here.
    ///
    /// ```
    /// let locks = async_filelock::test_util::TempLocks::new()?;
    /// assert!(locks.dir().is_dir());
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the temporary directory.
    ///
    /// ```
    /// let locks = async_filelock::test_util::TempLocks::new()?;
    /// assert_eq!(locks.path("a.bin"), locks.dir().join("a.bin"));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lock dir: `locks/` in the temporary directory (made on first
    /// use).
    ///
    /// ```
    /// let locks = async_filelock::test_util::TempLocks::new()?;
    /// assert_eq!(locks.lock_dir(), locks.dir().join("locks"));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn lock_dir(&self) -> PathBuf {
        self.dir.path().join("locks")
    }
}

impl std::ops::Deref for TempLocks {
    type Target = Locks;

    fn deref(&self) -> &Locks {
        &self.locks
    }
}

impl AsRef<Locks> for TempLocks {
    fn as_ref(&self) -> &Locks {
        &self.locks
    }
}
