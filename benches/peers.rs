//! This crate side by side with the async file locks a user would consider,
//! in the same run on the same machine: `cargo bench --bench peers` (add
//! `-- --quick` for smaller counts, or scenario names to run only those).
//!
//! Kinds: `crate` (this crate), `async_fd_lock` (0.2: one parked
//! `spawn_blocking` per wait), `filelock` (0.7 with tokio: polls with
//! backoff), `fs4_tokio` (fs4's tokio `AsyncFileExt`: its `lock` is a
//! blocking `flock` on the calling thread), `naive` (std `flock` in
//! `spawn_blocking` under `tokio::time::timeout`), and `std` (plain
//! blocking `flock`, the floor). Every kind locks a lock file in the same
//! directory. Each scenario of each kind runs in a fresh process of this
//! binary, so thread counts are its own; holders are plain `flock`.
//!
//! Scenarios (one JSON line per kind; `"n/a"` where a kind cannot express
//! it, with the reason):
//! * `uncontended`: acquire + release, time per operation and ratio to `std`.
//! * `contended`: 4 processes appending under the lock, 1 ms hold and 1 ms
//!   think, and none: operations per second, p99 wait.
//! * `one_lock`: 1,000 waiters on one lock held elsewhere: threads, and the
//!   time to drain once it is released.
//! * `distinct`: 1,000 distinct locks held elsewhere, each waited on with a
//!   2.5 s timeout: threads, the first `tokio::fs::metadata` while they wait,
//!   threads left in `flock` after the timeouts.
//! * `storm`: 3,000 waits on one held lock cancelled at random: threads in
//!   `flock` at the end.

// The baseline is std's `File::lock` (Rust 1.89); the benches are not part
// of the library's MSRV (1.88, Cargo.toml's rust-version).
#![allow(clippy::incompatible_msrv)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::any::Any;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_filelock::{Category, Locks};
use common::{percentile, threads, threads_in_flock};

const KINDS: [&str; 6] = [
    "crate",
    "async_fd_lock",
    "filelock",
    "fs4_tokio",
    "naive",
    "std",
];

type Held = Box<dyn Any + Send>;

fn open_std(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file")
}

/// One acquisition by `kind`: the held lock, or `None` at the timeout.
async fn acquire(
    kind: &str,
    locks: &Locks,
    target: &Path,
    lock_file: &Path,
    timeout: Option<Duration>,
) -> Option<Held> {
    let limit = timeout.unwrap_or(Duration::from_secs(3600));
    match kind {
        "crate" => {
            let a = locks.acquire(Category::Manifest, target);
            let a = match timeout {
                Some(t) => a.timeout(t),
                None => a.wait_forever(),
            };
            a.await.ok().map(|g| Box::new(g) as Held)
        }
        "async_fd_lock" => {
            use async_fd_lock::nonblocking::LockWrite;
            let file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock_file)
                .await
                .expect("open");
            let locked = tokio::time::timeout(limit, file.lock_write()).await.ok()?;
            locked.ok().map(|g| Box::new(g) as Held)
        }
        "filelock" => {
            let lock = filelock::FileLock::new(lock_file).expect("open");
            let locked = tokio::time::timeout(limit, lock.lock_owned_async())
                .await
                .ok()?;
            locked.ok().map(|g| Box::new(g) as Held)
        }
        "fs4_tokio" => {
            let file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock_file)
                .await
                .expect("open");
            fs4::tokio::AsyncFileExt::lock(&file).expect("lock");
            Some(Box::new(file) as Held)
        }
        "naive" => {
            let path = lock_file.to_path_buf();
            let wait = tokio::task::spawn_blocking(move || {
                let f = open_std(&path);
                f.lock().expect("lock");
                f
            });
            let f = tokio::time::timeout(limit, wait).await.ok()?.expect("join");
            Some(Box::new(f) as Held)
        }
        "std" => {
            let f = open_std(lock_file);
            f.lock().expect("lock");
            Some(Box::new(f) as Held)
        }
        other => panic!("unknown kind {other}"),
    }
}

fn lock_file(dir: &Path, locks: &Locks, kind: &str, target: &Path) -> PathBuf {
    if kind == "crate" {
        locks
            .lock_path(Category::Manifest, target)
            .expect("lock path")
    } else {
        // In the same directory, with a name as long as the crate's.
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("t");
        dir.join("locks").join(format!("artifact.{name:0>32}.lock"))
    }
}

/// A holder process of this binary: plain `flock` on each listed path until
/// told `release` (or its stdin closes).
struct Holder(Child, BufReader<std::process::ChildStdout>);

impl Holder {
    fn start(dir: &Path, paths: &[PathBuf]) -> Holder {
        let list = dir.join("holder-list.txt");
        let text: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        std::fs::write(&list, text.join("\n")).expect("list");
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("--hold")
            .arg(&list)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("holder");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("held");
        Holder(child, out)
    }

