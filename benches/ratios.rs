//! Speed claims of the lock engine as ratios to a baseline measured in the
//! same run, on the same machine: `cargo bench --bench ratios` (add
//! `-- --quick` for a short run).
//!
//! Baseline: plain blocking `std::fs::File::lock` (open, lock, unlock,
//! close), on a file in the same lock directory with a name of the same
//! length as the crate's lock file, so both pay the same path walk and the
//! ratio is the crate's own overhead. Baseline and crate rounds alternate so
//! that machine noise hits both; each ratio is of medians over the rounds.
//!
//! The cross-process runs start P copies of this binary (`--child`), which
//! begin together on a "go", take the lock, append one line to a shared file,
//! hold for H, release and think for T, and report their waits. Throughput
//! is over the window from "go" to the last child's end of work (each child
//! stamps it on the system's monotonic clock before it tears down: a
//! runtime's shutdown is not what is measured). The parent checks the
//! shared file (exact line count, whole lines) before it reports, and
//! counts its hand-overs (a line written by another process than the line
//! before). `RATIOS_STATS=1` has each of the crate's children print its
//! metrics on stderr.
//! `-- --contend P HOLD_US THINK_US [OPS]` runs one configuration of P
//! processes for the crate's lock, the crate's JSONL sink (no fsync), std
//! `flock` and raw `O_APPEND`, one JSON line each.
//! `-- syscalls` times the three system calls of an uncontended holding of
//! a kept lock file (`flock`, the identity question, `LOCK_UN`) against
//! that floor, with no bookkeeping around them, and the question alone
//! beside the `fstat` it replaced and `FIONREAD`. `-- exit` times a
//! process's exit after taking one lock 1,000 times (its lock file not yet
//! watched) and 1,100 times (watched).
//! `RATIOS_HOP=1` adds `baseline_hop`: the baseline's blocking lock taken on
//! another thread and handed back, which isolates the cost of not blocking
//! the caller (law 3) from the crate's own.
//!
//! Two diagnostics split a `--contend` gap into its parts:
//! `RATIOS_STREAK=1` has each crate and baseline child print on stderr the
//! median time per operation within its streaks (consecutive holdings of
//! its own, neither of which waited): the per-holding cost, without the
//! hand-overs between processes. `RATIOS_BASELINE_THREAD=1` gives each
//! baseline child one idle thread before it starts, the shape of a process
//! whose runtime or lock waits ever started a thread: Linux then counts
//! references on every descriptor a system call uses, and glibc wraps every
//! cancellable call, for as long as the process lives.

// The baseline is std's `File::lock` (Rust 1.89); the benches are not part
// of the library's MSRV (1.88, Cargo.toml's rust-version).
#![allow(clippy::incompatible_msrv)]
// The baseline is std's blocking lock, which the crate's clippy.toml keeps
// out of everything but the OS backend.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_filelock::Category;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The system-wide monotonic clock in nanoseconds: a child stamps the end
/// of its work with it, comparable with the parent's start stamp.
fn monotonic_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// Printed by a child when its measured work is done, before it tears
/// down (runtime, handles, output), which no kind should be charged for.
fn print_ended() {
    println!("ended {}", monotonic_ns());
}

/// Seconds from `started` (a [`monotonic_ns`] stamp) to the last child's
/// `ended` line in `outputs`.
fn window_secs(started: u128, outputs: &[Vec<u8>]) -> f64 {
    let last = outputs
        .iter()
        .flat_map(|out| BufReader::new(&out[..]).lines())
        .filter_map(|line| {
            line.expect("line")
                .strip_prefix("ended ")
                .map(|n| n.parse::<u128>().expect("ended"))
        })
        .max()
        .expect("every child prints `ended`");
    (last - started) as f64 / 1e9
}

/// In a child: says `ready` (its setup done) and waits for the parent's
/// "go" on stdin.
fn await_go(line: &mut String) {
    println!("ready");
    std::io::stdout().flush().expect("flush");
    std::io::stdin().read_line(line).expect("go");
}

