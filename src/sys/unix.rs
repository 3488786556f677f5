//! Every Unix: telling a process made by `fork()` from its parent, cheaply;
//! making room for the descriptors that waits keep open; and keeping a
//! kernel-wait thread from preempting others when it wakes.
//!
//! The crate's only `unsafe`, calls rustix has no safe wrapper for:
//! registering a `pthread_atfork` handler (it runs in the child only and
//! bumps an atomic, which is async-signal-safe), and reading and setting
//! the calling thread's scheduling policy (Linux).
#![allow(unsafe_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTERED: Once = Once::new();

extern "C" fn in_child_after_fork() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// How many `fork()`s lie between this process and the one that first
/// asked (0 there): differs in a child from the value its parent saw. One
/// atomic load after the first call, which is why per-process state can be
/// checked on every acquisition.
pub(crate) fn fork_generation() -> u64 {
    REGISTERED.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic
        // (async-signal-safe, as a handler run in a forked child must be);
        // the null prepare and parent handlers are allowed by POSIX.
        let registered = unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
        if registered != 0 {
            tracing::warn!(
                code = registered,
                "pthread_atfork failed: a fork()ed child would share this process's lock state"
            );
        }
    });
    GENERATION.load(Ordering::SeqCst)
}

/// Whether the calling thread may preempt the running one when it wakes.
/// `false` moves a thread of the normal policy to Linux's `SCHED_BATCH`,
/// which keeps its nice level and share of the CPU and gives up only
/// wake-up preemption; `true` moves a batch thread back to the normal
/// policy. A thread of any other policy (real-time, idle: chosen by the
/// program, `chrt`) is left as it is. Nothing on other systems. For the
/// kernel-wait threads, which every release of their lock wakes (see
/// ARCHITECTURE.md, "Kernel-wait threads of back-to-back takers wake
/// without preempting").
///
/// Hand-written, three calls: rustix leaves the scheduler calls out, and
/// the thread-priority crate would bring four dependencies for them. Through
/// `pthread_*schedparam`, which glibc and musl both apply to the one
/// thread (musl's `sched_setscheduler` always fails).
///
/// Returns whether the policy changed (not for a thread of another
/// policy, nor on other systems).
///
/// # Errors
///
/// The OS's refusal (a seccomp filter, say); the thread then keeps its
/// policy, which is correct, only slower under contention.
pub(crate) fn set_wake_up_preemption(on: bool) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let (from, to) = if on {
            (libc::SCHED_BATCH, libc::SCHED_OTHER)
        } else {
            (libc::SCHED_OTHER, libc::SCHED_BATCH)
        };
        // SAFETY: `sched_param` is plain integers, for which zero is
        // valid; both calls take the calling thread's own handle and
        // pointers to locals that outlive them. The change is made only
        // between the two normal policies, at priority 0, which needs no
        // privilege.
        let (failed, changed) = unsafe {
            let thread = libc::pthread_self();
            let mut policy: libc::c_int = 0;
            let mut param: libc::sched_param = std::mem::zeroed();
            match libc::pthread_getschedparam(thread, &mut policy, &mut param) {
                0 if policy == from => {
                    let param: libc::sched_param = std::mem::zeroed();
                    (libc::pthread_setschedparam(thread, to, &param), true)
                }
                0 => (0, false),
                failed => (failed, false),
            }
        };
        // These return the error number instead of setting `errno`.
        if failed != 0 {
            return Err(std::io::Error::from_raw_os_error(failed));
        }
        Ok(changed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = on;
        Ok(false)
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit,
/// once, as the Go runtime does at start: each event wait keeps its lock
/// file open, and the common soft limit of 1,024 would let a thousand waits
/// starve the program's own files and sockets. Best effort.
pub(crate) fn raise_fd_limit() {
    static RAISED: Once = Once::new();
    RAISED.call_once(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let before = limit.current;
            limit.current = limit.maximum;
            match setrlimit(Resource::Nofile, limit) {
                Ok(()) => tracing::debug!(?before, to = ?limit.maximum, "raised the open-file limit for lock waits"),
                Err(e) => tracing::debug!(error = %e, "could not raise the open-file limit"),
            }
        }
    });
}

/// Renames `from` to `to` unless `to` exists, by a hard link (which fails
/// if `to` exists) and an unlink of `from`: for filesystems and systems
/// without `RENAME_NOREPLACE`. Not atomic: a crash between the two leaves
/// both names, and the next rotation finds the file under its number.
pub(crate) fn rename_by_link(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// This host's name (`uname`'s node name), or `None` if it is not UTF-8.
pub(crate) fn host_name() -> Option<String> {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// A monotonic clock that may lag by a few milliseconds (one scheduler
/// tick), read from the vDSO without reading the TSC: for intervals of a
/// second or more that are checked on every acquisition (the lock dir's
/// re-check, the mount table's refresh), where `Instant::now` was a visible
/// share of the uncontended cost. Other Unixes read the precise clock.
pub(crate) fn coarse_now() -> std::time::Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = rustix::time::ClockId::MonotonicCoarse;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = rustix::time::ClockId::Monotonic;
    let t = rustix::time::clock_gettime(id);
    // A monotonic clock is never negative.
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// `t` in whole nanoseconds, saturating: for instants of [`coarse_now`]
/// kept in atomics.
pub(crate) fn nanos(t: std::time::Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}
