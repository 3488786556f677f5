//! Wakes tasks at given instants, from one thread of the crate's own per
//! process: the clock of the polls of [`super::brief`].
//!
//! Not tokio's timer: a wait that needs no deadline must work on a runtime
//! without a time driver, or outside tokio, as every other wait of the OS
//! backend does; the polls must run in real time when a test pauses
//! tokio's clock (a paused clock that never idles would stop them); and
//! tokio's timer rounds every sleep up to whole milliseconds, while the
//! first polls want tens of microseconds. Hand-written rather than
//! `futures-timer`, whose global thread is not fork-aware: in a child made
//! by `fork()` its timers would never fire. This one is per process
//! (`PerProcess`), and its thread exits when it has had nothing to do for
//! a while.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::per_process::PerProcess;

/// How long the thread waits with nothing due before it exits.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// A future ready at `at` (see [`Tick`]); `None` if the timer's thread
/// cannot be started (the caller then does without polls).
pub(super) fn tick_at(at: Instant) -> Option<Tick> {
    ticker().ensure_thread().then_some(Tick { at, id: None })
}

/// Ready once its instant has passed; woken then by the timer's thread.
///
/// # Cancel safety
///
/// Dropping it forgets its waker; nothing else is left behind.
#[derive(Debug)]
pub(super) struct Tick {
    at: Instant,
    /// Its registration with the timer, once polled.
    id: Option<u64>,
}

impl Future for Tick {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            if let Some(id) = self.id.take() {
                ticker().forget(id);
            }
            return Poll::Ready(());
        }
        let at = self.at;
        self.id = Some(ticker().register(self.id, at, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Tick {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            ticker().forget(id);
        }
    }
}

fn ticker() -> &'static Ticker {
    static TICKER: PerProcess<Ticker> = PerProcess::new();
    TICKER.get(Ticker::default)
}

#[derive(Debug, Default)]
struct Ticker {
    state: Mutex<State>,
    /// The thread waits here for the earliest instant or a new one.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Instants and registrations, earliest first; an entry whose
    /// registration is gone (dropped, or woken already) is skipped.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: FxHashMap<u64, Waker>,
    next_id: u64,
    thread_running: bool,
}

impl Ticker {
    fn state(&self) -> MutexGuard<'_, State> {
        // A heap and a map changed by single calls: a panic elsewhere cannot
        // leave them half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the thread runs (started now if it was not).
    fn ensure_thread(&'static self) -> bool {
        let mut state = self.state();
        if state.thread_running {
            return true;
        }
        let started = std::thread::Builder::new()
            .name("async-filelock-ticker".into())
            .spawn(move || self.run());
        state.thread_running = started.is_ok();
        state.thread_running
    }

    /// Registers (or updates the waker of) the tick `id` due `at`.
    fn register(&'static self, id: Option<u64>, at: Instant, waker: &Waker) -> u64 {
        let mut state = self.state();
        let id = id.unwrap_or_else(|| {
            state.next_id += 1;
            state.next_id
        });
        if state.wakers.insert(id, waker.clone()).is_none() {
            let earliest = state
                .due
                .peek()
                .is_none_or(|Reverse((first, _))| at < *first);
            state.due.push(Reverse((at, id)));
            if earliest {
                self.changed.notify_one();
            }
        }
        // The thread may have exited since the tick was made.
        if !state.thread_running {
            drop(state);
            if !self.ensure_thread() {
                // No thread: wake now, so the task polls again and finds
                // its instant passed or asks again (it does not hang).
                waker.wake_by_ref();
            }
        }
        id
    }

    fn forget(&self, id: u64) {
        self.state().wakers.remove(&id);
    }

    fn run(&self) {
        let mut state = self.state();
        let mut due_now = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(Reverse((at, id))) = state.due.peek().copied() {
                if at > now {
                    break;
                }
                state.due.pop();
                if let Some(waker) = state.wakers.remove(&id) {
                    due_now.push(waker);
                }
            }
            if !due_now.is_empty() {
                drop(state);
                due_now.drain(..).for_each(Waker::wake);
                state = self.state();
                continue;
            }
            let pause = match state.due.peek() {
                Some(Reverse((at, _))) => at.saturating_duration_since(now),
                None => IDLE_FOR,
            };
            let (next, waited) = self
                .changed
                .wait_timeout(state, pause)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if waited.timed_out() && state.due.is_empty() {
                state.thread_running = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_ready_at_its_instant_without_any_runtime_timer() {
        // A runtime without a time driver: tokio's own sleep would panic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let start = Instant::now();
        let ticks: Vec<_> = [3u64, 1, 2]
            .iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect();
        rt.block_on(async {
            for at in &ticks {
                tick_at(*at).expect("ticker").await;
                assert!(Instant::now() >= *at);
            }
        });
        // Outside any runtime too.
        let at = Instant::now() + Duration::from_millis(2);
        futures::executor::block_on(tick_at(at).expect("ticker"));
        assert!(Instant::now() >= at);
    }

    #[test]
    fn a_dropped_tick_leaves_no_waker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let at = Instant::now() + Duration::from_secs(60);
        rt.block_on(async {
            let mut tick = tick_at(at).expect("ticker");
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut tick).poll(&mut cx).is_pending());
            let id = tick.id.expect("registered");
            assert!(ticker().state().wakers.contains_key(&id));
            drop(tick);
            assert!(!ticker().state().wakers.contains_key(&id));
        });
    }
}
