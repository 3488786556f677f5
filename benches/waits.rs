//! Waits at scale (law 11): `cargo bench --bench waits` (add `-- --quick`
//! for smaller counts, or scenario names to run only those).
//!
//! Each scenario runs in a fresh child process of this binary, so its
//! thread counts are its own; the locks are held by another child that is
//! plain `std` `flock`, not this crate. Every figure is measured against a
//! baseline from the same run (idle threads, idle `tokio::fs` latency), and
//! printed as one JSON line with its target.
//!
//! Scenarios:
//! * `distinct`: N distinct locks held elsewhere, all waited on: threads,
//!   `tokio::fs::metadata` p99 while waiting vs idle; then the holder lets
//!   go of all at once: time until every waiter is granted, and exactness.
//! * `timeouts`: 1,000 waits timing out together: lateness past the deadline.
//! * `event_grant`: one release, a waiter in event mode (no thread of its
//!   own): latency from release to grant, p50 and p99; and the same for a
//!   kernel wait.
//! * `storm`: 3,000 futures on one held lock cancelled at random: threads,
//!   and whether the lock is free once the holder exits.
//! * `shutdown`: a runtime dropped with 1,000 pending waits: how long the
//!   drop takes.

// The baseline is std's `File::lock` (Rust 1.89); the benches are not part
// of the library's MSRV (1.88, Cargo.toml's rust-version).
#![allow(clippy::incompatible_msrv)]
// The holder is plain std `flock`, which the crate's clippy.toml keeps out
// of everything but the OS backend.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_filelock::{Category, Locks};
use common::{percentile, threads, threads_in_flock};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn raise_fd_limit(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < n) {
        limit.current = Some(limit.maximum.map_or(n, |m| m.min(n)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// A holder process: plain std `flock` on each path of a list file.
/// Commands on stdin: `release` (let go of all at once, print the time),
/// `take` (take them all again), EOF (exit).
struct Holder {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(dir: &Path, paths: &[PathBuf]) -> Holder {
        let list = dir.join(format!("hold-{}.txt", now_ns()));
        let text: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        std::fs::write(&list, text.join("\n")).expect("list");
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("--hold")
            .arg(&list)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("holder");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Holder { child, out };
        h.expect("held");
        h
    }

    fn expect(&mut self, what: &str) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("holder says");
        assert!(line.starts_with(what), "holder said {line:?}");
        line.trim().to_owned()
    }

    /// Lets go of every lock; returns when it did (ns since the epoch).
    fn release(&mut self) -> u128 {
        writeln!(self.child.stdin.as_mut().expect("stdin"), "release").expect("tell");
        let line = self.expect("released");
        line.split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    fn take(&mut self) {
        writeln!(self.child.stdin.as_mut().expect("stdin"), "take").expect("tell");
        self.expect("held");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hold_main(list: &Path) {
    raise_fd_limit(65536);
    let paths: Vec<PathBuf> = std::fs::read_to_string(list)
        .expect("list")
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    let take = |paths: &[PathBuf]| -> Vec<std::fs::File> {
        paths
            .iter()
            .map(|p| {
                if let Some(d) = p.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)
                    .expect("open");
                f.lock().expect("flock");
                f
            })
            .collect()
    };
    let mut held = take(&paths);
    let say = |s: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    say("held");
    for line in std::io::stdin().lock().lines() {
        match line.as_deref() {
            Ok("release") => {
                let at = now_ns();
                held.clear();
                say(&format!("released {at}"));
            }
            Ok("take") => {
                held = take(&paths);
                say("held");
            }
            _ => break,
        }
    }
}

fn lock_paths(locks: &Locks, targets: &[PathBuf]) -> Vec<PathBuf> {
    targets
        .iter()
        .map(|t| locks.lock_path(Category::Artifact, t).expect("lock path"))
        .collect()
}

fn targets(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("t-{i}"))).collect()
}

/// `tokio::fs::metadata` latencies (ms) on an unrelated file, `n` samples.
async fn fs_latencies(probe: &Path, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tokio::fs::metadata(probe).await.expect("metadata");
        out.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

fn distinct(n: usize) {
    raise_fd_limit(65536);
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let targets = targets(dir.path(), n);
    let mut holder = Holder::start(dir.path(), &lock_paths(&locks, &targets));
    let rt = common::runtime(true);
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").expect("probe");
    let idle_threads = threads();
    let mut idle = rt.block_on(fs_latencies(&probe, 200));
    let (mut during, peak, (granted_in, done_in), exact) = rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| {
                let (locks, t) = (locks.clone(), t.clone());
                tokio::spawn(async move {
                    let guard = locks
                        .acquire(Category::Artifact, &t)
                        .timeout(Duration::from_secs(120))
                        .await
                        .expect("granted");
                    let granted = Instant::now();
                    let count = t.with_extension("count");
                    let n: u64 = tokio::fs::read_to_string(&count)
                        .await
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    tokio::fs::write(&count, (n + 1).to_string())
                        .await
                        .expect("count");
                    drop(guard);
                    granted
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = fs_latencies(&probe, 200).await;
        let peak = threads();
        let released = Instant::now();
        let holder_release = tokio::task::spawn_blocking(move || {
            holder.release();
            holder
        });
        // Granted: the last guard obtained. Done: the last task through its
        // count file and release too, which is file work on the blocking
        // pool (and slower when the filesystem is still busy with an
        // earlier run's 20,000 files).
        let mut last_granted = released;
        for t in tasks {
            last_granted = last_granted.max(t.await.expect("task"));
        }
        let done_in = released.elapsed();
        let granted_in = last_granted - released;
        drop(holder_release.await.expect("holder"));
        let exact = targets.iter().all(|t| {
            std::fs::read_to_string(t.with_extension("count")).is_ok_and(|s| s.trim() == "1")
        });
        (during, peak, (granted_in, done_in), exact)
    });
    let idle_p99 = percentile(&mut idle, 0.99);
    let during_p99 = percentile(&mut during, 0.99);
    // `idle_threads` counts the runtime's workers already; the two more are
    // the crate's event thread and the blocking-pool thread of the probe's
    // `tokio::fs` calls.
    let bound = idle_threads + async_filelock::max_wait_threads() + 2;
    println!(
        "{{\"bench\":\"distinct_{n}_waited\",\"threads_idle\":{idle_threads},\"threads_peak\":{peak},\"threads_allowed\":{bound},\"fs_p99_idle_ms\":{idle_p99:.3},\"fs_p99_during_ms\":{during_p99:.3},\"fs_p99_allowed_ms\":{:.3},\"target\":\"threads <= idle (runtime built) + 16 kernel waits + event thread + probe's pool thread; fs p99 <= 2x idle + 1 ms\"}}",
        2.0 * idle_p99 + 1.0
    );
    println!(
        "{{\"bench\":\"distinct_{n}_released_at_once\",\"all_granted_ms\":{:.0},\"all_done_ms\":{:.0},\"exact\":{exact},\"target\":\"granted <= 2000 ms, exact\"}}",
        granted_in.as_secs_f64() * 1e3,
        done_in.as_secs_f64() * 1e3
    );
}

fn timeouts(n: usize) {
    raise_fd_limit(65536);
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let targets = targets(dir.path(), n);
    let _holder = Holder::start(dir.path(), &lock_paths(&locks, &targets));
    let rt = common::runtime(true);
    let limit = Duration::from_millis(2500);
    let (mut late, named) = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| {
                let (locks, t) = (locks.clone(), t.clone());
                tokio::spawn(async move {
                    let r = locks.acquire(Category::Artifact, &t).timeout(limit).await;
                    let named = match r {
                        Err(async_filelock::LockError::Timeout { holder, .. }) => holder.is_some(),
                        other => panic!("expected a timeout: {other:?}"),
                    };
                    (Instant::now(), named)
                })
            })
            .collect();
        let mut late = Vec::new();
        let mut named = 0;
        for t in tasks {
            let (at, holder) = t.await.expect("task");
            named += usize::from(holder);
            late.push(at.saturating_duration_since(start + limit).as_secs_f64() * 1e3);
        }
        (late, named)
    });
    let p50 = percentile(&mut late, 0.5);
    let p99 = percentile(&mut late, 0.99);
    let max = percentile(&mut late, 1.0);
    println!(
        "{{\"bench\":\"timeouts_{n}_together\",\"late_p50_ms\":{p50:.1},\"late_p99_ms\":{p99:.1},\"late_max_ms\":{max:.1},\"holder_named\":{named},\"target\":\"p99 <= 50 ms\"}}"
    );
}

fn event_grant(rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let target = dir.path().join("target");
    let blocker = dir.path().join("blocker");
    let paths = lock_paths(&locks, std::slice::from_ref(&target));
    let blocker_paths = lock_paths(&locks, std::slice::from_ref(&blocker));
    let rt = common::runtime(true);
    let run = |event_mode: bool| -> (f64, f64) {
        let mut holder = Holder::start(dir.path(), &paths);
        let _blocking = Holder::start(dir.path(), &blocker_paths);
        // Event mode: one kernel-wait thread, kept busy on another lock.
        async_filelock::set_max_wait_threads(if event_mode { 1 } else { 16 });
        let busy = event_mode.then(|| {
            let (locks, blocker) = (locks.clone(), blocker.clone());
            rt.spawn(async move {
                locks
                    .lock(Category::Artifact, &blocker)
                    .wait_forever()
                    .await
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut lat = Vec::new();
        for _ in 0..rounds {
            let waiter = rt.spawn({
                let (locks, target) = (locks.clone(), target.clone());
                async move {
                    let g = locks
                        .lock(Category::Artifact, &target)
                        .wait_forever()
                        .await
                        .expect("granted");
                    let at = now_ns();
                    drop(g);
                    at
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            let released = holder.release();
            let granted = rt.block_on(waiter).expect("waiter");
            lat.push(granted.saturating_sub(released) as f64 / 1e6);
            holder.take();
        }
        if let Some(b) = busy {
            b.abort();
        }
        (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99))
    };
    let (k50, k99) = run(false);
    let (e50, e99) = run(true);
    async_filelock::set_max_wait_threads(16);
    println!(
        "{{\"bench\":\"grant_after_release_other_process\",\"kernel_p50_ms\":{k50:.3},\"kernel_p99_ms\":{k99:.3},\"event_p50_ms\":{e50:.3},\"event_p99_ms\":{e99:.3},\"target\":\"event p50 <= 1 ms, p99 <= 10 ms\"}}"
    );
}

fn storm(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let target = dir.path().join("target");
    let mut holder = Holder::start(
        dir.path(),
        &lock_paths(&locks, std::slice::from_ref(&target)),
    );
    let rt = common::runtime(true);
    let idle = threads();
    let peak = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let (locks, target) = (locks.clone(), target.clone());
            let cancel_after = Duration::from_micros(100 + (i as u64 * 7919) % 50_000);
            tasks.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    cancel_after,
                    locks.lock(Category::Artifact, &target).wait_forever(),
                )
                .await;
            }));
        }
        let mut peak = threads();
        for t in tasks {
            t.await.expect("task");
            peak = peak.max(threads());
        }
        peak
    });
    let in_flock_before = threads_in_flock();
    holder.release();
    drop(holder);
    // Free at once after the holder exits: the abandoned wait lets go.
    let freed = Instant::now();
    let free = rt.block_on(async {
        loop {
            if let Some(g) = locks
                .try_lock(Category::Artifact, &target)
                .await
                .expect("try")
            {
                drop(g);
                return true;
            }
            if freed.elapsed() > Duration::from_secs(5) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    println!(
        "{{\"bench\":\"cancel_storm_{n}\",\"threads_idle\":{idle},\"threads_peak\":{peak},\"threads_in_flock_while_held\":{in_flock_before},\"free_after_holder_ms\":{:.1},\"free\":{free},\"target\":\"threads <= idle + 20; free at once\"}}",
        freed.elapsed().as_secs_f64() * 1e3
    );
}

fn shutdown(n: usize) {
    raise_fd_limit(65536);
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let targets = targets(dir.path(), n);
    let _holder = Holder::start(dir.path(), &lock_paths(&locks, &targets));
    let rt = common::runtime(true);
    for t in &targets {
        let (locks, t) = (locks.clone(), t.clone());
        rt.spawn(async move { locks.lock(Category::Artifact, &t).wait_forever().await });
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let t = Instant::now();
    drop(rt);
    println!(
        "{{\"bench\":\"runtime_drop_with_{n}_waits\",\"drop_ms\":{:.1},\"target\":\"<= 100 ms\"}}",
        t.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        return hold_main(Path::new(&args[i + 1]));
    }
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let n: usize = args[i + 2].parse().expect("count");
        match args[i + 1].as_str() {
            "distinct" => distinct(n),
            "timeouts" => timeouts(n),
            "event_grant" => event_grant(n),
            "storm" => storm(n),
            "shutdown" => shutdown(n),
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
    let plan: [(&str, usize); 5] = [
        ("distinct", if quick { 2000 } else { 10_000 }),
        ("timeouts", 1000),
        ("event_grant", if quick { 50 } else { 200 }),
        ("storm", 3000),
        ("shutdown", 1000),
    ];
    for (name, n) in plan {
        if !wanted.is_empty() && !wanted.contains(&name) {
            continue;
        }
        // Each scenario in a fresh process: its thread counts are its own.
        let status = Command::new(std::env::current_exe().expect("exe"))
            .args(["--scenario", name, &n.to_string()])
            .status()
            .expect("scenario");
        assert!(status.success(), "scenario {name} failed");
    }
}
