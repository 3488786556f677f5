//! "Someone else is downloading it", and timeouts:
//! `cargo run --example busy_or_timeout`.
//!
//! A download in progress holds the artifact lock. Another task that asks
//! with `OnBusy::Skip` hears `Busy` at once and moves on to other work; one
//! that asks with a short timeout gets `LockError::Timeout`, whose message
//! names the lock file, the wait and who holds it; one that waits finds the
//! artifact present when the first lets go, and downloads nothing.

use std::time::Duration;

use async_filelock::{Artifact, ArtifactWriter, Category, LockError, Locks, OnBusy};
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .build()?;
    let target = dir.path().join("model.bin");
    let open = |on_busy| {
        ArtifactWriter::builder(&target)
            .locks(locks.clone())
            .on_busy(on_busy)
            .open()
    };

    // The first download: holds the artifact lock while it writes.
    let Artifact::Write(mut first) = open(OnBusy::Wait).await? else {
        unreachable!("nothing there yet")
    };
    first.write_all(b"weights, part 1; ").await.expect("write");

    // Someone else is downloading it: skip, do something else.
    assert!(matches!(open(OnBusy::Skip).await?, Artifact::Busy));
    println!("OnBusy::Skip: busy, someone else is downloading it");

    // Or wait a little (in another task), then give up with an error that
    // says why.
    let impatient = locks
        .acquire(Category::Artifact, &target)
        .timeout(Duration::from_millis(100));
    match tokio::spawn(impatient).await.expect("task") {
        Err(e) if e.is_timeout() => println!("a 100 ms wait: {e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }

    // Or wait for it: the first download finishes meanwhile.
    let waiter = tokio::spawn(open(OnBusy::Wait));
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.write_all(b"part 2").await.expect("write");
    let report = first.commit().await?;
    println!("the first download committed {} bytes", report.bytes);
    match waiter.await.expect("waiter task")? {
        Artifact::AlreadyPresent(p) => {
            println!("the waiter found it present after {:.0?}", p.waited)
        }
        other => panic!("expected it present, got {other:?}"),
    }
    Ok(())
}
