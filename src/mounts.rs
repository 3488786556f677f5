//! Which paths are on a network filesystem, where any file call (`open`,
//! `mkdir`, `realpath`, `stat`) may hang for as long as the server is away.
//!
//! On local disks those calls cannot hang, so an acquisition makes them on
//! the calling runtime thread (law 3: an uncontended lock costs a few
//! system calls, no thread hop). Under a network mount they run on the
//! blocking pool instead, so a hung server stalls the acquisitions that
//! need it, never the runtime; and a JSONL sink there reopens its file for
//! each commit (NFS gives close-to-open consistency, not a shared append
//! position).
//!
//! The mount table comes from the platform (`sys::network_mounts`: Linux
//! reads `/proc/self/mountinfo`, which never waits on a mount, unlike
//! `statfs`) and is read again every [`REFRESH`]. Operators can name more
//! such places in `ASYNC_FILELOCK_NETWORK_FS` (paths separated by `:`), for
//! a filesystem the table does not tell (a block device served over the
//! network, say). The match is by path, as spelled once made absolute: a
//! symlink on a local disk that leads into a network mount is seen as
//! remote once resolved (callers check the resolved path too), but its
//! first resolution runs where the caller is.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::per_process::PerProcess;
use crate::sys::nanos;

/// How long a read of the mount table is used.
const REFRESH: Duration = Duration::from_secs(5);

/// The environment variable naming more network places.
pub(crate) const NETWORK_FS_VAR: &str = "ASYNC_FILELOCK_NETWORK_FS";

#[derive(Debug)]
struct Table {
    /// When, by [`crate::sys::coarse_now`].
    read_at: Duration,
    network: Arc<[PathBuf]>,
}

static TABLE: PerProcess<RwLock<Option<Table>>> = PerProcess::new();

/// The network places known now (the mount table read at most
/// [`REFRESH`] before): taken once per acquisition, then asked of each of
/// its paths. Without any (the usual case) it costs two atomic loads and
/// holds nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Places(Option<Arc<[PathBuf]>>);

impl Places {
    /// Whether file calls on `path` may hang on the network: it is at or
    /// under a network mount point (or a place named in
    /// [`NETWORK_FS_VAR`]). A relative path is taken from the current
    /// directory.
    pub(crate) fn may_hang(&self, path: &Path) -> bool {
        match &self.0 {
            None => false,
            Some(places) => under(places, path),
        }
    }
}

/// Until when (by [`crate::sys::coarse_now`], in nanoseconds) the last read
/// of the mount table, which found no network places, is good: the usual
/// case answered by two atomic loads, no lock. With the fork generation of
/// the process that read it: a forked child reads its own (it may set
/// [`NETWORK_FS_VAR`], or mount in a namespace of its own).
static NONE_UNTIL: AtomicU64 = AtomicU64::new(0);
static NONE_READ_IN: AtomicU64 = AtomicU64::new(0);

/// The network places known now; see [`Places`].
pub(crate) fn places() -> Places {
    let now = crate::sys::coarse_now();
    // The generation first: the deadline seen after it is its own, or a
    // later one (see the stores below).
    if NONE_READ_IN.load(Ordering::Acquire) == crate::sys::fork_generation()
        && nanos(now) < NONE_UNTIL.load(Ordering::Acquire)
    {
        return Places(None);
    }
    let table = TABLE.get(|| RwLock::new(None));
    {
        let read = table.read().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = read.as_ref()
            && now.saturating_sub(t.read_at) < REFRESH
        {
            return Places((!t.network.is_empty()).then(|| Arc::clone(&t.network)));
        }
    }
    // Read without holding the lock (a long mount table takes a moment);
    // two threads may both read it, and either result is right.
    let network: Arc<[PathBuf]> = read_network_places().into();
    let places = Places((!network.is_empty()).then(|| Arc::clone(&network)));
    let none = network.is_empty();
    *table.write().unwrap_or_else(|p| p.into_inner()) = Some(Table {
        read_at: now,
        network,
    });
    // Deadline off, then the generation, then the deadline: a reader that
    // sees this generation never sees a deadline of an earlier one (a
    // forked child's parent's).
    NONE_UNTIL.store(0, Ordering::Relaxed);
    NONE_READ_IN.store(crate::sys::fork_generation(), Ordering::Release);
    NONE_UNTIL.store(
        if none {
            nanos(now.saturating_add(REFRESH))
        } else {
            0
        },
        Ordering::Release,
    );
    places
}

/// [`Places::may_hang`] with the places known now.
pub(crate) fn may_hang(path: &Path) -> bool {
    places().may_hang(path)
}

/// Whether `path` is at or under one of `places`.
fn under(places: &[PathBuf], path: &Path) -> bool {
    let absolute;
    let path = if path.is_absolute() {
        path
    } else {
        // getcwd reads the kernel's own record of the directory: it does
        // not wait on the filesystem the directory is on.
        match std::env::current_dir() {
            Ok(cwd) => {
                absolute = cwd.join(path);
                &absolute
            }
            Err(_) => return true,
        }
    };
    places.iter().any(|m| path.starts_with(m))
}

fn read_network_places() -> Vec<PathBuf> {
    let mut places = crate::sys::network_mounts().unwrap_or_default();
    if let Some(named) = std::env::var_os(NETWORK_FS_VAR) {
        places.extend(std::env::split_paths(&named).filter(|p| p.is_absolute()));
    }
    places
}
