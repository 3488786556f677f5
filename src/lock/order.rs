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
    /// Do not check the order, and leave this handle's holdings out of
    /// other handles' checks. (They are still recorded: the same-task check
    /// of [`crate::SameTask`] reads the same records.)
    Off,
}

/// What each owner holds: a few locks at most, inline (no allocation per
/// holding).
type Holdings = SmallVec<[Holding; 4]>;

/// One lock an owner holds.
#[derive(Debug)]
struct Holding {
    category: Category,
    lock_path: Arc<Path>,
    /// Taken through a handle that checks the order: only such holdings
    /// count against the order (a handle with [`OrderCheck::Off`] opted
    /// out), while the same-task check reads them all.
    checked: bool,
}

/// The holdings of every owner that held a lock lately. An owner whose last
/// holding ended keeps its (empty) list: a task taking one lock after
/// another, the common case, then changes a list in place instead of
/// inserting and removing a map entry each time, which was most of what
/// recording cost. Empty lists are swept once they outnumber the others
/// (and [`SWEEP_AFTER`]), so they never cost more than the live ones.
#[derive(Debug, Default)]
struct Held {
    lists: FxHashMap<Owner, Holdings>,
    empty: usize,
}

/// Empty lists kept at least before a sweep.
const SWEEP_AFTER: usize = 64;

impl Held {
    fn of(&self, owner: Owner) -> &[Holding] {
        self.lists.get(&owner).map_or(&[], |list| list.as_slice())
    }

    fn record(&mut self, owner: Owner, category: Category, lock_path: &Arc<Path>, checked: bool) {
        let Held { lists, empty } = self;
        let list = lists.entry(owner).or_insert_with(|| {
            // Counted as empty from here: filled just below.
            *empty += 1;
            Holdings::new()
        });
        if list.is_empty() {
            *empty -= 1;
        }
        list.push(Holding {
            category,
            lock_path: Arc::clone(lock_path),
            checked,
        });
    }

    /// Removes the record; whether there was one.
    fn forget(&mut self, owner: Owner, category: Category, lock_path: &Path) -> bool {
        let Some(list) = self.lists.get_mut(&owner) else {
            return false;
        };
        let Some(i) = list
            .iter()
            .position(|h| h.category == category && same_path(&h.lock_path, lock_path))
        else {
            return false;
        };
        list.swap_remove(i);
        if list.is_empty() {
            self.empty += 1;
            let live = self.lists.len().saturating_sub(self.empty);
            if self.empty > SWEEP_AFTER.max(live) {
                self.lists.retain(|_, list| !list.is_empty());
                self.empty = 0;
                // A burst of owners leaves no outsized table behind.
                self.lists.shrink_to(2 * SWEEP_AFTER.max(self.lists.len()));
            }
        }
        true
    }
}

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

    /// Counts `by` records more (or fewer), under `_held`: every change is
    /// made under the mutex, so a load and a store suffice (a
    /// read-modify-write was a visible share of recording).
    fn records_changed(&self, _held: &MutexGuard<'_, Held>, by: isize) {
        let now = self.records.load(Ordering::Relaxed);
        self.records
            .store(now.saturating_add_signed(by), Ordering::Release);
    }
}

/// The latest lock `owner` holds through a handle that checks the order
/// and that comes after `(category, lock_path)`.
pub(crate) fn later_held(
    owner: Owner,
    category: Category,
    lock_path: &Path,
) -> Option<(Category, PathBuf)> {
    holdings_of(owner, |held| {
        held.iter()
            .filter(|h| h.checked && (h.category, &*h.lock_path) > (category, lock_path))
            .map(|h| (h.category, &h.lock_path))
            .max()
            .map(|(c, p)| (c, p.to_path_buf()))
    })
    .flatten()
}

