//! When the program handles SIGURG itself, the crate leaves the handler
//! alone and cancelled waits fall back to polling: they still end, and the
//! lock still hands over. Its own test binary, since the signal disposition
//! is process-wide and decided on first use.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_filelock::Category;
use support::{eventually, locks_in, spawn_holder, threads_in_flock_wait};

#[test]
fn child_entry() {
    support::child_entry();
}

static APP_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn app_handler(_: libc::c_int) {
    APP_HANDLER_CALLS.fetch_add(1, Ordering::Relaxed);
}

fn sigurg_handler() -> libc::sighandler_t {
    // SAFETY: querying a disposition with a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGURG, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[test]
fn with_the_programs_own_sigurg_handler_waits_poll_and_still_cancel() {
    let app = app_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only bumps an atomic.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = app;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGURG, &act, std::ptr::null_mut()), 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    rt.block_on(async {
        let wait = tokio::spawn({
            let (locks, target) = (locks.clone(), target.clone());
            async move {
                locks
                    .lock(Category::Manifest, &target)
                    .timeout(Duration::from_millis(600))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Mid-wait: a wait is in progress, and it polls instead of blocking
        // in flock (with the wake signal it would be blocked in flock).
        assert_eq!(support::os_metrics(&locks).kernel_waits_now, 1);
        let in_flock = tokio::task::spawn_blocking(threads_in_flock_wait)
            .await
            .unwrap();
        assert_eq!(in_flock, 0, "a polling wait never blocks in flock");
        let err = wait.await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err}");
    });
    // Polling waits sleep, not block in flock, and end once cancelled.
    assert!(eventually(Duration::from_secs(2), || support::os_metrics(
        &locks
    )
    .kernel_waits_now
        == 0));
    assert_eq!(
        sigurg_handler(),
        app,
        "the program's handler was left in place"
    );
    assert_eq!(
        APP_HANDLER_CALLS.load(Ordering::Relaxed),
        0,
        "no signal was sent"
    );
    // Hand-over still works.
    rt.block_on(support::granted_after_release(&locks, &target, &mut holder));
    holder.finish();
}
