//! Linux: the holder of a lock from `/proc/locks`, keep-size
//! preallocation with `fallocate`, and the wake signal for cancelled waits.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How many times the table is read before concluding nobody holds the
/// lock. The kernel hands `/proc/locks` out a page per `read`, restarting
/// its walk by line number each time, so a lock released elsewhere between
/// two reads shifts the rest of the list and one line can be skipped; on a
/// busy host it can be the holder's (seen in CI, with eight processes
/// locking and unlocking while a test read the table). Another pass finds it.
const READS: usize = 3;

/// The pid holding a granted lock on `lock_path`, from `/proc/locks`
/// matched by device and inode. Best effort: a lock released meanwhile, or
/// an unreadable table, gives `None`. Blocks briefly (reads a proc file).
pub(crate) fn holder_of(lock_path: &Path) -> Option<u32> {
    let meta = std::fs::symlink_metadata(lock_path).ok()?;
    (0..READS).find_map(|_| {
        let table = std::fs::read_to_string("/proc/locks").ok()?;
        find_holder(&table, meta.dev(), meta.ino())
    })
}

/// Parses lines such as `1: FLOCK  ADVISORY  WRITE 1785 fe:00:10010649 0 EOF`;
/// lines with `->` are blocked waiters, not holders.
fn find_holder(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            return None;
        }
        let pid: u32 = fields[4].parse().ok()?;
        let mut id = fields[5].split(':');
        let maj = u32::from_str_radix(id.next()?, 16).ok()?;
        let min = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino).then_some(pid)
    })
}

/// Reserves `len` bytes of disk for `file` without changing its size, so a
/// `.part` left by a crash still measures exactly what was written (which
/// resuming relies on). fs4's `allocate` extends the size, hence
/// `fallocate(FALLOC_FL_KEEP_SIZE)`; filesystems without it just skip it.
pub(crate) fn reserve(file: &File, len: u64) {
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    // SAFETY: a valid descriptor owned by `file`; fallocate does not touch
    // memory.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "preallocation skipped");
    }
}

/// The signal that wakes a cancelled wait: `SIGURG`, for the reasons the Go
/// runtime chose it for goroutine preemption: ignored by default, rarely used.
const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

/// A thread that may be woken out of a blocking system call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitingThread(libc::pthread_t);

impl WaitingThread {
    /// The calling thread.
    pub(crate) fn current() -> Self {
        // SAFETY: pthread_self has no preconditions.
        WaitingThread(unsafe { libc::pthread_self() })
    }

    /// Sends the wake signal, which interrupts a blocking call with `EINTR`.
    ///
    /// The caller must know the thread is alive (`backend::os::interrupt`
    /// sends only while the thread is inside its wait, under the mutex the
    /// thread takes to leave it).
    pub(crate) fn wake(self) {
        // SAFETY: per the contract above the thread is alive, so the id is
        // valid; pthread_kill touches no memory of ours.
        unsafe {
            libc::pthread_kill(self.0, WAKE_SIGNAL);
        }
    }
}

extern "C" fn wake_handler(_signal: libc::c_int) {}

/// Installs the wake signal's handler, which does nothing and is installed
/// without `SA_RESTART`, so that an interrupted `flock` returns `EINTR`.
/// Only over the default or ignored disposition: false (and nothing
/// changed) if the program handles `SIGURG` itself.
pub(crate) fn install_wake_handler() -> bool {
    // SAFETY: sigaction with a zeroed struct is the documented way to query a
    // disposition; we install a handler that does nothing (async-signal-safe)
    // only over the default or ignored disposition, so no other handler is
    // replaced.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(WAKE_SIGNAL, std::ptr::null(), &mut old) != 0 {
            return false;
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            tracing::debug!(
                "SIGURG has a handler already; cancelled lock waits will poll instead of being woken"
            );
            return false;
        }
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = wake_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut new.sa_mask);
        // No SA_RESTART: the interrupted flock must return EINTR.
        new.sa_flags = 0;
        libc::sigaction(WAKE_SIGNAL, &new, std::ptr::null_mut()) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holders_and_skips_waiters() {
        let dev = libc::makedev(0xfe, 0);
        let table = "1: -> FLOCK  ADVISORY  WRITE 9 fe:00:77 0 EOF\n\
                     1: FLOCK  ADVISORY  WRITE 1785 fe:00:77 0 EOF\n\
                     2: POSIX  ADVISORY  READ 12 08:01:77 0 EOF\n";
        assert_eq!(find_holder(table, dev, 77), Some(1785));
        assert_eq!(find_holder(table, dev, 78), None);
        assert_eq!(find_holder("garbage\n\n", dev, 77), None);
    }
}
