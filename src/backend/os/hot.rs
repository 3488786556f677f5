//! Hot lock files: a bounded set of lock-file descriptors this process
//! keeps open between holdings, so that taking a lock it took before is a
//! `flock` and an `fstat` (after its 1,024th keeping and one more full
//! check, a question to the process's file watch instead, see
//! [`super::identity`]) instead of an
//! `open`, a `flock`, an `fstat` and a `close` (the `open` is the dearest
//! of them: a path walk and a new open file description).
//!
//! Which files: those released without removal (manifests, telemetry,
//! SQLite, summaries: long-lived targets), on a local filesystem. A
//! descriptor is *checked out* while it is in use (by a holding, a busy
//! try, or a kernel wait that took it over from that try) and is in the set
//! only while nobody uses it, so no two users ever share one (two
//! descriptors of one process exclude each other like two processes).
//!
//! What is kept:
//! * the identity check: a descriptor taken from the set is confirmed
//!   after its `flock` like a fresh one (still a regular file, still
//!   linked), so a lock file removed while the descriptor sat here, by this
//!   crate or by hand, is noticed and opened anew by path; a hot file is
//!   watched ([`super::identity`]), and its `fstat` is then made only
//!   after the OS tells of a change;
//! * the lock dir's trust (law 10): a descriptor is used only while its
//!   lock dir is the one the check of [`crate::backend::dirs`] trusts now;
//! * the release event, after a holding that was not brief: a release by
//!   `LOCK_UN` does not close, and a close is what other processes' event
//!   waits listen for, so a release after a holding of 20 µs or more reads
//!   one byte of the lock file (`IN_ACCESS`, which they listen for too); a
//!   briefer holding's release is the unlock alone, found by their poll
//!   (`file::tells_release`); a file with nothing to read is closed
//!   instead;
//! * `fork()`: the set is per process
//!   ([`PerProcess`](crate::per_process::PerProcess)), and a holding
//!   inherited by a forked child is never unlocked by it (the open file
//!   description, and so the lock, is the parent's too).
//!
//! The bound is process-wide ([`super::set_max_hot_files`], 64 by
//! default, 0 to keep none); past it the least recently used descriptor is
//! closed. A process out of descriptors (`EMFILE`) closes all of them
//! before it gives up on an open. This module is the set itself; the lock
//! files kept in it, and when, are [`super::file`]'s.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::path_key::PathKey;

/// Descriptors kept per process unless configured.
pub(crate) const DEFAULT_HOT_FILES: usize = 64;

static MAX_HOT_FILES: AtomicUsize = AtomicUsize::new(DEFAULT_HOT_FILES);

/// Sets the bound (0: keep none). What is kept past it is closed by the
/// next [`HotSet::keep`], or at once through [`HotSet::take_all`].
pub(super) fn set_max(n: usize) {
    MAX_HOT_FILES.store(n, Ordering::SeqCst);
}

/// The bound.
pub(crate) fn max_hot_files() -> usize {
    MAX_HOT_FILES.load(Ordering::SeqCst)
}

/// Descriptors (`T`: a lock file with its lock dir) kept by lock path,
/// each in the set only while nobody uses it.
#[derive(Debug)]
pub(super) struct HotSet<T> {
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    files: FxHashMap<PathKey, Kept<T>>,
    /// Counts uses: the smallest `used` is the least recently used.
    clock: u64,
}

#[derive(Debug)]
struct Kept<T> {
    file: T,
    used: u64,
}

impl<T> Default for HotSet<T> {
    fn default() -> Self {
        HotSet {
            inner: Mutex::new(Inner {
                files: FxHashMap::default(),
                clock: 0,
            }),
        }
    }
}

impl<T> HotSet<T> {
    fn inner(&self) -> MutexGuard<'_, Inner<T>> {
        // A map changed entry by entry: a panic elsewhere cannot leave it
        // half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks out the descriptor kept for `lock_path`, if any.
    pub(super) fn take(&self, lock_path: &Path) -> Option<T> {
        let mut inner = self.inner();
        if inner.files.is_empty() {
            return None;
        }
        inner
            .files
            .remove(lock_path.as_os_str())
            .map(|kept| kept.file)
    }

    /// Keeps `file`; returns what must be closed (a descriptor already kept
    /// for the path, or the least recently used past the bound), for the
    /// caller to drop outside the set's lock.
    #[must_use = "dropping what is returned closes it"]
    pub(super) fn keep(&self, lock_path: Arc<Path>, file: T) -> Vec<T> {
        let mut inner = self.inner();
        // Read under the set's lock: a bound set to 0 meanwhile, and the
        // set emptied, never sees a descriptor kept after it.
        let max = max_hot_files();
        let mut closing = Vec::new();
        if max > 0 {
            inner.clock += 1;
            let used = inner.clock;
            if let Some(old) = inner.files.insert(PathKey(lock_path), Kept { file, used }) {
                closing.push(old.file);
            }
        } else {
            closing.push(file);
        }
        while inner.files.len() > max {
            // A linear scan, only when over the bound: the set is small.
            let Some(oldest) = inner
                .files
                .iter()
                .min_by_key(|(_, kept)| kept.used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(kept) = inner.files.remove(&oldest) {
                closing.push(kept.file);
            }
        }
        closing
    }

    /// Checks out everything kept, to be closed.
    #[must_use = "dropping what is returned closes it"]
    pub(super) fn take_all(&self) -> Vec<T> {
        self.inner()
            .files
            .drain()
            .map(|(_, kept)| kept.file)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(i: usize) -> Arc<Path> {
        Path::new(&format!("/locks/{i}.lock")).into()
    }

    #[test]
    fn a_kept_descriptor_is_taken_once_and_only_once() {
        let set = HotSet::default();
        assert!(set.keep(path(1), 10).is_empty());
        assert_eq!(set.take(&path(1)), Some(10));
        assert_eq!(set.take(&path(1)), None, "checked out, not shared");
    }

    #[test]
    fn keeping_a_second_for_one_path_closes_the_first() {
        let set = HotSet::default();
        assert!(set.keep(path(1), 10).is_empty());
        assert_eq!(set.keep(path(1), 11), vec![10]);
        assert_eq!(set.take(&path(1)), Some(11));
    }

    #[test]
    fn past_the_bound_the_least_recently_used_is_closed() {
        let set = HotSet::default();
        let max = max_hot_files();
        let mut closed = Vec::new();
        for i in 0..=max {
            closed.extend(set.keep(path(i), i));
        }
        assert_eq!(closed, vec![0], "the first kept is the least recently used");
        // Used again, 1 is now newer than 2.
        let one = set.take(&path(1)).expect("kept");
        closed.extend(set.keep(path(1), one));
        closed.extend(set.keep(path(max + 1), max + 1));
        assert_eq!(closed, vec![0, 2]);
        assert_eq!(set.take_all().len(), max);
    }
}