/// Reads one line from `child`'s stdout, a byte at a time (no buffer keeps
/// what comes after it, which `wait_with_output` reads).
fn first_line(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let out = child.stdout.as_mut().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).expect("child's stdout") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Starts `procs` children built by `command`, waits until each says it
/// is set up, lets them settle, then tells them all "go" at once; returns
/// them and the start stamp ([`monotonic_ns`]).
fn start_together(
    procs: usize,
    command: impl Fn(usize) -> Command,
) -> (Vec<std::process::Child>, u128) {
    let mut children: Vec<_> = (0..procs)
        .map(|i| {
            command(i)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for c in &mut children {
        assert_eq!(first_line(c), "ready", "a child did not set up");
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = monotonic_ns();
    for c in &mut children {
        writeln!(c.stdin.as_mut().expect("stdin"), "go").expect("go");
    }
    (children, started)
}

fn baseline_path(dir: &Path) -> PathBuf {
    dir.join("locks")
        .join(format!("baseline.{}.lock", "0".repeat(32)))
}

fn open_baseline(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open baseline lock file")
}

/// Seconds per call of `op`, over `n` calls.
fn per_op(n: usize, mut op: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        op();
    }
    t.elapsed().as_secs_f64() / n as f64
}

/// One round of the floor: open, `flock`, unlock, close of `path`.
fn floor_round(path: &Path, n: usize) -> f64 {
    per_op(n, || {
        let f = open_baseline(path);
        f.lock().expect("lock");
        f.unlock().expect("unlock");
    })
}

fn uncontended(rounds: usize, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let base_path = baseline_path(dir.path());
    let target = dir.path().join("manifest.jsonl");
    let rt = common::runtime(false);
    let locks = common::locks_in(dir.path());
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(floor_round(&base_path, n));
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                drop(locks.lock(Category::Manifest, &target).await.expect("lock"));
            }
        });
        ours.push(t.elapsed().as_secs_f64() / n as f64);
    }
    let (b, o) = (median(base), median(ours));
    println!(
        "{{\"bench\":\"uncontended_exclusive\",\"baseline_ns\":{:.0},\"ours_ns\":{:.0},\"ratio\":{:.2},\"target\":\"<= 1.5\"}}",
        b * 1e9,
        o * 1e9,
        o / b
    );
}

/// The system calls of an uncontended holding of a kept lock file (`flock`,
/// the identity question, `LOCK_UN`) against the open + `flock` + unlock +
/// close floor, in alternating rounds: how far under the floor the crate
/// could get with no bookkeeping at all. The question is an `epoll_wait`
/// with no timeout on an epoll set holding an inotify descriptor that
/// watches the file (what `backend::os::identity` asks); `fstat_ns` is the
/// `fstat` it replaced, which a holding after a change still makes. Also
/// the one-byte read that tells other processes' event waits of a release
/// after a holding that was not brief (`read_ns`: what a brief holding's
/// release saves).
fn syscall_floor(rounds: usize, n: usize) {
    use rustix::event::{Timespec, epoll};
    use rustix::fs::inotify;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let path = baseline_path(dir.path());
    let kept = open_baseline(&path);
    kept.write_all_at(b"target\n", 0).expect("record");
    let watches = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        .expect("inotify");
    inotify::add_watch(
        &watches,
        format!("/proc/thread-self/fd/{}", kept.as_raw_fd()).as_str(),
        inotify::WatchFlags::ATTRIB
            | inotify::WatchFlags::MOVE_SELF
            | inotify::WatchFlags::DELETE_SELF,
    )
    .expect("watch");
    let queue = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    epoll::add(
        &queue,
        &watches,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )
    .expect("epoll add");
    let no_wait = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let (mut floor, mut calls, mut stats, mut reads, mut asks, mut counts) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..rounds {
        floor.push(floor_round(&path, n));
        calls.push(per_op(n, || {
            kept.lock().expect("lock");
            let mut ready = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 1];
            let (found, _) = epoll::wait(&queue, &mut ready, Some(&no_wait)).expect("epoll");
            assert!(found.is_empty(), "nothing changed the file");
            kept.unlock().expect("unlock");
        }));
        stats.push(per_op(n, || {
            // The crate's `fstat` (rustix's; std's `metadata` is a `statx`
            // of every field).
            std::hint::black_box(rustix::fs::fstat(&kept).expect("fstat"));
        }));
        let mut byte = [0u8; 1];
        reads.push(per_op(n, || {
            kept.read_at(&mut byte, 0).expect("read");
        }));
        // The question alone, and `FIONREAD` on the inotify descriptor (the
        // other way to ask, which reads the queue under its lock).
        asks.push(per_op(n, || {
            let mut ready = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 1];
            std::hint::black_box(epoll::wait(&queue, &mut ready, Some(&no_wait)).expect("epoll"));
        }));
        counts.push(per_op(n, || {
            std::hint::black_box(rustix::io::ioctl_fionread(&watches).expect("fionread"));
        }));
    }
    let (f, c, st, r) = (median(floor), median(calls), median(stats), median(reads));
    let (q, fion) = (median(asks), median(counts));
    println!(
        "{{\"bench\":\"kept_lock_file_syscalls_vs_floor\",\"floor_ns\":{:.0},\"syscalls_ns\":{:.0},\"ratio\":{:.2},\"fstat_ns\":{:.0},\"epoll_question_ns\":{:.0},\"fionread_ns\":{:.0},\"read_ns\":{:.0}}}",
        f * 1e9,
        c * 1e9,
        c / f,
        st * 1e9,
        q * 1e9,
        fion * 1e9,
        r * 1e9
    );
}

