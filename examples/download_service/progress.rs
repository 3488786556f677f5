//! The parent's view of the workers: starts them, reads their events, and
//! draws live progress bars (indicatif: one per worker, and the total).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::model::{Event, Outcome, Stats};

/// What one worker reported.
pub struct WorkerRun {
    pub worker: u32,
    pub settled: Vec<(String, Outcome)>,
    pub stats: Option<Stats>,
    pub exit: Option<std::process::ExitStatus>,
}

/// Runs `workers` copies of this program against the server at `url`, and
/// returns what each reported once all have exited.
pub async fn run_workers(
    url: &str,
    dir: &Path,
    workers: u32,
    files: u64,
    total_bytes: u64,
) -> std::io::Result<Vec<WorkerRun>> {
    let bars = MultiProgress::new();
    let total = bars.add(ProgressBar::new(total_bytes));
    total.set_style(style(
        "{prefix:>9} [{bar:32.green}] {bytes}/{total_bytes} {bytes_per_sec}",
    ));
    total.set_prefix("all");
    let mut handles = Vec::new();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(vec![0u64; workers as usize]));
    for id in 0..workers {
        let bar = bars.add(ProgressBar::new(files));
        bar.set_style(style("{prefix:>9} [{bar:32.cyan}] {pos}/{len} files {msg}"));
        bar.set_prefix(format!("worker {id}"));
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["worker", "--url", url, "--id", &id.to_string(), "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (total, progress) = (total.clone(), progress.clone());
        handles.push(tokio::spawn(async move {
            let mut run = WorkerRun {
                worker: id,
                settled: Vec::new(),
                stats: None,
                exit: None,
            };
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Event>(&line) {
                    Ok(Event::Tick { bytes, current }) => {
                        let mut all = progress.lock().unwrap_or_else(|p| p.into_inner());
                        all[id as usize] = bytes;
                        total.set_position(all.iter().sum());
                        bar.set_message(current.unwrap_or_default());
                    }
                    Ok(Event::Settled { file, outcome }) => {
                        bar.inc(1);
                        run.settled.push((file, outcome));
                    }
                    Ok(Event::Done { stats }) => run.stats = Some(stats),
                    Err(_) => bar.println(format!("worker {id}: {line}")),
                }
            }
            run.exit = child.wait().await.ok();
            bar.finish_with_message("done");
            run
        }));
    }
    let mut runs = Vec::new();
    for handle in handles {
        runs.push(handle.await.map_err(std::io::Error::other)?);
    }
    total.finish();
    // Let the last frame draw before the tables.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(runs)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
