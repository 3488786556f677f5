//! [`Locks`]: the handle that holds a policy (lock dir, timeouts, modes,
//! hold budgets), a backend and metrics, and hands out guards; and
//! [`LocksBuilder`], which makes one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::acquire::Engine;
use super::acquisition::Acquire;
use super::env;
use super::guard::LockGuard;
use super::metrics::{Metrics, Recorder};
use super::naming;
use super::order::OrderCheck;
use super::owner::SameTask;
use super::policy::{LockDir, Policy};
use super::set::LockSet;
use crate::backend::auto::AutoBackend;
use crate::backend::os::OsBackend;
use crate::backend::soft::SoftBackend;
use crate::backend::{Backend, BackendChoice, NetworkFsPolicy, PostgresSettings};
use crate::category::Category;
use crate::error::LockError;

/// A cheap, cloneable handle to a locking policy. `Send + Sync`; clone it
/// into every task. All handles of a process share one in-process table, so
/// two handles with the same lock dir queue together.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{Category, Locks};
/// use std::time::Duration;
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder()
///     .lock_dir(dir.path().join("locks"))
///     .timeout(Category::Manifest, Duration::from_secs(2))
///     .build()?;
/// let target = dir.path().join("manifest.jsonl");
/// let guard = locks.lock(Category::Manifest, &target).await?;
/// // Another attempt does not get it while the guard lives.
/// assert!(locks.try_lock(Category::Manifest, &target).await?.is_none());
/// drop(guard);
/// assert!(locks.try_lock(Category::Manifest, &target).await?.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locks {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("policy", &self.engine.policy)
            .field("backend", &self.engine.backend)
            .finish()
    }
}

