//! Who holds a lock, for timeout errors: one read of the OS's lock table
//! serves every timeout of the moment, read ahead of the deadline of a
//! timed wait, and the lookup never holds a timeout back by more than
//! [`LOOKUP_BUDGET`].
//!
//! A thousand waits timing out together would otherwise read and parse
//! `/proc/locks` a thousand times (about a millisecond each with a thousand
//! locks held), and come back late. Here one read at a time runs on the
//! blocking pool and stores its snapshot itself, so a read slower than the
//! budget (tens of milliseconds with ten thousand locks held) still serves
//! the timeouts after it; a snapshot younger than [`FRESH_FOR`] is used
//! without reading at all.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::per_process::PerProcess;
use crate::sys::{LockHolders, holder_key, lock_holders};

/// How long a snapshot of the lock table answers lookups.
const FRESH_FOR: Duration = Duration::from_millis(250);

/// The longest a timeout waits for a snapshot before saying "unknown".
/// Timed waits read one ahead of their deadline ([`prefetch`]) and find it
/// ready; this bounds the others (a zero timeout, a loaded machine).
const LOOKUP_BUDGET: Duration = Duration::from_millis(100);

type Snapshot = (Instant, Arc<LockHolders>);

/// The latest snapshot, whether a read is under way, and who waits for it.
#[derive(Debug, Default)]
struct Table {
    latest: Mutex<Option<Snapshot>>,
    reading: AtomicBool,
    read: Notify,
}

fn table() -> &'static Table {
    static TABLE: PerProcess<Table> = PerProcess::new();
    TABLE.get(Table::default)
}

/// The pid holding a lock on `lock_path`, if the OS tells in time. Only a
/// snapshot taken after `since` (the start of the caller's wait, when its
/// lock file existed already) is believed about a holder: one from before
/// may name the holder of another file whose inode number was reused.
pub(super) async fn holder(lock_path: &Path, since: Instant) -> Option<u32> {
    let meta = std::fs::symlink_metadata(lock_path).ok()?;
    let key = holder_key(meta.dev(), meta.ino());
    let table = table();
    let asked = Instant::now();
    let deadline = tokio::time::Instant::now() + LOOKUP_BUDGET;
    loop {
        if let Some((taken, holders)) = fresh(table)
            && taken >= since
        {
            // A lock taken after the snapshot is not in it: a miss is
            // believed only from a snapshot taken after the question.
            if let Some(pid) = holders.get(&key) {
                return Some(*pid);
            }
            if taken >= asked {
                return None;
            }
        }
        let read = table.read.notified();
        tokio::pin!(read);
        read.as_mut().enable();
        start_read(table);
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            return None;
        }
    }
}

fn fresh(table: &Table) -> Option<Snapshot> {
    let latest = table.latest.lock().unwrap_or_else(|p| p.into_inner());
    latest
        .as_ref()
        .filter(|(at, _)| at.elapsed() < FRESH_FOR)
        .map(|(at, holders)| (*at, Arc::clone(holders)))
}

/// Reads a snapshot ahead of a deadline (unless a fresh one exists or a
/// read is under way): the timeout then names the holder from it at once.
pub(super) fn prefetch() {
    let table = table();
    if fresh(table).is_none() {
        start_read(table);
    }
}

/// Starts a read unless one is under way. The read stores its snapshot
/// and wakes the lookups waiting for it, whether or not they still wait.
fn start_read(table: &'static Table) {
    if table.reading.swap(true, Ordering::SeqCst) {
        return;
    }
    // Clears the flag however the read ends: done, panicked, or dropped
    // unrun with a runtime shutting down (the closure, and so this guard,
    // is dropped then too).
    let reading = ReadUnderWay(table);
    tokio::task::spawn_blocking(move || {
        let _reading = reading;
        // Dated before the read: everything locked before this moment is in
        // it. An unreadable table is an empty snapshot: holders unknown.
        let taken = Instant::now();
        let holders = lock_holders().unwrap_or_default();
        *table.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some((taken, Arc::new(holders)));
    });
}

/// A read under way; lets the next one start, and wakes the lookups
/// waiting for it, when dropped.
struct ReadUnderWay(&'static Table);

impl Drop for ReadUnderWay {
    fn drop(&mut self) {
        self.0.reading.store(false, Ordering::SeqCst);
        self.0.read.notify_waiters();
    }
}