/// How long a process takes to exit after taking one lock `n` times: its
/// `ended` stamp (work done, before teardown) to the parent's `wait`
/// returning. A lock file is watched from its 1,024th keeping
/// (`backend::os::file`), and Linux frees an inotify instance that has
/// watches only after a grace period, which exit waits for: 1,000 holdings
/// (no watch) against 1,100 (one watch), in alternating rounds.
fn exit_cost(rounds: usize) {
    let (mut cold, mut hot) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (n, into) in [(1000usize, &mut cold), (1100, &mut hot)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let exe = std::env::current_exe().expect("exe");
            let mut child = Command::new(&exe)
                .arg("--exit-child")
                .arg(dir.path())
                .arg(n.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("child");
            let line = first_line(&mut child);
            let ended: u128 = line
                .strip_prefix("ended ")
                .and_then(|n| n.parse().ok())
                .expect("ended");
            child.wait().expect("wait");
            into.push((monotonic_ns() - ended) as f64 / 1e6);
        }
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2},{hi:.2}")
    };
    println!(
        "{{\"bench\":\"exit_after_holdings\",\"unwatched_ms_min_max\":[{}],\"watched_ms_min_max\":[{}],\"unwatched_ms_median\":{:.2},\"watched_ms_median\":{:.2}}}",
        range(&cold),
        range(&hot),
        median(cold.clone()),
        median(hot.clone())
    );
}

/// The child of [`exit_cost`]: `--exit-child DIR N`.
fn exit_child(args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let n: usize = args[1].parse().expect("n");
    let rt = common::runtime(false);
    let locks = common::locks_in(&dir);
    let target = dir.join("manifest.jsonl");
    rt.block_on(async {
        for _ in 0..n {
            drop(locks.lock(Category::Manifest, &target).await.expect("lock"));
        }
    });
    print_ended();
    std::io::stdout().flush().expect("flush");
    // Left to process exit, as a program's statics are.
    std::mem::forget(locks);
    std::mem::forget(rt);
}

