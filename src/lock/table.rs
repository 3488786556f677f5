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
//! (up to [`IDLE_KEPT`], least recently queued first, with a second chance
//! for one used since), so that an uncontended lock taken again and again
//! reuses its entry, and touching a million distinct paths once leaves at
//! most that many.

// Fx: keys are local paths, where hash flooding is no threat and SipHash
// was a visible share of an uncontended acquisition.
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use super::owner::Owner;
use super::shared::SharedHeld;
use crate::path_key::PathKey;
use crate::per_process::PerProcess;

/// State of one lock path in this process.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its key in the table, for the queue of idle entries.
    lock_path: Arc<Path>,
    /// Whether its key is in that queue (changed under the map's lock).
    queued_idle: AtomicBool,
    /// Used again since its key was queued: a second chance before it is
    /// evicted (changed under the map's lock).
    reused: AtomicBool,
    /// FIFO queue of this process's waiters; its guard is held with the lock.
    pub queue: Arc<RwLock<()>>,
    /// The OS shared lock all shared holders in this process use, if any.
    /// The async mutex makes concurrent shared waiters take it once.
    pub shared: tokio::sync::Mutex<Weak<SharedHeld>>,
    /// When a holder of this process last let go of it exclusively, in
    /// nanoseconds after [`epoch`] (0: not since the entry was made), and
    /// how long that holding lasted, in nanoseconds. Two stores, read
    /// without a lock: a hint, which a release in between may mix.
    released_at: AtomicU64,
    last_held: AtomicU64,
}

