//! How an acquisition may wait: never ([`Patience::Now`]) or until a
//! deadline or a cancellation token ([`Patience::Until`]); and [`Until`],
//! the future every wait of the acquisition core is wrapped in.
//!
//! Hand-written rather than `tokio::select!` over three futures because it
//! is the state of every waiting acquisition: ten thousand tasks waiting on
//! one lock should cost under 1 KiB each (`cargo bench --bench scale`), and
//! this one allocates its timer and its token's future only once the inner
//! future has actually had to wait, and only those it needs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Why a step of an acquisition ended without its prize. Said by whoever
/// ended it, so that nobody re-derives it from another clock (tokio's clock
/// may be paused while the system's runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Busy, under [`Patience::Now`].
    Busy,
    /// The deadline passed.
    Deadline,
    /// The cancellation token was cancelled.
    CalledOff,
}

/// How one pass over the steps may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience<'a> {
    /// Never: a busy step misses at once.
    Now,
    /// Until the deadline (`None`: forever) or the token.
    Until {
        deadline: Option<Instant>,
        token: Option<&'a CancellationToken>,
    },
}

impl<'a> Patience<'a> {
    /// `fut`, if it completes before this patience runs out; why not
    /// otherwise. Under [`Patience::Now`], `fut` is never polled.
    ///
    /// A plain function returning the future, not an `async fn`: an
    /// `async fn` would keep `fut` twice in its state, as its argument and
    /// inside the [`Until`] it builds.
    pub(crate) fn wait<F: Future>(&'a self, fut: F) -> Until<'a, F> {
        Until {
            fut,
            patience: self,
            sleep: None,
            cancelled: None,
        }
    }
}

pin_project! {
    /// `Ok(output)` if `fut` completes first; else why it did not.
    pub(crate) struct Until<'a, F> {
        #[pin]
        fut: F,
        patience: &'a Patience<'a>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        cancelled: Option<Pin<Box<WaitForCancellationFuture<'a>>>>,
    }
}

impl<F: Future> Future for Until<'_, F> {
    type Output = Result<F::Output, Missed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Patience::Until { deadline, token } = **this.patience else {
            return Poll::Ready(Err(Missed::Busy));
        };
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if let Some(token) = token {
            let cancelled = this
                .cancelled
                .get_or_insert_with(|| Box::pin(token.cancelled()));
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Missed::CalledOff));
            }
        }
        if let Some(at) = deadline {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Missed::Deadline));
            }
        }
        Poll::Pending
    }
}
