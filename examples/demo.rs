//! Shows the crate working, with no setup: `cargo run --example demo`.
//!
//! Four processes (copies of this program) append 250 lines each to one
//! manifest, each line written in two pieces under `manifest_lock`, then the
//! parent checks that every line is whole and counts them, and shows what a
//! timeout looks like in a log line.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use async_filelock::{Category, LockError, Locks, manifest_lock};

const WRITERS: usize = 4;
const LINES: usize = 250;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--writer" {
        return writer(PathBuf::from(&args[2]), &args[3]).await;
    }
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("manifest.jsonl");
    println!(
        "{WRITERS} processes append {LINES} lines each to {}",
        manifest.display()
    );
    let started = Instant::now();
    let children = (0..WRITERS)
        .map(|i| {
            Command::new(std::env::current_exe()?)
                .arg("--writer")
                .arg(&manifest)
                .arg(format!("writer-{i}"))
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a writer failed: {status}").into());
        }
    }
    let text = std::fs::read_to_string(&manifest)?;
    let whole = text
        .lines()
        .filter(|l| l.starts_with("{\"writer\":") && l.ends_with('}'))
        .count();
    println!(
        "{} lines, {whole} whole, {} torn, in {:.2?}",
        text.lines().count(),
        text.lines().count() - whole,
        started.elapsed()
    );
    if whole != WRITERS * LINES {
        return Err("lines were lost or torn".into());
    }

    // What a timeout tells an operator.
    let locks = Locks::builder()
        .timeout(Category::Manifest, Duration::from_millis(200))
        .build()?;
    let held = locks.lock(Category::Manifest, &manifest).await?;
    let other = tokio::spawn({
        let (locks, manifest) = (locks.clone(), manifest.clone());
        async move { locks.lock(Category::Manifest, &manifest).await }
    });
    match other.await? {
        Err(e @ LockError::Timeout { .. }) => println!("a second task, meanwhile: {e}"),
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }
    drop(held);
    println!(
        "metrics: {:?}",
        locks.metrics().category(Category::Manifest)
    );
    Ok(())
}

async fn writer(manifest: PathBuf, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..LINES {
        let guard = manifest_lock(&manifest).await?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&manifest)?;
        // Two writes per line: without the lock, lines of different
        // processes would interleave.
        f.write_all(format!("{{\"writer\":\"{name}\",").as_bytes())?;
        tokio::task::yield_now().await;
        f.write_all(format!("\"line\":{i}}}\n").as_bytes())?;
        guard.release().await?;
    }
    Ok(())
}
