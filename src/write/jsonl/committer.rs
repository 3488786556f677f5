//! The sink's committer: takes the lock, then writes everything queued,
//! batch after batch.
//!
//! The appender that finds no commit under way leads the next one
//! ([`lead`]). Where a commit cannot block for long (no fsync, a local
//! filesystem, the OS backend, a lock file kept on release), it first
//! commits right there, on its own thread, if the lock is free at once: no
//! hand-off to another thread and back, which under four contending
//! processes was most of a record's cost (see ARCHITECTURE.md, "The JSONL
//! committer"). Otherwise, or when the lock is busy, the committer thread
//! takes the lead.
//!
//! That thread is the crate's own, not one of tokio's blocking pool (which
//! is the program's, and which a runtime shutdown waits for). It takes
//! the lock there: at once if free, else by waiting on that same thread
//! when the backend's bound on such waits allows, so the thread granted
//! the lock writes at once with no hand-off (a contended manifest hands the
//! lock between processes thousands of times a second). When it cannot
//! wait there (this process's own queue for the lock is busy, the bound is
//! reached, or the appender holds the lock itself), it hands the wait to an
//! async task, which costs no thread and has the deadline and the warnings
//! of any acquisition, and which starts the next round with the lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::FsyncPolicy;
use super::file::{BatchOutcome, Shared, lock};
use super::queue::{Entry, Inner};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::acquire::Ask;
use crate::lock::{LockGuard, Locks};
use crate::mode::LockMode;

/// How long the committer waits for more records before its thread ends.
const LINGER: Duration = Duration::from_millis(1);

/// Rounds an appender commits on its own thread before it hands the lead
/// to the committer thread: its own record is written in the first, and
/// its task should not write everyone else's for long.
const INLINE_ROUNDS: usize = 4;

/// Whether commits of a sink may run on an appender's thread (decided
/// once, when the sink opens: `Inner::commits_inline`): they never fsync
/// (an fsync takes milliseconds) and the file is on a local filesystem
/// (each commit reopens it otherwise, and a call may hang). The lock's own
/// conditions are [`crate::lock::acquire::Engine::try_here`]'s.
pub(super) fn commits_inline(shared: &Shared, locks: &Locks, category: Category) -> bool {
    shared.fsync == FsyncPolicy::Never
        && !shared.reopen_each_commit
        // A rotation syncs the file it closes and its directory.
        && shared.rotation.max_bytes.is_none()
        && shared.rotation.max_records.is_none()
        && locks.engine().may_try_here(category)
}

/// Leads the next commit, for the appender that claimed it (set
/// `committing`, and, where commits run inline, `yielding` with its
/// runtime): rounds on this thread while the lock is free at once and
/// records are queued, then, if any are left, the committer thread.
///
/// Cancel safe: if the appender's future is dropped at its one await (a
/// yield, so that the tasks its last commit woke queue their records and
/// the batch is whole), the lead goes to the committer thread.
pub(super) async fn lead(inner: &Arc<Inner>) {
    if !inner.commits_inline {
        hand_to_thread(inner, Handle::try_current().ok());
        return;
    }
    let mut handing = HandOnDrop(Some(Arc::clone(inner)));
    tokio::task::yield_now().await;
    // Polled again: the lead is still this appender's, unless `close`
    // took it (below).
    handing.0 = None;
    let runtime = {
        let mut pending = lock(&inner.pending);
        if !std::mem::take(&mut pending.yielding) {
            // `close` took the lead meanwhile and handed it on.
            return;
        }
        pending.yielding_runtime.take()
    };
    for _ in 0..INLINE_ROUNDS {
        match inner.locks.engine().try_here(ask(inner)) {
            Ok(Some(guard)) => {
                lock(&inner.shared.stats).inline_commits += 1;
                commit_round(inner, Ok(guard));
            }
            // Busy: the committer thread waits for it.
            Ok(None) => break,
            Err(e) => commit_round(inner, Err(e)),
        }
        let mut pending = lock(&inner.pending);
        if pending.queue.is_empty() {
            pending.committing = false;
            drop(pending);
            inner.idle.notify_waiters();
            return;
        }
    }
    hand_to_thread(inner, runtime);
}