/// The instant release times are counted from (they are kept in atomics).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` in nanoseconds after [`epoch`], at least 1 (0 means never); an
/// instant before the epoch (read before the process first asked) counts
/// as the epoch.
fn since_epoch(at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

impl Entry {
    /// Notes that a holder of this process let go of the lock at `at`
    /// after holding it for `held`.
    pub fn note_release(&self, at: Instant, held: Duration) {
        let held = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
        self.last_held.store(held, Ordering::Relaxed);
        self.released_at.store(since_epoch(at), Ordering::Relaxed);
    }

    /// Whether a holder of this process let go of the lock within `window`
    /// before `at` (or after it) after holding it for less than `brief`:
    /// the process takes it back to back, briefly each time.
    pub fn released_within_after_brief(
        &self,
        window: Duration,
        brief: Duration,
        at: Instant,
    ) -> bool {
        let released = self.released_at.load(Ordering::Relaxed);
        released != 0
            && u128::from(since_epoch(at).saturating_sub(released)) < window.as_nanos()
            && u128::from(self.last_held.load(Ordering::Relaxed)) < brief.as_nanos()
    }

    /// Whether `id` holds this lock: for the same-task check
    /// ([`super::owner::SameTask`]) and to name this task as the holder in
    /// a timeout. Who holds what is recorded once, in [`super::order`].
    pub fn is_held_by(&self, id: Owner) -> bool {
        super::order::holds(id, &self.lock_path)
    }
}

/// The entries by lock path, and how many of them are idle (nobody asks
/// for or holds the lock: only the map refers to the entry), oldest idle
/// first. Every reference to an entry is taken and dropped under the map's
/// lock, so the count is exact.
#[derive(Debug, Default)]
struct Map {
    entries: FxHashMap<PathKey, Arc<Entry>>,
    idle: usize,
    /// Keys of entries in the order they went idle, each at most once
    /// (every idle entry's is here); an entry used again since keeps its
    /// place, and is skipped if it is in use when its key comes up.
    went_idle: VecDeque<PathKey>,
}

/// Idle entries kept for their next use, at most: an uncontended lock
/// taken again and again finds its entry instead of allocating one and
/// removing it each time (a visible share of its cost). Past this bound,
/// the oldest in the queue that was not used again since it was queued is
/// removed (a used one goes to the back: a second chance).
const IDLE_KEPT: usize = 64;

impl Map {
    /// `entry`, whose last user is about to drop it, went idle: counted,
    /// and past [`IDLE_KEPT`] one is removed (see there).
    fn went_idle(&mut self, entry: &Entry) {
        self.idle += 1;
        if !entry.queued_idle.swap(true, Ordering::Relaxed) {
            self.went_idle
                .push_back(PathKey(Arc::clone(&entry.lock_path)));
        }
        while self.idle > IDLE_KEPT {
            let Some(oldest) = self.went_idle.pop_front() else {
                break;
            };
            let Some(e) = self.entries.get(oldest.0.as_os_str()) else {
                continue;
            };
            let idle = Arc::strong_count(e) == 1 || std::ptr::eq(Arc::as_ptr(e), entry);
            if idle && e.reused.swap(false, Ordering::Relaxed) {
                // Used since it was queued: to the back, like a fresh one.
                self.went_idle.push_back(oldest);
                continue;
            }
            e.queued_idle.store(false, Ordering::Relaxed);
            if idle {
                self.entries.remove(oldest.0.as_os_str());
                self.idle -= 1;
            }
        }
    }
}

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
    map.entries.len().saturating_sub(map.idle)
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
    let holders = super::order::holders_of(lock_path);
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
            entry.reused.store(true, Ordering::Relaxed);
            let entry = Arc::clone(entry);
            // Only the map referred to it, and now we do too.
            if Arc::strong_count(&entry) == 2 {
                debug_assert!(map.idle > 0, "an idle entry was not counted");
                map.idle = map.idle.saturating_sub(1);
            }
            entry
        }
        None => {
            let entry = Arc::new(Entry {
                lock_path: Arc::clone(lock_path),
                queued_idle: AtomicBool::new(false),
                reused: AtomicBool::new(false),
                queue: Arc::new(RwLock::new(())),
                shared: tokio::sync::Mutex::new(Weak::new()),
                released_at: AtomicU64::new(0),
                last_held: AtomicU64::new(0),
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
        // is idle once ours is dropped. Dropped under the map's lock, as
        // every other reference is taken and dropped, or two last
        // references dropped at once would both see a third.
        if Arc::strong_count(&entry) == 2 {
            map.went_idle(&entry);
        }
        drop(entry);
        drop(map);
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
        assert!(
            map.went_idle.len() <= map.entries.len(),
            "each entry queued once at most"
        );
        assert_eq!(
            map.idle,
            map.entries
                .values()
                .filter(|e| Arc::strong_count(e) == 1)
                .count(),
            "the idle count is exact"
        );
    }

    #[test]
    fn a_release_counts_within_its_window_and_after_a_brief_holding_only() {
        let entry = enter(&path(3_000_000));
        // Instants before the epoch (the first one asked for) all count
        // as the epoch itself: this test's are after it.
        let _ = epoch();
        std::thread::sleep(Duration::from_millis(1));
        let now = Instant::now();
        let (window, brief) = (Duration::from_micros(100), Duration::from_micros(50));
        let recent = |at| entry.released_within_after_brief(window, brief, at);
        assert!(!recent(now), "never released");
        entry.note_release(now, Duration::from_micros(3));
        assert!(recent(now));
        assert!(recent(now + window - Duration::from_nanos(1)));
        assert!(!recent(now + window));
        // A clock read before the release (another thread's) is as recent.
        assert!(recent(now - Duration::from_micros(1)));
        // A holding that was not brief does not count.
        entry.note_release(now, brief);
        assert!(!recent(now));
    }

    /// A lock used between every use of many other paths is kept: used
    /// again since it was queued, it gets a second chance when its turn
    /// to be removed comes (found in review: it was freed every 64 uses).
    #[test]
    fn an_idle_entry_used_again_is_not_evicted_before_ones_used_once() {
        let hot = path(1_000_000);
        let first = enter(&hot);
        let kept = Arc::downgrade(first.entry.as_ref().expect("entry"));
        drop(first);
        for i in 0..10 * IDLE_KEPT {
            drop(enter(&hot));
            drop(enter(&path(2_000_000 + i)));
        }
        assert!(kept.upgrade().is_some(), "the hot entry was evicted");
    }
}
