//! [`Locks`]: the handle that holds policy (lock dir, timeouts, modes, hold
//! budgets), the backend and the metrics, and hands out guards.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::acquire::{self, Wait};
use crate::backend::Backend;
use crate::backend::os::OsBackend;
use crate::metrics::{Metrics, Recorder};
use crate::naming::{self, NormalTarget};
use crate::order::OrderCheck;
use crate::{Category, LockError, LockGuard, LockMode};

/// Where lock files go.
#[derive(Debug, Clone)]
enum LockDir {
    /// `<target's directory>/.locks`: processes agree with no configuration.
    BesideTarget,
    /// One absolute directory for every target.
    Fixed(PathBuf),
}

/// Name of the lock directory placed beside targets by default.
pub const BESIDE_TARGET_DIR: &str = ".locks";

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    lock_dir: LockDir,
    timeouts: [Option<Duration>; 5],
    budgets: [Option<Duration>; 5],
    remove_on_release: [bool; 5],
    pub file_mode: u32,
    pub dir_mode: u32,
    pub order_check: OrderCheck,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lock_dir: LockDir::BesideTarget,
            timeouts: Category::ALL.map(|c| Some(c.default_timeout())),
            // A hold longer than what waiters are willing to wait makes them
            // time out: that is the budget worth warning about.
            budgets: Category::ALL.map(|c| Some(c.default_timeout())),
            remove_on_release: Category::ALL.map(Category::default_remove_on_release),
            file_mode: 0o600,
            dir_mode: 0o700,
            order_check: OrderCheck::default(),
        }
    }
}

impl Policy {
    pub fn timeout(&self, c: Category) -> Option<Duration> {
        self.timeouts[c.index()]
    }

    pub fn budget(&self, c: Category) -> Option<Duration> {
        self.budgets[c.index()]
    }

    pub fn remove_on_release(&self, c: Category) -> bool {
        self.remove_on_release[c.index()]
    }

    pub fn lock_dir_is_fixed(&self) -> bool {
        matches!(self.lock_dir, LockDir::Fixed(_))
    }

    pub fn lock_path(&self, category: Category, target: &NormalTarget) -> PathBuf {
        let name = naming::lock_file_name(category, target);
        match &self.lock_dir {
            LockDir::BesideTarget => target.parent().join(BESIDE_TARGET_DIR).join(name),
            LockDir::Fixed(dir) => dir.join(name),
        }
    }
}

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
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    backend: Arc<dyn Backend>,
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("policy", &self.inner.policy)
            .field("backend", &self.inner.backend)
            .finish()
    }
}

impl Locks {
    /// A builder with the defaults of DESIGN.md: lock files in `.locks`
    /// beside each target, per-category timeouts, files 0600 in a 0700 dir.
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
    pub fn global() -> Result<Locks, LockError> {
        static GLOBAL: OnceLock<Locks> = OnceLock::new();
        if let Some(locks) = GLOBAL.get() {
            return Ok(locks.clone());
        }
        let locks = Locks::from_env()?;
        Ok(GLOBAL.get_or_init(|| locks).clone())
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    pub(crate) fn recorder(&self) -> &Arc<Recorder> {
        &self.inner.recorder
    }

    /// An acquisition to configure (`.timeout(d)`, `.shared()`, …) and await.
    /// Exclusive, with the category's timeout, unless told otherwise.
    pub fn acquire(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        Acquire {
            locks: self.clone(),
            category,
            target: target.as_ref().to_path_buf(),
            mode: LockMode::Exclusive,
            timeout: self.inner.policy.timeout(category),
            running: None,
        }
    }

    /// Waits for an exclusive lock on `target`, up to the category's timeout.
    /// Returns an [`Acquire`], which is awaited directly or configured first.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the wait runs out; [`LockError::WouldDeadlock`]
    /// when the calling task already holds this lock; [`LockError::InvalidTarget`],
    /// [`LockError::UnsafeLockFile`], [`LockError::Io`] for bad paths.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future at any point leaves no lock held, takes
    /// the task out of the queue, and stops any blocking wait within
    /// milliseconds.
    pub fn lock(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        self.acquire(category, target)
    }

    /// Waits for a shared lock on `target`: any number of shared holders, in
    /// this process and others, but no exclusive one. As [`Locks::lock`]
    /// otherwise.
    ///
    /// A task that already holds this lock, shared or exclusive, gets
    /// [`LockError::WouldDeadlock`]: the queue is fair, so a writer queued
    /// between its two requests would wait for it forever.
    pub fn lock_shared(&self, category: Category, target: impl AsRef<Path>) -> Acquire {
        self.acquire(category, target).shared()
    }

    /// One attempt at an exclusive lock that never waits: `Ok(None)` when
    /// someone else holds it (or is ahead in this process's queue).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it completes without waiting.
    pub async fn try_lock(
        &self,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<Option<LockGuard>, LockError> {
        self.acquire(category, target).try_now().await
    }

    /// As [`Locks::try_lock`], for a shared lock.
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
        let normal = naming::normalize_target(target.as_ref(), std::time::Instant::now())?;
        Ok(self.inner.policy.lock_path(category, &normal))
    }

    /// The timeout of a category (`None`: wait forever).
    pub fn timeout(&self, category: Category) -> Option<Duration> {
        self.inner.policy.timeout(category)
    }

    /// Counters and wait/hold percentiles per category for this handle.
    pub fn metrics(&self) -> Metrics {
        self.inner.recorder.snapshot()
    }
}

/// The started acquisition inside an [`Acquire`].
type Running = Pin<Box<dyn Future<Output = Result<LockGuard, LockError>> + Send>>;

/// One configured acquisition, from [`Locks::acquire`], [`Locks::lock`] or
/// [`Locks::lock_shared`]: a future of a [`LockGuard`]. Configure it, then
/// await it (or hand it to `select!`, `timeout`, `block_on`).
///
/// # Cancel safety
///
/// Cancel safe: see [`Locks::lock`].
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
    locks: Locks,
    category: Category,
    target: PathBuf,
    mode: LockMode,
    timeout: Option<Duration>,
    running: Option<Running>,
}

