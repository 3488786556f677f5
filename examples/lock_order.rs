//! Lock ordering with `lock_many`: `cargo run --example lock_order`.
//!
//! Two tasks each need the manifest and the summary of a run, and name
//! them in opposite orders. Taken one by one, each could hold one and wait
//! for the other forever. `lock_many` takes any set in one global order
//! (artifact, manifest, telemetry, sqlite, summary; then lock path), so
//! both finish. A nested acquisition against that order is warned about,
//! or refused with `OrderCheck::Error`.

use async_filelock::{Category, LockError, Locks, OrderCheck};

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .order_check(OrderCheck::Error)
        .build()?;
    let manifest = dir.path().join("manifest.jsonl");
    let summary = dir.path().join("summary.json");

    let tasks: Vec<_> = [
        [
            (Category::Manifest, manifest.clone()),
            (Category::Summary, summary.clone()),
        ],
        [
            (Category::Summary, summary.clone()),
            (Category::Manifest, manifest.clone()),
        ],
    ]
    .into_iter()
    .map(|wanted| {
        let locks = locks.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let set = locks.lock_many(wanted.clone()).await?;
                let order: Vec<_> = set.guards().iter().map(|g| g.category()).collect();
                assert_eq!(order, [Category::Manifest, Category::Summary]);
                tokio::task::yield_now().await;
                set.release().await?;
            }
            Ok::<_, LockError>(())
        })
    })
    .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    println!("two tasks asking in opposite orders: 200 sets taken, no deadlock");

    // Holding the summary, asking for the manifest (which comes first).
    let held = locks.lock(Category::Summary, &summary).await?;
    match locks.lock(Category::Manifest, &manifest).await {
        Err(e @ LockError::OrderViolation { .. }) => println!("refused: {e}"),
        other => panic!("expected an order violation, got {other:?}"),
    }
    held.release().await?;
    Ok(())
}
