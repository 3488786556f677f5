//! [`LostSignal`]: how a backend tells the guards of a held lock that it is
//! no longer theirs (a soft lock's lease ran out or its file was taken; a
//! database session died), so that writers refuse to commit under it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Set once a held lock is lost, never unset. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct LostSignal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    lost: CancellationToken,
    why: Mutex<Option<String>>,
    /// When the lock stops being ours unless renewed first, for a lock
    /// with a lease: past it the lock counts as lost at once, even before
    /// the renewing thread (stopped with the process, say) notices.
    expires: Mutex<Option<Instant>>,
}

impl LostSignal {
    /// A signal for a lock held until `expires` unless renewed.
    pub(crate) fn with_lease(expires: Option<Instant>) -> Self {
        LostSignal {
            inner: Arc::new(Inner {
                lost: CancellationToken::new(),
                why: Mutex::new(None),
                expires: Mutex::new(expires),
            }),
        }
    }

    /// Marks the lock lost, for `why` (the first reason given is kept).
    pub(crate) fn mark(&self, why: impl Into<String>) {
        {
            let mut slot = self.inner.why.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(why.into());
            }
        }
        self.inner.lost.cancel();
    }

    /// Moves the lease's end to `expires`, unless the lock is lost already
    /// (a lease that ran out is never revived).
    pub(crate) fn renewed(&self, expires: Instant) {
        if self.is_lost() {
            return;
        }
        *self.inner.expires.lock().unwrap_or_else(|p| p.into_inner()) = Some(expires);
    }

    /// Whether the lock is lost: marked so, or its lease ran out (which
    /// marks it).
    pub(crate) fn is_lost(&self) -> bool {
        if self.inner.lost.is_cancelled() {
            return true;
        }
        let expired = self
            .inner
            .expires
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| Instant::now() >= at);
        if expired {
            self.mark("its lease ran out before it was renewed (the process or its lease thread was stalled)");
        }
        expired
    }

    /// Why it was lost, once it is.
    pub(crate) fn why(&self) -> Option<String> {
        self.is_lost();
        self.inner
            .why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when the lock is lost. Cancel safe.
    pub(crate) async fn wait(self) {
        loop {
            let remaining = {
                let expires = *self.inner.expires.lock().unwrap_or_else(|p| p.into_inner());
                expires.map(|at| at.saturating_duration_since(Instant::now()))
            };
            if self.is_lost() {
                return;
            }
            match remaining {
                // Renewals move the end: look again when it comes.
                Some(left) => {
                    tokio::select! {
                        () = self.inner.lost.cancelled() => return,
                        () = tokio::time::sleep(left.max(Duration::from_millis(1))) => {}
                    }
                }
                None => return self.inner.lost.cancelled().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LostSignal;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lapsed_lease_is_lost_and_stays_lost() {
        let signal = LostSignal::with_lease(Some(Instant::now()));
        assert!(signal.is_lost());
        signal.renewed(Instant::now() + Duration::from_secs(60));
        assert!(signal.is_lost(), "a lost lock is never found again");
        assert!(signal.why().is_some_and(|w| w.contains("lease")));
    }

    #[tokio::test]
    async fn wait_resolves_on_mark() {
        let signal = LostSignal::with_lease(None);
        let waiter = tokio::spawn(signal.clone().wait());
        signal.mark("taken");
        waiter.await.unwrap();
        assert_eq!(signal.why().as_deref(), Some("taken"));
    }
}
