//! Every Unix but Linux: what the crate does without Linux's extras. Only
//! compiled here (and in Linux unit tests); see the module docs of `sys`.

use std::fs::File;
use std::path::Path;

/// No portable way to ask who holds a `flock`: unknown.
pub(crate) fn holder_of(_lock_path: &Path) -> Option<u32> {
    None
}

/// No keep-size preallocation: the file grows as it is written.
pub(crate) fn reserve(_file: &File, _len: u64) {}

/// Without a wake signal, waits poll; nothing needs to be woken.
pub(crate) fn install_wake_handler() -> bool {
    false
}

/// A thread that cannot be signalled here.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WaitingThread;

impl WaitingThread {
    /// The calling thread.
    pub(crate) fn current() -> Self {
        WaitingThread
    }

    /// Does nothing: [`install_wake_handler`] said no, so no wait relies on it.
    pub(crate) fn wake(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_knows_no_holder_and_never_offers_signals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("f")).expect("create");
        assert_eq!(holder_of(&dir.path().join("f")), None);
        reserve(&file, 1 << 20);
        assert_eq!(file.metadata().expect("stat").len(), 0);
        assert!(!install_wake_handler());
        WaitingThread::current().wake();
    }
}
