//! Law 11: waits whose cost does not grow with the number of contended
//! locks. Thousands of distinct locks held by a process that is not this
//! crate (Python's `fcntl.flock`) are waited on: threads stay bounded,
//! tokio's blocking pool stays free, every wait ends at its deadline, and
//! a release of all of them grants each waiter exactly once.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_filelock::{Category, Locks, max_wait_threads};
use support::{PythonHolder, eventually, locks_in, thread_count, threads_in_flock_wait};

#[test]
fn child_entry() {
    support::child_entry();
}

fn targets(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("paper-{i}.pdf"))).collect()
}

fn lock_paths(locks: &Locks, targets: &[PathBuf]) -> Vec<PathBuf> {
    targets
        .iter()
        .map(|t| locks.lock_path(Category::Artifact, t).unwrap())
        .collect()
}

/// 2,000 distinct locks held by Python, each waited on with a timeout:
/// threads stay within the bound, a `tokio::fs` call completes while they
/// wait, all time out, and no more than the bound is left in `flock`.
#[test]
fn law11_two_thousand_held_locks_cost_bounded_threads_and_leave_tokio_fs_free() {
    support::raise_fd_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let targets = targets(dir.path(), 2000);
    let mut holder = PythonHolder::hold(dir.path(), &lock_paths(&locks, &targets), "exclusive");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle = thread_count();
    let peak = Arc::new(AtomicUsize::new(0));
    let (probe_done, first_timeout) = rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| {
                let (locks, t) = (locks.clone(), t.clone());
                tokio::spawn(async move {
                    let result = locks
                        .acquire(Category::Artifact, &t)
                        .timeout(Duration::from_secs(3))
                        .await;
                    (result, Instant::now())
                })
            })
            .collect();
        // Every wait has started (in the kernel or as an event wait).
        let started = support::eventually(Duration::from_secs(60), || {
            let os = support::os_metrics(&locks);
            os.kernel_waits_now + os.event_waits_now >= 2000
        });
        assert!(started, "{:?}", support::os_metrics(&locks));
        peak.fetch_max(thread_count(), Ordering::SeqCst);
        // The blocking pool is free: unrelated file calls complete while
        // every lock is still waited for (with each wait on that pool, they
        // would queue behind the waits until those time out).
        let probe = dir.path().join("unrelated");
        tokio::fs::write(&probe, b"x").await.unwrap();
        assert_eq!(tokio::fs::metadata(&probe).await.unwrap().len(), 1);
        assert_eq!(tokio::task::spawn_blocking(|| 7).await.unwrap(), 7);
        let probe_done = Instant::now();
        let os = support::os_metrics(&locks);
        assert!(os.kernel_waits_now as usize <= max_wait_threads(), "{os:?}");
        assert!(os.event_waits_now >= 1900, "{os:?}");
        let mut first_timeout = None::<Instant>;
        for t in tasks {
            let (result, at) = t.await.unwrap();
            let err = result.unwrap_err();
            assert!(err.is_timeout(), "{err}");
            first_timeout = Some(first_timeout.map_or(at, |f| f.min(at)));
        }
        (probe_done, first_timeout.unwrap())
    });
    assert!(
        probe_done < first_timeout,
        "tokio::fs completed only after the lock waits ended"
    );
    let bound = max_wait_threads();
    // Idle threads, tokio's two workers and a handful of blocking-pool
    // threads from the probes, the bound, and the one event thread.
    let allowed = idle + bound + 8;
    assert!(
        peak.load(Ordering::SeqCst) <= allowed,
        "threads while waiting: {} > {allowed}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        threads_in_flock_wait() <= bound,
        "threads in flock after the timeouts: {}",
        threads_in_flock_wait()
    );
    // The runtime shuts down while the locks are still held: no lock wait
    // holds it back.
    assert!(
        support::finishes_while_held(move || drop(rt)),
        "dropping the runtime waited for the holder"
    );
    // Abandoned kernel waits let go once the holder does.
    holder.release();
    assert!(
        eventually(Duration::from_secs(10), || threads_in_flock_wait() == 0),
        "threads still in flock: {}",
        threads_in_flock_wait()
    );
    assert!(support::blocking_waits_reach(
        &locks,
        0,
        Duration::from_secs(10)
    ));
}

