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
    // The parent goes on as before. (Free once every child forked while
    // the guard was held has exited: another test of this binary forks
    // children too, and they share the guard's descriptor until they exit.)
    second.finish();
    drop(parent_guard);
    assert!(eventually(Duration::from_secs(30), || rt.block_on(
        support::is_free(&locks, Category::Manifest, &by_parent)
    )));
}

/// Children forked while two other threads of the parent take and release
/// locks as fast as they can: each child's first acquisition must work,
/// whatever lock the busy threads held at the fork. (Found in review: 15
/// of 100 children hung on the naming cache or the metrics, which were
/// process-wide mutexes.)
#[test]
fn children_forked_from_a_busy_parent_acquire_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|h| {
            let (locks, stop, dir) = (locks.clone(), Arc::clone(&stop), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = dir.join(format!("busy{h}-{}", i % 64));
                    drop(rt.block_on(locks.lock(Category::Manifest, &t)));
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut hung = 0;
    for k in 0..60 {
        // SAFETY: the child builds its own runtime, takes one lock and
        // leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let target = dir.path().join(format!("child-{k}"));
            let ok = rt
                .block_on(
                    locks
                        .acquire(Category::Manifest, &target)
                        .timeout(Duration::from_secs(5)),
                )
                .is_ok();
            // SAFETY: ends the child without running the parent's
            // destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        let exited = eventually(Duration::from_secs(30), || {
            // SAFETY: polling our own child.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
        });
        if !exited {
            hung += 1;
            // SAFETY: killing our own hung child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
        } else {
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert_eq!(hung, 0, "{hung} of 60 forked children hung");
}

/// Whether util-linux `flock(1)`, another process, gets `path` at once.
fn flock_free(path: &Path) -> bool {
    std::process::Command::new("flock")
        .args(["--exclusive", "--nonblock"])
        .arg(path)
        .arg("true")
        .status()
        .expect("util-linux flock(1)")
        .success()
}

/// A forked child shares its parent's open file descriptions, and with
/// them the parent's held `flock` locks. A guard the child inherited and
/// drops must not unlock the parent's lock (a release that keeps its
/// descriptor open lets go by `LOCK_UN`, which would), nor remove the lock
/// file of a lock removed on release (artifacts, by default): after the
/// child's drops, each lock file is still there and busy to a new
/// descriptor, in the child and to util-linux `flock(1)` in another
/// process.
#[test]
fn a_guard_dropped_in_a_forked_child_leaves_the_parents_lock_held() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    let target = dir.path().join("manifest.jsonl");
    let guard = rt
        .block_on(locks.lock(Category::Manifest, &target))
        .unwrap();
    let lock_path = guard.lock_path().to_path_buf();
    let artifact = rt
        .block_on(locks.lock(Category::Artifact, dir.path().join("paper.pdf")))
        .unwrap();
    let artifact_lock_path = artifact.lock_path().to_path_buf();
    // SAFETY: the child drops its copy of the guard, makes two plain
    // system calls and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(guard);
        drop(artifact);
        let busy_at = |path: &std::path::Path| {
            std::fs::File::open(path).is_ok_and(|f| {
                // SAFETY: a non-blocking flock on a descriptor we own.
                let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
            })
        };
        let busy = busy_at(&lock_path) && busy_at(&artifact_lock_path);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if busy { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's drop of its inherited guard let go of the parent's lock"
    );
    assert!(
        !flock_free(&lock_path),
        "flock(1) got the lock the parent holds"
    );
    assert!(
        artifact_lock_path.exists(),
        "the child's drop removed the parent's artifact lock file"
    );
    drop(artifact);
    drop(guard);
    assert!(flock_free(&lock_path), "the parent's release let go");
}
