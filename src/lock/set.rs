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
        let target = normalize_target(target.as_ref(), std::time::Instant::now()).ok()?;
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

impl LockSet {
    pub(crate) fn new(guards: Vec<LockGuard>) -> Self {
        LockSet { guards }
    }
}
