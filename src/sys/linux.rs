//! Linux: who holds a lock (`/proc/locks`), keep-size preallocation
//! (`fallocate`), and file events for waits (inotify, woken through an
//! eventfd). All through rustix's safe wrappers: no `unsafe` here.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustc_hash::FxHashMap;
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, epoll, eventfd, poll};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// How many times `/proc/locks` is read into one snapshot. The kernel hands
/// it out a page per `read`, restarting its walk by line number each time,
/// so a lock released elsewhere between two reads shifts the rest of the
/// list and one line can be skipped; on a busy host it can be the holder's
/// (seen in CI, with eight processes locking and unlocking while a test read
/// the table). The union of three reads finds it.
const READS: usize = 3;

/// Mount points of filesystems where a file call may hang on the network
/// (NFS, SMB/CIFS, Ceph, 9p, AFS, Lustre, cluster filesystems, and FUSE
/// filesystems that reach over the network: sshfs, s3fs, rclone, …), from `/proc/self/mountinfo`: reading procfs never
/// waits on such a mount, unlike `statfs` of a path on it. `None` if the
/// table cannot be read.
pub(crate) fn network_mounts() -> Option<Vec<std::path::PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(parse_network_mounts(&text))
}

/// The network mount points in a `mountinfo` text (see `proc(5)`): the
/// fifth field is the mount point (octal escapes for blanks), and the
/// filesystem type follows the `-` separator.
pub(crate) fn parse_network_mounts(text: &str) -> Vec<std::path::PathBuf> {
    const NETWORK: &[&str] = &[
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "ceph",
        "9p",
        "afs",
        "lustre",
        "gfs2",
        "ocfs2",
        "glusterfs",
        "davfs",
        "gpfs",
        "beegfs",
    ];
    // FUSE filesystems that reach over the network. Not every FUSE
    // filesystem: rootless containers put `/` on `fuse-overlayfs`, which is
    // local; `ASYNC_FILELOCK_NETWORK_FS` names others.
    const NETWORK_FUSE: &[&str] = &[
        "sshfs",
        "s3fs",
        "gcsfuse",
        "rclone",
        "juicefs",
        "glusterfs",
        "ceph-fuse",
        "cephfs",
        "lizardfs",
        "moosefs",
        "mfs",
        "goofys",
        "davfs",
        "blobfuse",
        "blobfuse2",
        "seaweedfs",
    ];
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let network = match fstype.split_once('.') {
            Some(("fuse" | "fuseblk", subtype)) => NETWORK_FUSE.contains(&subtype),
            _ => NETWORK.contains(fstype),
        };
        if network {
            out.push(std::path::PathBuf::from(unescape_octal(mount_point)));
        }
    }
    out
}

/// `\040` → space, as the kernel escapes blanks and backslashes in
/// mount points.
fn unescape_octal(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes.get(i + 1..i + 4)
            && let Ok(text) = std::str::from_utf8(code)
            && let Ok(byte) = u8::from_str_radix(text, 8)
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::ffi::OsString::from_vec(out)
}

/// Holders of `flock` locks by (major, minor, inode).
pub(crate) type LockHolders = FxHashMap<(u32, u32, u64), u32>;

/// Every holder of a granted lock, from `/proc/locks`. Blocks for the reads
/// (about a millisecond with a thousand locks held); `None` if the table
/// cannot be read.
pub(crate) fn lock_holders() -> Option<LockHolders> {
    let mut holders = LockHolders::default();
    let mut read_any = false;
    for _ in 0..READS {
        if let Ok(table) = std::fs::read_to_string("/proc/locks") {
            read_any = true;
            parse_holders(&table, &mut holders);
        }
    }
    read_any.then_some(holders)
}

/// The key of a file in [`LockHolders`].
pub(crate) fn holder_key(dev: u64, ino: u64) -> (u32, u32, u64) {
    (rustix::fs::major(dev), rustix::fs::minor(dev), ino)
}

