//! Law 7: lock order. Multi-lock acquisition sorts by it; nested
//! acquisition against it is detected.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_filelock::{Category, LockError, Locks, OrderCheck};
use tokio::sync::Barrier;

fn locks(dir: &std::path::Path, check: OrderCheck) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .order_check(check)
        .timeout(Category::Manifest, Duration::from_millis(300))
        .timeout(Category::Sqlite, Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Task A takes manifest then sqlite, task B sqlite then manifest, meeting
/// at a barrier in between: with locks taken one by one in the wrong order
/// they deadlock (one of them times out); with `lock_many` both finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law7_lock_many_completes_where_the_wrong_order_deadlocks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Off);
    let m = dir.path().join("manifest.jsonl");
    let s = dir.path().join("state.db");

    let barrier = Arc::new(Barrier::new(2));
    let one_by_one = |first: (Category, std::path::PathBuf),
                      second: (Category, std::path::PathBuf)| {
        let (locks, barrier) = (locks.clone(), barrier.clone());
        tokio::spawn(async move {
            let _a = locks.lock(first.0, &first.1).await?;
            barrier.wait().await;
            let _b = locks.lock(second.0, &second.1).await?;
            Ok::<_, LockError>(())
        })
    };
    let a = one_by_one(
        (Category::Manifest, m.clone()),
        (Category::Sqlite, s.clone()),
    );
    let b = one_by_one(
        (Category::Sqlite, s.clone()),
        (Category::Manifest, m.clone()),
    );
    let (ra, rb) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        ra.as_ref().is_err_and(LockError::is_timeout)
            || rb.as_ref().is_err_and(LockError::is_timeout),
        "the wrong order deadlocks: {ra:?} {rb:?}"
    );

    for _ in 0..50 {
        let barrier = Arc::new(Barrier::new(2));
        let together = |items: [(Category, std::path::PathBuf); 2]| {
            let (locks, barrier) = (locks.clone(), barrier.clone());
            tokio::spawn(async move {
                let set = locks.lock_many(items).await?;
                assert_eq!(set.len(), 2);
                drop(set);
                barrier.wait().await;
                Ok::<_, LockError>(())
            })
        };
        let a = together([
            (Category::Manifest, m.clone()),
            (Category::Sqlite, s.clone()),
        ]);
        let b = together([
            (Category::Sqlite, s.clone()),
            (Category::Manifest, m.clone()),
        ]);
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn law7_nested_acquisition_against_the_order_is_an_error_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Error);
    let summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let err = locks
        .lock(Category::Artifact, dir.path().join("paper.pdf"))
        .await
        .unwrap_err();
    match &err {
        LockError::OrderViolation {
            category,
            held_category,
            held_lock_path,
            ..
        } => {
            assert_eq!(
                (*category, *held_category),
                (Category::Artifact, Category::Summary)
            );
            assert_eq!(held_lock_path, summary.lock_path());
        }
        other => panic!("expected an order violation, got {other}"),
    }
    assert!(err.to_string().contains("lock_many"), "{err}");
    // In order is fine, and so is a try (it cannot wait, so cannot deadlock).
    assert!(support::is_free(&locks, Category::Artifact, dir.path().join("paper.pdf")).await);
    drop(summary);
    let artifact = locks
        .lock(Category::Artifact, dir.path().join("paper.pdf"))
        .await
        .unwrap();
    let summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    // Within a category, by lock path.
    let lower = locks
        .lock_path(Category::Manifest, dir.path().join("a.jsonl"))
        .unwrap();
    let upper = locks
        .lock_path(Category::Manifest, dir.path().join("b.jsonl"))
        .unwrap();
    let (first, second) = if lower < upper {
        ("a.jsonl", "b.jsonl")
    } else {
        ("b.jsonl", "a.jsonl")
    };
    drop((artifact, summary));
    let _later = locks
        .lock(Category::Manifest, dir.path().join(second))
        .await
        .unwrap();
    let err = locks
        .lock(Category::Manifest, dir.path().join(first))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::OrderViolation { .. }), "{err}");
}

#[tokio::test]
async fn law7_by_default_a_violation_is_warned_counted_and_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Warn);
    let _summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let _artifact = locks
        .lock(Category::Artifact, dir.path().join("paper.pdf"))
        .await
        .unwrap();
    let m = locks.metrics();
    assert_eq!(m.category(Category::Artifact).order_violations, 1);
    assert_eq!(m.category(Category::Summary).order_violations, 0);
}

