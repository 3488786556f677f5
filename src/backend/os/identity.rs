//! Whether a kept lock file (see [`super::hot`]) is still the file it was
//! when last checked, told without an `fstat` per holding.
//!
//! A descriptor taken from the hot set is checked after its `flock` (see
//! [`super::file::confirm`]): still linked, still a regular file, still
//! owned as the lock dir requires. That `fstat` was the dearest call of an
//! uncontended holding, about as much as the `flock` and `LOCK_UN` around
//! it. Here the OS tells instead: each kept lock file is watched
//! ([`FileChanges`]: inotify, through an epoll set) for whatever changes
//! that answer (unlinked or replaced, renamed, owner or mode changed,
//! written or truncated), and a holding asks one question of the whole
//! process, "has anything been queued?", in a call that costs half the
//! `fstat`. Only when something has (rarely: lock files are not touched
//! while in use) is the queue read and the files named in it checked by
//! `fstat` again.
//!
//! Why a change is never missed:
//! * a watch is made before the full check it vouches for: a new one
//!   starts marked suspect, so the next holding checks in full, and
//!   every change after that check is queued;
//! * a change that matters is made before the `flock` that asks: this
//!   crate removes a lock file only while holding its lock, and the kernel
//!   queues the event (and marks the epoll set ready) inside the call that
//!   made the change, so a question asked after the `flock` returned sees
//!   it. (A lock file removed by hand while its lock is held elsewhere is a
//!   race with any check, the `fstat` too: the holder's next holding sees
//!   it, as before.)
//! * events read by another thread are seen through the marks that thread
//!   leaves: a drain marks every watch it read of before it ends, and the
//!   [`Watcher::drains`] count (odd while one runs) tells a question that
//!   overlapped a drain to check in full;
//! * lost events (the queue overflowed, reading it failed) mark every
//!   watch; a watch that ended (its filesystem unmounted) tells nothing
//!   any more and is always checked in full.
//!
//! Where there is no watcher (not Linux, inotify's per-user limit reached,
//! no procfs to name a descriptor by), or no watch for a file (the per-user
//! limit of watches reached), every holding checks by `fstat`, as before.
//! The watcher is per process: a forked child makes its own and never reads
//! or changes its parent's.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rustc_hash::FxHashMap;

use crate::per_process::PerProcess;
use crate::sys::{FileChange, FileChanges, WatchId, fork_generation};

/// One watched lock file, shared by every descriptor of it this process
/// keeps (a file watched twice is one watch).
#[derive(Debug)]
pub(super) struct Watch {
    id: WatchId,
    marks: Arc<Marks>,
    /// The process that made it: a forked child's copy is not its own.
    generation: u64,
}

/// What drains leave on a watch (read under no lock, set under the
/// watcher's).
#[derive(Debug)]
struct Marks {
    /// The file may have changed since its last full check.
    suspect: AtomicBool,
    /// The watch ended: it tells nothing any more.
    ended: AtomicBool,
}

/// The process's watches and their event queue.
#[derive(Debug)]
struct Watcher {
    changes: FileChanges,
    /// Drains started and ended: odd while one runs.
    drains: AtomicU64,
    watches: Mutex<FxHashMap<WatchId, Known>>,
}

/// A live watch as the watcher knows it: weakly, with its marks, which a
/// drain sets without touching the watch itself (a last reference may be
/// dropped only outside the watcher's lock: the watch's `Drop` takes it).
#[derive(Debug)]
struct Known {
    watch: Weak<Watch>,
    marks: Arc<Marks>,
}

/// This process's watcher; `None` where it cannot be had.
fn watcher() -> Option<&'static Watcher> {
    static WATCHER: PerProcess<Option<Watcher>> = PerProcess::new();
    WATCHER
        .get(|| {
            FileChanges::new()
                .map_err(|e| {
                    tracing::debug!(error = %e, "kept lock files are checked by fstat: no file events");
                })
                .ok()
                .map(|changes| Watcher {
                    changes,
                    drains: AtomicU64::new(0),
                    watches: Mutex::new(FxHashMap::default()),
                })
        })
        .as_ref()
}

