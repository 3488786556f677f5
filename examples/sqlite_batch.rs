//! SQLite writes from many tasks (or processes) without "database is
//! locked": each batch is one transaction under `sqlite_lock`.
//! `cargo run --example sqlite_batch`.

use std::sync::{Arc, Mutex};

use async_filelock::sqlite_lock;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    {
        let _guard = sqlite_lock(&db).await?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS events (task INTEGER, n INTEGER)")?;
    }
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            // One connection per task, as separate processes would have;
            // SQLite's own busy timeout off: the lock does the waiting.
            let conn = Arc::new(Mutex::new(rusqlite::Connection::open(&db)?));
            conn.lock()
                .map_err(|_| "poisoned")?
                .busy_timeout(std::time::Duration::ZERO)?;
            for batch in 0..10i64 {
                let guard = sqlite_lock(&db).await?;
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || -> Result<(), rusqlite::Error> {
                    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    let tx = conn.transaction()?;
                    for n in 0..100 {
                        tx.execute(
                            "INSERT INTO events VALUES (?1, ?2)",
                            (task, batch * 100 + n),
                        )?;
                    }
                    tx.commit()
                })
                .await??;
                guard.release().await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let conn = rusqlite::Connection::open(&db)?;
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    println!("8 tasks x 10 batches x 100 rows = {rows} rows, no \"database is locked\"");
    assert_eq!(rows, 8 * 10 * 100, "every batch committed once");
    Ok(())
}
