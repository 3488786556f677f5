//! The in-process table under concurrent use: idle entries are kept for
//! reuse and counted exactly, so `paths_in_use` returns to zero.
//!
//! In its own test binary because `paths_in_use` is process-wide.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_filelock::{Category, Locks};

fn locks_in(dir: &std::path::Path) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Shared holders on four threads drop their references to a few table
/// entries at once: an entry left idle by two last drops racing must be
/// counted idle exactly once (found in review: counted never, then the
/// count underflowed on the next use).
#[test]
fn concurrent_releases_leave_no_path_counted_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let locks = locks.clone();
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let rt = runtime();
                rt.block_on(async {
                    for i in 0..5_000 {
                        // A few targets, so entries are shared across threads.
                        let target = dir.join(format!("db{}", (i + t) % 3));
                        let g = locks.lock_shared(Category::Sqlite, &target).await.unwrap();
                        drop(g);
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread panicked");
    }
    assert_eq!(async_filelock::paths_in_use(), 0);
    // And many distinct paths used once leave none in use either.
    let rt = runtime();
    rt.block_on(async {
        for i in 0..500 {
            drop(
                locks
                    .lock(Category::Manifest, dir.path().join(format!("m{i}")))
                    .await
                    .unwrap(),
            );
        }
    });
    assert_eq!(async_filelock::paths_in_use(), 0);
}

/// An acquisition that completed on its first poll (the lock was free)
/// and is polled again never takes a second lock: it panics, as an `async
/// fn` polled after completion does.
#[test]
fn an_acquisition_polled_after_it_completed_panics_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("x");
    let rt = runtime();
    let _enter = rt.enter();
    let mut fut = Box::pin(locks.lock(Category::Manifest, &target));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let guard = match Pin::as_mut(&mut fut).poll(&mut cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("uncontended: ready at once"),
    };
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = Pin::as_mut(&mut fut).poll(&mut cx);
    }));
    assert!(again.is_err(), "polled again: a panic");
    drop(guard);
    let free = rt
        .block_on(locks.try_lock(Category::Manifest, &target))
        .unwrap();
    assert!(free.is_some(), "no second lock was taken");
}
