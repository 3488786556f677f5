//! Who holds a lock, for timeout errors: one read of the OS's lock table
//! serves every timeout of the moment, and the lookup never holds a timeout
//! back by more than [`LOOKUP_BUDGET`].
//!
//! A thousand waits timing out together would otherwise read and parse
//! `/proc/locks` a thousand times (about a millisecond each with a thousand
//! locks held), and come back late. Here the first timeout reads it, on the
//! blocking pool; the others wait for that read and share it; a snapshot
//! younger than [`FRESH_FOR`] is used without reading at all.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::{LockHolders, holder_key, lock_holders};

/// How long a snapshot of the lock table answers lookups.
const FRESH_FOR: Duration = Duration::from_millis(100);

/// The longest a timeout waits for a snapshot before saying "unknown".
const LOOKUP_BUDGET: Duration = Duration::from_millis(20);

type Snapshot = (Instant, Arc<LockHolders>);

static LATEST: Mutex<Option<Snapshot>> = Mutex::new(None);

/// One read at a time; those who queue behind it use its result.
static READING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pid holding a lock on `lock_path`, if the OS tells in time.
pub(super) async fn holder(lock_path: &Path) -> Option<u32> {
    let meta = std::fs::symlink_metadata(lock_path).ok()?;
    let key = holder_key(meta.dev(), meta.ino());
    let holders = match fresh() {
        Some(holders) => holders,
        None => tokio::time::timeout(LOOKUP_BUDGET, read())
            .await
            .ok()
            .flatten()?,
    };
    holders.get(&key).copied()
}

fn fresh() -> Option<Arc<LockHolders>> {
    let latest = LATEST.lock().unwrap_or_else(|p| p.into_inner());
    latest
        .as_ref()
        .filter(|(at, _)| at.elapsed() < FRESH_FOR)
        .map(|(_, holders)| Arc::clone(holders))
}

async fn read() -> Option<Arc<LockHolders>> {
    let _one = READING.lock().await;
    if let Some(holders) = fresh() {
        return Some(holders);
    }
    let holders = Arc::new(tokio::task::spawn_blocking(lock_holders).await.ok()??);
    *LATEST.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), Arc::clone(&holders)));
    Some(holders)
}
