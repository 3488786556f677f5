//! A child made by `fork()` without `exec` starts with none of its parent's
//! threads. It must not inherit wait machinery or queues that describe
//! them: its own waits time out and are granted like anyone's, while the
//! parent's waits and guards go on unaffected. What it does inherit is the
//! parent's descriptors, and with them its held `flock` locks (documented
//! in the crate docs): a new acquisition of such a lock by the child finds
//! it busy.

mod support;

use std::path::Path;
use std::time::Duration;

use async_filelock::{Category, Locks};
use support::{eventually, locks_in, spawn_holder};

#[test]
fn child_entry() {
    support::child_entry();
}

/// What the forked child does; returns the line it reports.
fn in_child(locks: &Locks, released_soon: &Path, held_by_parent: &Path, free: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Granted when the other process lets go: the child's waits work.
        let waited = locks
            .acquire(Category::Manifest, released_soon)
            .timeout(Duration::from_secs(20))
            .await;
        // The parent's held lock: its descriptor is the child's too, so a
        // new acquisition finds it busy.
        let parents = locks
            .acquire(Category::Manifest, held_by_parent)
            .timeout(Duration::from_millis(200))
            .await;
        let free = locks.lock(Category::Manifest, free).await;
        format!(
            "waited:{} parents_busy:{} free:{}",
            waited.is_ok(),
            matches!(&parents, Err(e) if e.is_timeout()),
            free.is_ok()
        )
    })
}

#[test]
fn a_forked_child_gets_fresh_waits_and_queues_and_its_own_acquisitions_work() {
    let dir = tempfile::tempdir().unwrap();
    let warm = dir.path().join("warm.jsonl");
    let later = dir.path().join("later.jsonl");
    let by_parent = dir.path().join("held-by-parent.jsonl");
    let free = dir.path().join("free.jsonl");
    let report = dir.path().join("child-report");
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    // The parent has a wait thread, idle after a granted wait, when it
    // forks; a child that believed in it would hand its wait to a thread
    // that does not exist in the child.
    let mut first = spawn_holder(dir.path(), "exclusive", "manifest", &[&warm]);
    first.wait_ready();
    let warm_wait = rt.spawn({
        let (locks, warm) = (locks.clone(), warm.clone());
        async move { locks.lock(Category::Manifest, &warm).wait_forever().await }
    });
    assert!(support::blocking_waits_reach(
        &locks,
        1,
        Duration::from_secs(10)
    ));
    first.finish();
    drop(rt.block_on(warm_wait).unwrap().unwrap());
    assert!(support::os_metrics(&locks).wait_threads >= 1);
    // And it holds a lock.
    let parent_guard = rt
        .block_on(locks.lock(Category::Manifest, &by_parent))
        .unwrap();
    let mut second = spawn_holder(dir.path(), "exclusive", "manifest", &[&later]);
    second.wait_ready();

    // SAFETY: the child only runs code that builds its own runtime and
    // threads, then leaves with `_exit` without unwinding into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_child(&locks, &later, &by_parent, &free)
        }))
        .unwrap_or_else(|_| "panicked".into());
        let _ = std::fs::write(&report, line);
        // SAFETY: ends the child at once, running no destructors of the
        // parent's state it copied.
        unsafe { libc::_exit(0) };
    }
    // Let the child start waiting, then let go of its lock elsewhere.
    std::thread::sleep(Duration::from_millis(300));
    second.tell("release");
    assert_eq!(second.read(), "released");
    let mut status = 0;
    let exited = eventually(Duration::from_secs(60), || {
        // SAFETY: polling our own child.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
    });
    if !exited {
        // SAFETY: killing our own child that hung.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
    }
    assert!(exited, "the forked child hung");
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "waited:true parents_busy:true free:true"
    );
    // The parent goes on as before.
    second.finish();
    drop(parent_guard);
    assert!(rt.block_on(support::is_free(&locks, Category::Manifest, &by_parent)));
}