    fn release(&mut self) {
        let _ = writeln!(self.0.stdin.as_mut().expect("stdin"), "release");
        let mut line = String::new();
        let _ = self.1.read_line(&mut line);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hold_main(list: &Path) {
    let paths: Vec<PathBuf> = std::fs::read_to_string(list)
        .expect("list")
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    let held: Vec<std::fs::File> = paths
        .iter()
        .map(|p| {
            if let Some(d) = p.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            let f = open_std(p);
            f.lock().expect("flock");
            f
        })
        .collect();
    println!("held");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
    println!("released");
    let _ = std::io::stdin().read_line(&mut line);
}

fn setup(kind: &str, n: usize) -> (tempfile::TempDir, Locks, Vec<PathBuf>, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("locks");
    let locks = common::locks_in(dir.path());
    let targets: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("t-{i}"))).collect();
    let files = targets
        .iter()
        .map(|t| lock_file(dir.path(), &locks, kind, t))
        .collect();
    (dir, locks, targets, files)
}

fn uncontended(kind: &str, n: usize) {
    let (_dir, locks, targets, files) = setup(kind, 1);
    let rt = common::runtime(false);
    let mut per_op = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                let held = acquire(kind, &locks, &targets[0], &files[0], None).await;
                drop(held);
            }
        });
        per_op.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    println!(
        "{{\"scenario\":\"uncontended\",\"kind\":\"{kind}\",\"ns_per_op\":{:.0}}}",
        percentile(&mut per_op, 0.5)
    );
}

/// One process of the contended run: `ops` acquisitions, appending a line
/// under each; prints its waits (µs), one per line, then `done`.
fn contend_child(kind: &str, dir: &Path, ops: usize, hold_us: u64, think_us: u64) {
    let locks = common::locks_in(dir);
    let target = dir.join("shared");
    let file = lock_file(dir, &locks, kind, &target);
    let out_path = dir.join("out.txt");
    let rt = common::runtime(false);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line); // "go"
    let mut waits = Vec::with_capacity(ops);
    rt.block_on(async {
        for i in 0..ops {
            let t = Instant::now();
            let held = acquire(kind, &locks, &target, &file, None).await;
            waits.push(t.elapsed().as_micros() as u64);
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&out_path)
                .expect("out");
            writeln!(out, "{} {i}", std::process::id()).expect("append");
            if hold_us > 0 {
                std::thread::sleep(Duration::from_micros(hold_us));
            }
            drop(held);
            if think_us > 0 {
                std::thread::sleep(Duration::from_micros(think_us));
            }
        }
    });
    let mut stdout = std::io::stdout().lock();
    for w in waits {
        let _ = writeln!(stdout, "{w}");
    }
    let _ = writeln!(stdout, "done");
}