impl Watcher {
    fn watches(&self) -> MutexGuard<'_, FxHashMap<WatchId, Known>> {
        // A map changed entry by entry: a panic elsewhere cannot leave it
        // half-changed.
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the queue, marking each watch it names (every watch if events
    /// were lost).
    fn drain(&self) {
        let watches = self.watches();
        self.drains.fetch_add(1, Ordering::SeqCst);
        let mark = |marks: &Marks, ended: bool| {
            marks.suspect.store(true, Ordering::SeqCst);
            if ended {
                marks.ended.store(true, Ordering::SeqCst);
            }
        };
        self.changes.drain(|change| match change {
            FileChange::Changed(id) => {
                if let Some(known) = watches.get(&id) {
                    mark(&known.marks, false);
                }
            }
            FileChange::Ended(id) => {
                if let Some(known) = watches.get(&id) {
                    mark(&known.marks, true);
                }
            }
            FileChange::Unknown => {
                for known in watches.values() {
                    mark(&known.marks, false);
                }
            }
        });
        self.drains.fetch_add(1, Ordering::SeqCst);
    }
}

/// A watch of the file `file` is open on, to be checked in full once
/// before it vouches for anything; `None` if there is no watcher or the
/// file cannot be watched (then `fstat` checks it).
pub(super) fn watch(file: &File) -> Option<Arc<Watch>> {
    let watcher = watcher()?;
    let mut watches = watcher.watches();
    let id = match watcher.changes.watch(file) {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(error = %e, "kept lock file checked by fstat: cannot watch it");
            return None;
        }
    };
    // Dropped after the watcher's lock: dropping a last reference takes it.
    let mut replaced = None;
    if let Some(known) = watches.get(&id).and_then(|known| known.watch.upgrade()) {
        if !known.marks.ended.load(Ordering::SeqCst) {
            return Some(known);
        }
        replaced = Some(known);
    }
    let marks = Arc::new(Marks {
        suspect: AtomicBool::new(true),
        ended: AtomicBool::new(false),
    });
    let watch = Arc::new(Watch {
        id,
        marks: Arc::clone(&marks),
        generation: fork_generation(),
    });
    watches.insert(
        id,
        Known {
            watch: Arc::downgrade(&watch),
            marks,
        },
    );
    drop(watches);
    drop(replaced);
    Some(watch)
}

impl Watch {
    /// Whether the file is still what its last full check found: nothing
    /// queued, marked or missed since. Asked after the `flock`.
    pub(super) fn unchanged(&self) -> bool {
        if self.generation != fork_generation() {
            return false;
        }
        let Some(watcher) = watcher() else {
            return false;
        };
        let drains = watcher.drains.load(Ordering::SeqCst);
        if drains % 2 == 1
            || self.marks.suspect.load(Ordering::SeqCst)
            || self.marks.ended.load(Ordering::SeqCst)
        {
            return false;
        }
        if watcher.changes.queued() {
            watcher.drain();
            return false;
        }
        // A drain that read this file's event before the question above
        // found the queue empty has marked it, or is still counted as
        // running.
        !self.marks.suspect.load(Ordering::SeqCst)
            && watcher.drains.load(Ordering::SeqCst) == drains
    }