/// One JSONL child: `--jsonl-child KIND DIR RECORDS TASKS ID`, appending
/// 100-byte lines to `DIR/data.jsonl`.
fn jsonl_child(args: &[String]) {
    let kind = args[0].as_str();
    let dir = PathBuf::from(&args[1]);
    let records: usize = args[2].parse().expect("records");
    let tasks: usize = args[3].parse().expect("tasks");
    let id = args[4].clone();
    let data = dir.join("data.jsonl");
    // The sink's runtime and `Locks` handle are built before the start
    // signal, as the raw baselines build nothing (and as the lock
    // children do): they are not what is measured. The sink is opened
    // after it, as the baselines open their file.
    let sink_setup = (!matches!(kind, "lock_append_fsync" | "raw_append"))
        .then(|| (common::runtime(true), common::locks_in(&dir)));
    let mut go = String::new();
    await_go(&mut go);
    // `{"w":"p0","i":123456,"pad":"xx…"}` padded to 100 bytes with the newline.
    let line = |i: usize| {
        let head = format!("{{\"w\":\"{id}\",\"i\":{i},\"pad\":\"");
        let pad = 100 - head.len() - 3;
        format!("{head}{}\"}}\n", "x".repeat(pad))
    };
    match kind {
        "lock_append_fsync" | "raw_append" => {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&data)
                .expect("open data");
            let lock = open_baseline(&baseline_path(&dir));
            for i in 0..records {
                let l = line(i);
                if kind == "lock_append_fsync" {
                    lock.lock().expect("lock");
                    (&file).write_all(l.as_bytes()).expect("append");
                    file.sync_data().expect("fsync");
                    lock.unlock().expect("unlock");
                } else {
                    (&file).write_all(l.as_bytes()).expect("append");
                }
            }
            print_ended();
        }
        _ => {
            let (rt, locks) = sink_setup.expect("set up for the sink");
            rt.block_on(async {
                let fsync = if kind == "sink_fsync" {
                    async_filelock::FsyncPolicy::EveryCommit
                } else {
                    async_filelock::FsyncPolicy::Never
                };
                let sink = async_filelock::JsonlSink::builder(&data)
                    .locks(locks)
                    .fsync(fsync)
                    .open()
                    .await
                    .expect("sink");
                let handles: Vec<_> = (0..tasks)
                    .map(|t| {
                        let sink = sink.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            for i in (t..records).step_by(tasks) {
                                // The same 100-byte line as the baselines,
                                // from a struct as a caller would have it.
                                let head = format!("{{\"w\":\"{id}\",\"i\":{i},\"pad\":\"");
                                let rec = Rec {
                                    w: &id,
                                    i,
                                    pad: "x".repeat(100 - head.len() - 3),
                                };
                                sink.append(&rec).await.expect("append");
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.expect("task");
                }
                sink.close().await.expect("close");
                print_ended();
                // RATIOS_JSONL_STATS=1: each child prints its sink's stats
                // (commits per record show the group-commit batch size).
                if std::env::var_os("RATIOS_JSONL_STATS").is_some() {
                    eprintln!("{id}: {:?}", sink.stats());
                }
            });
        }
    }
}

/// Appending tasks per process for the sink runs: each count is a run of
/// its own (`RATIOS_JSONL_TASKS=32,128`, the default).
fn jsonl_tasks() -> Vec<usize> {
    let counts: Vec<usize> = std::env::var("RATIOS_JSONL_TASKS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if counts.is_empty() {
        vec![32, 128]
    } else {
        counts
    }
}

#[derive(serde::Serialize)]
struct Rec<'a> {
    w: &'a str,
    i: usize,
    pad: String,
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid
    // `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn jsonl_run(kind: &str, procs: usize, records: usize, tasks: usize) -> f64 {
    let cpu_before = children_cpu();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let exe = std::env::current_exe().expect("exe");
    let (children, started) = start_together(procs, |i| {
        let mut c = Command::new(&exe);
        c.args(["--jsonl-child", kind]).arg(dir.path()).args([
            records.to_string(),
            tasks.to_string(),
            format!("p{i}"),
        ]);
        c
    });
    let outputs: Vec<Vec<u8>> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("child");
            assert!(out.status.success(), "child failed");
            out.stdout
        })
        .collect();
    let elapsed = window_secs(started, &outputs);
    let text = std::fs::read_to_string(dir.path().join("data.jsonl")).expect("data");
    let mut n = 0;
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("{kind}: torn line {l:?}: {e}"));
        n += 1;
    }
    assert_eq!(n, procs * records, "{kind}: exact line count");
    // CPU per record of the children, their start-up included.
    let cpu = children_cpu().saturating_sub(cpu_before);
    println!(
        "{{\"run\":\"{kind}\",\"tasks\":{tasks},\"cpu_us_per_record\":{:.2}}}",
        cpu.as_secs_f64() * 1e6 / (procs * records) as f64
    );
    (procs * records) as f64 / elapsed
}