impl Locks {
    /// A builder with the defaults: lock files in `.locks`
    /// beside each target, per-category timeouts, files 0600 in a 0700 dir.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// assert_eq!(locks.timeout(Category::Sqlite), Some(std::time::Duration::from_secs(10)));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn builder() -> LocksBuilder {
        LocksBuilder {
            policy: Policy::default(),
        }
    }

    /// A handle configured by the environment: `ASYNC_FILELOCK_DIR`,
    /// `ASYNC_FILELOCK_TIMEOUT_<CATEGORY>` (seconds, or `inf` for none) and
    /// `ASYNC_FILELOCK_BACKEND` (`os`).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] naming the variable when a value is invalid.
    ///
    /// ```
    /// let locks = async_filelock::Locks::from_env()?;
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn from_env() -> Result<Locks, LockError> {
        Locks::builder().env()?.build()
    }

    /// The process-wide default handle used by the free functions
    /// ([`crate::artifact_lock`] …), built from the environment on first use.
    ///
    /// # Errors
    ///
    /// As [`Locks::from_env`]; an invalid environment is reported on every
    /// call, not cached.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let locks = async_filelock::Locks::global()?; // what artifact_lock() … use
    /// let again = async_filelock::Locks::global()?;
    /// assert_eq!(locks.backend(), again.backend());
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn global() -> Result<Locks, LockError> {
        static GLOBAL: OnceLock<Locks> = OnceLock::new();
        if let Some(locks) = GLOBAL.get() {
            return Ok(locks.clone());
        }
        let locks = Locks::from_env()?;
        Ok(GLOBAL.get_or_init(|| locks).clone())
    }

    /// What the handle decides (lock dir, modes, timeouts, backend
    /// settings), for tools that report the effective configuration
    /// (`lock-doctor policy`) or lock as it would.
    pub(crate) fn policy(&self) -> &Policy {
        &self.engine.policy
    }

    /// The engine behind the handle, for the writers' own acquisitions.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// An acquisition to configure (`.timeout(d)`, `.shared()`, …) and await.
    /// Exclusive, with the category's timeout, unless told otherwise.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use async_filelock::{Category, Locks};
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let guard = locks
    ///     .acquire(Category::Sqlite, dir.path().join("state.db"))
    ///     .shared()
    ///     .timeout(Duration::from_secs(1))
    ///     .await?;
    /// assert!(guard.mode().is_shared());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Locks::lock`], when awaited.
    ///
    /// # Cancel safety
    ///
    /// As [`Locks::lock`].
    pub fn acquire(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        Acquire::new(
            Arc::clone(&self.engine),
            category,
            target.as_ref(),
            self.engine.policy.timeout(category),
        )
    }

    /// Waits for an exclusive lock on `target`, up to the category's timeout.
    /// Returns an [`Acquire`], which is awaited directly or configured first.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the wait runs out (naming the holder: a
    /// process, or this same task); [`LockError::WouldDeadlock`] when the
    /// calling task already holds this lock and the handle was built with
    /// [`SameTask::Refuse`]; [`LockError::InvalidTarget`],
    /// [`LockError::UnsafeLockFile`], [`LockError::Io`] for bad paths.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future at any point leaves no lock held and
    /// takes the task out of the queue; a wait in `flock` it started lets go
    /// of the lock the moment it is granted (or is adopted by the next wait
    /// on the same lock), within the bound of such waits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let guard = locks.lock(Category::Manifest, dir.path().join("manifest.jsonl")).await?;
    /// // … append to the manifest …
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        self.acquire(category, target)
    }

    /// Waits for a shared lock on `target`: any number of shared holders, in
    /// this process and others, but no exclusive one. As [`Locks::lock`]
    /// otherwise.
    ///
    /// A task that already holds this lock, shared or exclusive, waits like
    /// any other (see [`SameTask`]): the queue is fair, so a writer queued
    /// between its two requests makes the second wait for the first's
    /// release.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let db = dir.path().join("state.db");
    /// let r1 = locks.lock_shared(Category::Sqlite, &db).await?;
    /// let r2 = locks.lock_shared(Category::Sqlite, &db).await?;
    /// assert!(locks.try_lock(Category::Sqlite, &db).await?.is_none(), "no writer while readers hold it");
    /// # Ok(()) }
    /// ```
    pub fn lock_shared(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        self.acquire(category, target).shared()
    }

    /// One attempt at an exclusive lock that never waits for a holder:
    /// `Ok(None)` when someone else holds it (or is ahead in this process's
    /// queue).
    ///
    /// # Errors
    ///
    /// As [`Locks::lock`] for bad paths and untrusted lock dirs;
    /// [`LockError::Timeout`] only where the lock dir or target is on a
    /// network filesystem that does not answer within the category's
    /// timeout (the attempt's file work runs off the runtime there).
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
    /// let s = dir.path().join("summary.json");
    /// let held = locks.try_lock(Category::Summary, &s).await?.expect("free");
    /// assert!(locks.try_lock(Category::Summary, &s).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(
        &self,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<Option<LockGuard>, LockError> {
        self.acquire(category, target).try_now().await
    }

    /// As [`Locks::try_lock`], for a shared lock.
    ///
    /// # Errors
    ///
    /// As [`Locks::try_lock`].
    ///
    /// # Cancel safety
    ///
    /// As [`Locks::try_lock`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let db = dir.path().join("state.db");
    /// let reader = locks.try_lock_shared(Category::Sqlite, &db).await?.expect("free");
    /// assert!(locks.try_lock_shared(Category::Sqlite, &db).await?.is_some(), "readers share");
    /// # Ok(()) }
    /// ```
    pub async fn try_lock_shared(
        &self,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<Option<LockGuard>, LockError> {
        self.acquire(category, target).shared().try_now().await
    }

    /// The lock file that guards `target` in `category`.
    ///
    /// # Errors
    ///
    /// As for locking: empty targets, directories, unresolvable parents.
    ///
    /// ```
    /// use async_filelock::{Category, Locks};
    /// let dir = tempfile::tempdir().unwrap();
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let a = locks.lock_path(Category::Artifact, dir.path().join("out/../x.pdf"))?;
    /// let b = locks.lock_path(Category::Artifact, dir.path().join("./x.pdf"))?;
    /// assert_eq!(a, b);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn lock_path(
        &self,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<PathBuf, LockError> {
        let normal = naming::normalize_target(target.as_ref(), Instant::now())?;
        Ok(self
            .engine
            .policy
            .lock_path(category, &normal)
            .to_path_buf())
    }

    /// The timeout of a category (`None`: wait forever).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder().wait_forever(Category::Artifact).build()?;
    /// assert_eq!(locks.timeout(Category::Artifact), None);
    /// assert_eq!(locks.timeout(Category::Summary), Some(std::time::Duration::from_secs(5)));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn timeout(&self, category: Category) -> Option<Duration> {
        self.engine.policy.timeout(category)
    }

    /// The backend this handle locks with.
    ///
    /// ```
    /// use async_filelock::{BackendChoice, Locks};
    /// let locks = Locks::builder().backend(BackendChoice::Auto).build()?;
    /// assert_eq!(locks.backend(), BackendChoice::Auto);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn backend(&self) -> BackendChoice {
        self.engine.policy.backend
    }

    /// The lease of this handle's soft locks (see
    /// [`LocksBuilder::soft_lease`]).
    ///
    /// ```
    /// use async_filelock::Locks;
    /// use std::time::Duration;
    /// let locks = Locks::builder().soft_lease(Duration::from_millis(1)).build()?;
    /// assert_eq!(locks.soft_lease(), Duration::from_millis(50), "raised to the shortest accepted");
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn soft_lease(&self) -> Duration {
        self.engine.policy.soft.lease
    }

    /// What this handle does with a lock dir on a network filesystem.
    ///
    /// ```
    /// use async_filelock::{Locks, NetworkFsPolicy};
    /// let locks = Locks::builder().build()?;
    /// assert_eq!(locks.network_fs(), NetworkFsPolicy::Warn);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn network_fs(&self) -> NetworkFsPolicy {
        self.engine.policy.network_fs
    }

    /// Counters and wait/hold percentiles per category for this handle, and
    /// its backend's counters.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?.release().await?;
    /// let metrics = locks.metrics();
    /// assert_eq!(metrics.category(Category::Manifest).acquisitions, 1);
    /// println!("{metrics}"); // a table, one row per category used
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.engine.recorder.snapshot(self.engine.backend.metrics())
    }

    /// Takes several locks in the order of law 7 (category, then lock path),
    /// whatever order they are given in, so two tasks asking for the same
    /// set can never deadlock. Duplicates are taken once. Each lock waits up
    /// to its category's timeout.
    ///
    /// # Errors
    ///
    /// As [`Locks::lock`]; locks already taken are released on error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases the locks taken so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use async_filelock::{Category, Locks};
    /// let dir = tempfile::tempdir().unwrap();
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let (summary, manifest) = (dir.path().join("summary.json"), dir.path().join("m.jsonl"));
    /// let set = locks
    ///     .lock_many([(Category::Summary, &summary), (Category::Manifest, &manifest)])
    ///     .await?;
    /// let order: Vec<_> = set.guards().iter().map(|g| g.category()).collect();
    /// assert_eq!(order, [Category::Manifest, Category::Summary]);
    /// set.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_many<I, P>(&self, items: I) -> Result<LockSet, LockError>
    where
        I: IntoIterator<Item = (Category, P)>,
        P: AsRef<Path>,
    {
        // Taken out of the caller's iterator before the first await, so the
        // future holds no borrow of it (and stays `Send` for any iterator).
        let asked: Vec<(Category, PathBuf)> = items
            .into_iter()
            .map(|(category, target)| (category, target.as_ref().to_path_buf()))
            .collect();
        let mut wanted = Vec::with_capacity(asked.len());
        for (category, target) in asked {
            let lock_path = self.engine.lock_path_where_safe(category, &target).await?;
            wanted.push((category, lock_path, target));
        }
        wanted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        wanted.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let mut guards = Vec::with_capacity(wanted.len());
        for (category, _, target) in wanted {
            guards.push(self.lock(category, target).await?);
        }
        Ok(LockSet::new(guards))
    }
}

