//! The sink's committer: takes the lock on a thread of the blocking pool,
//! then writes everything queued, batch after batch.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::file::lock;
use super::queue::{Entry, Inner};
use crate::error::LockError;
use crate::lock::acquire::Ask;
use crate::mode::LockMode;

/// How long the committer waits for more records before it leaves the
/// blocking pool thread.
const LINGER: Duration = Duration::from_millis(1);

/// The sink's committer: at most one per sink, on the blocking pool,
/// started by the first append that finds none running. Each round it takes
/// the lock, then everything queued by then (records that arrived while it
/// waited for the lock join the batch), writes it as one `write` with at most
/// one fsync, lets go of the lock and replies to each append; it goes round
/// until the queue is empty. Group commit without a leader election, with no
/// thread hand-off between the lock grant and the write, and an append that
/// is dropped never abandons anyone else's record.
pub(super) fn run_committer(inner: Arc<Inner>) {
    loop {
        let token = CancellationToken::new();
        {
            let mut pending = lock(&inner.pending);
            if pending.queue.is_empty() {
                // Appenders just answered usually queue again within
                // microseconds: wait a little for them rather than leave and
                // be started again (a blocking-pool hand-off per commit).
                pending.lingering = true;
                pending = inner
                    .more
                    .wait_timeout_while(pending, LINGER, |p| p.queue.is_empty())
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                pending.lingering = false;
            }
            if pending.queue.is_empty() {
                pending.committing = false;
                drop(pending);
                inner.idle.notify_waiters();
                return;
            }
            // Set under the same lock as the look at the queue, so that the
            // withdrawal of its last record always finds the wait to cancel.
            pending.waiting = Some(token.clone());
        }
        let ask = Ask {
            category: inner.category,
            target: &inner.path,
            mode: LockMode::Exclusive,
            owner: None,
        };
        let locked = inner.locks.engine().acquire_blocking(ask, &token);
        let mut pending = lock(&inner.pending);
        pending.waiting = None;
        let guard = match locked {
            // Cancelled: every record of the round was withdrawn (the runtime
            // may be shutting down). Records queued since then start a new
            // round; none of them hears of this wait.
            Ok(None) => continue,
            Ok(Some(guard)) => Ok(guard),
            Err(e) => Err(e),
        };
        // Everything queued by now, including what came while we waited.
        let mut batch: Vec<Entry> = pending.queue.drain(..).collect();
        drop(pending);
        if batch.is_empty() {
            // Withdrawn after the lock was granted: nothing to write.
            continue;
        }
        let result = guard.and_then(|guard| {
            // Moved, not copied: each entry keeps only its reply channel.
            let chunks: Vec<(Vec<u8>, u64)> = batch
                .iter_mut()
                .map(|e| (std::mem::take(&mut e.lines), e.records))
                .collect();
            let written = inner.shared.write_batch(&chunks);
            // Let go before replying: another process may go at once.
            guard.release_blocking_or_warn();
            written
        });
        // Recorded before anyone hears back, so a `close` called after an
        // append returned knows this commit ran before it.
        {
            let mut pending = lock(&inner.pending);
            pending.rounds += 1;
            pending.last_error = result.as_ref().err().cloned();
        }
        for entry in batch {
            let _ = entry
                .done
                .send(result.as_ref().map(|_| ()).map_err(LockError::clone));
        }
    }
}