fn jsonl(rounds: usize, records: usize) {
    // Without fsync a run lasts tens of milliseconds, and one round moves
    // by a fifth on a 2-core VM: more rounds.
    let pairs = [
        (
            "lock_append_fsync",
            "sink_fsync",
            2_000.min(records),
            ">= 10",
            rounds,
        ),
        (
            "raw_append",
            "sink_nosync",
            records,
            ">= 0.8",
            2 * rounds - 1,
        ),
    ];
    for tasks in jsonl_tasks() {
        for (base_kind, ours_kind, n, target, rounds) in pairs {
            let (mut base, mut ours) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let b = jsonl_run(base_kind, 4, n, 1);
                let o = jsonl_run(ours_kind, 4, n, tasks);
                println!("{{\"run\":\"{base_kind}\",\"records_per_s\":{b:.0}}}");
                println!("{{\"run\":\"{ours_kind}\",\"tasks\":{tasks},\"records_per_s\":{o:.0}}}");
                base.push(b);
                ours.push(o);
            }
            let ratio = median(ours) / median(base);
            println!(
                "{{\"bench\":\"jsonl_4p_x{tasks}_{ours_kind}_vs_{base_kind}\",\"ratio\":{ratio:.2},\"target\":\"{target}\"}}"
            );
        }
    }
}

/// Streams `total` bytes in 64 KiB chunks: through `ArtifactWriter`
/// (including commit) against plain `tokio::fs::File` writes of the same
/// chunks plus fsync and rename, in the same directory, alternating.
fn artifact(rounds: usize, total: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime(true);
    let locks = common::locks_in(dir.path());
    let chunk = vec![7u8; 64 * 1024];
    let chunks = total / chunk.len();
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let target = dir.path().join("baseline.bin");
            let part = dir.path().join("baseline.bin.part");
            let t = Instant::now();
            let mut f = tokio::fs::File::create(&part).await.expect("create");
            for _ in 0..chunks {
                f.write_all(&chunk).await.expect("write");
            }
            f.flush().await.expect("flush");
            f.sync_all().await.expect("fsync");
            drop(f);
            tokio::fs::rename(&part, &target).await.expect("rename");
            base.push(t.elapsed().as_secs_f64());
            tokio::fs::remove_file(&target).await.expect("remove");

            let target = dir.path().join("ours.bin");
            let t = Instant::now();
            let w = async_filelock::ArtifactWriter::builder(&target)
                .locks(locks.clone())
                .expected_len((chunks * chunk.len()) as u64)
                .open()
                .await
                .expect("open");
            let async_filelock::Artifact::Write(mut w) = w else {
                panic!("expected to write");
            };
            for _ in 0..chunks {
                w.write_all(&chunk).await.expect("write");
            }
            w.commit().await.expect("commit");
            ours.push(t.elapsed().as_secs_f64());
            tokio::fs::remove_file(&target).await.expect("remove");
        });
    }
    let (b, o) = (median(base), median(ours));
    let mib = (chunks * chunk.len()) as f64 / (1 << 20) as f64;
    println!(
        "{{\"bench\":\"artifact_stream_{mib:.0}MiB\",\"baseline_mib_s\":{:.0},\"ours_mib_s\":{:.0},\"throughput_ratio\":{:.2},\"target\":\">= 0.9\"}}",
        mib / b,
        mib / o,
        b / o
    );
}

/// The rest of round `i` once the lock is granted, the same for every kind:
/// append the round's line, hold, release, think. The sleeps are blocking,
/// as in the baseline: this measures hand-over, not timer granularity.
fn hold_release_think(
    append: &dyn Fn(usize),
    i: usize,
    hold: Duration,
    think: Duration,
    release: impl FnOnce(),
) {
    append(i);
    std::thread::sleep(hold);
    release();
    std::thread::sleep(think);
}