impl std::fmt::Debug for Acquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("category", &self.category)
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("started", &self.running.is_some())
            .finish()
    }
}

impl Acquire {
    /// Waits at most `limit` (zero: one attempt, then [`LockError::Timeout`]).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Waits as long as it takes.
    pub fn wait_forever(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Asks for a shared lock.
    pub fn shared(mut self) -> Self {
        self.mode = LockMode::Shared;
        self
    }

    /// Asks for an exclusive lock (the default).
    pub fn exclusive(mut self) -> Self {
        self.mode = LockMode::Exclusive;
        self
    }

    /// One attempt that never waits; `Ok(None)` when the lock is busy.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it completes without waiting.
    pub async fn try_now(self) -> Result<Option<LockGuard>, LockError> {
        acquire::acquire(
            &self.locks,
            self.category,
            &self.target,
            self.mode,
            Wait::Try,
        )
        .await
    }
}

impl Future for Acquire {
    type Output = Result<LockGuard, LockError>;

    /// The first poll starts the acquisition; configuration methods consume
    /// the `Acquire`, so they cannot run after it.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let running = this.running.get_or_insert_with(|| {
            let (locks, category, target, mode) = (
                this.locks.clone(),
                this.category,
                this.target.clone(),
                this.mode,
            );
            let wait = Wait::Until(this.timeout);
            Box::pin(async move {
                match acquire::acquire(&locks, category, &target, mode, wait).await? {
                    Some(guard) => Ok(guard),
                    // `Wait::Until` reports a busy lock as a timeout, never None.
                    None => Err(LockError::io(
                        "acquire lock for",
                        target,
                        std::io::Error::other("lock not granted"),
                    )),
                }
            })
        });
        running.as_mut().poll(cx)
    }
}

/// Builds a [`Locks`]. Every setting has the default of DESIGN.md.
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

/// The environment variables [`LocksBuilder::env`] reads.
pub const ENV_DIR: &str = "ASYNC_FILELOCK_DIR";
/// Prefix of the per-category timeout variables.
pub const ENV_TIMEOUT_PREFIX: &str = "ASYNC_FILELOCK_TIMEOUT_";
/// The backend variable.
pub const ENV_BACKEND: &str = "ASYNC_FILELOCK_BACKEND";

