//! Waits for a lock held briefly: polled on the waiting task a while
//! before they park (ARCHITECTURE.md, "Brief holds poll before they park").
//!
//! A parked wait (kernel or event) is granted on a crate thread, which then
//! wakes the waiting task: two thread wake-ups while the lock sits taken
//! and unused, tens of microseconds on a small VM. For a lock held for
//! milliseconds that is noise, and the kernel's immediate hand-over is
//! worth it. For a lock that several processes each hold for microseconds
//! at a time, it is most of the cost: the threads those hand-overs wake
//! keep the cores busy, so the waiters a release wakes in the kernel win
//! the lock more often than the holder's next acquisition does, and the
//! lock changed hands two to five times as often as between plain blocking
//! `flock` callers (`cargo bench --bench ratios -- --contend 4 0 0`),
//! each change costing a hand-over.
//!
//! So a wait for a lock this process held briefly the last time (under
//! [`BRIEF_HOLD`]) first tries again on the waiting task every
//! [`POLL_INTERVAL`], at most [`POLLS`] times, and only then parks like any
//! other wait. A poll that finds the lock free takes it on the task that
//! uses it: no hand-over, and no thread woken at every release. The price
//! is a grant up to one interval late when the lock comes free during the
//! polls; a holder that keeps it past them is waited for in the kernel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::LockRequest;
use crate::error::LockError;

/// A holding shorter than this is brief: well under the cost of a
/// hand-over from a crate thread plus the poll interval's lateness, and far
/// from holds of a millisecond, whose waits keep the kernel's hand-over.
pub(super) const BRIEF_HOLD: Duration = Duration::from_micros(100);

/// Between two polls: tokio's timer resolution.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Polls before the wait parks: long enough that waiters on a lock held
/// briefly by several busy processes rarely park (each poll finds it free
/// with a fair chance), short enough that a holder that keeps it longer
/// costs a waiter little before the kernel's hand-over takes over.
pub(super) const POLLS: u32 = 16;

/// Waits granted by a poll since the process started.
static GRANTED_ON_POLLS: AtomicU64 = AtomicU64::new(0);

/// Waits granted by a poll since the process started.
pub(super) fn granted_on_polls() -> u64 {
    GRANTED_ON_POLLS.load(Ordering::Relaxed)
}

/// Whether a wait for `req` polls first: this process held the lock
/// briefly the last time, and an attempt cannot hang (polls run on the
/// waiting task's thread; on a network filesystem they could block it).
pub(super) fn polls_first(req: &LockRequest) -> bool {
    req.last_hold.is_some_and(|held| held < BRIEF_HOLD) && !crate::mounts::may_hang(&req.lock_path)
}

/// Up to [`POLLS`] attempts by `attempt`, one every [`POLL_INTERVAL`]:
/// what the first that finds the lock free took, or `None` when none did.
///
/// # Cancel safety
///
/// Cancel safe: between attempts it only sleeps, and an attempt is not an
/// await.
pub(super) async fn poll<T>(
    req: &LockRequest,
    attempt: impl Fn(&LockRequest) -> Result<Option<T>, LockError>,
) -> Result<Option<T>, LockError> {
    for _ in 0..POLLS {
        tokio::time::sleep(POLL_INTERVAL).await;
        if let Some(held) = attempt(req)? {
            GRANTED_ON_POLLS.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(held));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lock_held_under_the_brief_bound_lately_polls_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut req = LockRequest::exclusive_in(dir.path(), "manifest.test");
        assert!(!polls_first(&req), "not held lately");
        for (held, polls) in [
            (Duration::ZERO, true),
            (BRIEF_HOLD - Duration::from_nanos(1), true),
            (BRIEF_HOLD, false),
            (Duration::MAX, false),
        ] {
            req.last_hold = Some(held);
            assert_eq!(polls_first(&req), polls, "held {held:?}");
        }
    }
}
