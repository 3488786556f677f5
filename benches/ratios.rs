//! Speed claims of the lock engine as ratios to a baseline measured in the
//! same run, on the same machine: `cargo bench --bench ratios`.
//!
//! Baseline: plain blocking `std::fs::File::lock` (open, lock, unlock, close)
//! on a file in the same lock directory with a name of the same length as
//! the crate's lock file, so both pay the same path walk and the ratio is the
//! crate's own overhead. Rounds of baseline and crate alternate so that
//! machine noise hits both.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::{Duration, Instant};

use async_filelock::{Category, Locks};

const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn baseline_op(path: &Path) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open baseline lock file");
    f.lock().expect("lock");
    f.unlock().expect("unlock");
}

fn uncontended(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let base_path = dir
        .path()
        .join("locks")
        .join(format!("baseline.{}.lock", "0".repeat(32)));
    let target = dir.path().join("manifest.jsonl");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .build()
        .expect("locks");
    let mut base = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n {
            baseline_op(&base_path);
        }
        base.push(t.elapsed().as_secs_f64() / n as f64);
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                let g = locks.lock(Category::Manifest, &target).await.expect("lock");
                drop(g);
            }
        });
        ours.push(t.elapsed().as_secs_f64() / n as f64);
    }
    let (b, o) = (median(base), median(ours));
    println!(
        "{{\"bench\":\"uncontended_exclusive\",\"baseline_ns\":{:.0},\"ours_ns\":{:.0},\"ratio\":{:.2},\"target\":\"<=1.5\"}}",
        b * 1e9,
        o * 1e9,
        o / b
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    uncontended(if quick { 2_000 } else { 20_000 });
    let _ = Duration::ZERO;
}
