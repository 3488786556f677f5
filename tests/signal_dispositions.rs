//! Law 11: deadlines and cancellation never depend on process-wide settings
//! other code can change. The crate sends no signal and installs no
//! handler, so here the program takes `SIGURG` over (a handler with
//! `SA_RESTART`, as tokio's `signal()` installs through signal-hook) and
//! blocks it on every thread of its runtime; timeouts of the async API and
//! of a JSONL append still end while another process holds the lock,
//! dropped waits still end, the lock still hands over, and the program's
//! handler is neither replaced nor called. Its own test binary, since
//! dispositions and masks are process-wide.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_filelock::{Category, JsonlSink, LockError};
use support::{locks_in, spawn_holder};

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

/// The program's own `SIGURG` handler, restarting interrupted calls, and
/// `SIGURG` blocked on this thread (and so on every thread it starts).
fn take_sigurg_over() -> libc::sighandler_t {
    let app = app_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only bumps an atomic, and blocking
    // one signal on this thread.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = app;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGURG, &act, std::ptr::null_mut()), 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    app
}

#[test]
fn law11_timeouts_and_cancellation_hold_with_sigurg_taken_over_restarted_and_blocked() {
    let app = take_sigurg_over();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    let sink = rt.block_on(async {
        JsonlSink::builder(&target)
            .locks(
                async_filelock::Locks::builder()
                    .lock_dir(dir.path().join("locks"))
                    .timeout(Category::Manifest, Duration::from_millis(300))
                    .build()
                    .unwrap(),
            )
            .open()
            .await
            .unwrap()
    });
    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    rt.block_on(async {
        // The async API: the deadline ends the wait while the lock is held.
        let err = locks
            .lock(Category::Manifest, &target)
            .timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        // A JSONL append: its commit's deadline too.
        let err = sink.append(&1).await.unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        // Cancellation: dropped waits end, many at once.
        for _ in 0..100 {
            let wait = locks.lock(Category::Manifest, &target).wait_forever();
            assert!(
                tokio::time::timeout(Duration::from_millis(5), wait)
                    .await
                    .is_err()
            );
        }
    });
    assert_eq!(sigurg_handler(), app, "the program's handler stays");
    assert_eq!(
        APP_HANDLER_CALLS.load(Ordering::Relaxed),
        0,
        "no signal sent"
    );
    // Hand-over still works, to the async API and to the sink.
    rt.block_on(support::granted_after_release(&locks, &target, &mut holder));
    rt.block_on(async {
        sink.append(&2).await.unwrap();
        sink.close().await.unwrap();
    });
    holder.finish();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "2\n");
    assert!(support::blocking_waits_reach(
        &locks,
        0,
        Duration::from_secs(10)
    ));
}
