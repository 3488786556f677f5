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
//! [`BRIEF_HOLD`], exclusive) first tries again on the waiting task, after
//! pauses from [`FIRST_PAUSE`] doubling up to [`LONGEST_PAUSE`], for
//! [`POLLING_FOR`], and only then parks like any other wait. A poll that
//! finds the lock free takes it on the task that uses it: no hand-over, and
//! no thread woken at every release. The pauses are timed by the crate's own
//! [`super::ticker`], not tokio's timer. The price is a grant up to one
//! pause late when the lock comes free during the polls, and a place in the
//! kernel's queue taken up to [`POLLING_FOR`] later; a wait that reaches its
//! deadline while polling tries once more before it gives up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ticker;
use crate::backend::LockRequest;
use crate::error::LockError;
use crate::mode::LockMode;

/// A holding shorter than this is brief: about what a hand-over from a
/// crate thread costs, and far from holds of a millisecond, whose waits keep
/// the kernel's hand-over.
pub(super) const BRIEF_HOLD: Duration = Duration::from_micros(100);

/// The pause before the first poll; each next pause doubles, up to
/// [`LONGEST_PAUSE`]. Short, so that a lock held briefly and then left free
/// for a while (a holder with something else to do between holdings) is
/// taken about as soon as a kernel wait would take it.
pub(super) const FIRST_PAUSE: Duration = Duration::from_micros(50);

/// The longest pause between two polls.
pub(super) const LONGEST_PAUSE: Duration = Duration::from_millis(1);

/// How long a wait polls before it parks: long enough that waiters on a
/// lock held briefly by several busy processes rarely park (each poll finds
/// it free with a fair chance), short enough that a holder that keeps it
/// longer costs a waiter little before the kernel's hand-over takes over.
pub(super) const POLLING_FOR: Duration = Duration::from_millis(16);

/// Waits granted by a poll since the process started.
static GRANTED_ON_POLLS: AtomicU64 = AtomicU64::new(0);

/// Waits that polled without being granted and then parked, since the
/// process started.
static PARKED_AFTER_POLLS: AtomicU64 = AtomicU64::new(0);

/// Waits granted by a poll since the process started.
pub(super) fn granted_on_polls() -> u64 {
    GRANTED_ON_POLLS.load(Ordering::Relaxed)
}

/// Waits that polled in vain and then parked, since the process started.
pub(super) fn parked_after_polls() -> u64 {
    PARKED_AFTER_POLLS.load(Ordering::Relaxed)
}

/// Whether a wait for `req` polls first: an exclusive wait for a lock this
/// process held briefly the last time, where an attempt cannot hang (polls
/// run on the waiting task's thread; on a network filesystem they could
/// block it). A shared wait parks at once: how long this process's shared
/// holders kept the lock between them is not what one of them recorded.
pub(super) fn polls_first(req: &LockRequest) -> bool {
    req.mode == LockMode::Exclusive
        && req.last_hold.is_some_and(|held| held < BRIEF_HOLD)
        && !crate::mounts::may_hang(&req.lock_path)
}

/// How the polls of a wait ended.
#[derive(Debug)]
pub(super) enum Polled<T> {
    /// A poll found the lock free and took it.
    Granted(T),
    /// None did: the wait parks.
    Park,
    /// The deadline came first; the last attempt was made at it.
    Expired,
}