    /// Before a full check: changes from now on mark it again.
    pub(super) fn checking(&self) {
        self.marks.suspect.store(false, Ordering::SeqCst);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.generation != fork_generation() {
            // The parent's watch, in its queue: not this process's to end.
            return;
        }
        let Some(watcher) = watcher() else {
            return;
        };
        let mut watches = watcher.watches();
        // Ours, unless a new watch of the same file took the id since our
        // last reference went (the kernel gives a file's id again while
        // its watch lives).
        if watches
            .get(&self.id)
            .is_some_and(|known| known.watch.strong_count() == 0)
        {
            watches.remove(&self.id);
            watcher.changes.unwatch(self.id);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    fn lock_file(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, File) {
        let path = dir.join(name);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("open");
        file.write_all(b"/target\n").expect("record");
        (path, file)
    }

    /// Whether `watch` vouches for its file once other tests' events (the
    /// watcher is the process's, and tests run at once) are read: a
    /// question that finds any event queued, or a drain running, answers
    /// no, which only costs a full check.
    fn vouches(watch: &Watch) -> bool {
        (0..1000).any(|_| watch.unchanged())
    }

    /// Checked in full once, then vouched for.
    fn checked(watch: &Watch) {
        assert!(!watch.unchanged(), "a new watch vouches for nothing");
        watch.checking();
        assert!(vouches(watch), "nothing changed since the check");
    }

    #[test]
    fn each_change_of_identity_is_told_once_and_a_check_clears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        type Change<'a> = (&'a str, &'a dyn Fn(&std::path::Path, &File));
        let changes: [Change<'_>; 5] = [
            ("unlinked", &|path, _| {
                std::fs::remove_file(path).expect("rm")
            }),
            ("replaced by a rename", &|path, _| {
                let other = path.with_extension("new");
                std::fs::write(&other, b"x").expect("write");
                std::fs::rename(&other, path).expect("rename");
            }),
            ("renamed away", &|path, _| {
                std::fs::rename(path, path.with_extension("away")).expect("rename")
            }),
            ("its mode changed", &|path, _| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod")
            }),
            ("truncated", &|_, file| file.set_len(0).expect("truncate")),
        ];
        for (i, (what, change)) in changes.iter().enumerate() {
            let (path, file) = lock_file(dir.path(), &format!("{i}.lock"));
            let watch = watch(&file).expect("watch");
            checked(&watch);
            change(&path, &file);
            assert!(!watch.unchanged(), "{what}: not told");
            assert!(!watch.unchanged(), "{what}: told, then forgotten unchecked");
            watch.checking();
            assert!(vouches(&watch), "{what}: still told after a check");
        }
    }

    #[test]
    fn reading_or_locking_the_file_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, file) = lock_file(dir.path(), "a.lock");
        let watch = watch(&file).expect("watch");
        checked(&watch);
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_at(&file, &mut byte, 0).expect("read");
        crate::backend::os::flock::try_flock(&file, crate::mode::LockMode::Exclusive)
            .expect("lock");
        crate::backend::os::flock::unlock(&file).expect("unlock");
        assert!(vouches(&watch));
    }

    #[test]
    fn one_file_watched_twice_is_one_watch_and_ends_with_its_last_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, file) = lock_file(dir.path(), "a.lock");
        let again = File::open(&path).expect("open again");
        let first = watch(&file).expect("watch");
        let second = watch(&again).expect("watch");
        assert!(Arc::ptr_eq(&first, &second));
        let id = first.id;
        drop((first, second));
        let watcher = watcher().expect("watcher");
        assert!(
            !watcher.watches().contains_key(&id),
            "ended with its last user"
        );
        // A new watch of the file starts unchecked.
        let third = watch(&file).expect("watch");
        assert!(!third.unchanged());
    }

    #[test]
    fn a_change_read_by_another_drain_is_still_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a_path, a) = lock_file(dir.path(), "a.lock");
        let (_, b) = lock_file(dir.path(), "b.lock");
        let (a_watch, b_watch) = (watch(&a).expect("watch"), watch(&b).expect("watch"));
        checked(&a_watch);
        checked(&b_watch);
        std::fs::remove_file(&a_path).expect("rm");
        // b's question reads the queue, a's event with it.
        assert!(!b_watch.unchanged(), "something was queued");
        assert!(vouches(&b_watch), "b itself did not change");
        assert!(
            !a_watch.unchanged(),
            "a's change, read by b's drain, was lost"
        );
    }
}