impl LocksBuilder {
    /// Puts every lock file in `dir` (created 0700 on first use).
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policy.lock_dir = LockDir::Fixed(dir.into());
        self
    }

    /// Puts each lock file in a `.locks` directory beside its target (the
    /// default).
    pub fn lock_dir_beside_target(mut self) -> Self {
        self.policy.lock_dir = LockDir::BesideTarget;
        self
    }

    /// How long acquisitions of `category` wait by default.
    pub fn timeout(mut self, category: Category, limit: Duration) -> Self {
        self.policy.timeouts[category.index()] = Some(limit);
        self
    }

    /// Acquisitions of `category` wait as long as it takes.
    pub fn wait_forever(mut self, category: Category) -> Self {
        self.policy.timeouts[category.index()] = None;
        self
    }

    /// A hold of `category` longer than `budget` logs a warning and counts in
    /// [`crate::CategoryMetrics::over_budget`].
    pub fn hold_budget(mut self, category: Category, budget: Duration) -> Self {
        self.policy.budgets[category.index()] = Some(budget);
        self
    }

    /// Whether releasing a lock of `category` removes its lock file.
    pub fn remove_on_release(mut self, category: Category, remove: bool) -> Self {
        self.policy.remove_on_release[category.index()] = remove;
        self
    }

    /// What to do when a task asks for a lock that comes before one it holds
    /// in the lock order (default [`OrderCheck::Warn`]).
    pub fn order_check(mut self, check: OrderCheck) -> Self {
        self.policy.order_check = check;
        self
    }

    /// Permission bits of new lock files (default 0600).
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.policy.file_mode = mode;
        self
    }

    /// Permission bits of new lock directories (default 0700).
    pub fn dir_mode(mut self, mode: u32) -> Self {
        self.policy.dir_mode = mode;
        self
    }

    /// Applies the environment variables over the settings so far.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] naming the variable when a value is invalid.
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
        if let Some(dir) = lookup(ENV_DIR) {
            if dir.is_empty() {
                return Err(config(ENV_DIR, "is empty; unset it or give a directory"));
            }
            self.policy.lock_dir = LockDir::Fixed(dir.into());
        }
        for category in Category::ALL {
            let key = format!(
                "{ENV_TIMEOUT_PREFIX}{}",
                category.name().to_ascii_uppercase()
            );
            if let Some(value) = lookup(&key) {
                self.policy.timeouts[category.index()] = parse_timeout(&key, &value)?;
            }
        }
        if let Some(backend) = lookup(ENV_BACKEND) {
            match backend.to_str().map(str::trim) {
                Some("os") | Some("") => {}
                Some(other @ ("soft" | "postgres")) => {
                    return Err(config(
                        ENV_BACKEND,
                        &format!("the {other} backend is not part of this version; use os"),
                    ));
                }
                _ => {
                    return Err(config(
                        ENV_BACKEND,
                        &format!("{backend:?} is not one of os, soft, postgres"),
                    ));
                }
            }
        }
        Ok(self)
    }

    /// Builds the handle.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] when the lock dir exists and is not a directory,
    /// or the current directory is needed to make it absolute and is gone.
    pub fn build(mut self) -> Result<Locks, LockError> {
        if let LockDir::Fixed(dir) = &self.policy.lock_dir {
            if dir.as_os_str().is_empty() {
                return Err(config("lock dir", "is empty; give a directory"));
            }
            let absolute = if dir.is_absolute() {
                dir.clone()
            } else {
                std::env::current_dir()
                    .map_err(|e| LockError::io("read current directory for lock dir", dir, e))?
                    .join(dir)
            };
            if let Ok(meta) = std::fs::metadata(&absolute)
                && !meta.is_dir()
            {
                return Err(LockError::Config {
                    key: format!("lock dir {}", absolute.display()),
                    reason: "exists and is not a directory; choose another lock dir".into(),
                });
            }
            self.policy.lock_dir = LockDir::Fixed(absolute);
        }
        Ok(Locks {
            inner: Arc::new(Inner {
                policy: self.policy,
                backend: Arc::new(OsBackend),
                recorder: Arc::new(Recorder::new()),
            }),
        })
    }
}

fn config(key: &str, reason: &str) -> LockError {
    LockError::Config {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_timeout(key: &str, value: &std::ffi::OsStr) -> Result<Option<Duration>, LockError> {
    let text = value.to_str().map(str::trim).unwrap_or("");
    if matches!(
        text.to_ascii_lowercase().as_str(),
        "inf" | "infinity" | "none"
    ) {
        return Ok(None);
    }
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(Some)
        .ok_or_else(|| {
            config(
                key,
                &format!("{value:?} is not a number of seconds (such as 2.5) or inf"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = Locks::builder()
            .env_from(|k| (k == "ASYNC_FILELOCK_TIMEOUT_ARTIFACT").then(|| "-1".into()))
            .unwrap_err();
        assert!(
            err.to_string().contains("ASYNC_FILELOCK_TIMEOUT_ARTIFACT"),
            "{err}"
        );
        let err = Locks::builder()
            .env_from(|k| (k == ENV_BACKEND).then(|| "carrier-pigeon".into()))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_BACKEND), "{err}");
        let ok = Locks::builder()
            .env_from(|k| (k == "ASYNC_FILELOCK_TIMEOUT_MANIFEST").then(|| " 0 ".into()))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(ok.timeout(Category::Manifest), Some(Duration::ZERO));
    }
}
