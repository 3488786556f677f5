//! Lock order (law 7): Artifact, then Manifest, Telemetry, Sqlite, Summary;
//! within a category, by lock path. Taking locks in one global order rules
//! out deadlocks between tasks and processes.
//!
//! [`crate::Locks::lock_many`] sorts for the caller. Nested acquisitions
//! made one at a time are checked against what the asking task (or
//! `block_on` thread) already holds, per [`OrderCheck`]. Tries are not
//! checked: they cannot wait, so they cannot deadlock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::owner::Owner;
use crate::category::Category;
use crate::per_process::PerProcess;

/// What to do when a task asks for a lock that comes before one it holds.
///
/// ```
/// use async_filelock::{Locks, OrderCheck};
/// let locks = Locks::builder().order_check(OrderCheck::Error).build()?;
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OrderCheck {
    /// Refuse with [`crate::LockError::OrderViolation`].
    Error,
    /// Log a warning, count it in the metrics, and go on (the default, so
    /// that existing callers keep working while they are fixed).
    #[default]
    Warn,
    /// Do not check the order. (Held locks are still recorded: the
    /// same-task check of [`crate::SameTask`] reads the same records.)
    Off,
}

/// What each owner holds: a few locks at most, inline (no allocation per
/// holding).
type Held = FxHashMap<Owner, SmallVec<[(Category, Arc<Path>); 4]>>;

/// What every owner holds, and how many records that is: with none (one
/// lock at a time in the process, the common case) a check needs no lock.
#[derive(Debug, Default)]
struct Order {
    records: AtomicUsize,
    held: Mutex<Held>,
}

/// Per process, like the table (see `per_process`).
static ORDER: PerProcess<Order> = PerProcess::new();

fn order() -> &'static Order {
    ORDER.get(Order::default)
}

impl Order {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The latest lock `owner` holds that comes after `(category, lock_path)`.
pub(crate) fn later_held(
    owner: Owner,
    category: Category,
    lock_path: &Path,
) -> Option<(Category, PathBuf)> {
    // The owner's own records were made before it asks (it asks in
    // sequence, or hands its ask to a committer through a queue).
    let order = order();
    if order.records.load(Ordering::Acquire) == 0 {
        return None;
    }
    let held = order.held();
    held.get(&owner)?
        .iter()
        .filter(|(c, p)| (*c, &**p) > (category, lock_path))
        .max()
        .map(|(c, p)| (*c, p.to_path_buf()))
}

pub(crate) fn record(owner: Owner, category: Category, lock_path: &Arc<Path>) {
    let order = order();
    let mut held = order.held();
    held.entry(owner)
        .or_default()
        .push((category, Arc::clone(lock_path)));
    order.records.fetch_add(1, Ordering::Release);
}

/// Whether `owner` holds the lock at `lock_path`: the same-task check
/// reads the records of the lock order, so a holding is recorded once.
pub(crate) fn holds(owner: Owner, lock_path: &Path) -> bool {
    let order = order();
    if order.records.load(Ordering::Acquire) == 0 {
        return false;
    }
    let held = order.held();
    held.get(&owner)
        .is_some_and(|list| list.iter().any(|(_, p)| same_path(p, lock_path)))
}

/// Bytes: a lock path is built by this crate, so one lock has one spelling
/// (`Path`'s own equality walks components); most often it is the very
/// `Arc` that was recorded.
fn same_path(recorded: &Arc<Path>, lock_path: &Path) -> bool {
    std::ptr::eq(&**recorded, lock_path) || recorded.as_os_str() == lock_path.as_os_str()
}

/// How many owners hold the lock at `lock_path` (test support: the table's
/// count of those asking for a lock leaves its holders out).
#[cfg(feature = "test-util")]
pub(crate) fn holders_of(lock_path: &Path) -> usize {
    let held = order().held();
    held.values()
        .map(|list| list.iter().filter(|(_, p)| same_path(p, lock_path)).count())
        .sum()
}

pub(crate) fn forget(owner: Owner, category: Category, lock_path: &Path) {
    let order = order();
    let mut held = order.held();
    if let Some(list) = held.get_mut(&owner) {
        if let Some(i) = list
            .iter()
            .position(|(c, p)| *c == category && same_path(p, lock_path))
        {
            list.swap_remove(i);
            order.records.fetch_sub(1, Ordering::Release);
        }
        if list.is_empty() {
            held.remove(&owner);
        }
    }
}