fn contended(kind: &str, ops: usize) {
    for (hold, think) in [(1000u64, 1000u64), (0, 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("locks")).expect("locks");
        let procs = 4;
        let mut children: Vec<Child> = (0..procs)
            .map(|_| {
                Command::new(std::env::current_exe().expect("exe"))
                    .args(["--contend-child", kind])
                    .arg(dir.path())
                    .args([ops.to_string(), hold.to_string(), think.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("child")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        for c in &mut children {
            writeln!(c.stdin.as_mut().expect("stdin"), "go").expect("go");
        }
        let mut waits = Vec::new();
        for c in &mut children {
            for line in BufReader::new(c.stdout.take().expect("stdout")).lines() {
                let line = line.expect("line");
                if line == "done" {
                    break;
                }
                waits.push(line.parse::<f64>().unwrap_or(0.0) / 1e3);
            }
            c.wait().expect("wait");
        }
        let secs = start.elapsed().as_secs_f64();
        let lines =
            std::fs::read_to_string(dir.path().join("out.txt")).map_or(0, |s| s.lines().count());
        assert_eq!(lines, procs * ops, "{kind}: every append whole and once");
        println!(
            "{{\"scenario\":\"contended_4p_hold{hold}us_think{think}us\",\"kind\":\"{kind}\",\"ops_per_s\":{:.0},\"wait_p99_ms\":{:.2}}}",
            (procs * ops) as f64 / secs,
            percentile(&mut waits, 0.99)
        );
    }
}

fn one_lock(kind: &str, n: usize) {
    if matches!(kind, "fs4_tokio" | "std") {
        println!(
            "{{\"scenario\":\"one_lock_{n}_waiters\",\"kind\":\"{kind}\",\"n/a\":\"a wait blocks the runtime thread\"}}"
        );
        return;
    }
    let (dir, locks, targets, files) = setup(kind, 1);
    let mut holder = Holder::start(dir.path(), &files);
    let rt = common::runtime(true);
    let idle = threads();
    let (peak, drain_ms) = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (locks, t, f) = (locks.clone(), targets[0].clone(), files[0].clone());
                let kind = kind.to_owned();
                tokio::spawn(async move { drop(acquire(&kind, &locks, &t, &f, None).await) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let peak = threads();
        let t = Instant::now();
        tokio::task::block_in_place(|| holder.release());
        for task in tasks {
            task.await.expect("task");
        }
        (peak, t.elapsed().as_secs_f64() * 1e3)
    });
    rt.shutdown_background();
    println!(
        "{{\"scenario\":\"one_lock_{n}_waiters\",\"kind\":\"{kind}\",\"threads_idle\":{idle},\"threads_peak\":{peak},\"drain_ms\":{drain_ms:.0}}}"
    );
}

fn distinct(kind: &str, n: usize) {
    if matches!(kind, "fs4_tokio" | "std") {
        println!(
            "{{\"scenario\":\"distinct_{n}_held\",\"kind\":\"{kind}\",\"n/a\":\"a wait blocks the runtime thread and cannot time out\"}}"
        );
        return;
    }
    let (dir, locks, targets, files) = setup(kind, n);
    let _holder = Holder::start(dir.path(), &files);
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").expect("probe");
    let rt = common::runtime(true);
    let idle = threads();
    let (peak, first_fs_ms) = rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .zip(&files)
            .map(|(t, f)| {
                let (locks, t, f) = (locks.clone(), t.clone(), f.clone());
                let kind = kind.to_owned();
                tokio::spawn(async move {
                    drop(acquire(&kind, &locks, &t, &f, Some(Duration::from_millis(2500))).await)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let peak = threads();
        let t = Instant::now();
        // Bounded: with the blocking pool full of waits it would wait for
        // the holder, which never lets go here.
        let first_fs_ms = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::fs::metadata(&probe),
        )
        .await
        {
            Ok(_) => t.elapsed().as_secs_f64() * 1e3,
            Err(_) => f64::INFINITY,
        };
        for task in tasks {
            task.await.expect("task");
        }
        (peak, first_fs_ms)
    });
    std::thread::sleep(Duration::from_millis(200));
    // Blocking tasks still in `flock` would hold a runtime's drop until the
    // holder lets go: do not wait for them.
    rt.shutdown_background();
    let first_fs = if first_fs_ms.is_finite() {
        format!("{first_fs_ms:.2}")
    } else {
        "over 10000 (the blocking pool is full)".to_owned()
    };
    println!(
        "{{\"scenario\":\"distinct_{n}_held\",\"kind\":\"{kind}\",\"threads_idle\":{idle},\"threads_peak\":{peak},\"first_tokio_fs_ms\":\"{first_fs}\",\"threads_in_flock_after_timeouts\":{}}}",
        threads_in_flock()
    );
}

fn storm(kind: &str, n: usize) {
    if matches!(kind, "fs4_tokio" | "std") {
        println!(
            "{{\"scenario\":\"cancel_storm_{n}\",\"kind\":\"{kind}\",\"n/a\":\"a wait blocks the runtime thread and cannot be cancelled\"}}"
        );
        return;
    }
    let (dir, locks, targets, files) = setup(kind, 1);
    let _holder = Holder::start(dir.path(), &files);
    let rt = common::runtime(true);
    let idle = threads();
    let peak = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (locks, t, f) = (locks.clone(), targets[0].clone(), files[0].clone());
                let kind = kind.to_owned();
                let after = Duration::from_micros(100 + (i as u64 * 7919) % 50_000);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(after, acquire(&kind, &locks, &t, &f, None)).await;
                })
            })
            .collect();
        let mut peak = threads();
        for task in tasks {
            task.await.expect("task");
            peak = peak.max(threads());
        }
        peak
    });
    std::thread::sleep(Duration::from_millis(200));
    rt.shutdown_background();
    println!(
        "{{\"scenario\":\"cancel_storm_{n}\",\"kind\":\"{kind}\",\"threads_idle\":{idle},\"threads_peak\":{peak},\"threads_in_flock_at_end\":{}}}",
        threads_in_flock()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        return hold_main(Path::new(&args[i + 1]));
    }
    if let Some(i) = args.iter().position(|a| a == "--contend-child") {
        let num = |k: usize| args[i + k].parse().expect("number");
        return contend_child(
            &args[i + 1],
            Path::new(&args[i + 2]),
            num(3) as usize,
            num(4),
            num(5),
        );
    }
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let (scenario, kind) = (args[i + 1].as_str(), args[i + 2].as_str());
        let n: usize = args[i + 3].parse().expect("count");
        match scenario {
            "uncontended" => uncontended(kind, n),
            "contended" => contended(kind, n),
            "one_lock" => one_lock(kind, n),
            "distinct" => distinct(kind, n),
            "storm" => storm(kind, n),
            other => panic!("unknown scenario {other}"),
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let wanted: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let plan = [
        ("uncontended", if quick { 5_000 } else { 20_000 }),
        ("contended", if quick { 300 } else { 1000 }),
        ("one_lock", 1000),
        ("distinct", 1000),
        ("storm", 3000),
    ];
    for (scenario, n) in plan {
        if !wanted.is_empty() && !wanted.contains(&scenario) {
            continue;
        }
        for kind in KINDS {
            let status = Command::new(std::env::current_exe().expect("exe"))
                .args(["--scenario", scenario, kind, &n.to_string()])
                .status()
                .expect("scenario");
            if !status.success() {
                println!("{{\"scenario\":\"{scenario}\",\"kind\":\"{kind}\",\"failed\":true}}");
            }
        }
    }
}
