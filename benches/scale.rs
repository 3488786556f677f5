//! Scale of the in-process table: `cargo bench --bench scale`.
//!
//! 1. 100,000 distinct lock paths touched once: time per acquire+release in
//!    ten consecutive slices (flat means no slowdown as paths accumulate),
//!    and live heap afterwards (flat means entries are forgotten).
//! 2. 10,000 tasks waiting on one lock held by another process: heap per
//!    waiter and blocking threads used.
//!
//! Heap is counted by a wrapper around the system allocator: a dozen lines,
//! hand-written because what is wanted is one number (live bytes) from this
//! process, with no dependency to keep.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use async_filelock::{Category, paths_in_use};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn distinct_paths(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime(false);
    let locks = common::locks_in(dir.path());
    let targets: Vec<_> = (0..n)
        .map(|i| dir.path().join(format!("t{i}.jsonl")))
        .collect();
    let before = live();
    let slice = n / 10;
    let mut per_slice = Vec::new();
    rt.block_on(async {
        for chunk in targets.chunks(slice) {
            let t = Instant::now();
            for target in chunk {
                drop(locks.lock(Category::Telemetry, target).await.expect("lock"));
            }
            per_slice.push(t.elapsed().as_secs_f64() * 1e9 / chunk.len() as f64);
        }
    });
    let grown = live() - before;
    let first = per_slice[0];
    let last = per_slice[per_slice.len() - 1];
    let slices: Vec<String> = per_slice.iter().map(|ns| format!("{ns:.0}")).collect();
    println!(
        "{{\"bench\":\"distinct_paths_{n}\",\"ns_per_acquire_by_slice\":[{}],\"last_over_first\":{:.2},\"heap_growth_bytes\":{grown},\"paths_in_use_after\":{}}}",
        slices.join(","),
        last / first,
        paths_in_use()
    );
}

fn waiters(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("manifest.jsonl");
    let mut holder = Command::new(std::env::current_exe().expect("exe"))
        .arg("--hold")
        .arg(dir.path())
        .arg(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("ready");
    let rt = common::runtime(true);
    let locks = common::locks_in(dir.path());
    let (per_waiter, per_task, peak) = rt.block_on(async {
        // Waiting futures alone: what the crate costs per waiter.
        let before = live();
        let mut futs: Vec<_> = (0..n)
            .map(|_| Box::pin(locks.lock(Category::Manifest, &target).wait_forever()))
            .collect();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for f in &mut futs {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let per_waiter = (live() - before) as f64 / n as f64;
        drop(futs);
        // As spawned tasks: the crate's share plus tokio's task.
        let before = live();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (locks, target) = (locks.clone(), target.clone());
                // Each task lets go itself: a guard returned through the
                // JoinHandle would be held until main awaited that handle.
                tokio::spawn(async move {
                    locks
                        .lock(Category::Manifest, &target)
                        .wait_forever()
                        .await
                        .map(drop)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per_task = (live() - before) as f64 / n as f64;
        let peak = locks
            .metrics()
            .backend()
            .os()
            .map_or(0, |os| os.kernel_waits_peak);
        holder
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"release\n")
            .expect("release");
        for t in tasks {
            t.await.expect("task").expect("lock");
        }
        (per_waiter, per_task, peak)
    });
    let _ = holder.wait();
    println!(
        "{{\"bench\":\"waiters_{n}\",\"heap_bytes_per_waiting_future\":{per_waiter:.0},\"heap_bytes_per_waiting_task\":{per_task:.0},\"blocking_threads_peak\":{peak},\"target\":\"< 1024 bytes, <= 1 thread\"}}"
    );
}

use std::future::Future;

fn hold(dir: &str, target: &str) {
    let rt = common::runtime(false);
    let locks = common::locks_in(std::path::Path::new(dir));
    let g = rt
        .block_on(locks.lock(Category::Manifest, target))
        .expect("lock");
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(g);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold") {
        hold(&args[1], &args[2]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    if std::env::var_os("SCALE_SKIP_PATHS").is_none() {
        distinct_paths(if quick { 20_000 } else { 100_000 });
    }
    waiters(
        std::env::var("SCALE_WAITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000),
    );
}
