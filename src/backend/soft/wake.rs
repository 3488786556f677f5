//! Waking soft waits when the lock file they wait on is removed or
//! changed, where the filesystem reports it (inotify on Linux; a network
//! filesystem reports only this host's changes): one crate thread and one
//! inotify instance per process, however many waits. The backoff poll of
//! the wait stays the backstop.
//!
//! A wait registers the lock file it found busy ([`watch`]); the thread
//! wakes every wait on that file when it hears of it (a release unlinks it:
//! the link count changes, `IN_ATTRIB`; or it is closed or removed).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::per_process::PerProcess;
use crate::sys::{EventSource, WatchId};

#[derive(Debug)]
struct Watcher {
    source: EventSource,
    /// The waits of each watched file, with how many registrations each.
    by_watch: Mutex<FxHashMap<WatchId, (Arc<Notify>, usize)>>,
}

/// A wait's registration; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Watch {
    watcher: &'static Watcher,
    id: WatchId,
    pub notify: Arc<Notify>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = self
            .watcher
            .by_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
                self.watcher.source.unwatch(self.id);
            }
        }
    }
}

fn watcher() -> Option<&'static Watcher> {
    static WATCHER: PerProcess<Option<&'static Watcher>> = PerProcess::new();
    *WATCHER.get(|| {
        let source = EventSource::new().ok()?;
        // Leaked once per process (per fork generation): the thread serves
        // it for the life of the process.
        let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
            source,
            by_watch: Mutex::default(),
        }));
        std::thread::Builder::new()
            .name("async-filelock-soft-wake".into())
            .spawn(move || run(watcher))
            .ok()?;
        Some(watcher)
    })
}

/// Registers a wait on the lock file at `path`; `None` where the file is
/// gone already or events cannot be had (the wait polls).
pub(crate) fn watch(path: &Path) -> Option<Watch> {
    let watcher = watcher()?;
    let id = watcher.source.watch(path).ok()?;
    let mut map = watcher.by_watch.lock().unwrap_or_else(|p| p.into_inner());
    let (notify, count) = map
        .entry(id)
        .or_insert_with(|| (Arc::new(Notify::new()), 0));
    *count += 1;
    Some(Watch {
        watcher,
        id,
        notify: Arc::clone(notify),
    })
}

fn run(watcher: &'static Watcher) {
    let mut ready = Vec::new();
    loop {
        ready.clear();
        let overflow = watcher.source.wait(None, &mut ready);
        let map = watcher.by_watch.lock().unwrap_or_else(|p| p.into_inner());
        if overflow {
            for (notify, _) in map.values() {
                notify.notify_waiters();
            }
            continue;
        }
        for id in &ready {
            if let Some((notify, _)) = map.get(id) {
                notify.notify_waiters();
            }
        }
    }
}