/// Parses lines such as `1: FLOCK  ADVISORY  WRITE 1785 fe:00:10010649 0 EOF`;
/// lines with `->` are blocked waiters, not holders.
fn parse_holders(table: &str, into: &mut LockHolders) {
    for line in table.lines().filter_map(parse_lock_line) {
        if !line.waiter {
            into.entry(line.key).or_insert(line.pid);
        }
    }
}

/// One line of `/proc/locks`, as the parsers above and below read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LockLine {
    key: (u32, u32, u64),
    pid: u32,
    /// `None` for a mode that is neither `READ` nor `WRITE` (a lease
    /// being broken, say).
    mode: Option<TableMode>,
    /// A blocked waiter (`->`), not a holder.
    waiter: bool,
}

/// `1: FLOCK  ADVISORY  WRITE 1785 fe:00:10010649 0 EOF`, or with `->`
/// after the number for a waiter; `None` for anything else.
fn parse_lock_line(line: &str) -> Option<LockLine> {
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    let waiter = fields.get(1) == Some(&"->");
    if waiter {
        fields.remove(1);
    }
    if fields.len() < 6 {
        return None;
    }
    let pid: u32 = fields[4].parse().ok()?;
    let mut id = fields[5].split(':');
    let maj = u32::from_str_radix(id.next()?, 16).ok()?;
    let min = u32::from_str_radix(id.next()?, 16).ok()?;
    let inode: u64 = id.next()?.parse().ok()?;
    let mode = match fields[3] {
        "READ" => Some(TableMode::Read),
        "WRITE" => Some(TableMode::Write),
        _ => None,
    };
    Some(LockLine {
        key: (maj, min, inode),
        pid,
        mode,
        waiter,
    })
}

/// How a lock in the OS's table is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TableMode {
    /// Shared (`READ`).
    Read,
    /// Exclusive (`WRITE`).
    Write,
}

/// What the OS's lock table says of one file: who holds a lock on it, how,
/// and which processes wait for one. For tools that show a lock dir
/// (`lock-doctor list`), where a timeout's lookup needs only a pid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileLocks {
    /// Holders, by pid then mode, each once.
    pub holders: Vec<(u32, TableMode)>,
    /// Pids of the processes blocked waiting, each once.
    pub waiters: Vec<u32>,
}

/// [`FileLocks`] by (major, minor, inode); see [`holder_key`].
pub(crate) type LockTable = FxHashMap<(u32, u32, u64), FileLocks>;

/// The whole lock table, from `/proc/locks`: every holder with its mode and
/// every waiter. Read [`READS`] times and merged, as [`lock_holders`] is,
/// because one read can skip a line. `None` if it cannot be read.
pub(crate) fn lock_table() -> Option<LockTable> {
    let mut table = LockTable::default();
    let mut read_any = false;
    for _ in 0..READS {
        if let Ok(text) = std::fs::read_to_string("/proc/locks") {
            read_any = true;
            parse_table(&text, &mut table);
        }
    }
    read_any.then_some(table)
}

/// Merges the lines of one read of `/proc/locks` into `into`.
fn parse_table(text: &str, into: &mut LockTable) {
    for line in text.lines().filter_map(parse_lock_line) {
        let entry = into.entry(line.key).or_default();
        if line.waiter {
            if let Err(at) = entry.waiters.binary_search(&line.pid) {
                entry.waiters.insert(at, line.pid);
            }
        } else if let Some(mode) = line.mode
            && let Err(at) = entry.holders.binary_search(&(line.pid, mode))
        {
            entry.holders.insert(at, (line.pid, mode));
        }
    }
}

