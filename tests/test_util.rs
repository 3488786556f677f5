//! Feature `test-util`, used as a user's test suite would: only the public
//! API, the hook macro at the top, `#[tokio::test]`s below.

// The child processes of `ChildHolder` run this one test.
async_filelock::test_util::child_hook!();

use std::time::Duration;

use async_filelock::test_util::{ChildHolder, TempLocks, is_contended, wait_until_contended};
use async_filelock::{Artifact, ArtifactWriter, BackendChoice, Category, LockError, Locks, OnBusy};

/// Generous: a bound that catches a hang, never a slow machine.
const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn temp_locks_live_in_a_temporary_directory_removed_on_drop() {
    let locks = TempLocks::new().expect("temp locks");
    let dir = locks.dir().to_path_buf();
    let guard = locks
        .lock(Category::Manifest, locks.path("m.jsonl"))
        .await
        .expect("lock");
    assert!(guard.lock_path().starts_with(locks.lock_dir()));
    guard.release().await.expect("release");
    drop(locks);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn a_child_holds_until_released_and_a_timeout_names_it() {
    let locks = TempLocks::new().expect("temp locks");
    let db = locks.path("state.db");
    let holder = ChildHolder::hold(&locks, Category::Sqlite, &db)
        .await
        .expect("holder");
    assert_ne!(holder.pid(), std::process::id());
    assert!(
        locks
            .try_lock(Category::Sqlite, &db)
            .await
            .expect("try")
            .is_none()
    );
    let err = locks
        .acquire(Category::Sqlite, &db)
        .timeout(Duration::from_millis(50))
        .await
        .expect_err("held by the child");
    match &err {
        LockError::Timeout {
            holder: Some(who), ..
        } => {
            assert_eq!(who.pid(), Some(holder.pid()), "{err}")
        }
        other => panic!("expected a timeout naming the child: {other}"),
    }
    let theirs = holder.token().expect("an exclusive holder has a token");
    holder.release().await.expect("release");
    let mine = locks.try_lock(Category::Sqlite, &db).await.expect("try");
    let mine = mine.expect("free once the child released");
    assert!(
        mine.token().expect("token") > theirs,
        "fencing tokens grow across processes"
    );
}

#[tokio::test]
async fn a_shared_child_lets_readers_in_and_keeps_writers_out() {
    let locks = TempLocks::new().expect("temp locks");
    let db = locks.path("state.db");
    let holder = ChildHolder::hold_shared(&locks, Category::Sqlite, &db)
        .await
        .expect("holder");
    let reader = locks
        .try_lock_shared(Category::Sqlite, &db)
        .await
        .expect("try shared");
    assert!(reader.is_some(), "a shared holder lets readers in");
    drop(reader);
    assert!(
        locks
            .try_lock(Category::Sqlite, &db)
            .await
            .expect("try")
            .is_none()
    );
    holder.release().await.expect("release");
}

#[tokio::test]
async fn a_download_someone_else_is_doing_is_busy_then_the_waiter_finds_it_present() {
    let locks = TempLocks::new().expect("temp locks");
    let target = locks.path("model.bin");
    let holder = ChildHolder::hold(&locks, Category::Artifact, &target)
        .await
        .expect("holder");
    let open = ArtifactWriter::builder(&target)
        .locks(locks.locks().clone())
        .on_busy(OnBusy::Skip)
        .open()
        .await
        .expect("open");
    assert!(matches!(open, Artifact::Busy), "{open:?}");

    let waiter = tokio::spawn({
        let (locks, target) = (locks.locks().clone(), target.clone());
        async move { ArtifactWriter::builder(&target).locks(locks).open().await }
    });
    let waiting = wait_until_contended(&locks, Category::Artifact, &target, LONG);
    assert!(waiting.await.expect("lock path"), "the task never waited");
    // The other process "finishes the download" while we wait.
    std::fs::write(&target, b"weights").expect("write the artifact");
    holder.release().await.expect("release");
    let open = waiter.await.expect("task").expect("open");
    assert!(matches!(open, Artifact::AlreadyPresent(_)), "{open:?}");
}

#[tokio::test]
async fn contention_is_seen_only_while_someone_waits() {
    let locks = TempLocks::new().expect("temp locks");
    let summary = locks.path("summary.json");
    let holder = ChildHolder::hold(&locks, Category::Summary, &summary)
        .await
        .expect("holder");
    assert!(!is_contended(&locks, Category::Summary, &summary).expect("look"));
    let waiter = tokio::spawn({
        let (locks, summary) = (locks.locks().clone(), summary.clone());
        async move {
            locks
                .lock(Category::Summary, &summary)
                .wait_forever()
                .await
                .map(drop)
        }
    });
    assert!(
        wait_until_contended(&locks, Category::Summary, &summary, LONG)
            .await
            .expect("look")
    );
    holder.release().await.expect("release");
    waiter
        .await
        .expect("task")
        .expect("granted once the child released");
    assert!(!is_contended(&locks, Category::Summary, &summary).expect("look"));
}

#[tokio::test]
async fn a_killed_os_holder_frees_the_lock_at_once() {
    let locks = TempLocks::new().expect("temp locks");
    let manifest = locks.path("manifest.jsonl");
    let holder = ChildHolder::hold(&locks, Category::Manifest, &manifest)
        .await
        .expect("holder");
    holder.kill().await.expect("kill");
    assert!(
        locks
            .try_lock(Category::Manifest, &manifest)
            .await
            .expect("try")
            .is_some()
    );
}

#[tokio::test]
async fn a_soft_lock_of_a_killed_holder_is_broken_by_the_next_waiter() {
    let builder = Locks::builder()
        .backend(BackendChoice::Soft)
        .soft_poll(Duration::from_millis(10));
    let locks = TempLocks::with_builder(builder).expect("temp locks");
    let summary = locks.path("summary.json");
    let holder = ChildHolder::hold(&locks, Category::Summary, &summary)
        .await
        .expect("holder");
    assert!(
        locks
            .try_lock(Category::Summary, &summary)
            .await
            .expect("try")
            .is_none()
    );
    holder.kill().await.expect("kill");
    let guard = locks
        .acquire(Category::Summary, &summary)
        .timeout(LONG)
        .await
        .expect("the dead holder's soft lock is broken");
    assert!(locks.metrics().backend().soft().expect("soft").stale_broken >= 1);
    guard.release().await.expect("release");
}

#[tokio::test]
async fn a_child_that_cannot_get_the_lock_reports_why() {
    let builder = Locks::builder().timeout(Category::Manifest, Duration::from_millis(50));
    let locks = TempLocks::with_builder(builder).expect("temp locks");
    let manifest = locks.path("manifest.jsonl");
    let _mine = locks
        .lock(Category::Manifest, &manifest)
        .await
        .expect("lock");
    let err = ChildHolder::hold(&locks, Category::Manifest, &manifest)
        .await
        .expect_err("we hold it");
    let text = err.to_string();
    assert!(
        text.contains("timed out") && text.contains("manifest.jsonl"),
        "{text}"
    );
}
