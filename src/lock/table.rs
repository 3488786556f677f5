//! The in-process table (law 5): one entry per lock path in use, shared by
//! every [`crate::Locks`] handle of the process.
//!
//! Waiters queue on the entry's `tokio::sync::RwLock`, which is fair (FIFO)
//! and cancel safe: a dropped waiter leaves the queue. Only the task at the
//! head talks to the backend, so a thousand tasks waiting for one lock cost
//! one blocking thread, not a thousand. Shared holders of one process share
//! one OS shared lock through `shared`.
//!
//! Entries live only while someone holds or waits: the last [`EntryRef`] to
//! go removes its entry, so touching a million distinct paths once leaves the
//! table empty.

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
    lock_path: Arc<Path>,
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

type Map = FxHashMap<PathKey, Arc<Entry>>;

/// Per process: a child made by `fork()` must not inherit entries whose
/// queues are held by the parent's tasks (see `crate::per_process`).
static TABLE: PerProcess<Mutex<Map>> = PerProcess::new();

/// This process's table.
fn table() -> &'static Mutex<Map> {
    TABLE.get(|| Mutex::new(FxHashMap::default()))
}

fn lock_map(table: &'static Mutex<Map>) -> MutexGuard<'static, Map> {
    // Inserting and removing Arcs cannot leave the map half-changed.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Number of lock paths currently in use in this process.
pub(crate) fn len() -> usize {
    lock_map(table()).len()
}

/// How many acquisitions of this process have asked for `lock_path` and
/// do not hold it (queued, trying or waiting): the entry's references less
/// the table's own and the holders'. For `test_util`'s wait for contention;
/// a reference taken or dropped around a grant or a release counts for that
/// moment.
#[cfg(feature = "test-util")]
pub(crate) fn asking(lock_path: &Path) -> usize {
    let map = lock_map(table());
    let Some(entry) = map.get(lock_path.as_os_str()) else {
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
    let entry = map
        .entry(PathKey(Arc::clone(lock_path)))
        .or_insert_with(|| {
            Arc::new(Entry {
                lock_path: Arc::clone(lock_path),
                queue: Arc::new(RwLock::new(())),
                shared: tokio::sync::Mutex::new(Weak::new()),
                owners: Mutex::new(SmallVec::new()),
            })
        })
        .clone();
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
        // Ours plus the table's: nobody else holds or waits.
        if Arc::strong_count(&entry) == 2 {
            map.remove(entry.lock_path.as_os_str());
        }
        drop(entry);
    }
}