fn unlock_baseline(f: std::fs::File) {
    f.unlock().expect("unlock");
}

/// One child: `--child KIND DIR OPS HOLD_US THINK_US ID`.
fn child(args: &[String]) {
    let kind = args[0].as_str();
    let dir = PathBuf::from(&args[1]);
    let ops: usize = args[2].parse().expect("ops");
    let hold = Duration::from_micros(args[3].parse().expect("hold"));
    let think = Duration::from_micros(args[4].parse().expect("think"));
    let id = &args[5];
    let data = dir.join("data.jsonl");
    // Setup before the start signal, as the plain `flock` baseline has
    // none: the runtime and the `Locks` handle are not what is measured.
    let multi_thread = std::env::var_os("RATIOS_MULTI_THREAD").is_some();
    // The sink's children always use a current-thread runtime; the plain
    // baselines use none.
    let rt = common::runtime(multi_thread && kind != "sink");
    let locks = common::locks_in(&dir);
    let mut line = String::new();
    await_go(&mut line);
    let mut waits = Vec::with_capacity(ops);
    // For RATIOS_STREAK (only then, to leave the measured loops alone):
    // when each holding was asked for.
    let streak = std::env::var_os("RATIOS_STREAK").is_some();
    let mut asked: Vec<Instant> = Vec::with_capacity(if streak { ops } else { 0 });
    if kind == "baseline" && std::env::var_os("RATIOS_BASELINE_THREAD").is_some() {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    let append = &|i: usize| {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&data)
            .expect("open data");
        f.write_all(format!("{{\"w\":\"{id}\",\"i\":{i}}}\n").as_bytes())
            .expect("append");
    };
    match kind {
        "raw_append" => {
            // No lock at all: the floor for appending lines.
            for i in 0..ops {
                let t = Instant::now();
                append(i);
                waits.push(t.elapsed().as_micros() as u64);
                std::thread::sleep(think);
            }
        }
        "sink" => {
            rt.block_on(async {
                let sink = async_filelock::JsonlSink::builder(&data)
                    .locks(locks.clone())
                    .fsync(async_filelock::FsyncPolicy::Never)
                    .open()
                    .await
                    .expect("sink");
                for i in 0..ops {
                    let t = Instant::now();
                    // Fields in the baselines' order, so every kind writes the same line.
                    #[derive(serde::Serialize)]
                    struct Line<'a> {
                        w: &'a str,
                        i: usize,
                    }
                    sink.append(&Line { w: id, i }).await.expect("append");
                    waits.push(t.elapsed().as_micros() as u64);
                    std::thread::sleep(think);
                }
            });
        }
        "baseline" => {
            let path = baseline_path(&dir);
            for i in 0..ops {
                let t = Instant::now();
                if streak {
                    asked.push(t);
                }
                let f = open_baseline(&path);
                f.lock().expect("lock");
                waits.push(t.elapsed().as_micros() as u64);
                hold_release_think(append, i, hold, think, || unlock_baseline(f));
            }
        }
        "baseline_hop" => {
            // The baseline's lock in the shape law 3 forces on any async
            // lock: a non-blocking try inline, else the blocking `flock` on
            // the blocking pool, handed back to the task.
            let path = baseline_path(&dir);
            rt.block_on(async {
                for i in 0..ops {
                    let t = Instant::now();
                    let f = open_baseline(&path);
                    let f = match f.try_lock() {
                        Ok(()) => f,
                        Err(std::fs::TryLockError::WouldBlock) => {
                            tokio::task::spawn_blocking(move || {
                                f.lock().expect("lock");
                                f
                            })
                            .await
                            .expect("join")
                        }
                        Err(std::fs::TryLockError::Error(e)) => panic!("try_lock: {e}"),
                    };
                    waits.push(t.elapsed().as_micros() as u64);
                    hold_release_think(append, i, hold, think, || unlock_baseline(f));
                }
            });
        }
        _ => {
            // RATIOS_MULTI_THREAD=1 runs the crate's children on a
            // multi-thread runtime, to compare hand-over tails by flavor.
            let target = dir.join("data.jsonl");
            rt.block_on(async {
                for i in 0..ops {
                    let t = Instant::now();
                    if streak {
                        asked.push(t);
                    }
                    let g = locks.lock(Category::Manifest, &target).await.expect("lock");
                    waits.push(t.elapsed().as_micros() as u64);
                    hold_release_think(append, i, hold, think, || drop(g));
                }
            });
        }
    }
    print_ended();
    // After the stamp: not what is measured.
    if streak {
        print_streak(kind, id, &asked, &waits);
    }
    if kind == "crate" && std::env::var_os("RATIOS_STATS").is_some() {
        let m = locks.metrics();
        eprintln!(
            "{id}: {:?} {:?}",
            m.category(Category::Manifest),
            m.backend()
        );
    }
    let joined: Vec<String> = waits.iter().map(u64::to_string).collect();
    println!("waits {}", joined.join(","));
}

