//! Criterion benches of the lock engine and the writers, each beside its
//! baseline in the same group: `cargo bench --bench locks`. The ratios the
//! README quotes come from `cargo bench --bench ratios`, which measures
//! baseline and crate alternately and prints the ratios directly.

// The baseline is std's `File::lock` (Rust 1.89); the benches are not part
// of the library's MSRV (1.88, Cargo.toml's rust-version).
#![allow(clippy::incompatible_msrv)]
// The baseline is std's blocking lock, kept out of the crate by clippy.toml.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs::OpenOptions;
use std::time::Duration;

use async_filelock::{ArtifactWriter, Category, FsyncPolicy, JsonlSink};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        ("current_thread", common::runtime(false)),
        ("multi_thread", common::runtime(true)),
    ]
}

/// Spawns one task per item running `work(item)` and waits for all.
async fn all_tasks<I, F, Fut>(items: I, work: F)
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = items.into_iter().map(|i| tokio::spawn(work(i))).collect();
    for h in handles {
        h.await.expect("task");
    }
}

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("locks")).expect("lock dir");
    let base = dir
        .path()
        .join("locks")
        .join(format!("baseline.{}.lock", "0".repeat(32)));
    let target = dir.path().join("manifest.jsonl");
    let locks = common::locks_in(dir.path());
    let rt = common::runtime(false);
    let mut g = c.benchmark_group("uncontended");
    g.bench_function("baseline_std_flock", |b| {
        b.iter(|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&base)
                .expect("open");
            f.lock().expect("lock");
            f.unlock().expect("unlock");
        })
    });
    g.bench_function("exclusive", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(locks.lock(Category::Manifest, &target).await.expect("lock")) })
    });
    g.bench_function("shared", |b| {
        b.to_async(&rt).iter(|| async {
            drop(
                locks
                    .lock_shared(Category::Manifest, &target)
                    .await
                    .expect("lock"),
            )
        })
    });
    g.bench_function("try_lock", |b| {
        b.to_async(&rt).iter(|| async {
            drop(
                locks
                    .try_lock(Category::Manifest, &target)
                    .await
                    .expect("lock"),
            )
        })
    });
    g.finish();
}

/// `tasks` tasks each take the lock 10 times: on one lock, or each on its own.
fn contention(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let one = dir.path().join("one.jsonl");
    let many: Vec<_> = (0..1000)
        .map(|i| dir.path().join(format!("t{i}.jsonl")))
        .collect();
    let mut g = c.benchmark_group("in_process");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (flavor, rt) in runtimes() {
        for tasks in [1usize, 10, 100, 1000] {
            g.throughput(Throughput::Elements((tasks * 10) as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("one_lock/{flavor}"), tasks),
                &tasks,
                |b, &tasks| {
                    b.to_async(&rt).iter(|| {
                        all_tasks(0..tasks, |_| {
                            let (locks, one) = (locks.clone(), one.clone());
                            async move {
                                for _ in 0..10 {
                                    drop(locks.lock(Category::Manifest, &one).await.expect("lock"));
                                }
                            }
                        })
                    })
                },
            );
        }
        g.throughput(Throughput::Elements(10_000));
        g.bench_function(format!("distinct_locks_1000/{flavor}"), |b| {
            b.to_async(&rt).iter(|| {
                all_tasks(&many, |t| {
                    let (locks, t) = (locks.clone(), t.clone());
                    async move {
                        for _ in 0..10 {
                            drop(locks.lock(Category::Manifest, &t).await.expect("lock"));
                        }
                    }
                })
            })
        });
    }
    g.finish();
}

fn artifact(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let rt = common::runtime(true);
    let chunk = vec![7u8; 64 * 1024];
    let chunks = 256; // 16 MiB
    let mut g = c.benchmark_group("artifact_16MiB");
    g.sample_size(10)
        .throughput(Throughput::Bytes((chunks * chunk.len()) as u64));
    g.bench_function("baseline_tokio_file_fsync_rename", |b| {
        b.to_async(&rt).iter(|| async {
            let part = dir.path().join("base.bin.part");
            let mut f = tokio::fs::File::create(&part).await.expect("create");
            for _ in 0..chunks {
                f.write_all(&chunk).await.expect("write");
            }
            f.flush().await.expect("flush");
            f.sync_all().await.expect("fsync");
            tokio::fs::rename(&part, dir.path().join("base.bin"))
                .await
                .expect("rename");
        })
    });
    g.bench_function("artifact_writer", |b| {
        b.to_async(&rt).iter(|| async {
            let async_filelock::Artifact::Write(mut writer) =
                ArtifactWriter::builder(dir.path().join("ours.bin"))
                    .locks(locks.clone())
                    .replace_existing()
                    .open()
                    .await
                    .expect("open")
            else {
                panic!("expected to write");
            };
            for _ in 0..chunks {
                writer.write_all(&chunk).await.expect("write");
            }
            writer.commit().await.expect("commit");
        })
    });
    g.finish();
}

