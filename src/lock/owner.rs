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
            None => Owner::Thread(std::thread::current().id()),
        }
    }
}