/// The name of a common local filesystem type by its `statfs` magic, for
/// people reading a report: `None` for one not named here (network ones
/// are [`network_fs_name`]'s).
pub(crate) fn local_fs_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0xef53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlayfs",
        0x2fc1_2fc1 => "zfs",
        0xf2f5_2010 => "f2fs",
        0x8584_58f6 => "ramfs",
        0x3434 => "nilfs2",
        0x4d44 => "vfat",
        0x5346_544e => "ntfs",
        0x2011_bab0 => "exfat",
        0x7366_7173 => "squashfs",
        _ => return None,
    })
}

/// Reserves `len` bytes of disk for `file` without changing its size, so a
/// `.part` left by a crash still measures exactly what was written (which
/// resuming relies on). fs4's `allocate` extends the size, hence
/// `fallocate(FALLOC_FL_KEEP_SIZE)`; filesystems without it just skip it.
pub(crate) fn reserve(file: &File, len: u64) {
    if let Err(e) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        tracing::debug!(error = %io::Error::from(e), "preallocation skipped");
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then, and
/// nothing moved): `renameat2(RENAME_NOREPLACE)`, or a hard link and an
/// unlink on filesystems without it.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            super::unix::rename_by_link(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Events on lock files, for waits that hold no thread: inotify tells when
/// a file is closed (a holder releasing by closing, as most programs do),
/// read (this crate's release of a lock file it keeps open, after a holding
/// that was not brief: `LOCK_UN`, then a one-byte read), or unlinked or
/// renamed (a lock file removed on release); an eventfd lets other threads
/// wake the one waiting here.
#[derive(Debug)]
pub(crate) struct EventSource {
    /// `None` when inotify could not be had (its per-user limit of
    /// instances reached): every wait then polls.
    inotify: Option<OwnedFd>,
    wake: OwnedFd,
}

/// One watched file, as the event source names it.
pub(crate) type WatchId = i32;

impl EventSource {
    pub(crate) fn new() -> io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let inotify = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %io::Error::from(e), "no inotify: lock waits beyond the wait threads will poll");
                None
            }
        };
        Ok(EventSource { inotify, wake })
    }

    /// Watches `path` (the file it names now). Watching one file twice
    /// gives the same id.
    pub(crate) fn watch(&self, path: &Path) -> io::Result<WatchId> {
        // ACCESS: a holder that keeps its descriptor open lets go by
        // `LOCK_UN` and then, after a holding that was not brief, reads a
        // byte (this crate's lock files that stay).
        let flags = WatchFlags::CLOSE_WRITE
            | WatchFlags::CLOSE_NOWRITE
            | WatchFlags::ACCESS
            | WatchFlags::ATTRIB
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        let Some(inotify) = &self.inotify else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no inotify"));
        };
        Ok(inotify::add_watch(inotify, path, flags)?)
    }

    /// Stops watching; an id already gone (its file was deleted) is fine.
    pub(crate) fn unwatch(&self, id: WatchId) {
        if let Some(inotify) = &self.inotify {
            let _ = inotify::remove_watch(inotify, id);
        }
    }

    /// Waits up to `timeout` (`None`: until woken) for events, appending the
    /// ids with events to `ready`. Returns true if the kernel's event queue
    /// overflowed (events were lost: check everything).
    pub(crate) fn wait(&self, timeout: Option<Duration>, ready: &mut Vec<WatchId>) -> bool {
        let timeout = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify, PollFlags::IN));
        }
        if poll(&mut fds, timeout.as_ref()).is_err() {
            // EINTR or a transient failure: the caller checks its clock.
            return false;
        }
        if !fds[0].revents().is_empty() {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&self.wake, &mut count);
        }
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut overflow = false;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(inotify.as_fd(), &mut buf);
        // Stops at WOULDBLOCK (nothing more queued) or any other error.
        while let Ok(event) = reader.next() {
            if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                overflow = true;
            } else if event.wd() >= 0 {
                ready.push(event.wd());
            }
        }
        overflow
    }

    /// Wakes a thread in [`EventSource::wait`]. Callable from any thread.
    pub(crate) fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// Changes to files this process keeps open, told without a system call
