//! Brief holds poll before they park (ARCHITECTURE.md): a wait for a lock
//! this process held briefly the last time tries again on its own task for
//! a while before a crate thread waits for it in the kernel; a lock held
//! long, or not held lately, is waited for in the kernel at once. The other
//! holder is Python's `fcntl.flock`, not this crate.
//!
//! The OS backend's counters are process-wide, so these tests run one at a
//! time.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_filelock::{Category, LockError, Locks};
use support::{PythonHolder, blocking_waits_reach, locks_in, os_metrics};

#[test]
fn child_entry() {
    support::child_entry();
}

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes and lets go of `target`'s manifest lock in this process, holding
/// it for `hold`. A holding meant to be brief is taken again until it was
/// clearly under the bound (a process's first holding includes the
/// crate's one-time setup, and a loaded machine can preempt any).
fn hold_here(rt: &tokio::runtime::Runtime, locks: &Locks, target: &Path, hold: Duration) {
    rt.block_on(async {
        for _ in 0..1000 {
            let guard = locks.lock(Category::Manifest, target).await.unwrap();
            // (A zero sleep would still wait for the timer's next tick.)
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            let held = guard.held_for();
            guard.release().await.unwrap();
            if !hold.is_zero() || held < Duration::from_micros(40) {
                return;
            }
        }
        panic!("no holding of a thousand was under 40 µs");
    });
}

/// Python takes `target`'s lock; this process waits for it; Python lets
/// go after `after`. Returns whether a poll granted the wait.
fn granted_by_a_poll(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    locks: &Locks,
    target: &Path,
    after: Duration,
) -> bool {
    let lock_path = locks.lock_path(Category::Manifest, target).unwrap();
    let mut holder = PythonHolder::hold(dir, &[lock_path], "exclusive");
    let before = os_metrics(locks).granted_on_polls;
    let waiter = rt.spawn({
        let (locks, target) = (locks.clone(), target.to_path_buf());
        async move {
            // Held briefly once more, so a later round polls too.
            locks
                .lock(Category::Manifest, &target)
                .wait_forever()
                .await
                .map(drop)
        }
    });
    std::thread::sleep(after);
    holder.release();
    rt.block_on(waiter)
        .unwrap()
        .expect("granted once Python let go");
    os_metrics(locks).granted_on_polls > before
}

#[test]
fn a_wait_for_a_lock_held_briefly_is_granted_by_a_poll_on_its_own_task() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("manifest.jsonl");
    let rt = support::runtime();
    hold_here(&rt, &locks, &target, Duration::ZERO);
    // Python lets go 3 ms into the polls; a loaded machine may let them
    // run out before that, so one of a few rounds must be granted by one.
    let polled = (0..5).any(|_| granted_by_a_poll(&rt, dir.path(), &locks, &target, ms(3)));
    assert!(
        polled,
        "no round was granted by a poll: {:?}",
        os_metrics(&locks)
    );
}

#[test]
fn a_wait_for_a_lock_held_long_or_not_held_lately_parks_at_once() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    let held_long = dir.path().join("summary.json");
    hold_here(&rt, &locks, &held_long, ms(5));
    let never_held = dir.path().join("state.sqlite");
    for target in [&held_long, &never_held] {
        // Let go during what would be the polls: a kernel wait is granted
        // by the kernel, not by a poll.
        let polled = granted_by_a_poll(&rt, dir.path(), &locks, target, ms(3));
        assert!(!polled, "{} was polled", target.display());
    }
}

#[test]
fn a_wait_for_a_lock_held_briefly_parks_in_the_kernel_after_its_polls() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("telemetry.jsonl");
    let rt = support::runtime();
    hold_here(&rt, &locks, &target, Duration::ZERO);
    let lock_path = locks.lock_path(Category::Manifest, &target).unwrap();
    let mut holder = PythonHolder::hold(dir.path(), &[lock_path], "exclusive");
    let before = os_metrics(&locks);
    let kernel_before = before.kernel_waits_now;
    let waiter = rt.spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move {
            locks
                .lock(Category::Manifest, &target)
                .wait_forever()
                .await
                .map(drop)
        }
    });
    assert!(
        blocking_waits_reach(&locks, kernel_before + 1, Duration::from_secs(10)),
        "the wait never parked: {:?}",
        os_metrics(&locks)
    );
    // It polled first (and no poll found the lock free).
    let after = os_metrics(&locks);
    assert_eq!(after.parked_after_polls, before.parked_after_polls + 1);
    assert_eq!(after.granted_on_polls, before.granted_on_polls);
    holder.release();
    rt.block_on(waiter).unwrap().expect("granted by the kernel");
}

#[test]
fn a_wait_for_a_lock_held_briefly_that_times_out_during_its_polls_leaves_nothing() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("run.jsonl");
    let rt = support::runtime();
    hold_here(&rt, &locks, &target, Duration::ZERO);
    let lock_path = locks.lock_path(Category::Manifest, &target).unwrap();
    let mut holder = PythonHolder::hold(dir.path(), &[lock_path], "exclusive");
    let before = os_metrics(&locks);
    let result = rt.block_on(locks.lock(Category::Manifest, &target).timeout(ms(5)));
    assert!(
        matches!(result, Err(LockError::Timeout { .. })),
        "{result:?}"
    );
    // Ended during the polls: no kernel wait was started, so none is left
    // behind waiting for Python.
    let after = os_metrics(&locks);
    assert_eq!(after.kernel_waits_now, before.kernel_waits_now, "{after:?}");
    assert_eq!(after.event_waits_now, before.event_waits_now, "{after:?}");
    holder.release();
    assert!(rt.block_on(support::is_free(&locks, Category::Manifest, &target)));
}

/// A wait that needs no deadline needs no timer either: it works on a
/// runtime without a time driver and outside tokio, polls included; and
/// with tokio's clock paused and the runtime never idle (so that the clock
/// never moves), the polls still run in real time.
#[test]
fn the_polls_need_no_tokio_timer_and_run_in_real_time() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("manifest.jsonl");
    hold_here(&support::runtime(), &locks, &target, Duration::ZERO);
    let lock_path = locks.lock_path(Category::Manifest, &target).unwrap();
    let no_timer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    for how in ["no timer", "outside tokio", "paused and busy"] {
        let before = os_metrics(&locks);
        let mut holder =
            PythonHolder::hold(dir.path(), std::slice::from_ref(&lock_path), "exclusive");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(ms(3));
            holder.release();
            holder
        });
        let wait = locks.lock(Category::Manifest, &target).wait_forever();
        let granted = match how {
            "no timer" => no_timer.block_on(wait),
            "outside tokio" => futures::executor::block_on(wait),
            _ => paused.block_on(async {
                let busy = Arc::new(AtomicBool::new(true));
                let spinner = tokio::spawn({
                    let busy = Arc::clone(&busy);
                    async move {
                        while busy.load(Ordering::Relaxed) {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                let granted = wait.await;
                busy.store(false, Ordering::Relaxed);
                spinner.await.unwrap();
                granted
            }),
        };
        drop(granted.unwrap_or_else(|e| panic!("{how}: {e}")));
        drop(releaser.join().unwrap());
        let after = os_metrics(&locks);
        assert!(
            after.granted_on_polls + after.parked_after_polls
                > before.granted_on_polls + before.parked_after_polls,
            "{how}: the wait did not poll"
        );
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
