//! Running a callback when a [`CancellationToken`] is cancelled.
//!
//! tokio-util's token offers a future, not a callback; a blocking wait in a
//! backend needs to be told on another thread (the canceller's) so it can
//! interrupt a system call. Polling the token's future once with a waker
//! whose `wake` runs the callback turns the one into the other with no
//! thread or task of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

type Callback = Box<dyn FnOnce() + Send>;

/// Calls `f` once when `token` is cancelled, on the cancelling thread (or
/// now, if it already is), unless the returned registration was dropped
/// first. `f` must be quick and must not block.
pub(crate) fn on_cancel(token: &CancellationToken, f: impl FnOnce() + Send + 'static) -> OnCancel {
    let callback = Arc::new(RunOnWake(Mutex::new(Some(Box::new(f)))));
    let mut cancelled = Box::pin(token.clone().cancelled_owned());
    let waker = Waker::from(Arc::clone(&callback));
    if let Poll::Ready(()) = cancelled.as_mut().poll(&mut Context::from_waker(&waker)) {
        callback.run();
    }
    OnCancel {
        _cancelled: cancelled,
        callback,
    }
}

/// A registration from [`on_cancel`]; dropping it forgets the callback.
pub(crate) struct OnCancel {
    /// Kept alive so the token keeps our waker registered.
    _cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    callback: Arc<RunOnWake>,
}

impl std::fmt::Debug for OnCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnCancel")
    }
}

impl Drop for OnCancel {
    fn drop(&mut self) {
        self.callback.forget();
    }
}

struct RunOnWake(Mutex<Option<Callback>>);

impl RunOnWake {
    fn take(&self) -> Option<Callback> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn run(&self) {
        if let Some(f) = self.take() {
            f();
        }
    }

    fn forget(&self) {
        drop(self.take());
    }
}

impl Wake for RunOnWake {
    fn wake(self: Arc<Self>) {
        self.run();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl FnOnce() + Send + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn runs_once_on_cancel_and_at_once_if_already_cancelled() {
        let token = CancellationToken::new();
        let (n, f) = counter();
        let _reg = on_cancel(&token, f);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        token.cancel();
        token.cancel();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let (m, g) = counter();
        let _late = on_cancel(&token, g);
        assert_eq!(m.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_registration_is_not_called() {
        let token = CancellationToken::new();
        let (n, f) = counter();
        drop(on_cancel(&token, f));
        token.cancel();
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