/// Hands a yielded lead to the committer thread if dropped (the leader's
/// future was dropped at its yield).
struct HandOnDrop(Option<Arc<Inner>>);

impl Drop for HandOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            take_yielded_lead(&inner);
        }
    }
}

/// If an appender holds the lead across its yield, takes it and hands it
/// to the committer thread, with that appender's runtime; true if it did.
/// For the leader's dropped future, and for `close` (the leader's future
/// may never be polled again).
pub(super) fn take_yielded_lead(inner: &Arc<Inner>) -> bool {
    let runtime = {
        let mut pending = lock(&inner.pending);
        if !std::mem::take(&mut pending.yielding) {
            return false;
        }
        pending.yielding_runtime.take()
    };
    hand_to_thread(
        inner,
        runtime.or_else(|| tokio::runtime::Handle::try_current().ok()),
    );
    true
}

/// Gives the lead to the committer thread: the parked one, or a new one.
fn hand_to_thread(inner: &Arc<Inner>, runtime: Option<Handle>) {
    {
        let mut pending = lock(&inner.pending);
        if pending.parked {
            pending.parked = false;
            pending.handed = true;
            pending.handed_runtime = runtime;
            drop(pending);
            inner.more.notify_one();
            return;
        }
    }
    start_committer_thread(inner, runtime, None);
}