/// Python holds 1,000 locks and lets go of all of them at once: every
/// waiter is granted exactly once (an append-count file per lock proves
/// exclusion), with threads bounded throughout.
#[test]
fn law11_a_release_of_a_thousand_locks_grants_each_waiter_exactly_once() {
    support::raise_fd_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let targets = targets(dir.path(), 1000);
    let mut holder = PythonHolder::hold(dir.path(), &lock_paths(&locks, &targets), "exclusive");
    let rt = support::runtime();
    let idle = thread_count();
    rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| {
                let (locks, t) = (locks.clone(), t.clone());
                tokio::spawn(async move {
                    let guard = locks
                        .acquire(Category::Artifact, &t)
                        .timeout(Duration::from_secs(60))
                        .await?;
                    // Read-increment-write under the lock: a second holder
                    // at once would lose an update.
                    let count = t.with_extension("count");
                    let n: u64 = tokio::fs::read_to_string(&count)
                        .await
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    tokio::fs::write(&count, (n + 1).to_string()).await.unwrap();
                    drop(guard);
                    Ok::<_, async_filelock::LockError>(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(thread_count() <= idle + max_wait_threads() + 8);
        tokio::task::spawn_blocking(move || {
            holder.release();
            holder
        })
        .await
        .unwrap();
        for t in tasks {
            t.await.unwrap().expect("granted after the release");
        }
    });
    for t in &targets {
        let n = std::fs::read_to_string(t.with_extension("count")).unwrap();
        assert_eq!(n.trim(), "1", "{}", t.display());
    }
}

/// Dropping a runtime with a thousand pending waits returns at once: no
/// wait occupies tokio's blocking pool, which a runtime waits for.
#[test]
fn law11_dropping_a_runtime_with_a_thousand_pending_waits_returns_at_once() {
    support::raise_fd_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let targets = targets(dir.path(), 1000);
    let _holder = PythonHolder::hold(dir.path(), &lock_paths(&locks, &targets), "exclusive");
    let rt = support::runtime();
    for t in &targets {
        let (locks, t) = (locks.clone(), t.clone());
        rt.spawn(async move { locks.lock(Category::Artifact, &t).wait_forever().await });
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    assert!(
        support::finishes_while_held(move || drop(rt)),
        "dropping the runtime waited for the holder"
    );
    // Nothing the dropped waits left behind holds an event wait.
    assert!(eventually(Duration::from_secs(5), || support::os_metrics(
        &locks
    )
    .event_waits_now
        == 0));
}

/// A holder that keeps its lock file's descriptor open between holdings
/// lets go by `LOCK_UN`, which no inotify event reports; after a holding
/// that was not brief (these last hundreds of milliseconds) it then reads a
/// byte of the file, which one does. An event wait in another process
/// must be granted on that event, not left to its backoff poll (up to
/// 50 ms between tries for a lock file that stays). Three rounds: a poll may by chance land
/// between the unlock and the read (a loaded machine can preempt the
/// holder there), so at least one grant on an event is asked for; without
/// the read none can be.
#[test]
fn an_event_wait_is_granted_on_the_event_of_a_release_that_keeps_its_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let busy = dir.path().join("busy.jsonl");
    let target = dir.path().join("target.jsonl");
    let mut forever = support::spawn_holder(dir.path(), "exclusive", "manifest", &[&busy]);
    forever.wait_ready();
    let mut holder = support::spawn("hold_linger", &[arg(dir.path()), arg(&target)]);
    let mut waiter = support::spawn("event_waiter", &[arg(dir.path()), arg(&busy), arg(&target)]);
    let mut granted_on_events = 0;
    for round in 0..3 {
        if round > 0 {
            holder.tell("again");
        }
        holder.wait_ready();
        waiter.tell("wait");
        assert_eq!(waiter.read(), "waiting");
        // Past the first few polls, so that a poll is unlikely to come first.
        std::thread::sleep(Duration::from_millis(200));
        holder.tell("release");
        assert_eq!(holder.read(), "released");
        let granted = waiter.read();
        granted_on_events = granted
            .strip_prefix("granted_on_events ")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("waiter said {granted:?}"));
    }
    assert!(
        granted_on_events >= 1,
        "every wait was granted by its poll, none by the release's event"
    );
    holder.tell("exit");
    waiter.tell("end");
    holder.finish();
    waiter.finish();
    forever.finish();
}
