//! Helpers for testing code that uses this crate, in your own tokio test
//! suites (feature `test-util`): a [`Locks`](crate::Locks) in a fresh
//! temporary directory ([`TempLocks`]), a lock held by another process
//! until you say so ([`ChildHolder`]), and a wait until someone waits for a
//! lock ([`wait_until_contended`]).
//!
//! Enable the feature for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! async-filelock = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! # The holder is this same test program
//!
//! "Another process holds it" needs another process that takes the lock
//! through this crate, with the same lock dir, backend and permissions as
//! the handle under test. [`ChildHolder::hold`] starts the running test
//! program again (`std::env::current_exe()`) with the lock to take in its
//! environment; the child takes it, says so on a pipe, and holds it until
//! told to release it or killed. The child must run this crate's hook
//! before anything else, so each test program that uses [`ChildHolder`]
//! says once where it is:
//!
//! * a test file run by the usual libtest harness (`#[tokio::test]`s):
//!   `async_filelock::test_util::child_hook!();` once in the test crate
//!   (at its top level, or in a module such as `tests/common/mod.rs`). It
//!   adds one test, `async_filelock_test_util_child`, which does nothing in
//!   a normal run and is the one test the child runs;
//! * a test (or program) with its own `main` (`harness = false`): call
//!   [`child_main`] first in `main`.
//!
//! A program that forgot makes [`ChildHolder::hold`] fail with an error
//! that says which line to add, not hang. Why not something that needs no
//! line at all:
//!
//! * a helper binary of this crate cannot be found from your crate: cargo
//!   sets `CARGO_BIN_EXE_<name>` only for a package's own binaries, and a
//!   dependency's binaries are not built for its dependents;
//! * `flock(1)` or `python3` holding the lock file are not on every machine,
//!   and would hold only an OS lock: not a soft lock, not with this crate's
//!   lock file record or fencing token;
//! * a `fork()` of a multi-threaded test process may only make
//!   async-signal-safe calls, and taking a lock through this crate
//!   allocates and starts threads.
//!
//! # Example
//!
//! A test file `tests/downloads.rs` of your crate:
//!
//! ```no_run
//! // The child process that holds locks runs this one test (see above).
//! async_filelock::test_util::child_hook!();
//!
//! use async_filelock::test_util::{ChildHolder, TempLocks, wait_until_contended};
//! use async_filelock::{Artifact, ArtifactWriter, Category, OnBusy};
//! use std::time::Duration;
//!
//! #[tokio::test]
//! async fn a_download_someone_else_is_doing_is_skipped() {
//!     let locks = TempLocks::new().expect("locks");
//!     let target = locks.path("model.bin");
//!     let holder = ChildHolder::hold(&locks, Category::Artifact, &target).await.expect("holder");
//!     let open = ArtifactWriter::builder(&target)
//!         .locks(locks.locks().clone())
//!         .on_busy(OnBusy::Skip)
//!         .open()
//!         .await
//!         .expect("open");
//!     assert!(matches!(open, Artifact::Busy));
//!     holder.release().await.expect("release");
//! }
//!
//! #[tokio::test]
//! async fn a_waiting_download_goes_on_once_the_holder_lets_go() {
//!     let locks = TempLocks::new().expect("locks");
//!     let target = locks.path("model.bin");
//!     let holder = ChildHolder::hold(&locks, Category::Artifact, &target).await.expect("holder");
//!     let waiter = tokio::spawn({
//!         let (locks, target) = (locks.locks().clone(), target.clone());
//!         async move { locks.lock(Category::Artifact, &target).await }
//!     });
//!     // No sleep to guess when the task is waiting: wait until it is.
//!     let waiting = wait_until_contended(&locks, Category::Artifact, &target, Duration::from_secs(10));
//!     assert!(waiting.await.expect("lock path"));
//!     holder.release().await.expect("release");
//!     waiter.await.expect("task").expect("granted once the holder let go");
//! }
//! ```

mod child;
mod contended;
mod hook;
mod spec;
mod temp;

pub use child::ChildHolder;
pub use contended::{is_contended, wait_until_contended};
pub use hook::child_main;
pub use temp::TempLocks;

/// Adds the test that a [`ChildHolder`]'s child process runs: put
/// `async_filelock::test_util::child_hook!();` once at the top level of
/// each test file (libtest harness) that uses [`ChildHolder`]. In a normal
/// run the test it adds, `async_filelock_test_util_child`, returns at once.
/// A test program with its own `main` calls [`child_main`] instead.
///
/// ```
/// async_filelock::test_util::child_hook!();
/// # fn main() {}
/// ```
#[doc(inline)]
pub use crate::__async_filelock_test_util_child_hook as child_hook;

/// The macro behind [`child_hook`], exported at the crate root as every
/// `macro_rules!` macro is; use it as `test_util::child_hook!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __async_filelock_test_util_child_hook {
    () => {
        #[test]
        fn async_filelock_test_util_child() {
            $crate::test_util::child_main();
        }
    };
}
