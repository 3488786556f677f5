//! Acquires and releases one uncontended lock in a loop, for profiling:
//! `cargo run --release --example hot_loop -- 100000`. Each guard is
//! released with `release().await`, or dropped with `HOT_LOOP_DROP=1` (the
//! path most callers take, and the ratios bench's).

use async_filelock::{Category, LockError, Locks};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), LockError> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("async-filelock-hot-loop-{}", std::process::id()));
    let locks = Locks::builder().lock_dir(dir.join("locks")).build()?;
    let target = dir.join("manifest.jsonl");
    let drop_guards = std::env::var_os("HOT_LOOP_DROP").is_some();
    let started = std::time::Instant::now();
    for _ in 0..n {
        if drop_guards {
            drop(locks.lock(Category::Manifest, &target).await?);
        } else {
            locks
                .lock(Category::Manifest, &target)
                .await?
                .release()
                .await?;
        }
    }
    let per_op = started.elapsed() / n as u32;
    println!("{n} acquire+release: {per_op:?} each");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
