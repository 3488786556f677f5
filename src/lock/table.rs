//! The in-process table (law 5): one entry per lock path in use, shared by
//! every [`crate::Locks`] handle of the process.
//!
//! Waiters queue on the entry's `tokio::sync::RwLock`, which is fair (FIFO)
//! and cancel safe: a dropped waiter leaves the queue. Only the task at the
//! head talks to the backend, so a thousand tasks waiting for one lock cost
//! one blocking thread, not a thousand. Shared holders of one process share
//! one OS shared lock through `shared`.
//!
//! Entries live while someone holds or waits, and a few idle ones after
//! (up to [`IDLE_KEPT`], then every idle one is removed at once), so that
//! an uncontended lock taken again and again reuses its entry, and touching
//! a million distinct paths once leaves at most that many.

// Fx: keys are local paths, where hash flooding is no threat and SipHash
// was a visible share of an uncontended acquisition.
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::RwLock;

use super::owner::Owner;
use super::shared::SharedHeld;
use crate::path_key::PathKey;
use crate::per_process::PerProcess;

/// State of one lock path in this process.
#[derive(Debug)]
pub(crate) struct Entry {
    /// FIFO queue of this process's waiters; its guard is held with the lock.
    pub queue: Arc<RwLock<()>>,
    /// The OS shared lock all shared holders in this process use, if any.
    /// The async mutex makes concurrent shared waiters take it once.
    pub shared: tokio::sync::Mutex<Weak<SharedHeld>>,
    /// Who holds this lock: for the same-task check ([`super::owner::SameTask`])
    /// and to name this task as the holder in a timeout.
    /// Who holds it in this process: one at a time but for shared
    /// holders, so inline (no allocation per holding).
    owners: Mutex<SmallVec<[Owner; 2]>>,
}

impl Entry {
    fn owners(&self) -> MutexGuard<'_, SmallVec<[Owner; 2]>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_held_by(&self, id: Owner) -> bool {
        self.owners().contains(&id)
    }

    pub fn add_owner(&self, id: Owner) {
        self.owners().push(id);
    }

    pub fn remove_owner(&self, id: Owner) {
        let mut owners = self.owners();
        if let Some(i) = owners.iter().position(|o| *o == id) {
            owners.swap_remove(i);
        }
    }
}

/// The entries by lock path, and how many of them are idle (nobody asks
/// for or holds the lock: only the map refers to the entry).
#[derive(Debug, Default)]
struct Map {
    entries: FxHashMap<PathKey, Arc<Entry>>,
    idle: usize,
}

/// Idle entries kept for their next use, at most: an uncontended lock
/// taken again and again finds its entry instead of allocating one and
/// removing it each time (a visible share of its cost). Past this bound,
/// every idle entry is removed at once.
const IDLE_KEPT: usize = 64;

/// Per process: a child made by `fork()` must not inherit entries whose
/// queues are held by the parent's tasks (see `crate::per_process`).
static TABLE: PerProcess<Mutex<Map>> = PerProcess::new();

/// This process's table.
fn table() -> &'static Mutex<Map> {
    TABLE.get(|| Mutex::new(Map::default()))
}

fn lock_map(table: &'static Mutex<Map>) -> MutexGuard<'static, Map> {
    // Inserting and removing Arcs, and the count changed with them under
    // this same lock, cannot leave the map half-changed.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Number of lock paths currently in use in this process (idle entries
/// kept for reuse are not in use).
pub(crate) fn len() -> usize {
    let map = lock_map(table());
    map.entries.len() - map.idle
}

/// How many acquisitions of this process have asked for `lock_path` and
/// do not hold it (queued, trying or waiting): the entry's references less
/// the table's own and the holders'. For `test_util`'s wait for contention;
/// a reference taken or dropped around a grant or a release counts for that
/// moment.
#[cfg(feature = "test-util")]
pub(crate) fn asking(lock_path: &Path) -> usize {
    let map = lock_map(table());
    let Some(entry) = map.entries.get(lock_path.as_os_str()) else {
        return 0;
    };
    let holders = entry.owners().len();
    Arc::strong_count(entry).saturating_sub(1 + holders)
}

/// A counted reference to an entry. Created and dropped only under the table
/// mutex, so the strong count tells exactly when an entry is unused.
#[derive(Debug)]
pub(crate) struct EntryRef {
    entry: Option<Arc<Entry>>,
    /// The table it is in (the one of the process that entered).
    table: &'static Mutex<Map>,
}

/// The entry for `lock_path`, created if absent.
pub(crate) fn enter(lock_path: &Arc<Path>) -> EntryRef {
    let table = table();
    let mut map = lock_map(table);
    let entry = match map.entries.get(lock_path.as_os_str()) {
        Some(entry) => {
            let entry = Arc::clone(entry);
            // Only the map referred to it, and now we do too.
            if Arc::strong_count(&entry) == 2 {
                map.idle -= 1;
            }
            entry
        }
        None => {
            let entry = Arc::new(Entry {
                queue: Arc::new(RwLock::new(())),
                shared: tokio::sync::Mutex::new(Weak::new()),
                owners: Mutex::new(SmallVec::new()),
            });
            map.entries
                .insert(PathKey(Arc::clone(lock_path)), Arc::clone(&entry));
            entry
        }
    };
    EntryRef {
        entry: Some(entry),
        table,
    }
}

impl std::ops::Deref for EntryRef {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        // Some from creation until drop.
        self.entry.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for EntryRef {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let mut map = lock_map(self.table);
        // Ours plus the table's: nobody else holds or waits, and the entry
        // is idle once ours is dropped (under the map's lock, as every
        // other reference is taken and dropped).
        if Arc::strong_count(&entry) == 2 {
            drop(entry);
            map.idle += 1;
            if map.idle > IDLE_KEPT {
                map.entries.retain(|_, e| Arc::strong_count(e) > 1);
                map.idle = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(i: usize) -> Arc<Path> {
        Path::new(&format!("/run/table-test-{}/{i}.lock", std::process::id())).into()
    }

    #[test]
    fn an_idle_entry_is_reused_and_idle_ones_stay_bounded() {
        let a = path(0);
        let first = enter(&a);
        let ptr = Arc::as_ptr(first.entry.as_ref().expect("entry"));
        drop(first);
        let again = enter(&a);
        assert!(
            std::ptr::eq(ptr, Arc::as_ptr(again.entry.as_ref().expect("entry"))),
            "an uncontended lock reuses its idle entry"
        );
        drop(again);
        for i in 1..=10 * IDLE_KEPT {
            drop(enter(&path(i)));
        }
        let map = lock_map(table());
        // Other tests of this process may hold entries meanwhile: only the
        // idle ones are bounded.
        assert!(map.idle <= IDLE_KEPT, "{} idle entries kept", map.idle);
        assert_eq!(
            map.idle,
            map.entries
                .values()
                .filter(|e| Arc::strong_count(e) == 1)
                .count(),
            "the idle count is exact"
        );
    }
}
