//! Every Unix: telling a process made by `fork()` from its parent, cheaply.
//!
//! The one `unsafe` of the crate: registering a `pthread_atfork` handler
//! (rustix has no safe wrapper for it). The handler runs in the child only
//! and bumps an atomic, which is async-signal-safe.
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