/// RATIOS_STREAK: the median time from one holding's ask to the next's,
/// over pairs where neither waited (under 5 µs) and nothing came between
/// (under 50 µs): what a holding costs in a streak of this process's own.
fn print_streak(kind: &str, id: &str, asked: &[Instant], waits: &[u64]) {
    let mut within: Vec<u128> = asked
        .windows(2)
        .zip(waits.windows(2))
        .filter(|(_, w)| w[0] < 5 && w[1] < 5)
        .map(|(t, _)| (t[1] - t[0]).as_nanos())
        .filter(|ns| *ns < 50_000)
        .collect();
    if within.is_empty() {
        return;
    }
    within.sort_unstable();
    eprintln!(
        "{{\"streak\":\"{kind}\",\"child\":\"{id}\",\"per_holding_ns\":{},\"holdings\":{}}}",
        within[within.len() / 2],
        within.len()
    );
}

struct RunResult {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Lines in the data file written by another process than the line
    /// before: how often the lock changed hands.
    handovers: usize,
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize] as f64
}

fn run(kind: &str, procs: usize, ops: usize, hold_us: u64, think_us: u64) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let exe = std::env::current_exe().expect("exe");
    let (children, started) = start_together(procs, |i| {
        let mut c = Command::new(&exe);
        c.args(["--child", kind]).arg(dir.path()).args([
            ops.to_string(),
            hold_us.to_string(),
            think_us.to_string(),
            format!("p{i}"),
        ]);
        c
    });
    let mut waits = Vec::new();
    let mut outputs = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("child");
        assert!(out.status.success(), "child failed");
        outputs.push(out.stdout);
    }
    for out in &outputs {
        for line in BufReader::new(&out[..]).lines() {
            let line = line.expect("line");
            if let Some(list) = line.strip_prefix("waits ") {
                waits.extend(list.split(',').map(|w| w.parse::<u64>().expect("wait")));
            }
        }
    }
    let elapsed = window_secs(started, &outputs);
    let text = std::fs::read_to_string(dir.path().join("data.jsonl")).expect("data");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), procs * ops, "{kind}: exact line count");
    if let Some(bad) = lines.iter().find(|l| {
        !(l.starts_with("{\"w\":\"p")
            && l.ends_with('}')
            && serde_json::from_str::<serde_json::Value>(l).is_ok())
    }) {
        panic!("{kind}: torn line {bad:?}");
    }
    waits.sort_unstable();
    // Each line starts `{"w":"pN",`: the writer.
    let writer = |l: &str| l.split(',').next().map(str::to_owned);
    let handovers = lines
        .windows(2)
        .filter(|pair| writer(pair[0]) != writer(pair[1]))
        .count();
    RunResult {
        handovers,
        ops_per_s: (procs * ops) as f64 / elapsed,
        p50_us: percentile(&waits, 0.5),
        p99_us: percentile(&waits, 0.99),
        max_us: *waits.last().expect("waits") as f64,
    }
}

