//! Fair hand-over across the thread hop: a blocking wait that starts after
//! the lock came free stands aside once for a waiter the release woke.
//!
//! In its own test binary because the count it checks is process-wide.

mod support;

use std::time::Duration;

use async_filelock::Category;
use support::{locks_in, spawn_holder};

/// Entry point of the child processes these tests spawn; does nothing when
/// run as an ordinary test.
#[test]
fn child_entry() {
    support::child_entry();
}

/// First a wait that finds the lock still held: it queues at once, with no
/// standing aside. Then the gap is made wide on purpose: the blocking pool
/// has one thread, kept busy while the other process releases, so the
/// task's non-blocking attempt fails and its blocking wait starts only after
/// the release. That wait must stand aside exactly once (a woken waiter
/// would then go first) and still be granted the lock. One test, because
/// the count is process-wide.
#[test]
fn a_wait_stands_aside_once_when_the_lock_came_free_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let locks = locks_in(dir.path());
    let stood_aside = || support::os_metrics(&locks).blocking_waits_stood_aside;

    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    rt.block_on(async {
        let waiter = tokio::spawn({
            let (locks, target) = (locks.clone(), target.clone());
            async move { locks.lock(Category::Manifest, &target).await }
        });
        // Release only once the wait is in `flock`, past its check: a
        // release before the check would rightly make it stand aside.
        let in_flock = async {
            while support::threads_in_flock_wait() != 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), in_flock)
            .await
            .expect("the wait reaches flock");
        holder.tell("release");
        let guard = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("granted after the holder released")
            .unwrap()
            .unwrap();
        guard.release().await.unwrap();
    });
    holder.finish();
    assert_eq!(stood_aside(), 0, "a wait behind a holder queues at once");

    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    rt.block_on(async {
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let busy = tokio::task::spawn_blocking(move || wait_for_go.recv());

        let mut acquire = Box::pin(locks.lock(Category::Manifest, &target));
        assert!(
            futures_util::poll!(&mut acquire).is_pending(),
            "the lock is held by another process"
        );
        holder.tell("release");
        assert_eq!(holder.read(), "released");
        go.send(()).unwrap();
        busy.await.unwrap().unwrap();

        // Generous: it catches a wait that never ends, not a slow one.
        let guard = tokio::time::timeout(Duration::from_secs(10), acquire)
            .await
            .expect("granted after standing aside")
            .expect("lock");
        assert_eq!(
            stood_aside(),
            1,
            "the wait found the lock free and must have stood aside once"
        );
        guard.release().await.unwrap();
    });
    holder.finish();
}