/// per file: inotify watches each for what changes a lock file's identity
/// (`IN_ATTRIB`: unlinked, replaced by a rename, or its owner or mode
/// changed; `IN_MOVE_SELF`: renamed; `IN_DELETE_SELF`; not writes, which
/// change no identity: fencing tokens are written into lock files), and an
/// epoll set holding the inotify descriptor answers "is anything queued?"
/// in one `epoll_wait` with no timeout, about half the cost of the `fstat`
/// it replaces. The kernel queues the event, and puts the inotify
/// descriptor on every epoll set's ready list, inside the system call that
/// made the change, so a change made before this process's `flock`
/// returned is seen by a [`FileChanges::queued`] made after it; except an
/// event merged into an identical one still queued, which wakes nothing
/// itself (see `backend::os::identity`).
///
/// One epoll set per thread that asks: an `epoll_wait` with no timeout
/// checks the ready list without a lock, and while another thread's
/// `epoll_wait` on the same set is scanning it, the list can look empty
/// (Linux 5.11 and later; the kernel's maintainers hold that a caller with
/// no timeout must ask again). A thread never scans while it asks, so its
/// own set answers truly. A mutex around one shared set would do too, but
/// measured as dear as the `fstat` it replaces (ARCHITECTURE.md, "The
/// uncontended path").
#[derive(Debug)]
pub(crate) struct FileChanges {
    inotify: OwnedFd,
    /// Names it for the threads' epoll sets (unique in the process).
    id: u64,
}

/// This thread's epoll set for the [`FileChanges`] named `owner`, made in
/// the fork generation `generation`.
struct ThreadAsks {
    owner: u64,
    generation: u64,
    epoll: OwnedFd,
}

thread_local! {
    static ASKS: std::cell::RefCell<Option<ThreadAsks>> = const { std::cell::RefCell::new(None) };
}

/// What [`FileChanges::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileChange {
    /// A watched file changed.
    Changed(WatchId),
    /// A watch ended (removed, or its file's filesystem unmounted): it
    /// tells nothing from now on.
    Ended(WatchId),
    /// Events were lost (the queue overflowed, or reading it failed): any
    /// watched file may have changed.
    Unknown,
}