/// Attempts by `attempt` after pauses of [`FIRST_PAUSE`], doubling up to
/// [`LONGEST_PAUSE`], for [`POLLING_FOR`] (the wait then parks) or until
/// `deadline`, when one last attempt is made: a release since the last poll
/// is not missed for want of a kernel wait, which would have been granted
/// it. Without the timer's thread, the wait parks at once.
///
/// # Cancel safety
///
/// Cancel safe: between attempts it only waits for its timer, and an
/// attempt is not an await.
pub(super) async fn poll<T>(
    req: &LockRequest,
    deadline: Option<Instant>,
    attempt: impl Fn(&LockRequest) -> Result<Option<T>, LockError>,
) -> Result<Polled<T>, LockError> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let mut at = Instant::now() + pause;
        let last = deadline.is_some_and(|d| d <= at);
        if let Some(d) = deadline.filter(|_| last) {
            at = d;
        }
        if !last && at.saturating_duration_since(start) > POLLING_FOR {
            PARKED_AFTER_POLLS.fetch_add(1, Ordering::Relaxed);
            return Ok(Polled::Park);
        }
        let Some(tick) = ticker::tick_at(at) else {
            return Ok(Polled::Park);
        };
        tick.await;
        if let Some(held) = attempt(req)? {
            GRANTED_ON_POLLS.fetch_add(1, Ordering::Relaxed);
            return Ok(Polled::Granted(held));
        }
        if last {
            return Ok(Polled::Expired);
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A runtime without a time driver: the polls need none.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// Runs `poll` with an attempt that succeeds once `succeed` says so,
    /// and returns how it ended and when each attempt was made.
    fn poll_with(
        deadline: Option<Instant>,
        succeed: impl Fn(Instant) -> bool,
    ) -> (Polled<()>, Vec<Instant>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = LockRequest::exclusive_in(dir.path(), "manifest.test");
        let attempts = Mutex::new(Vec::new());
        let polled = runtime()
            .block_on(poll(&req, deadline, |_| {
                let now = Instant::now();
                attempts.lock().expect("attempts").push(now);
                Ok(succeed(now).then_some(()))
            }))
            .expect("no error");
        (polled, attempts.into_inner().expect("attempts"))
    }

    #[test]
    fn polls_back_off_from_the_first_pause_and_park_after_polling_for() {
        let start = Instant::now();
        let parked = parked_after_polls();
        let (polled, attempts) = poll_with(None, |_| false);
        assert!(matches!(polled, Polled::Park), "{polled:?}");
        // (Other tests may count too: at least this one.)
        assert!(parked_after_polls() > parked);
        assert!(start.elapsed() >= POLLING_FOR - LONGEST_PAUSE);
        // Each pause at least as long as the schedule says (a timer may be
        // late, never early): 50 µs, doubling, up to 1 ms.
        let mut pause = FIRST_PAUSE;
        let mut before = start;
        for at in &attempts {
            assert!(*at - before >= pause, "{:?} < {pause:?}", *at - before);
            before = *at;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
        assert!(attempts.len() >= 5, "{} attempts", attempts.len());
    }

    #[test]
    fn a_poll_that_finds_the_lock_free_takes_it() {
        let start = Instant::now();
        let granted = granted_on_polls();
        let free_from = start + Duration::from_millis(2);
        let (polled, attempts) = poll_with(None, |now| now >= free_from);
        assert!(matches!(polled, Polled::Granted(())), "{polled:?}");
        assert!(granted_on_polls() > granted);
        assert!(attempts.last().is_some_and(|at| *at >= free_from));
    }

    #[test]
    fn a_deadline_during_the_polls_gets_one_last_attempt_at_it() {
        let deadline = Instant::now() + Duration::from_millis(3);
        // Free only from the deadline on: only an attempt at it finds it.
        let (polled, attempts) = poll_with(Some(deadline), |now| now >= deadline);
        assert!(matches!(polled, Polled::Granted(())), "{polled:?}");
        assert!(attempts.last().is_some_and(|at| *at >= deadline));
        // Never free: the polls end at the deadline, not after POLLING_FOR.
        let deadline = Instant::now() + Duration::from_millis(3);
        let (polled, attempts) = poll_with(Some(deadline), |_| false);
        assert!(matches!(polled, Polled::Expired), "{polled:?}");
        assert!(attempts.last().is_some_and(|at| *at >= deadline));
    }

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
        req.last_hold = Some(Duration::ZERO);
        req.mode = LockMode::Shared;
        assert!(!polls_first(&req), "a shared wait parks at once");
    }
}
