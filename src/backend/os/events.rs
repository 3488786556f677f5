//! Event waits: the one thread that serves every wait beyond the kernel
//! waits, at no thread per wait (see [`super::waits`]).
//!
//! For each wait it keeps the lock file open and watches it
//! (`sys::EventSource`: inotify on Linux). A holder that releases by
//! closing its descriptor, by unlocking and reading a byte (this crate, for
//! a lock file it keeps open, after a holding that was not brief: see
//! `file::tells_release`), or removes the lock file, causes an event; the
//! wait then tries a non-blocking `flock`. A backoff poll from 1 ms is the
//! backstop for holders that unlock without telling, and for filesystems
//! without events (see [`longest_pause`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fs4::TryLockError;
use rustc_hash::FxHashMap;

use super::file::{LockFile, confirm, open_lock_file};
use super::flock::try_flock;
use super::pending::{Pending, Place};
use crate::error::LockError;
use crate::sys::{EventSource, WatchId};

/// The longest pause between two tries of a watched wait for a lock file
/// removed on release: its removal is the event; the poll only catches
/// another program's holder that unlocks without closing.
const POLL_WATCHED: Duration = Duration::from_millis(500);

/// The longest pause between two tries of a wait without events, or for a
/// lock file that stays: this crate's holder of one keeps its descriptor
/// and, after a brief holding, lets go by `LOCK_UN` alone, which no file
/// event tells (a lock held that briefly and not taken again at once is
/// free most of the time, and a try finds it so).
const POLL_UNWATCHED: Duration = Duration::from_millis(50);

/// The longest pause between two tries of a wait: by what can tell it of
/// the release.
fn longest_pause(watched: bool, removed_on_release: bool) -> Duration {
    if watched && removed_on_release {
        POLL_WATCHED
    } else {
        POLL_UNWATCHED
    }
}

/// The first pause.
const POLL_FIRST: Duration = Duration::from_millis(1);

/// The handle other threads use to give the event thread work.
#[derive(Debug)]
pub(super) struct Events {
    source: EventSource,
    inbox: Mutex<Vec<Command>>,
    /// Waits granted on a try an event caused.
    granted_on_events: AtomicU64,
}

#[derive(Debug)]
enum Command {
    Add(Arc<Pending>),
    Remove(Arc<Pending>),
}

/// One wait the event thread serves.
#[derive(Debug)]
struct Served {
    pending: Arc<Pending>,
    /// `None` while the process is out of descriptors: opened again at the
    /// next try.
    file: Option<LockFile>,
    watch: Option<WatchId>,
    next_try: Instant,
    pause: Duration,
}

impl Events {
    /// Starts the event thread.
    pub(super) fn start() -> io::Result<Arc<Events>> {
        let events = Arc::new(Events {
            source: EventSource::new()?,
            inbox: Mutex::new(Vec::new()),
            granted_on_events: AtomicU64::new(0),
        });
        let thread = Arc::clone(&events);
        std::thread::Builder::new()
            .name("async-filelock-events".into())
            .spawn(move || thread.run())?;
        Ok(events)
    }

    /// Serve `pending` by events.
    pub(super) fn add(&self, pending: Arc<Pending>) {
        self.send(Command::Add(pending));
    }

    /// Stop serving `pending` (abandoned, or taken over by a kernel thread).
    pub(super) fn remove(&self, pending: Arc<Pending>) {
        self.send(Command::Remove(pending));
    }

    /// Waits granted on a try an event caused, since the thread started.
    pub(super) fn granted_on_events(&self) -> u64 {
        self.granted_on_events.load(Ordering::Relaxed)
    }

    fn send(&self, command: Command) {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(command);
        self.source.wake();
    }

    fn run(&self) {
        let mut served: FxHashMap<usize, Served> = FxHashMap::default();
        let mut by_watch: FxHashMap<WatchId, Vec<usize>> = FxHashMap::default();
        // When each wait is next tried, earliest first. Entries go stale when
        // a wait is tried earlier (an event) or leaves; they are skipped
        // when they come up. A heap rather than a scan of every wait on
        // every wake-up, which made the thread's work grow with the square
        // of the number of waits.
        let mut schedule: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        let mut ready = Vec::new();
        let mut due = Vec::new();
        let mut evented = Vec::new();
        loop {
            let commands =
                std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|p| p.into_inner()));
            for command in commands {
                match command {
                    Command::Add(pending) => {
                        let id = key(&pending);
                        if let Some(entry) = self.open(pending) {
                            if let Some(w) = entry.watch {
                                by_watch.entry(w).or_default().push(id);
                            }
                            served.insert(id, entry);
                            due.push(id);
                        }
                    }
                    Command::Remove(pending) => {
                        self.drop_served(key(&pending), &mut served, &mut by_watch);
                    }
                }
            }
            // New waits are tried at once, but never instead of the events
            // and retries already due: with new ones, only look, don't wait.
            let timeout = if due.is_empty() {
                schedule
                    .peek()
                    .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            ready.clear();
            let overflow = self.source.wait(timeout, &mut ready);
            evented.clear();
            if overflow {
                evented.extend(served.keys().copied());
            } else {
                evented.extend(ready.iter().filter_map(|w| by_watch.get(w)).flatten());
            }
            evented.sort_unstable();
            due.extend_from_slice(&evented);
            let now = Instant::now();
            while let Some(Reverse((at, id))) = schedule.peek().copied() {
                if at > now {
                    break;
                }
                schedule.pop();
                if served.get(&id).is_some_and(|s| s.next_try == at) {
                    due.push(id);
                }
            }
            due.sort_unstable();
            due.dedup();
            for id in due.drain(..) {
                if self.attempt(id, &mut served, &mut by_watch)
                    && evented.binary_search(&id).is_ok()
                {
                    self.granted_on_events.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(s) = served.get(&id) {
                    schedule.push(Reverse((s.next_try, id)));
                }
            }
        }
    }

