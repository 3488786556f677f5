//! The one way this crate runs blocking file work from async code (law 3):
//! on tokio's blocking pool, with a pool failure (panic, shutdown) reported
//! as an I/O error naming the path, like every other error; and the one way
//! blocking-pool work waits on an async primitive.

use std::io;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::error::LockError;

/// Runs `work` on the blocking pool. If the awaiting future is dropped,
/// `work` still runs to completion: callers rely on that to finish commits
/// and cleanups under the lock they moved into it.
pub(crate) async fn run<R, F>(op: &'static str, path: &Path, work: F) -> Result<R, LockError>
where
    F: FnOnce() -> Result<R, LockError> + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LockError::io(op, path, io::Error::other(e.to_string())))?
}

/// Drives `future` to completion on the calling thread, which may block
/// (the blocking pool), parking between polls. The thread also wakes at
/// `wake_at`, so a future that checks the clock sees its deadline pass
/// without a timer.
///
/// Hand-written because `futures`' `block_on` cannot wake at a time, and
/// tokio's timers must not be used from the blocking pool: they panic once
/// the runtime is shutting down, and blocking work outlives that.
pub(crate) fn block_on<F: Future>(future: F, wake_at: Option<Instant>) -> F::Output {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        match wake_at.map(|at| at.saturating_duration_since(Instant::now())) {
            None => std::thread::park(),
            // Past the deadline: poll again at once (the future sees it).
            Some(left) if left.is_zero() => {}
            Some(left) => std::thread::park_timeout(left),
        }
    }
}

/// Wakes a thread parked in [`wait_until`].
struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}
