//! The public contract of ARCHITECTURE.md: free functions, the handle, guards,
//! metrics, self-deadlock detection, both runtime flavors.

mod support;

use std::time::Duration;

use async_filelock::{
    Category, Holder, LockError, LockGuard, LockMode, Locks, SameTask, artifact_lock,
    manifest_lock, paths_in_use, sqlite_lock, summary_lock, telemetry_lock,
};
use support::locks_in;

#[tokio::test(flavor = "current_thread")]
async fn free_functions_use_a_locks_dir_beside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let beside = std::fs::canonicalize(dir.path()).unwrap().join(".locks");
    let guards: Vec<LockGuard> = vec![
        artifact_lock(dir.path().join("a.pdf")).await.unwrap(),
        manifest_lock(dir.path().join("m.jsonl")).await.unwrap(),
        telemetry_lock(dir.path().join("t.jsonl")).await.unwrap(),
        sqlite_lock(dir.path().join("s.db")).await.unwrap(),
        summary_lock(dir.path().join("summary.json")).await.unwrap(),
    ];
    for (g, c) in guards.iter().zip(Category::ALL) {
        assert_eq!(g.category(), c);
        assert_eq!(g.lock_path().parent().unwrap(), beside);
        assert!(
            g.lock_path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(c.name())
        );
    }
    let artifact_lock_file = guards[0].lock_path().to_path_buf();
    let manifest_lock_file = guards[1].lock_path().to_path_buf();
    for g in guards {
        g.release().await.unwrap();
    }
    // Artifacts remove their lock file on release by default; the others keep it.
    assert!(!artifact_lock_file.exists());
    assert!(manifest_lock_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_same_task_refuse_asking_again_for_a_held_lock_is_an_immediate_error() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .same_task(SameTask::Refuse)
        .build()
        .unwrap();
    let target = dir.path().join("m.jsonl");
    let g = locks.lock(Category::Manifest, &target).await.unwrap();
    // Refused, not timed out: a wait would have ended in `Timeout`.
    let err = locks.lock(Category::Manifest, &target).await.unwrap_err();
    assert!(matches!(err, LockError::WouldDeadlock { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&g.lock_path().display().to_string())
    );
    let err = locks
        .lock_shared(Category::Manifest, &target)
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::WouldDeadlock { .. }), "{err}");
    // Another task simply waits its turn.
    let other = tokio::spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move { locks.lock(Category::Manifest, &target).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!other.is_finished());
    drop(g);
    drop(other.await.unwrap().unwrap());
    // After release the same task may lock again.
    let again = locks.lock(Category::Manifest, &target).await.unwrap();
    again.release().await.unwrap();
}

/// By default a task asking for a lock it holds waits like anyone else
/// (it may be a sibling future's), warns while it does that the holder is
/// this same task, and at the timeout says so.
#[test]
fn a_nested_acquire_in_one_future_warns_and_times_out_naming_this_task() {
    let dir = tempfile::tempdir().unwrap();
    let log = support::CapturedLog::default();
    let _subscriber = tracing::subscriber::set_default(log.subscriber());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let locks = locks_in(dir.path());
        let target = dir.path().join("m.jsonl");
        let held = locks.lock(Category::Manifest, &target).await.unwrap();
        let err = locks
            .acquire(Category::Manifest, &target)
            .timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        match &err {
            LockError::Timeout { holder, .. } => {
                assert_eq!(holder.as_deref(), Some(&Holder::ThisTask), "{err}")
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(err.to_string().contains("held by this same task"), "{err}");
        let warned = log.text();
        assert!(warned.contains("this same task holds"), "{warned}");
        assert!(
            warned.contains(&held.lock_path().display().to_string()),
            "{warned}"
        );
    });
}

