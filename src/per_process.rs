//! [`PerProcess`]: process-wide state that a child made by `fork()` (without
//! `exec`) does not inherit.
//!
//! After `fork()` the child has a copy of the parent's memory but only the
//! thread that forked: state that describes the parent's threads and tasks
//! (queues they hold, waits their threads serve) would hang the child. So
//! each value is tagged with the fork generation that made it
//! (`sys::fork_generation`, bumped in a child by a `pthread_atfork`
//! handler), and a process that finds a value of another generation makes
//! its own, in a fresh slot, never touching the parent's (whose mutexes may
//! have been held at the fork). Each fork generation adds one small slot,
//! leaked; a lookup costs an atomic load (`getpid` would be a system call
//! on every acquisition).

use std::sync::OnceLock;

use crate::sys::fork_generation;

/// A value per process; see the module docs.
#[derive(Debug)]
pub(crate) struct PerProcess<T: 'static> {
    root: OnceLock<Box<Node<T>>>,
}

#[derive(Debug)]
struct Node<T> {
    generation: u64,
    value: T,
    next: OnceLock<Box<Node<T>>>,
}

impl<T: 'static> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess {
            root: OnceLock::new(),
        }
    }

    /// This process's value, made with `init` on first use.
    pub(crate) fn get(&'static self, init: impl Fn() -> T) -> &'static T {
        let generation = fork_generation();
        let node = || {
            Box::new(Node {
                generation,
                value: init(),
                next: OnceLock::new(),
            })
        };
        let mut at: &'static Node<T> = self.root.get_or_init(node);
        // A child's generation differs from every one before its fork.
        while at.generation != generation {
            at = at.next.get_or_init(node);
        }
        &at.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_process_made_once() {
        static COUNT: PerProcess<std::sync::atomic::AtomicU32> = PerProcess::new();
        let a = COUNT.get(|| std::sync::atomic::AtomicU32::new(7));
        let b = COUNT.get(|| std::sync::atomic::AtomicU32::new(9));
        assert!(std::ptr::eq(a, b));
        assert_eq!(b.load(std::sync::atomic::Ordering::SeqCst), 7);
    }
}
