//! Every Unix but Linux: what the crate does without Linux's extras. Only
//! compiled there (and in Linux unit tests); see the module docs of `sys`.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rustc_hash::FxHashMap;

/// Holders of locks by (major, minor, inode): never known here.
pub(crate) type LockHolders = FxHashMap<(u32, u32, u64), u32>;

/// No portable mount table: unknown, and paths are taken for local (see
/// the crate docs, "Platform").
pub(crate) fn network_mounts() -> Option<Vec<std::path::PathBuf>> {
    None
}

/// No portable way to ask who holds a `flock`: unknown.
pub(crate) fn lock_holders() -> Option<LockHolders> {
    None
}

/// How a lock in the OS's table is held (the Linux names; never met here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TableMode {
    /// Shared.
    Read,
    /// Exclusive.
    Write,
}

/// What the OS's lock table says of one file (never known here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileLocks {
    /// Holders, by pid then mode.
    pub holders: Vec<(u32, TableMode)>,
    /// Pids of blocked waiters.
    pub waiters: Vec<u32>,
}

/// [`FileLocks`] by (major, minor, inode).
pub(crate) type LockTable = FxHashMap<(u32, u32, u64), FileLocks>;

/// No portable lock table: unknown.
pub(crate) fn lock_table() -> Option<LockTable> {
    None
}

/// The key of a file in [`LockHolders`].
pub(crate) fn holder_key(dev: u64, ino: u64) -> (u32, u32, u64) {
    ((dev >> 32) as u32, dev as u32, ino)
}

/// Renames `from` to `to` unless `to` exists: by a hard link and an unlink.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    super::unix::rename_by_link(from, to)
}

/// No keep-size preallocation: the file grows as it is written.
pub(crate) fn reserve(_file: &File, _len: u64) {}

/// No file events: kept lock files are checked by `fstat` at every
/// holding. [`FileChanges::new`] always fails, so nothing else is called.
#[derive(Debug)]
pub(crate) struct FileChanges(());

/// What [`FileChanges::drain`] found (never made here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileChange {
    Changed(WatchId),
    Ended(WatchId),
    Unknown,
}

impl FileChanges {
    pub(crate) fn new() -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no file events on this platform",
        ))
    }

    pub(crate) fn watch(&self, _file: &File) -> io::Result<WatchId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no file events on this platform",
        ))
    }

    pub(crate) fn unwatch(&self, _id: WatchId) {}

    pub(crate) fn queued(&self) -> Option<bool> {
        None
    }

    pub(crate) fn drain(&self, mut f: impl FnMut(FileChange)) {
        f(FileChange::Unknown);
    }
}

/// No file events: waits poll. [`EventSource::watch`] always fails, and
/// [`EventSource::wait`] only sleeps until woken or timed out.
#[derive(Debug, Default)]
pub(crate) struct EventSource {
    woken: Mutex<bool>,
    wake: Condvar,
}

/// One watched file (never handed out here).
pub(crate) type WatchId = i32;

impl EventSource {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(EventSource::default())
    }

    pub(crate) fn watch(&self, _path: &Path) -> io::Result<WatchId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no file events on this platform",
        ))
    }

    pub(crate) fn unwatch(&self, _id: WatchId) {}

    pub(crate) fn wait(&self, timeout: Option<Duration>, _ready: &mut Vec<WatchId>) -> bool {
        let woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        let mut woken = match timeout {
            Some(t) => {
                self.wake
                    .wait_timeout_while(woken, t, |w| !*w)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .wake
                .wait_while(woken, |w| !*w)
                .unwrap_or_else(|p| p.into_inner()),
        };
        *woken = false;
        false
    }

    pub(crate) fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_knows_no_holder_watches_nothing_and_wakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("f")).expect("create");
        assert!(lock_holders().is_none());
        assert!(lock_table().is_none());
        assert_eq!(local_fs_name(0xef53), None);
        reserve(&file, 1 << 20);
        assert_eq!(file.metadata().expect("stat").len(), 0);
        let source = EventSource::new().expect("source");
        assert!(source.watch(&dir.path().join("f")).is_err());
        source.wake();
        let mut ready = Vec::new();
        assert!(!source.wait(None, &mut ready));
        assert!(!source.wait(Some(Duration::from_millis(1)), &mut ready));
    }
}

/// No portable way to read another process's command name.
pub(crate) fn command_name(_pid: u32) -> Option<String> {
    None
}

/// What this host says of a process; see the Linux version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessState {
    /// Running.
    Alive,
    /// Gone.
    Gone,
    /// Cannot tell.
    Unknown,
}

/// Without a start time a reused pid cannot be told from the old process:
/// never "gone" by pid here, so soft locks go stale by lease only.
pub(crate) fn process_state(_pid: u32, _start_time: u64) -> ProcessState {
    ProcessState::Unknown
}

/// Unknown without procfs.
pub(crate) fn process_start_time(_pid: u32) -> Option<u64> {
    None
}

/// Unknown without procfs: soft locks go stale by lease only.
pub(crate) fn boot_id() -> Option<String> {
    None
}

/// Unknown without procfs.
pub(crate) fn pid_namespace() -> Option<u64> {
    None
}

/// `statfs` magic numbers are Linux's.
pub(crate) fn network_fs_name(_magic: u64) -> Option<&'static str> {
    None
}

/// `statfs` magic numbers are Linux's.
pub(crate) fn local_fs_name(_magic: u64) -> Option<&'static str> {
    None
}
