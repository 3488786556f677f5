//! [`LockSet`]: several locks taken together in lock order, from
//! [`crate::Locks::lock_many`].

use std::path::Path;

use super::guard::LockGuard;
use super::naming::normalize_target;
use crate::category::Category;
use crate::error::LockError;

/// Several locks taken together, in lock order, from [`crate::Locks::lock_many`].
/// Dropping the set releases them all; [`LockSet::release`] releases them in
/// reverse order and reports the first error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// use async_filelock::Category;
/// let (m, s) = (dir.path().join("m.jsonl"), dir.path().join("summary.json"));
/// let set = locks.lock_many([(Category::Summary, &s), (Category::Manifest, &m)]).await?;
/// assert_eq!(set.len(), 2);
/// drop(set); // releases both
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "if unused the locks are released at once"]
pub struct LockSet {
    guards: Vec<LockGuard>,
}

impl LockSet {
    /// The guards, in the order they were taken.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let set = locks.lock_many([(Category::Summary, dir.path().join("s.json"))]).await?;
    /// assert_eq!(set.guards()[0].category(), Category::Summary);
    /// # Ok(()) }
    /// ```
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// The guard for a target in a category, if the set holds it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let s = dir.path().join("summary.json");
    /// let set = locks.lock_many([(Category::Summary, &s)]).await?;
    /// assert!(set.get(Category::Summary, &s).is_some());
    /// assert!(set.get(Category::Manifest, &s).is_none());
    /// # Ok(()) }
    /// ```
    pub fn get(&self, category: Category, target: impl AsRef<Path>) -> Option<&LockGuard> {
        let target = normalize_target(target.as_ref(), std::time::Instant::now()).ok()?;
        self.guards
            .iter()
            .find(|g| g.category() == category && g.target() == &*target.path)
    }

    /// How many locks the set holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let s = dir.path().join("summary.json");
    /// let set = locks.lock_many([(Category::Summary, &s), (Category::Summary, &s)]).await?;
    /// assert_eq!(set.len(), 1, "duplicates are taken once");
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// True if the set holds no lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let set = locks.lock_many(Vec::<(async_filelock::Category, std::path::PathBuf)>::new()).await?;
    /// assert!(set.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Releases every lock, last taken first.
    ///
    /// # Errors
    ///
    /// The first release error; every lock is released regardless.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: locks not yet released when the future is dropped are released by the drop.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let set = locks.lock_many([(Category::Manifest, dir.path().join("m.jsonl"))]).await?;
    /// set.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<(), LockError> {
        let mut first = Ok(());
        while let Some(g) = self.guards.pop() {
            let r = g.release().await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// The guards, to release one by one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let set = locks.lock_many([(Category::Manifest, dir.path().join("m.jsonl"))]).await?;
    /// for guard in set.into_guards() {
    ///     guard.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn into_guards(self) -> Vec<LockGuard> {
        self.guards
    }
}

impl LockSet {
    pub(crate) fn new(guards: Vec<LockGuard>) -> Self {
        LockSet { guards }
    }
}
