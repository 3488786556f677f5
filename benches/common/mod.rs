//! What the benches share: runtimes the size of the CI machine, lock
//! handles with their lock files in a temp dir, thread counts and
//! percentiles. Each bench uses a part of it.
#![allow(dead_code)]

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
/// so a slow round is measured, not failed. Of the environment, only
/// `ASYNC_FILELOCK_BATCH_WAIT_THREADS` is read, to compare the wait
/// threads' policies (`=0` for normal threads).
pub fn locks_in(dir: &Path) -> Locks {
    Locks::builder()
        .env_from(|key| {
            (key == async_filelock::ENV_BATCH_WAIT_THREADS)
                .then(|| std::env::var_os(key))
                .flatten()
        })
        .expect("ASYNC_FILELOCK_BATCH_WAIT_THREADS")
        .lock_dir(dir.join("locks"))
        .wait_forever(Category::Manifest)
        .build()
        .expect("locks")
}

/// Threads of this process now.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Threads of this process blocked in `flock` now (their `wchan`).
pub fn threads_in_flock() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| {
        tasks
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("lock_inode_wait") || w.contains("flock"))
            })
            .count()
    })
}

/// The `q` quantile of `v` (sorted in place); NaN for none.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}
