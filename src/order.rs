//! Lock order (law 7): Artifact, then Manifest, Telemetry, Sqlite, Summary;
//! within a category, by lock path. Taking locks in one global order rules
//! out deadlocks between tasks and processes.
//!
//! [`crate::Locks::lock_many`] sorts for the caller. Nested acquisitions
//! made one at a time are checked against what the asking task (or
//! `block_on` thread) already holds, per [`OrderCheck`]. Tries are not
//! checked: they cannot wait, so they cannot deadlock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::table::Owner;
use crate::{Category, LockError, LockGuard, Locks};

/// What to do when a task asks for a lock that comes before one it holds.
///
/// ```
/// use async_filelock::{Locks, OrderCheck};
/// let locks = Locks::builder().order_check(OrderCheck::Error).build()?;
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OrderCheck {
    /// Refuse with [`LockError::OrderViolation`].
    Error,
    /// Log a warning, count it in the metrics, and go on (the default, so
    /// that existing callers keep working while they are fixed).
    #[default]
    Warn,
    /// Do not track held locks at all.
    Off,
}

type Held = FxHashMap<Owner, Vec<(Category, Arc<Path>)>>;

static HELD: LazyLock<Mutex<Held>> = LazyLock::new(|| Mutex::new(FxHashMap::default()));

fn held() -> MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The latest lock `owner` holds that comes after `(category, lock_path)`.
pub(crate) fn later_held(
    owner: Owner,
    category: Category,
    lock_path: &Path,
) -> Option<(Category, PathBuf)> {
    let held = held();
    held.get(&owner)?
        .iter()
        .filter(|(c, p)| (*c, &**p) > (category, lock_path))
        .max()
        .map(|(c, p)| (*c, p.to_path_buf()))
}

pub(crate) fn record(owner: Owner, category: Category, lock_path: &Arc<Path>) {
    held()
        .entry(owner)
        .or_default()
        .push((category, Arc::clone(lock_path)));
}

pub(crate) fn forget(owner: Owner, category: Category, lock_path: &Path) {
    let mut held = held();
    if let Some(list) = held.get_mut(&owner) {
        if let Some(i) = list
            .iter()
            .position(|(c, p)| *c == category && &**p == lock_path)
        {
            list.swap_remove(i);
        }
        if list.is_empty() {
            held.remove(&owner);
        }
    }
}

/// Several locks taken together, in lock order, from [`Locks::lock_many`].
/// Dropping the set releases them all; [`LockSet::release`] releases them in
/// reverse order and reports the first error.
#[derive(Debug)]
#[must_use = "if unused the locks are released at once"]
pub struct LockSet {
    guards: Vec<LockGuard>,
}

impl LockSet {
    /// The guards, in the order they were taken.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// The guard for a target in a category, if the set holds it.
    pub fn get(&self, category: Category, target: impl AsRef<Path>) -> Option<&LockGuard> {
        let target =
            crate::naming::normalize_target(target.as_ref(), std::time::Instant::now()).ok()?;
        self.guards
            .iter()
            .find(|g| g.category() == category && g.target() == &*target.path)
    }

    /// How many locks the set holds.
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// True if the set holds no lock.
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
    pub fn into_guards(self) -> Vec<LockGuard> {
        self.guards
    }
}

impl Locks {
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
        let mut wanted = Vec::new();
        for (category, target) in items {
            let lock_path = self.lock_path(category, target.as_ref())?;
            wanted.push((category, lock_path, target.as_ref().to_path_buf()));
        }
        wanted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        wanted.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let mut guards = Vec::with_capacity(wanted.len());
        for (category, _, target) in wanted {
            guards.push(self.lock(category, target).await?);
        }
        Ok(LockSet { guards })
    }
}
