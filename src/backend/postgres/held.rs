//! [`PgHeld`]: a held advisory lock. Made where the grant is (a task of the
//! sessions' runtime) and handed to the caller, so that a grant the caller
//! never takes (it gave up as the answer came) is let go when dropped,
//! never stranded on the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::keys::Key;
use super::session::Session;
use crate::backend::{HeldLock, LostSignal};
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::mode::LockMode;

/// A held advisory lock.
#[derive(Debug)]
pub(crate) struct PgHeld {
    runtime: tokio::runtime::Handle,
    /// `None` once let go.
    session: Option<Arc<Session>>,
    lost: LostSignal,
    key: Key,
    mode: LockMode,
    token: FencingToken,
    /// The handle's count of held locks.
    held: Arc<AtomicI64>,
    /// For a lock granted on the session kept for waits: its permit, given
    /// back once the unlock is done (that session must not block in
    /// another wait while it holds a lock: the unlock would queue behind).
    waiting: Option<Arc<Semaphore>>,
}

impl PgHeld {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        session: Arc<Session>,
        key: Key,
        mode: LockMode,
        token: u64,
        held: Arc<AtomicI64>,
        waiting: Option<Arc<Semaphore>>,
    ) -> Self {
        held.fetch_add(1, Ordering::Relaxed);
        PgHeld {
            runtime,
            lost: session.lost.clone(),
            session: Some(session),
            key,
            mode,
            token: FencingToken::new(token),
            held,
            waiting,
        }
    }

    /// Sends the unlock (unless the session is gone, which let go of it
    /// already), without waiting for its answer.
    fn let_go(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        self.held.fetch_sub(1, Ordering::Relaxed);
        let (key, mode, waiting) = (self.key, self.mode, self.waiting.take());
        if session.lost.is_lost() {
            if let Some(permits) = waiting {
                permits.add_permits(1);
            }
            return;
        }
        self.runtime.spawn(async move {
            if let Err(e) = session.unlock(key, mode).await {
                tracing::warn!(error = %e, "releasing an advisory lock; the session lets go of it when it ends");
            }
            if let Some(permits) = waiting {
                permits.add_permits(1);
            }
        });
    }
}

impl HeldLock for PgHeld {
    fn release(
        mut self: Box<Self>,
        _remove_file: bool,
        _held_for: Option<Duration>,
    ) -> Result<(), LockError> {
        self.let_go();
        Ok(())
    }

    fn token(&self) -> Result<FencingToken, LockError> {
        Ok(self.token)
    }

    fn lost(&self) -> Option<&LostSignal> {
        Some(&self.lost)
    }
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        self.let_go();
    }
}