/// The sink's committer thread: at most one per sink, started by an
/// appender that leads a commit it cannot make on its own thread (and
/// finds no parked thread to hand it to), and again by its own async lock
/// wait (`granted`: the lock that wait got). Each round it has the
/// lock, then takes everything queued by then (records that arrived while
/// it waited join the batch), writes it as one `write` with at most one
/// fsync, lets go of the lock and replies to each append; it goes round
/// until the queue is empty. Group commit without a leader election, and
/// an append that is dropped never abandons anyone else's record.
fn run_committer(inner: Arc<Inner>, runtime: Option<Handle>, granted: Option<LockGuard>) {
    let mut granted = granted;
    let mut runtime = runtime;
    loop {
        let guard = match granted.take() {
            Some(guard) => Ok(guard),
            None => {
                if !has_work(&inner) {
                    return;
                }
                // Handed the lead by an appender: its runtime is alive
                // (this thread's may have shut down since it started).
                if let Some(handed) = lock(&inner.pending).handed_runtime.take() {
                    runtime = Some(handed);
                }
                match inner.locks.engine().acquire_here(ask(&inner)) {
                    Ok(Some(guard)) => Ok(guard),
                    Ok(None) => {
                        if wait_elsewhere(&inner, runtime.as_ref()) {
                            return;
                        }
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        commit_round(&inner, guard);
    }
}

/// Whether records wait for a commit, lingering a little for them;
/// otherwise the committer stops (and says so to `close`). Where appenders
/// commit on their own threads, it gives up the lead while it lingers, so
/// that they do (see [`park`]).
fn has_work(inner: &Inner) -> bool {
    if inner.commits_inline {
        return park(inner);
    }
    let mut pending = lock(&inner.pending);
    if pending.queue.is_empty() {
        // Appenders just answered usually queue again within
        // microseconds: wait a little for them rather than leave and be
        // started again (a thread start per commit).
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
        return false;
    }
    true
}

/// With nothing queued: gives up the lead (an appender leads the next
/// commit, on its own thread if it can) and waits a little to be handed
/// it back (the lock was busy); true when handed it, false when the thread
/// ends.
fn park(inner: &Inner) -> bool {
    let mut pending = lock(&inner.pending);
    if !pending.queue.is_empty() {
        return true;
    }
    pending.committing = false;
    pending.parked = true;
    drop(pending);
    inner.idle.notify_waiters();
    let pending = lock(&inner.pending);
    let mut pending = inner
        .more
        .wait_timeout_while(pending, LINGER, |p| !p.handed)
        .unwrap_or_else(|p| p.into_inner())
        .0;
    pending.parked = false;
    // Handed the lead: `committing` was set for it by the appender.
    if !std::mem::take(&mut pending.handed) {
        return false;
    }
    if pending.queue.is_empty() {
        // Withdrawn since: no commit to lead, and no wait for nobody.
        pending.committing = false;
        pending.handed_runtime = None;
        drop(pending);
        inner.idle.notify_waiters();
        return false;
    }
    true
}

/// What the commit asks for: the sink's lock, on behalf of the oldest
/// queued append's task.
fn ask(inner: &Inner) -> Ask<'_> {
    Ask {
        category: inner.category,
        target: &inner.path,
        mode: LockMode::Exclusive,
        owner: lock(&inner.pending).queue.front().map(|e| e.owner),
    }
}

/// Starts the committer on a thread of its own (see the module docs);
/// `granted`: the lock its wait got. If no thread can be started, the
/// queued records are answered with that error.
///
/// `runtime` runs the async lock waits the thread hands off: the runtime of
/// the append that started it (none: such waits fail, naming the path).
pub(super) fn start_committer_thread(
    inner: &Arc<Inner>,
    runtime: Option<Handle>,
    granted: Option<LockGuard>,
) {
    let committer = Arc::clone(inner);
    let started = std::thread::Builder::new()
        .name("async-filelock-commit".into())
        .spawn(move || run_committer(committer, runtime, granted));
    if let Err(e) = started {
        // Under one lock: a record queued after the batch was taken must
        // find no leader, and lead itself.
        let batch: Vec<Entry> = {
            let mut pending = lock(&inner.pending);
            pending.committing = false;
            pending.queue.drain(..).collect()
        };
        if !batch.is_empty() {
            let error = LockError::io("start a commit thread for", &inner.path, e);
            reply(inner, batch, BatchOutcome::failed(0, error));
        }
        inner.idle.notify_waiters();
    }
}

/// Hands the lock wait to an async task, which starts the next round with
/// the lock. False (keep going here) if no records are left to wait for,
/// or no runtime can run the task.
fn wait_elsewhere(inner: &Arc<Inner>, runtime: Option<&Handle>) -> bool {
    let token = CancellationToken::new();
    {
        let mut pending = lock(&inner.pending);
        if pending.queue.is_empty() {
            return false;
        }
        // Set under the same lock as the look at the queue, so that the
        // withdrawal of its last record always finds the wait to cancel.
        pending.waiting = Some(token.clone());
    }
    let Some(runtime) = runtime else {
        lock(&inner.pending).waiting = None;
        let err = LockError::io(
            "wait for the lock of",
            &inner.path,
            std::io::Error::other("no tokio runtime to wait in"),
        );
        reply_to_batch(inner, err);
        return false;
    };
    let inner = Arc::clone(inner);
    let handle = runtime.clone();
    // If the task is dropped unfinished (its runtime shut down, or was gone
    // already), a committer thread takes over, so the sink is never left
    // waiting for a commit nobody runs.
    let resume = Resume(Some(Arc::clone(&inner)));
    runtime.spawn(async move {
        // No deadline of its own: each append has its deadline (a record
        // queued later must not inherit an earlier one), and the wait is
        // called off when the last queued record is withdrawn.
        let acquired = inner
            .locks
            .engine()
            .acquire(ask(&inner), Instant::now(), None, &token)
            .await;
        lock(&inner.pending).waiting = None;
        let granted = match acquired {
            Ok(Ok(guard)) => Some(guard),
            // Called off: every record of the round was withdrawn (the
            // runtime may be shutting down). Records queued since start a
            // new round; none of them hears of this wait.
            Ok(Err(_called_off)) => None,
            Err(e) => {
                reply_to_batch(&inner, e);
                None
            }
        };
        resume.disarm();
        start_committer_thread(&inner, Some(handle), granted);
    });
    true
}

/// Starts a committer thread (with no runtime to hand waits to) if the
/// async wait that holds it is dropped unfinished.
struct Resume(Option<Arc<Inner>>);

impl Resume {
    /// The wait finished: the next committer is started by its task.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            lock(&inner.pending).waiting = None;
            start_committer_thread(&inner, None, None);
        }
    }
}

/// One commit under `guard` (or the error that kept the lock from us):
/// takes everything queued, writes it, lets go, replies.
fn commit_round(inner: &Inner, guard: Result<LockGuard, LockError>) {
    // Everything queued by now, including what came while we waited.
    let mut batch: Vec<Entry> = {
        let mut pending = lock(&inner.pending);
        pending.writing = true;
        pending.queue.drain(..).collect()
    };
    if batch.is_empty() {
        // Withdrawn after the lock was granted: nothing to write.
        lock(&inner.pending).writing = false;
        inner.idle.notify_waiters();
        if let Ok(guard) = guard {
            guard.release_blocking_or_warn();
        }
        return;
    }
    let outcome = match guard {
        Ok(guard) => {
            // Moved, not copied: each entry keeps only its reply channel.
            let mut chunks: Vec<(Vec<u8>, u64)> = batch
                .iter_mut()
                .map(|e| (std::mem::take(&mut e.lines), e.records))
                .collect();
            let outcome = match fence(inner, &guard, &mut chunks) {
                Ok(()) => inner.shared.write_batch(&chunks),
                // A lost lock (a soft lock's lease) writes nothing.
                Err(e) => BatchOutcome::failed(0, e),
            };
            inner.shared.done_with_commit();
            // Let go before replying: another process may go at once.
            guard.release_blocking_or_warn();
            outcome
        }
        Err(e) => BatchOutcome::failed(0, e),
    };
    reply(inner, batch, outcome);
}

/// Before a commit: refuses under a lost lock, and stamps the records with
/// the commit's fencing token if the sink asks for it.
fn fence(inner: &Inner, guard: &LockGuard, chunks: &mut [(Vec<u8>, u64)]) -> Result<(), LockError> {
    guard.check_not_lost()?;
    let Some(field) = &inner.shared.token_field else {
        return Ok(());
    };
    let token = guard.token()?;
    for (lines, _) in chunks.iter_mut() {
        *lines = super::stamp::stamp(lines, field, token.get());
    }
    lock(&inner.shared.stats).last_token = Some(token);
    Ok(())
}

/// Answers every queued record with `error` (one that kept the lock from
/// the commit: nothing of theirs was written).
fn reply_to_batch(inner: &Inner, error: LockError) {
    let batch: Vec<Entry> = lock(&inner.pending).queue.drain(..).collect();
    if !batch.is_empty() {
        reply(inner, batch, BatchOutcome::failed(0, error));
    }
}

/// Answers each record for itself: the first `outcome.written` are in the
/// file, the rest are not and hear why.
fn reply(inner: &Inner, batch: Vec<Entry>, outcome: BatchOutcome) {
    // Recorded before anyone hears back, so a `close` called after an
    // append returned knows this commit ran before it.
    {
        let mut pending = lock(&inner.pending);
        pending.rounds += 1;
        pending.last_error = outcome.error.clone();
        pending.writing = false;
    }
    for (i, entry) in batch.into_iter().enumerate() {
        let result = match &outcome.error {
            Some(e) if i >= outcome.written => Err(e.clone()),
            _ => Ok(()),
        };
        let _ = entry.done.send(result);
    }
    inner.idle.notify_waiters();
}
