//! The PostgreSQL backend against bare advisory locks, on a throwaway
//! server started here (as the tests start theirs), in the same run:
//!
//! * uncontended: `lock` + `release` vs `SELECT pg_advisory_lock` +
//!   `pg_advisory_unlock` round trips on one connection (target ≤ 1.3x);
//! * four processes contending with 1 ms holds: throughput vs bare
//!   advisory locks, each process on a dedicated connection waiting in
//!   `pg_advisory_lock` on the server (target ≥ 0.9x).
//!
//! `cargo bench --features postgres --bench postgres` prints one JSON line
//! per measure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_filelock::{Category, Locks};

/// Whether this process runs as root (the server then runs as the
/// `postgres` user); what the shared server harness asks of its parent.
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The tests' throwaway-server harness (of which the bench uses a part).
#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod pg;

const NAMESPACE: i32 = 99;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn locks(url: &str, dir: &Path) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .postgres(url)
        .postgres_namespace(NAMESPACE)
        .wait_forever(Category::Sqlite)
        .build()
        .expect("locks")
}

async fn bare_uncontended(url: &str, n: usize) -> Duration {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let lock = client
        .prepare("SELECT pg_advisory_lock($1, $2)")
        .await
        .expect("prepare");
    let unlock = client
        .prepare("SELECT pg_advisory_unlock($1, $2)")
        .await
        .expect("prepare");
    let key = 12345i32;
    let start = Instant::now();
    for _ in 0..n {
        client
            .query_one(&lock, &[&NAMESPACE, &key])
            .await
            .expect("lock");
        client
            .query_one(&unlock, &[&NAMESPACE, &key])
            .await
            .expect("unlock");
    }
    start.elapsed()
}

async fn ours_uncontended(locks: &Locks, target: &Path, n: usize) -> Duration {
    // Connected before the clock starts, as the bare side is.
    locks
        .lock(Category::Sqlite, target)
        .await
        .expect("lock")
        .release()
        .await
        .expect("release");
    let start = Instant::now();
    for _ in 0..n {
        let guard = locks.lock(Category::Sqlite, target).await.expect("lock");
        guard.release().await.expect("release");
    }
    start.elapsed()
}

/// `--child KIND URL DIR OPS`: OPS times take the lock, hold it 1 ms, let
/// go; prints the elapsed seconds.
fn child(args: &[String]) {
    let (kind, url, dir, ops) = (
        args[0].as_str(),
        &args[1],
        Path::new(&args[2]),
        args[3].parse::<usize>().expect("ops"),
    );
    let rt = runtime();
    let elapsed = rt.block_on(async {
        match kind {
            "bare" => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                let start = Instant::now();
                for _ in 0..ops {
                    client
                        .query_one("SELECT pg_advisory_lock($1, 777)", &[&NAMESPACE])
                        .await
                        .expect("lock");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    client
                        .query_one("SELECT pg_advisory_unlock($1, 777)", &[&NAMESPACE])
                        .await
                        .expect("unlock");
                }
                start.elapsed()
            }
            _ => {
                let locks = locks(url, dir);
                let target = dir.join("contended.db");
                let start = Instant::now();
                for _ in 0..ops {
                    let guard = locks.lock(Category::Sqlite, &target).await.expect("lock");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    guard.release().await.expect("release");
                }
                start.elapsed()
            }
        }
    });
    println!("{}", elapsed.as_secs_f64());
}

fn contended(kind: &str, url: &str, dir: &Path, procs: usize, ops: usize) -> f64 {
    let exe = std::env::current_exe().expect("exe");
    let start = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|_| {
            Command::new(&exe)
                .args(["--child", kind, url])
                .arg(dir)
                .arg(ops.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("child");
        assert!(out.status.success(), "child failed");
    }
    (procs * ops) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, n, ops) = if quick { (3, 500, 50) } else { (5, 2000, 200) };
    let server = pg::PgServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let ours_locks = rt.block_on(async { locks(&url, dir.path()) });
    let target = dir.path().join("state.db");
    let mut ratios = Vec::new();
    let (mut bare_ns, mut ours_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let bare = rt.block_on(bare_uncontended(&url, n));
        let ours = rt.block_on(ours_uncontended(&ours_locks, &target, n));
        bare_ns.push(bare.as_nanos() as f64 / n as f64);
        ours_ns.push(ours.as_nanos() as f64 / n as f64);
        ratios.push(ours.as_secs_f64() / bare.as_secs_f64());
    }
    println!(
        "{{\"bench\":\"postgres_uncontended\",\"bare_ns\":{:.0},\"ours_ns\":{:.0},\"ratio\":{:.2},\"target\":\"<= 1.3\"}}",
        median(bare_ns),
        median(ours_ns),
        median(ratios)
    );
    let mut ratios = Vec::new();
    let (mut bare_ops, mut ours_ops) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let bare = contended("bare", &url, dir.path(), 4, ops);
        let ours = contended("ours", &url, dir.path(), 4, ops);
        bare_ops.push(bare);
        ours_ops.push(ours);
        ratios.push(ours / bare);
    }
    println!(
        "{{\"bench\":\"postgres_4_procs_1ms_hold\",\"bare_ops_per_s\":{:.0},\"ours_ops_per_s\":{:.0},\"ratio\":{:.2},\"target\":\">= 0.9\"}}",
        median(bare_ops),
        median(ours_ops),
        median(ratios)
    );
}
