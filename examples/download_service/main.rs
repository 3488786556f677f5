//! The download service in one command:
//!
//! ```text
//! cargo run --release --example download_service [-- --files N --workers P --fail-rate R]
//! ```
//!
//! A local HTTP server (axum, on 127.0.0.1) serves a catalog of generated
//! files of assorted sizes: some slow, one cut mid-body on every response,
//! one whose bytes do not match the catalog's digest, and any response cut
//! mid-body at the fail rate. Several worker processes (this program, run
//! again) each download the whole list into one directory with reqwest:
//!
//! * each file streams into `<file>.part` under its artifact lock
//!   (`ArtifactWriter`), verified against the catalog's length and SHA-256,
//!   renamed into place; a cut response is retried from where the `.part`
//!   ends (HTTP `Range`);
//! * a file someone else is downloading is skipped on the first pass
//!   (`OnBusy::Skip`) and waited for on the second, when it is usually
//!   present;
//! * the commit appends a manifest row (one `JsonlSink` per process, rows
//!   stamped with the manifest lock's fencing token) and a SQLite row
//!   (under `sqlite_lock`'s category, with the artifact's fencing token)
//!   before the artifact lock is released;
//! * every settled file updates `summary.json` with `update_json`; the
//!   parent writes `report.json` with `write_atomic` at the end.
//!
//! Live progress bars while it runs, tables at the end, and checks: every
//! file on disk matches its digest, no `.part` is left, the manifest has
//! exactly one row per file, SQLite and the summary agree, nothing is left
//! locked. The exit code is non-zero when any check fails. Set
//! `ASYNC_FILELOCK_BACKEND=soft` to run it all on soft locks.

mod checks;
mod fetch;
mod model;
mod progress;
mod report;
mod server;
mod worker;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_filelock::{Locks, write_atomic_with};
use clap::{Parser, Subcommand};

use model::Layout;

#[derive(Parser, Debug)]
#[command(about = "A download service on async-filelock: a local server, worker processes, checks")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Files in the catalog (at least 4).
    #[arg(long, default_value_t = 36, value_parser = clap::value_parser!(u64).range(4..=10_000))]
    files: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Chance that any response is cut mid-body (0 to 0.5).
    #[arg(long, default_value_t = 0.15)]
    fail_rate: f64,
    /// Run directory (default: a temporary one, kept only if a check fails).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A worker process (started by the parent).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// The longest the workers may take before the run fails.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match cli.command {
        Some(Command::Worker(args)) => match runtime.block_on(worker::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker failed: {e}");
                ExitCode::FAILURE
            }
        },
        None => match runtime.block_on(service(&cli)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("download_service: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Runs the whole story; `Ok(false)` when a check failed.
async fn service(cli: &Cli) -> Result<bool, Box<dyn std::error::Error>> {
    if !(0.0..=0.5).contains(&cli.fail_rate) {
        return Err("--fail-rate takes 0 to 0.5".into());
    }
    let temp = tempfile::Builder::new()
        .prefix("download-service-")
        .tempdir()?;
    let root = cli.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let layout = Layout::new(&root);
    std::fs::create_dir_all(layout.downloads())?;
    let locks = Locks::builder().env()?.lock_dir(layout.locks()).build()?;

    let files = Arc::new(server::generate(cli.files as usize, cli.fail_rate));
    let addr = server::start(files.clone()).await?;
    let total: u64 = files.catalog.iter().map(|e| e.len).sum();
    println!(
        "serving {} files ({:.1} MiB) on http://{addr}; {} workers, fail rate {}, {} locks; run dir {}",
        files.catalog.len(),
        total as f64 / (1 << 20) as f64,
        cli.workers,
        cli.fail_rate,
        locks.backend().name(),
        root.display()
    );
    let started = Instant::now();
    // A hung worker fails the run instead of hanging it (the workers are
    // killed when their handles drop).
    let runs = tokio::time::timeout(
        RUN_LIMIT,
        progress::run_workers(
            &format!("http://{addr}"),
            &root,
            cli.workers,
            cli.files,
            total,
        ),
    )
    .await
    .map_err(|_| format!("the workers did not finish within {RUN_LIMIT:?}"))??;
    let elapsed = started.elapsed();

    let checks = checks::run(&files.catalog, &layout, &runs, &locks).await;
    let ok = checks.iter().all(|c| c.ok);
    let report = serde_json::json!({
        "elapsed_s": elapsed.as_secs_f64(),
        "workers": runs.iter().map(|r| serde_json::json!({"worker": r.worker, "settled": r.settled})).collect::<Vec<_>>(),
        "checks": checks.iter().map(|c| serde_json::json!({"check": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
    });
    write_atomic_with(&locks, layout.report(), serde_json::to_vec_pretty(&report)?).await?;

    println!("\n{}", report::workers(&runs));
    if let Some(failures) = report::failures(&runs) {
        println!("{failures}");
    }
    println!("{}", report::waits(&runs));
    println!(
        "server: {} requests, {} with Range, {} cut mid-body; {:.2} s",
        files.requests.load(Ordering::Relaxed),
        files.ranged.load(Ordering::Relaxed),
        files.cut.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    println!("{}", report::checks(&checks));
    if ok {
        println!("all checks passed");
    } else {
        let kept = temp.keep();
        println!(
            "CHECKS FAILED; the run directory is kept: {}",
            if cli.dir.is_some() {
                root.display()
            } else {
                kept.display()
            }
        );
    }
    Ok(ok)
}
