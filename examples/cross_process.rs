//! One lock across processes: `cargo run --example cross_process`.
//!
//! Four copies of this program each add 1 to a counter in a plain text
//! file 200 times: read, pause, write. Without a lock the copies overwrite
//! each other's increments; under `summary_lock` (an OS `flock` on a lock
//! file in `.locks/` beside the counter) none is lost.

use std::path::Path;
use std::process::Command;

use async_filelock::summary_lock;

const PROCESSES: u32 = 4;
const INCREMENTS: u32 = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let [_, role, counter] = &std::env::args().collect::<Vec<_>>()[..]
        && role == "--child"
    {
        return child(Path::new(counter)).await;
    }
    let dir = tempfile::tempdir()?;
    let counter = dir.path().join("counter.txt");
    std::fs::write(&counter, "0")?;
    let children = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .arg("--child")
                .arg(&counter)
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut child in children {
        if !child.wait()?.success() {
            return Err("a child failed".into());
        }
    }
    let total: u32 = std::fs::read_to_string(&counter)?.trim().parse()?;
    println!("{PROCESSES} processes x {INCREMENTS} increments = {total}");
    if total != PROCESSES * INCREMENTS {
        return Err("increments were lost".into());
    }
    Ok(())
}

async fn child(counter: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..INCREMENTS {
        // Waits (without blocking the runtime) while another process holds
        // it; released when `guard` is dropped, or by the kernel if this
        // process dies.
        let guard = summary_lock(&counter).await?;
        let n: u32 = tokio::fs::read_to_string(&counter).await?.trim().parse()?;
        tokio::task::yield_now().await; // a window for a lost update
        tokio::fs::write(&counter, (n + 1).to_string()).await?;
        guard.release().await?;
    }
    Ok(())
}