/// The PostgreSQL backend for `settings`, if the crate was built with it.
#[cfg(feature = "postgres")]
fn postgres_backend(settings: &PostgresSettings) -> Result<Arc<dyn Backend>, LockError> {
    if settings.url.is_none() {
        return Err(LockError::Config {
            key: "ASYNC_FILELOCK_PG_URL".into(),
            reason: "the postgres backend needs a server: LocksBuilder::postgres(url) or ASYNC_FILELOCK_PG_URL".into(),
        });
    }
    Ok(Arc::new(crate::backend::postgres::PostgresBackend::new(
        settings,
    )?))
}

/// Without the `postgres` feature, choosing it is a configuration error.
#[cfg(not(feature = "postgres"))]
fn postgres_backend(_settings: &PostgresSettings) -> Result<Arc<dyn Backend>, LockError> {
    Err(LockError::Config {
        key: "ASYNC_FILELOCK_BACKEND".into(),
        reason: "the postgres backend needs the crate's `postgres` feature".into(),
    })
}

/// The shortest soft lock lease accepted: renewals every third of it must
/// be possible on a loaded machine.
const MIN_LEASE: Duration = Duration::from_millis(50);

/// Builds a [`Locks`]. Every setting starts at its default.
///
/// ```
/// use async_filelock::{Category, Locks};
/// use std::time::Duration;
/// let locks = Locks::builder()
///     .lock_dir("/tmp/my-run/locks")
///     .timeout(Category::Sqlite, Duration::from_secs(20))
///     .wait_forever(Category::Artifact)
///     .hold_budget(Category::Summary, Duration::from_millis(500))
///     .remove_on_release(Category::Manifest, true)
///     .build()?;
/// assert_eq!(locks.timeout(Category::Artifact), None);
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct LocksBuilder {
    policy: Policy,
}