#[tokio::test(flavor = "current_thread")]
async fn guard_reports_what_it_holds_and_moves_between_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("state.db");
    let g = locks.lock_shared(Category::Sqlite, &target).await.unwrap();
    assert_eq!(g.mode(), LockMode::Shared);
    assert_eq!(g.category(), Category::Sqlite);
    assert!(g.waited() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(g.held_for() >= Duration::from_millis(20));
    let debug = format!("{g:?}");
    assert!(
        debug.contains("Sqlite") && debug.contains("state.db"),
        "{debug}"
    );
    // Guards are Send: release it from another task.
    tokio::spawn(async move { g.release().await })
        .await
        .unwrap()
        .unwrap();
    assert!(support::is_free(&locks, Category::Sqlite, &target).await);
}

#[tokio::test(flavor = "current_thread")]
async fn law8_metrics_count_and_time_acquisitions_holds_and_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .hold_budget(Category::Summary, Duration::from_millis(30))
        .build()
        .unwrap();
    let target = dir.path().join("summary.json");
    for _ in 0..9 {
        locks
            .lock(Category::Summary, &target)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let long = locks.lock(Category::Summary, &target).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    drop(long);
    let m = locks.metrics();
    let s = m.category(Category::Summary);
    assert_eq!(
        (s.acquisitions, s.releases, s.timeouts, s.over_budget),
        (10, 10, 0, 1)
    );
    assert!(s.hold.max >= Duration::from_millis(59), "{:?}", s.hold);
    assert!(s.hold.p50 < Duration::from_millis(30), "{:?}", s.hold);
    assert!(s.wait.p95 <= s.wait.max);
    assert_eq!(m.category(Category::Artifact).acquisitions, 0);
    assert_eq!(m.iter().count(), 5);
}

#[tokio::test(flavor = "current_thread")]
async fn release_reports_and_drop_releases() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("x.pdf");
    {
        let _g = locks.lock(Category::Artifact, &target).await.unwrap();
        assert!(!support::is_free(&locks, Category::Artifact, &target).await);
    }
    // Removal on drop goes through the blocking pool; the in-process queue is
    // released only after it, so a waiter here gets the lock in order.
    let g = locks
        .lock(Category::Artifact, &target)
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    g.release().await.unwrap();
    assert!(
        !locks
            .lock_path(Category::Artifact, &target)
            .unwrap()
            .exists()
    );
}

#[test]
fn works_without_tokio_test_on_both_runtime_flavors() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("m.jsonl");
    for rt in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    ] {
        let g = rt
            .block_on(locks.lock(Category::Manifest, &target))
            .unwrap();
        // A guard dropped outside any runtime still releases.
        drop(rt);
        drop(g);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        rt.block_on(locks.try_lock(Category::Manifest, &target))
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_table_forgets_paths_nobody_uses() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let before = paths_in_use();
    for i in 0..2000 {
        let g = locks
            .lock(Category::Telemetry, dir.path().join(format!("t{i}.jsonl")))
            .await
            .unwrap();
        drop(g);
    }
    // Other tests of this binary may hold locks concurrently; ours are gone.
    assert!(
        paths_in_use() <= before + 8,
        "table grew: {}",
        paths_in_use()
    );
}

/// With tokio's clock paused (`start_paused`, `time::pause`: common in
/// users' tests), a timed wait ends when tokio's timer says it does, at
/// once, not by spinning until the real clock catches up (an hour here,
/// which only a spinning wait would take).
#[test]
fn a_timed_wait_under_a_paused_tokio_clock_ends_by_tokios_clock() {
    let waiting = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let locks = locks_in(dir.path());
            let target = dir.path().join("summary.json");
            let _held = locks.lock(Category::Summary, &target).await.unwrap();
            let waiter = tokio::spawn({
                let (locks, target) = (locks.clone(), target.clone());
                async move {
                    locks
                        .acquire(Category::Summary, &target)
                        .timeout(Duration::from_secs(3600))
                        .await
                }
            });
            waiter.await.unwrap().unwrap_err()
        })
    });
    assert!(
        support::eventually(Duration::from_secs(60), || waiting.is_finished()),
        "the wait spun in real time instead of ending by tokio's clock"
    );
    let err = waiting.join().unwrap();
    assert!(err.is_timeout(), "{err}");
}
