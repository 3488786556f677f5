//! Shared and exclusive: `cargo run --example shared_exclusive`.
//!
//! Readers of a SQLite database take the lock shared: any number at once,
//! in this process and others. A writer takes it exclusive: it waits until
//! every reader is gone, and readers that come after it queue behind it
//! (the queue is fair, so a stream of readers cannot starve a writer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_filelock::{Category, Locks};

#[tokio::main]
async fn main() -> Result<(), async_filelock::LockError> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .build()?;
    let db = dir.path().join("state.db");

    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (locks, db, inside, most) =
                (locks.clone(), db.clone(), inside.clone(), most.clone());
            tokio::spawn(async move {
                let guard = locks.lock_shared(Category::Sqlite, &db).await?;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await; // a long read
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The writer asks while the readers read: it waits for all of them.
    let writer = locks.lock(Category::Sqlite, &db).await?;
    println!(
        "writer got the lock after {:.0?}, with {} readers inside (at most {} read at once)",
        writer.waited(),
        inside.load(Ordering::SeqCst),
        most.load(Ordering::SeqCst)
    );
    // Exclusive means alone: no reader inside while the writer holds it;
    // shared means together: the readers overlapped before it.
    assert_eq!(
        inside.load(Ordering::SeqCst),
        0,
        "a reader inside with the writer"
    );
    assert!(
        most.load(Ordering::SeqCst) > 1,
        "the readers never read together"
    );
    // Meanwhile a reader is refused at once, and an exclusive try too.
    assert!(
        locks
            .try_lock_shared(Category::Sqlite, &db)
            .await?
            .is_none()
    );
    writer.release().await?;
    for reader in readers {
        reader.await.expect("reader task")?;
    }
    assert!(
        locks
            .try_lock_shared(Category::Sqlite, &db)
            .await?
            .is_some()
    );
    println!("{}", locks.metrics());
    Ok(())
}
