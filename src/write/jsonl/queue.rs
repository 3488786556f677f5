//! What the appenders of a sink and its committer share: the queue of
//! records waiting for a commit, and the committer's state.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use super::file::Shared;
use crate::category::Category;
use crate::error::LockError;
use crate::lock::Locks;
use crate::lock::owner::Owner;

#[derive(Debug)]
pub(super) struct Inner {
    pub locks: Locks,
    pub category: Category,
    pub path: PathBuf,
    pub shared: Arc<Shared>,
    pub pending: Mutex<Pending>,
    /// Told when the committer finds nothing left to do.
    pub idle: Notify,
    /// Wakes a lingering committer when a record is queued, and a parked
    /// one when it is handed the lead.
    pub more: std::sync::Condvar,
    pub permits: Semaphore,
    pub max_pending: usize,
    pub closed: AtomicBool,
    /// Whether commits may run on appenders' threads (see
    /// `committer::commits_inline`), decided when the sink opened.
    pub commits_inline: bool,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    pub next_id: u64,
    pub queue: VecDeque<Entry>,
    /// Whether a commit is led: by an appender on its own thread, by the
    /// committer thread, or by its async lock wait. The leader takes
    /// everything queued, batch after batch, until the queue is empty.
    pub committing: bool,
    /// Whether a batch taken from the queue is being written (its appends
    /// not answered yet): `close` waits for it, and for the queue.
    pub writing: bool,
    /// Whether the committer is waiting on `Inner::more` for records,
    /// holding the lead (sinks whose commits never run on appenders'
    /// threads).
    pub lingering: bool,
    /// Whether the committer thread waits without the lead, to be handed
    /// it by an appender that found the lock busy (sinks whose commits run
    /// on appenders' threads).
    pub parked: bool,
    /// The lead was handed to the parked committer thread.
    pub handed: bool,
    /// The runtime of the appender that handed it, for the thread's async
    /// lock waits.
    pub handed_runtime: Option<tokio::runtime::Handle>,
    /// The appender that leads the next commit yields once before it
    /// writes, holding the lead; `close` may take it from it. Set with
    /// `committing`, under the same lock, so `close` never misses it.
    pub yielding: bool,
    /// That appender's runtime, for the committer thread `close` hands the
    /// lead to.
    pub yielding_runtime: Option<tokio::runtime::Handle>,
    /// The committer's async lock wait, when it has one: cancelled when the
    /// last queued record is withdrawn, so that a wait nobody needs any
    /// more (every append dropped or timed out) ends at once.
    pub waiting: Option<CancellationToken>,
    /// Commits finished, and the error of the latest if it failed: `close`
    /// reports a failure of the commits that ran while it waited.
    pub rounds: u64,
    pub last_error: Option<LockError>,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub id: u64,
    /// The appender's task: the commit takes the lock on its behalf, so
    /// an append under the caller's own guard is seen as this task's.
    pub owner: Owner,
    pub lines: Vec<u8>,
    pub records: u64,
    pub done: oneshot::Sender<Result<(), LockError>>,
}