/// `look` at what `owner` holds; `None`, without taking the records' lock,
/// when nobody in the process holds anything (one lock at a time, the
/// common case). The owner's own records were made before it asks (it asks
/// in sequence, or hands its ask to a committer through a queue).
fn holdings_of<R>(owner: Owner, look: impl FnOnce(&[Holding]) -> R) -> Option<R> {
    let order = order();
    if order.records.load(Ordering::Acquire) == 0 {
        return None;
    }
    Some(look(order.held().of(owner)))
}

/// Records that `owner` holds `lock_path`, taken through a handle that
/// checks the order (`checked`) or not.
pub(crate) fn record(owner: Owner, category: Category, lock_path: &Arc<Path>, checked: bool) {
    let order = order();
    let mut held = order.held();
    held.record(owner, category, lock_path, checked);
    order.records_changed(&held, 1);
}

/// Whether `owner` holds the lock at `lock_path`: the same-task check
/// reads the records of the lock order, so a holding is recorded once.
pub(crate) fn holds(owner: Owner, lock_path: &Path) -> bool {
    holdings_of(owner, |held| {
        held.iter().any(|h| same_path(&h.lock_path, lock_path))
    })
    .unwrap_or(false)
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
    held.lists
        .values()
        .map(|list| {
            list.iter()
                .filter(|h| same_path(&h.lock_path, lock_path))
                .count()
        })
        .sum()
}

pub(crate) fn forget(owner: Owner, category: Category, lock_path: &Path) {
    let order = order();
    let mut held = order.held();
    if held.forget(owner, category, lock_path) {
        order.records_changed(&held, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct owners, as threads are (a task's id cannot be made here).
    fn owners(n: usize) -> Vec<Owner> {
        (0..n)
            .map(|_| {
                std::thread::spawn(Owner::current)
                    .join()
                    .expect("owner thread")
            })
            .collect()
    }

    fn empty_lists(held: &Held) -> usize {
        held.lists.values().filter(|l| l.is_empty()).count()
    }

    /// An owner's emptied list is kept for its next holding, and emptied
    /// lists are swept before they outnumber the live ones (and a floor):
    /// owners that come and go do not grow the map without bound.
    #[test]
    fn emptied_lists_are_kept_for_reuse_and_swept_past_the_live_ones() {
        let lock: Arc<Path> = Path::new("/run/locks/manifest.x.lock").into();
        let other: Arc<Path> = Path::new("/run/locks/summary.y.lock").into();
        let mut held = Held::default();
        let owners = owners(3 * SWEEP_AFTER);
        let (first, live, passing) = (
            owners[0],
            &owners[1..=SWEEP_AFTER],
            &owners[SWEEP_AFTER + 1..],
        );
        held.record(first, Category::Manifest, &lock, true);
        assert!(held.forget(first, Category::Manifest, &lock));
        assert!(
            !held.forget(first, Category::Manifest, &lock),
            "forgotten once"
        );
        assert_eq!(
            (held.lists.len(), held.empty),
            (1, 1),
            "kept, counted empty"
        );
        held.record(first, Category::Manifest, &lock, true);
        held.record(first, Category::Summary, &other, true);
        assert_eq!(held.of(first).len(), 2);
        assert_eq!(held.empty, 0, "the kept list reused");
        for owner in live {
            held.record(*owner, Category::Manifest, &lock, true);
        }
        for owner in passing {
            held.record(*owner, Category::Summary, &other, true);
            assert!(held.forget(*owner, Category::Summary, &other));
            assert_eq!(held.empty, empty_lists(&held), "the count is exact");
            let live = held.lists.len() - held.empty;
            assert!(held.empty <= SWEEP_AFTER.max(live), "swept in time");
        }
        assert!(
            held.lists.len() <= 2 * (SWEEP_AFTER + 1) + 1,
            "{}",
            held.lists.len()
        );
        assert_eq!(held.of(first).len(), 2, "live lists survive a sweep");
        assert!(live.iter().all(|o| held.of(*o).len() == 1));
    }
}
