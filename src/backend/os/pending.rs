//! One pending wait: what it asks for, whether a future still wants it,
//! where it is served, and its outcome once there is one.

use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use super::file::OsHeld;
use crate::backend::LockRequest;
use crate::error::LockError;

/// One pending wait.
#[derive(Debug)]
pub(super) struct Pending {
    pub req: LockRequest,
    /// Grows with time: the oldest event wait has the smallest.
    pub seq: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    /// A future awaits the outcome; false once it was dropped (abandoned).
    pub wanted: bool,
    pub outcome: Option<Result<OsHeld, LockError>>,
    pub waker: Option<Waker>,
    pub place: Place,
}

/// Where a wait is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Kernel,
    Events,
    /// Granted, failed or forgotten.
    Done,
}

impl Pending {
    pub(super) fn new(req: LockRequest, seq: u64, place: Place) -> Self {
        Pending {
            req,
            seq,
            inner: Mutex::new(Inner {
                wanted: true,
                outcome: None,
                waker: None,
                place,
            }),
        }
    }

    pub(super) fn inner(&self) -> MutexGuard<'_, Inner> {
        // Plain fields replaced whole: a panic elsewhere cannot leave them
        // half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a future still awaits this wait.
    pub(super) fn wanted(&self) -> bool {
        self.inner().wanted
    }
}

impl Inner {
    /// Hands the outcome to the awaiting future; returns its waker, for
    /// the caller to wake once it has let go of every lock (an executor may
    /// poll inline from `wake`).
    #[must_use = "the waker must be woken"]
    pub(super) fn finish(&mut self, outcome: Result<OsHeld, LockError>) -> Option<Waker> {
        self.place = Place::Done;
        self.outcome = Some(outcome);
        self.waker.take()
    }
}