impl LocksBuilder {
    /// Puts every lock file in `dir` (created 0700 on first use).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let lock = locks.lock_path(Category::Manifest, dir.path().join("m.jsonl"))?;
    /// assert!(lock.starts_with(dir.path().join("locks")));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policy.lock_dir = LockDir::Fixed(dir.into());
        self
    }

    /// Puts each lock file in a `.locks` directory beside its target (the
    /// default).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder().lock_dir("/elsewhere").lock_dir_beside_target().build()?;
    /// let lock = locks.lock_path(Category::Manifest, dir.path().join("m.jsonl"))?;
    /// assert_eq!(lock.parent().unwrap(), dir.path().canonicalize().unwrap().join(".locks"));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn lock_dir_beside_target(mut self) -> Self {
        self.policy.lock_dir = LockDir::BesideTarget;
        self
    }

    /// How long acquisitions of `category` wait by default.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// use std::time::Duration;
    /// let locks = Locks::builder().timeout(Category::Sqlite, Duration::from_secs(20)).build()?;
    /// assert_eq!(locks.timeout(Category::Sqlite), Some(Duration::from_secs(20)));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn timeout(mut self, category: Category, limit: Duration) -> Self {
        self.policy.timeouts[category.index()] = Some(limit);
        self
    }

    /// Acquisitions of `category` wait as long as it takes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder().wait_forever(Category::Artifact).build()?;
    /// assert_eq!(locks.timeout(Category::Artifact), None);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn wait_forever(mut self, category: Category) -> Self {
        self.policy.timeouts[category.index()] = None;
        self
    }

    /// A hold of `category` longer than `budget` logs a warning and counts in
    /// [`crate::CategoryMetrics::over_budget`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// use std::time::Duration;
    /// let locks = Locks::builder()
    ///     .lock_dir(dir.path().join("locks"))
    ///     .hold_budget(Category::Summary, Duration::from_millis(1))
    ///     .build()?;
    /// let g = locks.lock(Category::Summary, dir.path().join("s.json")).await?;
    /// tokio::time::sleep(Duration::from_millis(5)).await;
    /// g.release().await?; // logs a warning: held longer than its budget
    /// assert_eq!(locks.metrics().category(Category::Summary).over_budget, 1);
    /// # Ok(()) }
    /// ```
    pub fn hold_budget(mut self, category: Category, budget: Duration) -> Self {
        self.policy.budgets[category.index()] = Some(budget);
        self
    }

    /// Whether releasing a lock of `category` removes its lock file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder()
    ///     .lock_dir(dir.path().join("locks"))
    ///     .remove_on_release(Category::Manifest, true)
    ///     .build()?;
    /// let g = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?;
    /// let lock_file = g.lock_path().to_path_buf();
    /// g.release().await?;
    /// assert!(!lock_file.exists());
    /// # Ok(()) }
    /// ```
    pub fn remove_on_release(mut self, category: Category, remove: bool) -> Self {
        self.policy.remove_on_release[category.index()] = remove;
        self
    }

    /// What to do when a task asks for a lock that comes before one it holds
    /// in the lock order (default [`OrderCheck::Warn`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, LockError, Locks, OrderCheck};
    /// let locks = Locks::builder()
    ///     .lock_dir(dir.path().join("locks"))
    ///     .order_check(OrderCheck::Error)
    ///     .build()?;
    /// let _summary = locks.lock(Category::Summary, dir.path().join("s.json")).await?;
    /// let err = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await.unwrap_err();
    /// assert!(matches!(err, LockError::OrderViolation { .. }));
    /// # Ok(()) }
    /// ```
    pub fn order_check(mut self, check: OrderCheck) -> Self {
        self.policy.order_check = check;
        self
    }

    /// What a wait does when the asking task already holds the lock
    /// (default [`SameTask::Wait`], with a warning; see [`SameTask`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, LockError, Locks, SameTask};
    /// let locks = Locks::builder()
    ///     .lock_dir(dir.path().join("locks"))
    ///     .same_task(SameTask::Refuse)
    ///     .build()?;
    /// let s = dir.path().join("s.json");
    /// let _held = locks.lock(Category::Summary, &s).await?;
    /// let err = locks.lock(Category::Summary, &s).await.unwrap_err();
    /// assert!(matches!(err, LockError::WouldDeadlock { .. }));
    /// # Ok(()) }
    /// ```
    pub fn same_task(mut self, policy: SameTask) -> Self {
        self.policy.same_task = policy;
        self
    }

    /// Permission bits of new lock files (default 0600).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// use std::os::unix::fs::PermissionsExt;
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).file_mode(0o640).build()?;
    /// let g = locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?;
    /// let mode = std::fs::metadata(g.lock_path()).unwrap().permissions().mode();
    /// assert_eq!(mode & 0o777 & !0o640, 0);
    /// # Ok(()) }
    /// ```
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.policy.file_mode = mode;
        self
    }

    /// Permission bits of new lock directories (default 0700).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, Locks};
    /// use std::os::unix::fs::PermissionsExt;
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).dir_mode(0o700).build()?;
    /// locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?.release().await?;
    /// let mode = std::fs::metadata(dir.path().join("locks")).unwrap().permissions().mode();
    /// assert_eq!(mode & 0o777, 0o700);
    /// # Ok(()) }
    /// ```
    pub fn dir_mode(mut self, mode: u32) -> Self {
        self.policy.dir_mode = mode;
        self
    }

    /// Which backend holds the locks (default [`BackendChoice::Os`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{BackendChoice, Category, Locks};
    /// let locks = Locks::builder()
    ///     .lock_dir(dir.path().join("locks"))
    ///     .backend(BackendChoice::Soft)
    ///     .build()?;
    /// let g = locks.lock(Category::Summary, dir.path().join("s.json")).await?;
    /// assert_eq!(locks.metrics().backend().soft().unwrap().held_now, 1);
    /// g.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.policy.backend = backend;
        self
    }

    /// How long a soft lock stays its holder's without a renewal (default
    /// 30 s; at least 50 ms). The holder renews it every third of that; a
    /// holder stalled longer loses it to the next waiter, and its guard
    /// reports the loss ([`LockGuard::is_lost`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{BackendChoice, Locks};
    /// use std::time::Duration;
    /// let locks = Locks::builder()
    ///     .backend(BackendChoice::Soft)
    ///     .soft_lease(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(locks.soft_lease(), Duration::from_secs(10));
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn soft_lease(mut self, lease: Duration) -> Self {
        self.policy.soft.lease = lease.max(MIN_LEASE);
        self
    }

    /// The longest pause between two attempts of a waiting soft lock
    /// (default 100 ms; waits start at 1 ms and double up to it, and are
    /// woken early by the release where the filesystem reports it).
    ///
    /// ```
    /// use async_filelock::{BackendChoice, Locks};
    /// use std::time::Duration;
    /// let locks = Locks::builder()
    ///     .backend(BackendChoice::Soft)
    ///     .soft_poll(Duration::from_millis(20))
    ///     .build()?;
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn soft_poll(mut self, poll: Duration) -> Self {
        self.policy.soft.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Locks with PostgreSQL advisory locks on the server at `url` (a
    /// libpq connection string or `postgres://` URL; cargo feature
    /// `postgres`), for hosts that share files but not a kernel. Sets the
    /// backend to [`BackendChoice::Postgres`]. Nothing connects until the
    /// first lock; [`LocksBuilder::build`] fails if the feature is off.
    ///
    /// ```
    /// use async_filelock::{BackendChoice, Locks};
    /// let builder = Locks::builder()
    ///     .postgres("host=/run/postgresql dbname=locks")
    ///     .postgres_namespace(7)
    ///     .postgres_connections(2);
    /// # #[cfg(feature = "postgres")]
    /// assert_eq!(builder.build()?.backend(), BackendChoice::Postgres);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.policy.backend = BackendChoice::Postgres;
        self.policy.postgres.url = Some(url.into());
        self
    }

    /// The advisory-lock namespace (the first of the two key ints; default
    /// `0x6166`), so that applications sharing a server do not collide.
    pub fn postgres_namespace(mut self, namespace: i32) -> Self {
        self.policy.postgres.namespace = namespace;
        self
    }

    /// How many database sessions the handle opens at most (default 4, at
    /// least 1), whatever the number of locks held and waited for.
    pub fn postgres_connections(mut self, connections: usize) -> Self {
        self.policy.postgres.connections = connections.max(1);
        self
    }

    /// How often each session is checked (default 5 s, at least 100 ms):
    /// guards on a session that died learn it within this.
    pub fn postgres_heartbeat(mut self, every: Duration) -> Self {
        self.policy.postgres.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// What to do when a lock dir is on a network or FUSE filesystem
    /// (default [`NetworkFsPolicy::Warn`], once per lock dir).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Locks, NetworkFsPolicy};
    /// let locks = Locks::builder().network_fs(NetworkFsPolicy::Refuse).build()?;
    /// assert_eq!(locks.network_fs(), NetworkFsPolicy::Refuse);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn network_fs(mut self, policy: NetworkFsPolicy) -> Self {
        self.policy.network_fs = policy;
        self
    }

    /// Lets the processes of several users of group `gid` share lock dirs
    /// (default: none). Without it a lock dir must be owned by this user and
    /// writable by no one else, and lock files must be this user's; with
    /// it, a lock dir of that group writable by the group (and no one
    /// else), and that group's lock files, are trusted too. Pair it with
    /// `dir_mode(0o2770)` and `file_mode(0o660)` so that new ones are
    /// shared, and a umask that keeps the group bits.
    ///
    /// ```
    /// use async_filelock::Locks;
    /// let locks = Locks::builder()
    ///     .shared_group(1000)
    ///     .dir_mode(0o2770)
    ///     .file_mode(0o660)
    ///     .build()?;
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn shared_group(mut self, gid: u32) -> Self {
        self.policy.shared_group = Some(gid);
        self
    }

    /// Applies the environment variables over the settings so far.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] naming the variable when a value is invalid.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::Locks;
    /// // ASYNC_FILELOCK_DIR, ASYNC_FILELOCK_TIMEOUT_<CATEGORY>, ASYNC_FILELOCK_BACKEND, …
    /// let locks = Locks::builder().env()?.build()?;
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn env(self) -> Result<Self, LockError> {
        self.env_from(|key| std::env::var_os(key))
    }

    /// As [`LocksBuilder::env`], reading variables through `lookup` (for
    /// tests and for configuration systems that are not the process
    /// environment).
    ///
    /// ```
    /// use async_filelock::{Category, Locks};
    /// let locks = Locks::builder()
    ///     .env_from(|key| match key {
    ///         "ASYNC_FILELOCK_TIMEOUT_SQLITE" => Some("inf".into()),
    ///         "ASYNC_FILELOCK_TIMEOUT_SUMMARY" => Some("0.25".into()),
    ///         _ => None,
    ///     })?
    ///     .build()?;
    /// assert_eq!(locks.timeout(Category::Sqlite), None);
    /// assert_eq!(locks.timeout(Category::Summary).unwrap().as_millis(), 250);
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LocksBuilder::env`].
    pub fn env_from(
        mut self,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, LockError> {
        env::apply(&mut self.policy, lookup)?;
        Ok(self)
    }

    /// Builds the handle.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] when the lock dir is empty;
    /// [`LockError::LockDir`] when it exists and is not a directory (or is a
    /// symlink to a file, named as resolved); [`LockError::Io`] when the
    /// current directory is needed to make it absolute and is gone.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{LockError, Locks};
    /// let file = dir.path().join("not-a-dir");
    /// std::fs::write(&file, b"").unwrap();
    /// let err = Locks::builder().lock_dir(&file).build().unwrap_err();
    /// assert!(matches!(err, LockError::LockDir { .. }));
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn build(mut self) -> Result<Locks, LockError> {
        self.policy.resolve_lock_dir()?;
        let soft = SoftBackend {
            settings: self.policy.soft,
        };
        let backend: Arc<dyn Backend> = match self.policy.backend {
            BackendChoice::Os => Arc::new(OsBackend),
            BackendChoice::Soft => Arc::new(soft),
            BackendChoice::Auto => Arc::new(AutoBackend::new(soft)),
            BackendChoice::Postgres => postgres_backend(&self.policy.postgres)?,
        };
        Ok(Locks {
            engine: Arc::new(Engine {
                policy: self.policy,
                backend,
                recorder: Arc::new(Recorder::new()),
            }),
        })
    }
}