impl FileChanges {
    /// Fails where inotify cannot be had (its per-user limit of instances
    /// reached), or `/proc` is not procfs (a watch names its file through
    /// `/proc/thread-self/fd`).
    pub(crate) fn new() -> io::Result<Self> {
        const PROC_SUPER_MAGIC: u64 = 0x9fa0;
        if rustix::fs::statfs("/proc")?.f_type as u64 != PROC_SUPER_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "/proc is not procfs",
            ));
        }
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(FileChanges { inotify, id })
    }

    /// A new epoll set holding the inotify descriptor.
    fn epoll_set(&self) -> io::Result<OwnedFd> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &self.inotify,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        )?;
        Ok(epoll)
    }

    /// Watches the file `file` is open on (whatever name it has now, or
    /// none). Watching one file twice gives the same id.
    pub(crate) fn watch(&self, file: &File) -> io::Result<WatchId> {
        use std::os::fd::AsRawFd;
        // The descriptor's own inode, through procfs: a name could lead to
        // another file by now. The calling thread's table of descriptors
        // (`thread-self`): a thread that unshared its table has its own.
        let path = format!("/proc/thread-self/fd/{}", file.as_raw_fd());
        let flags = WatchFlags::ATTRIB | WatchFlags::MOVE_SELF | WatchFlags::DELETE_SELF;
        Ok(inotify::add_watch(&self.inotify, path.as_str(), flags)?)
    }

    /// Stops watching; an id already ended is fine.
    pub(crate) fn unwatch(&self, id: WatchId) {
        let _ = inotify::remove_watch(&self.inotify, id);
    }

    /// Whether events are queued, asked through this thread's own epoll
    /// set; `None` if it cannot be asked (no descriptor for a set, or the
    /// thread is being torn down).
    pub(crate) fn queued(&self) -> Option<bool> {
        let generation = super::fork_generation();
        let ask = |asks: &mut Option<ThreadAsks>| -> io::Result<bool> {
            let current = asks
                .as_ref()
                .is_some_and(|a| a.owner == self.id && a.generation == generation);
            if !current {
                *asks = None;
                *asks = Some(ThreadAsks {
                    owner: self.id,
                    generation,
                    epoll: self.epoll_set()?,
                });
            }
            let Some(asks) = asks.as_ref() else {
                return Err(io::ErrorKind::NotFound.into());
            };
            let mut ready = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 1];
            let none = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let (found, _) = epoll::wait(&asks.epoll, &mut ready, Some(&none))?;
            Ok(!found.is_empty())
        };
        ASKS.try_with(|asks| ask(&mut asks.borrow_mut()).ok())
            .ok()
            .flatten()
    }

    /// Reads every queued event, telling each to `f`.
    pub(crate) fn drain(&self, mut f: impl FnMut(FileChange)) {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.inotify.as_fd(), &mut buf);
        loop {
            match reader.next() {
                Ok(event) if event.events().contains(ReadFlags::QUEUE_OVERFLOW) => {
                    f(FileChange::Unknown)
                }
                Ok(event) if event.events().contains(ReadFlags::IGNORED) => {
                    f(FileChange::Ended(event.wd()))
                }
                Ok(event) => f(FileChange::Changed(event.wd())),
                Err(rustix::io::Errno::WOULDBLOCK) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    f(FileChange::Unknown);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holders_and_skips_waiters() {
        let table = "1: -> FLOCK  ADVISORY  WRITE 9 fe:00:77 0 EOF\n\
                     1: FLOCK  ADVISORY  WRITE 1785 fe:00:77 0 EOF\n\
                     2: POSIX  ADVISORY  READ 12 08:01:77 0 EOF\n\
                     garbage\n\n";
        let mut holders = LockHolders::default();
        parse_holders(table, &mut holders);
        assert_eq!(holders.get(&(0xfe, 0, 77)), Some(&1785));
        assert_eq!(holders.get(&(8, 1, 77)), Some(&12));
        assert_eq!(holders.len(), 2);
    }

    #[test]
    fn the_table_keeps_each_holders_mode_and_counts_waiters_once() {
        let text = "1: -> FLOCK  ADVISORY  WRITE 9 fe:00:77 0 EOF\n\
                    1: -> FLOCK  ADVISORY  READ 10 fe:00:77 0 EOF\n\
                    1: FLOCK  ADVISORY  WRITE 1785 fe:00:77 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 12 08:01:78 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 11 08:01:78 0 EOF\n\
                    garbage\n\n";
        let mut table = LockTable::default();
        // Twice, as three reads of a busy table merge.
        parse_table(text, &mut table);
        parse_table(text, &mut table);
        let write = &table[&(0xfe, 0, 77)];
        assert_eq!(write.holders, [(1785, TableMode::Write)]);
        assert_eq!(write.waiters, [9, 10]);
        let read = &table[&(8, 1, 78)];
        assert_eq!(read.holders, [(11, TableMode::Read), (12, TableMode::Read)]);
        assert!(read.waiters.is_empty());
        assert_eq!(table.len(), 2);
        assert_eq!(local_fs_name(0xef53), Some("ext4"));
        assert_eq!(local_fs_name(0x6969), None);
    }

    #[test]
    fn finds_network_and_fuse_mounts_and_unescapes_their_paths() {
        let table = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                     40 22 0:45 / /mnt/papers rw shared:20 - nfs4 srv:/papers rw,vers=4.2\n\
                     41 22 0:46 / /mnt/my\\040share rw - cifs //srv/share rw\n\
                     42 22 0:47 / /home/u/remote rw,nosuid - fuse.sshfs u@h: rw\n\
                     43 22 0:48 / /tmp rw - tmpfs tmpfs rw\n\
                     44 22 0:49 / /home/u/.local/share/containers rw - fuse.fuse-overlayfs x rw\n\
                     garbage\n";
        let mounts = parse_network_mounts(table);
        assert_eq!(
            mounts,
            [
                Path::new("/mnt/papers"),
                Path::new("/mnt/my share"),
                Path::new("/home/u/remote")
            ]
        );
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").expect("a");
        std::fs::write(&b, b"b").expect("b");
        let err = rename_noreplace(&a, &b).expect_err("b exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).expect("b"), b"b");
        let c = dir.path().join("c");
        rename_noreplace(&a, &c).expect("c is free");
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).expect("c"), b"a");
    }

    #[test]
    fn closing_a_watched_file_is_an_event_and_wake_returns_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.lock");
        File::create(&path).expect("create");
        let source = EventSource::new().expect("inotify");
        let id = source.watch(&path).expect("watch");
        drop(File::open(&path).expect("open"));
        let mut ready = Vec::new();
        source.wait(Some(Duration::from_secs(5)), &mut ready);
        assert!(ready.contains(&id), "{ready:?}");
        ready.clear();
        source.wake();
        assert!(!source.wait(None, &mut ready));
        assert!(ready.is_empty());
        source.unwatch(id);
        source.unwatch(id);
    }
}