/// 1,000 100-byte records: one task (no group commit possible) against 32
/// tasks (group commit), with and without fsync.
fn jsonl(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = common::locks_in(dir.path());
    let rt = common::runtime(true);
    let mut g = c.benchmark_group("jsonl_1000_records");
    g.sample_size(10).throughput(Throughput::Elements(1000));
    for (name, fsync) in [
        ("fsync", FsyncPolicy::EveryCommit),
        ("nosync", FsyncPolicy::Never),
    ] {
        let sink = rt
            .block_on(
                JsonlSink::builder(dir.path().join(format!("{name}.jsonl")))
                    .locks(locks.clone())
                    .fsync(fsync)
                    .open(),
            )
            .expect("sink");
        for tasks in [1usize, 32] {
            g.bench_function(format!("{name}/{tasks}_tasks"), |b| {
                b.to_async(&rt).iter(|| {
                    all_tasks(0..tasks, |t| {
                        let sink = sink.clone();
                        async move {
                            for i in (t..1000).step_by(tasks) {
                                let pad = "x".repeat(60);
                                sink.append(&(i, pad)).await.expect("append");
                            }
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = uncontended, contention, artifact, jsonl
}

/// Mean time in ns of a bench of this run, from criterion's estimates.
fn mean_ns(id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "target".into())
                .join("criterion")
        });
    let text = std::fs::read_to_string(home.join(id).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Prints each bench's ratio to its baseline, measured in this run: time
/// ratios (lower is better) for locks, throughput ratios (higher is better)
/// for the writers.
fn print_ratios() {
    let time_ratio = |name: &str, ours: &str, base: &str| {
        if let (Some(o), Some(b)) = (mean_ns(ours), mean_ns(base)) {
            println!(
                "{{\"ratio\":\"{name}\",\"ours_over_baseline_time\":{:.2}}}",
                o / b
            );
        }
    };
    time_ratio(
        "uncontended_exclusive",
        "uncontended/exclusive",
        "uncontended/baseline_std_flock",
    );
    time_ratio(
        "uncontended_shared",
        "uncontended/shared",
        "uncontended/baseline_std_flock",
    );
    time_ratio(
        "try_lock",
        "uncontended/try_lock",
        "uncontended/baseline_std_flock",
    );
    // In-process contention: cost per acquisition relative to one
    // uncontended acquisition.
    if let Some(single) = mean_ns("uncontended/exclusive") {
        for flavor in ["current_thread", "multi_thread"] {
            for tasks in [1u64, 10, 100, 1000] {
                if let Some(t) = mean_ns(&format!("in_process/one_lock_{flavor}/{tasks}")) {
                    let per = t / (tasks * 10) as f64;
                    println!(
                        "{{\"ratio\":\"one_lock_{flavor}_{tasks}_tasks\",\"per_acquire_over_uncontended\":{:.2}}}",
                        per / single
                    );
                }
            }
            if let Some(t) = mean_ns(&format!("in_process/distinct_locks_1000_{flavor}")) {
                println!(
                    "{{\"ratio\":\"distinct_locks_1000_{flavor}\",\"per_acquire_over_uncontended\":{:.2}}}",
                    t / 10_000.0 / single
                );
            }
        }
    }
    let throughput_ratio = |name: &str, ours: &str, base: &str| {
        if let (Some(o), Some(b)) = (mean_ns(ours), mean_ns(base)) {
            println!(
                "{{\"ratio\":\"{name}\",\"ours_over_baseline_throughput\":{:.2}}}",
                b / o
            );
        }
    };
    throughput_ratio(
        "artifact_writer",
        "artifact_16MiB/artifact_writer",
        "artifact_16MiB/baseline_tokio_file_fsync_rename",
    );
    throughput_ratio(
        "jsonl_group_commit_fsync",
        "jsonl_1000_records/fsync_32_tasks",
        "jsonl_1000_records/fsync_1_tasks",
    );
    throughput_ratio(
        "jsonl_group_commit_nosync",
        "jsonl_1000_records/nosync_32_tasks",
        "jsonl_1000_records/nosync_1_tasks",
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
