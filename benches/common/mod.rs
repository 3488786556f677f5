//! What the benches share: runtimes the size of the CI machine, and lock
//! handles with their lock files in a temp dir.

use std::path::Path;

use async_filelock::{Category, Locks};
use tokio::runtime::Runtime;

/// A current-thread runtime, or a multi-thread one with two workers (the
/// machine has two cores).
pub fn runtime(multi_thread: bool) -> Runtime {
    let mut builder = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().expect("runtime")
}

/// Locks with lock files in `dir/locks`; the manifest lock waits forever,
/// so a slow round is measured, not failed.
pub fn locks_in(dir: &Path) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .wait_forever(Category::Manifest)
        .build()
        .expect("locks")
}