/// The command name of process `pid` (`/proc/<pid>/comm`), if it exists
/// and this process may read it.
pub(crate) fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.trim_end_matches('\n');
    (!comm.is_empty()).then(|| comm.to_owned())
}

/// What this host says of process `pid` with start time `start_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessState {
    /// Running (or stopped): the same process, by pid and start time.
    Alive,
    /// Gone: no such pid, a zombie, or another process reusing the pid.
    Gone,
    /// Cannot tell (procfs unreadable).
    Unknown,
}

/// Whether process `pid`, started at `start_time` (clock ticks after boot,
/// as [`process_start_time`] gives), still runs.
pub(crate) fn process_state(pid: u32, start_time: u64) -> ProcessState {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some((state, started)) if state != 'Z' && state != 'X' && started == start_time => {
                ProcessState::Alive
            }
            Some(_) => ProcessState::Gone,
            None => ProcessState::Unknown,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => ProcessState::Gone,
        Err(_) => ProcessState::Unknown,
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process for the life
/// of a boot, so a reused pid is not taken for the old process.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, started)| started)
}

/// The state letter and start time from a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22.
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, started))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): pids and start times
/// mean something only within one boot.
pub(crate) fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The pid namespace of this process (the inode of `/proc/self/ns/pid`):
/// two containers on one host and boot see different processes under one
/// pid.
pub(crate) fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The name of the filesystem type of `magic` (`statfs`'s `f_type`), for
/// the ones where `flock` is emulated, local to one client, refused or
/// shared across hosts: `None` for a local disk filesystem.
pub(crate) fn network_fs_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "nfs",
        0x517b => "smb",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x0bd0_0bd0 => "lustre",
        0x4750_4653 => "gpfs",
        0x00c3_6400 => "ceph",
        0x6573_5546 => "fuse",
        0x5346_414f => "afs",
        0x0102_1997 => "9p",
        0x7461_636f => "ocfs2",
        0x0116_1970 => "gfs2",
        _ => return None,
    })
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4121 (we ird) (x)) S 1 4121 4121 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_gone() {
        let me = std::process::id();
        let started = process_start_time(me).unwrap();
        assert_eq!(process_state(me, started), ProcessState::Alive);
        assert_eq!(process_state(me, started + 1), ProcessState::Gone);
        assert_eq!(process_state(u32::MAX - 1, 0), ProcessState::Gone);
        assert!(command_name(me).is_some());
        assert!(boot_id().is_some());
    }
}
