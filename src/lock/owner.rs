//! [`Owner`]: who is asking for a lock, for the self-deadlock check and the
//! lock-order check.

use tokio::task;

/// The tokio task, or, for a future driven by `block_on` outside any task
/// (the body of `#[tokio::test]`, `Runtime::block_on`), the thread, which
/// such a future never leaves. A guard moved to another task still counts
/// for the one that acquired it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Task(task::Id),
    Thread(std::thread::ThreadId),
}

impl Owner {
    pub fn current() -> Owner {
        match task::try_id() {
            Some(id) => Owner::Task(id),
            None => Owner::Thread(current_thread_id()),
        }
    }
}

/// What a wait does when the asking task (or `block_on` thread) already
/// holds the lock it asks for.
///
/// A task id cannot tell a sibling future of the same task (`join!`,
/// `select!`, `buffer_unordered`, `FuturesUnordered`), which will let go,
/// from a nested acquire in the same future, which never can. So by default
/// such a wait waits like any other, with a warning naming the lock while it
/// does, and a timeout error that says the holder is this same task.
///
/// ```
/// use async_filelock::{Locks, SameTask};
/// // For code that never runs sibling futures on one lock: refuse at once.
/// let locks = Locks::builder().same_task(SameTask::Refuse).build()?;
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SameTask {
    /// Wait, warning that the holder is this same task (the default).
    #[default]
    Wait,
    /// Refuse at once with [`crate::LockError::WouldDeadlock`].
    Refuse,
}

/// This thread's id, read once per thread: `thread::current()` clones an
/// `Arc` each time, a visible share of an uncontended acquisition outside
/// a task (`block_on`).
fn current_thread_id() -> std::thread::ThreadId {
    thread_local! {
        static ID: std::thread::ThreadId = std::thread::current().id();
    }
    // Gone while the thread's own locals are dropped: asked afresh.
    ID.try_with(|id| *id)
        .unwrap_or_else(|_| std::thread::current().id())
}