fn contended(rounds: usize, procs: usize, ops: usize, hold_us: u64, think_us: u64) {
    let (mut b_tp, mut o_tp, mut b_p99, mut o_p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let kinds: &[&str] = if std::env::var_os("RATIOS_HOP").is_some() {
            &["baseline", "baseline_hop", "crate"]
        } else {
            &["baseline", "crate"]
        };
        for &kind in kinds {
            let r = run(kind, procs, ops, hold_us, think_us);
            println!(
                "{{\"run\":\"{kind}\",\"procs\":{procs},\"hold_us\":{hold_us},\"think_us\":{think_us},\"ops_per_s\":{:.0},\"wait_p50_us\":{:.0},\"wait_p99_us\":{:.0},\"wait_max_us\":{:.0},\"handovers\":{}}}",
                r.ops_per_s, r.p50_us, r.p99_us, r.max_us, r.handovers
            );
            if kind == "baseline" {
                b_tp.push(r.ops_per_s);
                b_p99.push(r.p99_us);
            } else if kind == "crate" {
                o_tp.push(r.ops_per_s);
                o_p99.push(r.p99_us);
            }
        }
    }
    let tp = median(o_tp) / median(b_tp);
    let p99 = median(o_p99) / median(b_p99);
    println!(
        "{{\"bench\":\"contended_{procs}p_hold{hold_us}us_think{think_us}us\",\"throughput_ratio\":{tp:.2},\"p99_wait_ratio\":{p99:.2}}}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--exit-child") {
        exit_child(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--jsonl-child") {
        jsonl_child(&args[i + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--hog") {
        // A busy CPU for `RATIOS_HOGS`: spins until killed.
        loop {
            std::hint::spin_loop();
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--contend") {
        // `--contend P HOLD_US THINK_US [OPS]`: one JSON line per kind.
        let num = |k: usize, default: u64| {
            args.get(i + k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (procs, hold, think, ops) = (
            num(1, 4) as usize,
            num(2, 1000),
            num(3, 1000),
            num(4, 200) as usize,
        );
        // RATIOS_KINDS=baseline,crate runs only those (to profile one).
        let only = std::env::var("RATIOS_KINDS").ok();
        // RATIOS_HOGS=N keeps N more processes busy spinning meanwhile: a
        // host whose CPUs are all busy.
        let hogs: Vec<_> = (0..std::env::var("RATIOS_HOGS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0))
            .map(|_| {
                Command::new(std::env::current_exe().expect("exe"))
                    .arg("--hog")
                    .spawn()
                    .expect("hog")
            })
            .collect();
        for kind in ["baseline", "baseline_hop", "crate", "raw_append", "sink"] {
            if only
                .as_ref()
                .is_some_and(|o| !o.split(',').any(|k| k == kind))
            {
                continue;
            }
            let r = run(kind, procs, ops, hold, think);
            println!(
                "{{\"run\":\"{kind}\",\"procs\":{procs},\"hold_us\":{hold},\"think_us\":{think},\"ops_per_s\":{:.0},\"wait_p50_us\":{:.0},\"wait_p99_us\":{:.0},\"wait_max_us\":{:.0},\"handovers\":{}}}",
                r.ops_per_s, r.p50_us, r.p99_us, r.max_us, r.handovers
            );
        }
        for mut hog in hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, scale) = if quick { (3, 1) } else { (5, 4) };
    // Groups named on the command line run alone (`-- jsonl artifact`);
    // none named runs them all.
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |group: &str| named.is_empty() || named.contains(&group);
    if wanted("uncontended") {
        uncontended(rounds + 2, 5_000 * scale);
    }
    if wanted("syscalls") {
        syscall_floor(rounds + 2, 5_000 * scale);
    }
    if wanted("contended") {
        contended(rounds, 4, 100 * scale, 1000, 1000);
        // No hold: each run is short, and a 2-core VM's noise moves a
        // single round by a third either way, so more and longer rounds.
        contended(2 * rounds - 1, 4, 2500 * scale, 0, 0);
    }
    if wanted("jsonl") {
        jsonl(rounds, 5_000 * scale);
    }
    if wanted("exit") {
        exit_cost(if quick { 5 } else { 15 });
    }
    if wanted("artifact") {
        artifact(rounds, if quick { 256 << 20 } else { 1 << 30 });
    }
}