    /// Opens and watches the lock file of a new event wait; `None` (the
    /// wait finished with the error) if it cannot be opened. Out of
    /// descriptors, the wait is kept and opened again at its next try.
    fn open(&self, pending: Arc<Pending>) -> Option<Served> {
        let mut served = Served {
            pending,
            file: None,
            watch: None,
            next_try: Instant::now(),
            pause: POLL_FIRST,
        };
        match self.reopen(&mut served) {
            Ok(()) => Some(served),
            Err(e) => {
                finish(&served.pending, Err(e));
                None
            }
        }
    }

    /// Opens and watches the lock file of `served`, if it is not open.
    fn reopen(&self, served: &mut Served) -> Result<(), LockError> {
        if served.file.is_some() {
            return Ok(());
        }
        match open_lock_file(&served.pending.req) {
            Ok(file) => {
                served.file = Some(file);
                served.watch = self.source.watch(&served.pending.req.lock_path).ok();
                Ok(())
            }
            Err(LockError::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
            {
                tracing::debug!(lock_path = %served.pending.req.lock_path.display(), "out of descriptors; the wait polls until one is free");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// One non-blocking try for a served wait: granted (true), failed, or
    /// the next try scheduled.
    fn attempt(
        &self,
        id: usize,
        served: &mut FxHashMap<usize, Served>,
        by_watch: &mut FxHashMap<WatchId, Vec<usize>>,
    ) -> bool {
        let Some(entry) = served.get_mut(&id) else {
            return false;
        };
        {
            let inner = entry.pending.inner();
            if !inner.wanted || inner.place != Place::Events {
                drop(inner);
                self.drop_served(id, served, by_watch);
                return false;
            }
        }
        let was_watched = entry.watch;
        if let Err(e) = self.reopen(entry) {
            let pending = Arc::clone(&entry.pending);
            self.drop_served(id, served, by_watch);
            finish(&pending, Err(e));
            return false;
        }
        if was_watched.is_none()
            && let Some(w) = entry.watch
        {
            by_watch.entry(w).or_default().push(id);
        }
        let Some(file) = entry.file.as_ref() else {
            entry.next_try = Instant::now() + entry.pause;
            entry.pause = (entry.pause * 2).min(POLL_UNWATCHED);
            return false;
        };
        match try_flock(file, entry.pending.req.mode) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let cap =
                    longest_pause(entry.watch.is_some(), entry.pending.req.removed_on_release);
                entry.next_try = Instant::now() + entry.pause;
                entry.pause = (entry.pause * 2).min(cap);
                return false;
            }
            Err(TryLockError::Error(e)) => {
                let err = LockError::io("lock", &*entry.pending.req.lock_path, e);
                let pending = Arc::clone(&entry.pending);
                self.drop_served(id, served, by_watch);
                finish(&pending, Err(err));
                return false;
            }
        }
        let Some(entry) = self.take_served(id, served, by_watch) else {
            return false;
        };
        let Served { pending, file, .. } = entry;
        let Some(file) = file else {
            return false;
        };
        match confirm(file, &pending.req) {
            Ok(Some(held)) => {
                finish(&pending, Ok(held));
                return true;
            }
            Err(e) => finish(&pending, Err(e)),
            // The lock file was removed under us: serve the wait again on
            // the file now at the path.
            Ok(None) => {
                if let Some(entry) = self.open(pending) {
                    if let Some(w) = entry.watch {
                        by_watch.entry(w).or_default().push(id);
                    }
                    served.insert(id, entry);
                }
            }
        }
        false
    }

    fn take_served(
        &self,
        id: usize,
        served: &mut FxHashMap<usize, Served>,
        by_watch: &mut FxHashMap<WatchId, Vec<usize>>,
    ) -> Option<Served> {
        let entry = served.remove(&id)?;
        if let Some(w) = entry.watch
            && let Some(ids) = by_watch.get_mut(&w)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                by_watch.remove(&w);
                self.source.unwatch(w);
            }
        }
        Some(entry)
    }

    fn drop_served(
        &self,
        id: usize,
        served: &mut FxHashMap<usize, Served>,
        by_watch: &mut FxHashMap<WatchId, Vec<usize>>,
    ) {
        drop(self.take_served(id, served, by_watch));
    }
}

/// The event thread's name for a wait.
fn key(pending: &Arc<Pending>) -> usize {
    Arc::as_ptr(pending) as usize
}

/// Ends an event wait: hands the outcome to its future, if it still wants
/// it (which then takes the wait out of the registry); else a granted lock
/// is let go.
fn finish(pending: &Arc<Pending>, outcome: Result<super::file::OsHeld, LockError>) {
    let (unwanted, waker) = {
        let mut inner = pending.inner();
        if inner.wanted && inner.place == Place::Events {
            (None, inner.finish(outcome))
        } else {
            (Some(outcome), None)
        }
    };
    drop(unwanted);
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_polls_by_what_can_tell_it_of_the_release() {
        // Removed on release, watched: the removal is the event.
        assert_eq!(longest_pause(true, true), POLL_WATCHED);
        assert_eq!(longest_pause(false, true), POLL_UNWATCHED);
        // A lock file that stays may be let go by `LOCK_UN` alone, which
        // no event tells: polled as often as without events.
        assert_eq!(longest_pause(true, false), POLL_UNWATCHED);
        assert_eq!(longest_pause(false, false), POLL_UNWATCHED);
        assert!(POLL_UNWATCHED < POLL_WATCHED);
    }
}
