//! Exclusion, sharing, timeouts and cancellation across real processes.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use async_filelock::{Category, LockError, Locks, paths_in_use};
use rand::RngExt;
use support::{Worker, eventually, locks_in, spawn, spawn_holder, threads_in_flock_wait};

/// Entry point of the child processes these tests spawn; does nothing when
/// run as an ordinary test.
#[test]
fn child_entry() {
    support::child_entry();
}

use support::path_arg as arg;

fn appenders(n: usize, count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.jsonl");
    let mut workers: Vec<Worker> = (0..n)
        .map(|i| {
            spawn(
                "append",
                &[
                    arg(dir.path()),
                    arg(&file),
                    count.to_string(),
                    format!("w{i}"),
                ],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    for w in workers {
        w.finish();
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n * count, "exact line count");
    let mut seen = HashSet::new();
    for line in lines {
        let rest = line
            .strip_prefix("{\"writer\":\"w")
            .unwrap_or_else(|| panic!("torn line {line:?}"));
        let (writer, seq) = rest
            .split_once("\",\"seq\":")
            .unwrap_or_else(|| panic!("torn line {line:?}"));
        let seq = seq
            .strip_suffix('}')
            .unwrap_or_else(|| panic!("torn line {line:?}"));
        assert!(
            seen.insert((writer.to_owned(), seq.to_owned())),
            "duplicate {line}"
        );
    }
}

#[test]
fn law1_exclusive_lock_serialises_appends_of_two_processes() {
    appenders(2, 300);
}

#[test]
fn law1_exclusive_lock_serialises_appends_of_four_processes() {
    appenders(4, 200);
}

#[test]
fn law1_exclusive_lock_serialises_appends_of_eight_processes() {
    appenders(8, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_holders_in_other_processes_coexist_and_exclude_writers() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.db");
    let locks = locks_in(dir.path());
    let mut readers: Vec<Worker> = (0..3)
        .map(|_| spawn_holder(dir.path(), "shared", "sqlite", &[&target]))
        .collect();
    for r in &mut readers {
        r.wait_ready();
    }
    // Readers coexist with each other and with a reader here.
    let mine = locks
        .lock_shared(Category::Sqlite, &target)
        .timeout(Duration::from_secs(5))
        .await
        .expect("shared beside shared");
    drop(mine);
    // A writer waits for all of them.
    let err = locks
        .lock(Category::Sqlite, &target)
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let writer = {
        let locks = locks.clone();
        let target = target.clone();
        tokio::spawn(async move { locks.lock(Category::Sqlite, &target).wait_forever().await })
    };
    let last = readers.pop().unwrap();
    for r in readers {
        tokio::task::spawn_blocking(move || r.finish())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !writer.is_finished(),
        "writer must wait for the last reader"
    );
    tokio::task::spawn_blocking(move || last.finish())
        .await
        .unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writer granted after the readers left")
        .unwrap()
        .unwrap();

    // The reverse: while we write, a reader in another process waits.
    let mut reader = spawn_holder(dir.path(), "shared", "sqlite", &[&target]);
    let ready = tokio::task::spawn_blocking(move || {
        reader.wait_ready();
        reader
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ready.is_finished(), "reader must wait for the writer");
    drop(guard);
    let reader = ready.await.unwrap();
    reader.finish();
}

#[tokio::test(flavor = "current_thread")]
async fn shared_and_exclusive_within_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.db");
    let locks = locks_in(dir.path());
    let a = locks.lock_shared(Category::Sqlite, &target).await.unwrap();
    let b = tokio::spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move { locks.lock_shared(Category::Sqlite, &target).await }
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!support::is_free(&locks, Category::Sqlite, &target).await);
    let writer = tokio::spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move { locks.lock(Category::Sqlite, &target).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished());
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished(), "one reader still holds");
    drop(b);
    let w = writer.await.unwrap().unwrap();
    assert!(
        locks
            .try_lock_shared(Category::Sqlite, &target)
            .await
            .unwrap()
            .is_none()
    );
    drop(w);
    assert!(
        locks
            .try_lock_shared(Category::Sqlite, &target)
            .await
            .unwrap()
            .is_some()
    );
}

#[test]
fn removing_lock_files_on_release_keeps_exclusion_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let per = 250;
    let mut workers: Vec<Worker> = (0..4)
        .map(|_| spawn("churn", &[arg(dir.path()), arg(&target), per.to_string()]))
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    for w in workers {
        w.finish();
    }
    let n: usize = std::fs::read_to_string(dir.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, 4 * per, "no lost update: exclusion held");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "lock files removed on release: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_zero_short_and_none_name_the_lock_and_holder() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("summary.json");
    let locks = locks_in(dir.path());
    let lock_path = locks.lock_path(Category::Summary, &target).unwrap();
    let mut holder = spawn_holder(dir.path(), "exclusive", "summary", &[&target]);
    let holder_pid = holder.pid();
    holder.wait_ready();

    // Zero: one try (it returns while the holder, which never lets go on
    // its own, still holds).
    let err = locks
        .acquire(Category::Summary, &target)
        .timeout(Duration::ZERO)
        .await
        .unwrap_err();
    // Short.
    let err2 = locks
        .acquire(Category::Summary, &target)
        .timeout(Duration::from_millis(150))
        .await
        .unwrap_err();
    for err in [&err, &err2] {
        match err {
            LockError::Timeout {
                lock_path: p,
                holder,
                category,
                ..
            } => {
                assert_eq!(p, &lock_path);
                assert_eq!(holder.as_ref().and_then(|h| h.pid()), Some(holder_pid));
                assert_eq!(*category, Category::Summary);
            }
            other => panic!("expected timeout, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&lock_path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("pid {holder_pid}")), "{msg}");
    }
    match &err2 {
        LockError::Timeout { waited, .. } => assert!(*waited >= Duration::from_millis(150)),
        _ => unreachable!(),
    }
    assert_eq!(locks.metrics().category(Category::Summary).timeouts, 2);
    // try_lock never waits.
    assert!(!support::is_free(&locks, Category::Summary, &target).await);
    // None: waits as long as it takes.
    let waiter = {
        let (locks, target) = (locks.clone(), target.clone());
        tokio::spawn(async move {
            locks
                .acquire(Category::Summary, &target)
                .wait_forever()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    holder.tell("release");
    let guard = waiter.await.unwrap().unwrap();
    assert!(guard.waited() >= Duration::from_millis(200));
    tokio::task::spawn_blocking(move || holder.finish())
        .await
        .unwrap();
}

/// Law 4 and the thread budget: another process holds 300 locks, this one
/// times out on each. No more than the bound of threads is left in `flock`
/// (abandoned kernel waits, never interrupted), the runtime shuts down
/// without waiting for them, and they let go once the holder does.
#[test]
fn law4_timed_out_waits_leave_at_most_the_bound_in_flock_until_the_holder_goes() {
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<_> = (0..300)
        .map(|i| dir.path().join(format!("paper-{i}.pdf")))
        .collect();
    let refs: Vec<&std::path::Path> = targets.iter().map(|t| t.as_path()).collect();
    let mut holder = spawn_holder(dir.path(), "exclusive", "artifact", &refs);
    holder.wait_ready();
    let rt = support::runtime();
    let locks = locks_in(dir.path());
    rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| {
                let (locks, t) = (locks.clone(), t.clone());
                tokio::spawn(async move {
                    locks
                        .acquire(Category::Artifact, &t)
                        .timeout(Duration::from_millis(300))
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap_err().is_timeout());
        }
    });
    let metrics = locks.metrics();
    assert_eq!(metrics.category(Category::Artifact).timeouts, 300);
    let bound = async_filelock::max_wait_threads();
    let os = support::os_metrics(&locks);
    assert!(os.kernel_waits_now as usize <= bound, "{os:?}");
    // A dropped event wait is forgotten by the event thread, which may
    // not have run since the last task returned.
    assert!(
        support::eventually(Duration::from_secs(60), || {
            support::os_metrics(&locks).event_waits_now == 0
        }),
        "{:?}",
        support::os_metrics(&locks)
    );
    assert!(threads_in_flock_wait() <= bound);
    // The runtime shuts down while the locks are still held.
    assert!(support::finishes_while_held(move || {
        rt.shutdown_timeout(Duration::from_secs(60))
    }));
    holder.finish();
    assert!(
        support::blocking_waits_reach(&locks, 0, Duration::from_secs(10)),
        "kernel waits left: {:?}",
        support::os_metrics(&locks)
    );
    assert!(
        eventually(Duration::from_secs(10), || threads_in_flock_wait() == 0),
        "threads still in flock: {}",
        threads_in_flock_wait()
    );
}

/// Law 4: thousands of acquire futures dropped at random moments (timeouts,
/// `select!`, aborted tasks) while another process holds and releases.
#[test]
fn law4_cancellation_storm_leaves_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let locks = locks_in(dir.path());
    for flavor in ["current_thread", "multi_thread"] {
        let rt = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            for round in 0..4 {
                let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
                holder.wait_ready();
                let mut tasks = Vec::new();
                for i in 0..750 {
                    let (locks, target) = (locks.clone(), target.clone());
                    let wait = Duration::from_micros(rand::rng().random_range(0..40_000));
                    tasks.push(tokio::spawn(async move {
                        let acquire = locks.lock(Category::Manifest, &target).wait_forever();
                        match i % 3 {
                            0 => {
                                let _ = tokio::time::timeout(wait, acquire).await;
                            }
                            1 => {
                                tokio::select! {
                                    g = acquire => { drop(g); }
                                    _ = tokio::time::sleep(wait) => {}
                                }
                            }
                            _ => {
                                let _ = acquire.await;
                            }
                        }
                    }));
                }
                // Abort the third kind at random moments; release the holder
                // midway through one round in two so grants race with drops.
                for (i, t) in tasks.iter().enumerate() {
                    if i % 3 == 2 {
                        if i % 90 == 2 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        t.abort();
                    }
                    if i == 375 && round % 2 == 0 {
                        holder.tell("release");
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
                tokio::task::spawn_blocking(move || holder.finish())
                    .await
                    .unwrap();
                // Free at once: a try succeeds with nobody left.
                let g = locks.try_lock(Category::Manifest, &target).await.unwrap();
                assert!(
                    g.is_some(),
                    "{flavor} round {round}: lock still held after the storm"
                );
            }
        });
        rt.shutdown_timeout(Duration::from_secs(5));
        assert!(
            eventually(Duration::from_secs(2), || support::os_metrics(&locks)
                .kernel_waits_now
                == 0),
            "{flavor}: blocking waits left"
        );
        assert!(
            eventually(Duration::from_secs(2), || threads_in_flock_wait() == 0),
            "{flavor}: threads left in flock"
        );
    }
    assert!(eventually(Duration::from_secs(2), || paths_in_use() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law4_runtime_shutdown_with_waiters_releases_everything() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("summary.json");
    let mut holder = spawn_holder(dir.path(), "exclusive", "summary", &[&target]);
    tokio::task::spawn_blocking(move || {
        holder.wait_ready();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let locks = Locks::builder()
            .lock_dir(dir.path().join("locks"))
            .build()
            .unwrap();
        for _ in 0..50 {
            let (locks, target) = (locks.clone(), target.clone());
            rt.spawn(async move { locks.lock(Category::Summary, &target).wait_forever().await });
        }
        std::thread::sleep(Duration::from_millis(200));
        // Shutdown drops the waiting futures and then waits for blocking
        // tasks: it must not wait for the other process, which holds on.
        assert!(support::finishes_while_held(move || {
            rt.shutdown_timeout(Duration::from_secs(600))
        }));
        holder.finish();
        drop(dir);
    })
    .await
    .unwrap();
}

/// Law 4: waiting futures polled once and dropped in queue order (head
/// first) while another process holds the lock must leave the queue
/// working: the next waiter gets the lock when the holder lets go.
#[test]
fn law4_queued_futures_dropped_in_order_leave_the_queue_working() {
    use std::future::Future;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    let rt = support::runtime();
    let locks = locks_in(dir.path());
    rt.block_on(async {
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut futs: Vec<_> = (0..20)
            .map(|_| Box::pin(locks.lock(Category::Manifest, &target).wait_forever()))
            .collect();
        for f in &mut futs {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(futs);
        // The queue works after the drops.
        support::granted_after_release(&locks, &target, &mut holder).await;
    });
    holder.finish();
}

/// Law 3 against a holder that is not this crate: util-linux `flock(1)`
/// holds the lock, and while a task waits for it, the runtime's only thread
/// keeps running timers. Had the wait blocked that thread, the ticks would
/// come only after the holder's 30 s, when the wait is already granted.
#[tokio::test(flavor = "current_thread")]
async fn law3_a_wait_never_blocks_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("manifest.jsonl");
    let lock_path = locks.lock_path(Category::Manifest, &target).unwrap();
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let mut holder = flock_holder(&lock_path);
    let wait = tokio::spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move {
            locks
                .acquire(Category::Manifest, &target)
                .timeout(Duration::from_secs(60))
                .await
        }
    });
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !wait.is_finished(),
        "the runtime thread ran timers only after the wait ended: it was blocked"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let guard = wait.await.unwrap().expect("granted once flock(1) is gone");
    assert_eq!(guard.lock_path(), lock_path);
}

/// Deadlines past what `Instant` can hold mean "wait forever", never a
/// panic: `Duration::MAX` and a timeout of 1e19 s from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_at_the_edge_of_the_type_wait_forever_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("summary.json");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .env_from(|k| (k == "ASYNC_FILELOCK_TIMEOUT_SUMMARY").then(|| "1e19".into()))
        .unwrap()
        .build()
        .unwrap();
    let mut holder = spawn_holder(dir.path(), "exclusive", "summary", &[&target]);
    holder.wait_ready();
    let forever = locks
        .acquire(Category::Summary, &target)
        .timeout(Duration::MAX);
    let from_env = locks.acquire(Category::Summary, &target);
    let both = async { tokio::join!(forever, from_env) };
    let still_waiting = tokio::time::timeout(Duration::from_millis(200), both).await;
    assert!(still_waiting.is_err(), "both wait for the holder");
    holder.finish();
    let guard = locks
        .acquire(Category::Summary, &target)
        .timeout(Duration::MAX)
        .await
        .expect("granted once the holder is gone");
    drop(guard);
}

/// A lock file removed by hand while this process kept its descriptor
/// open between holdings (a hot lock file), then locked at its path by a
/// holder that is not this crate (util-linux `flock(1)`): the kept
/// descriptor's inode is no lock file any more, and the identity check
/// after its `flock` must notice, so the lock is busy, not granted twice.
/// After one holding the check is a full one; after several, it is told by
/// the file's watch (see `backend::os::identity`), which must tell it too.
/// Removed by `rm`, and replaced by a rename (as editors and `mv` do).
#[tokio::test(flavor = "current_thread")]
async fn a_kept_descriptor_of_a_lock_file_removed_by_hand_never_grants_a_lock_held_at_its_path() {
    // After 1,030, the descriptor has been watched (from its 1,024th
    // keeping) and checked in full once since.
    for holdings in [1, 1030] {
        for replace in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let locks = locks_in(dir.path());
            let target = dir.path().join("manifest.jsonl");
            // Taken and let go: the descriptor stays open in this process.
            let mut lock_path = None;
            for _ in 0..holdings {
                let guard = locks.lock(Category::Manifest, &target).await.unwrap();
                lock_path = Some(guard.lock_path().to_path_buf());
            }
            let lock_path = lock_path.unwrap();
            if replace {
                let new = lock_path.with_extension("new");
                std::fs::write(&new, b"").unwrap();
                std::fs::rename(&new, &lock_path).unwrap();
            } else {
                std::fs::remove_file(&lock_path).unwrap();
            }
            let mut holder = flock_holder(&lock_path);
            let tried = locks.try_lock(Category::Manifest, &target).await.unwrap();
            assert!(
                tried.is_none(),
                "after {holdings} holdings, replaced {replace}: granted through a descriptor of the removed file while flock(1) holds the lock file"
            );
            holder.kill().unwrap();
            holder.wait().unwrap();
            let guard = locks
                .acquire(Category::Manifest, &target)
                .timeout(Duration::from_secs(30))
                .await
                .expect("granted once flock(1) is gone");
            assert_eq!(guard.lock_path(), lock_path);
        }
    }
}

/// A lock file removed by another process while it holds the lock (as this
/// crate's own removal on release does; here a Python `fcntl` holder),
/// while this process keeps a descriptor of it open between holdings that
/// its watch vouches for: the next holding here must take the new file at
/// the path, so that it excludes a holder of that file.
#[tokio::test(flavor = "current_thread")]
async fn a_lock_file_removed_under_its_lock_elsewhere_is_not_taken_through_a_kept_descriptor() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("summary.json");
    let mut lock_path = None;
    for _ in 0..1030 {
        let guard = locks.lock(Category::Summary, &target).await.unwrap();
        lock_path = Some(guard.lock_path().to_path_buf());
    }
    let lock_path = lock_path.unwrap();
    // Locks the file, removes it, makes and locks a new one at the path,
    // then lets go of the old one and holds the new until told.
    let script = r#"
import fcntl, os, sys
path = sys.argv[1]
old = os.open(path, os.O_RDWR)
fcntl.flock(old, fcntl.LOCK_EX)
os.unlink(path)
new = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(new, fcntl.LOCK_EX)
os.close(old)
print("held", flush=True)
sys.stdin.readline()
"#;
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(&lock_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let tried = locks.try_lock(Category::Summary, &target).await.unwrap();
    assert!(
        tried.is_none(),
        "granted through a kept descriptor of the removed file while its replacement is held"
    );
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    holder.wait().unwrap();
    let guard = locks
        .acquire(Category::Summary, &target)
        .timeout(Duration::from_secs(30))
        .await
        .expect("granted once the holder is gone");
    assert_eq!(guard.lock_path(), lock_path);
}

/// util-linux `flock(1)` holding `lock_path` exclusively (a holder that is
/// not this crate) until killed; returns once it holds.
fn flock_holder(lock_path: &std::path::Path) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut holder = Command::new("flock")
        // --no-fork: the command replaces flock(1), so killing it lets go.
        .args(["--exclusive", "--no-fork"])
        .arg(lock_path)
        .args(["-c", "echo held; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux flock(1)");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    holder
}
