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

/// A wait that finds the lock still held when its kernel wait starts queues
/// in `flock` at once, with no standing aside, and is granted when the other
/// process lets go. (That a kernel wait which finds the lock freed meanwhile
/// stands aside is proved in `backend::os::kernel`'s unit tests, where the
/// gap can be made on purpose.)
#[test]
fn a_wait_behind_a_holder_queues_in_flock_without_standing_aside() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let locks = locks_in(dir.path());
    let stood_aside = || support::os_metrics(&locks).waits_stood_aside;

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
}