#[tokio::test]
async fn lock_many_dedups_and_names_its_guards() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Error);
    let m = dir.path().join("m.jsonl");
    let set = locks
        .lock_many([
            (Category::Summary, dir.path().join("s.json")),
            (Category::Manifest, m.clone()),
            (Category::Manifest, dir.path().join("./m.jsonl")),
            (Category::Artifact, dir.path().join("x.pdf")),
        ])
        .await
        .unwrap();
    let cats: Vec<_> = set.guards().iter().map(|g| g.category()).collect();
    assert_eq!(
        cats,
        [Category::Artifact, Category::Manifest, Category::Summary]
    );
    assert!(set.get(Category::Manifest, &m).is_some());
    assert!(set.get(Category::Telemetry, &m).is_none());
    set.release().await.unwrap();
    assert!(support::is_free(&locks, Category::Manifest, &m).await);
}

/// A violation on a lock that is busy: the acquisition's first try finds
/// it busy and the wait that follows checks the order; the violation is
/// warned about and counted once, not once per step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law7_a_violation_on_a_busy_lock_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .order_check(OrderCheck::Warn)
        .timeout(Category::Artifact, Duration::from_millis(100))
        .build()
        .unwrap();
    let target = dir.path().join("paper.pdf");
    // Another task holds the artifact lock.
    let held = tokio::spawn({
        let (locks, target) = (locks.clone(), target.clone());
        async move { locks.lock(Category::Artifact, &target).await.unwrap() }
    })
    .await
    .unwrap();
    // This task holds a later lock, then asks for the busy earlier one.
    let _summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let err = locks.lock(Category::Artifact, &target).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(held);
    assert_eq!(
        locks
            .metrics()
            .category(Category::Artifact)
            .order_violations,
        1,
        "one acquisition against the order, counted once"
    );
}

/// Refused under `OrderCheck::Error`, an acquisition whose lock is free
/// takes nothing first: no lock file is made (an artifact's would be left
/// behind, as the refusal does not release by removal).
#[tokio::test]
async fn law7_a_refused_acquisition_of_a_free_lock_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Error);
    let _summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let target = dir.path().join("paper.pdf");
    let lock_path = locks.lock_path(Category::Artifact, &target).unwrap();
    let err = locks.lock(Category::Artifact, &target).await.unwrap_err();
    assert!(matches!(err, LockError::OrderViolation { .. }), "{err}");
    assert!(!lock_path.exists(), "refused before the lock file was made");
    assert_eq!(
        locks
            .metrics()
            .category(Category::Artifact)
            .order_violations,
        1
    );
}

/// A JSONL append against the lock order while another task of this
/// process holds the sink's lock: the commit's try on the appender's
/// thread finds the queue busy and the wait that follows checks the order,
/// counting the violation once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law7_a_jsonl_commit_against_the_order_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path(), OrderCheck::Warn);
    let path = dir.path().join("m.jsonl");
    let sink = async_filelock::JsonlSink::builder(&path)
        .locks(locks.clone())
        .fsync(async_filelock::FsyncPolicy::Never)
        .open()
        .await
        .unwrap();
    // Another task of this process holds the sink's lock for a while.
    let held = tokio::spawn({
        let (locks, path) = (locks.clone(), path.clone());
        async move { locks.lock(Category::Manifest, &path).await.unwrap() }
    })
    .await
    .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    // This task holds a later lock, then appends (committed on its behalf).
    let _summary = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    sink.append(&serde_json::json!({"a": 1})).await.unwrap();
    release.await.unwrap();
    assert_eq!(
        locks
            .metrics()
            .category(Category::Manifest)
            .order_violations,
        1,
        "one commit against the order, counted once"
    );
}

/// A handle that checks nothing (`OrderCheck::Off`) leaves its holdings out
/// of other handles' order checks, as it always did: a library that opted
/// out must not make the application's own `Error` handle refuse. (Its
/// holdings are still recorded, for the same-task check.)
#[tokio::test]
async fn law7_locks_held_through_an_unchecked_handle_do_not_count_against_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let unchecked = locks(dir.path(), OrderCheck::Off);
    let strict = locks(dir.path(), OrderCheck::Error);
    let summary = unchecked
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let artifact = strict
        .lock(Category::Artifact, dir.path().join("paper.pdf"))
        .await
        .expect("an unchecked handle's holding is not the strict handle's to judge");
    assert_eq!(
        strict
            .metrics()
            .category(Category::Artifact)
            .order_violations,
        0
    );
    drop((artifact, summary));
    // The strict handle's own holdings still count.
    let _summary = strict
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    let refused = strict
        .lock(Category::Artifact, dir.path().join("paper.pdf"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LockError::OrderViolation { .. }),
        "{refused:?}"
    );
}
