//! The PostgreSQL backend against a real server (started by the tests: a
//! throwaway cluster on a free port), across tasks, handles (connections)
//! and processes.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_filelock::{Artifact, ArtifactWriter, Category, LockError, Locks};
use support::postgres::PgServer;
use support::{Worker, eventually, path_arg as arg, say, spawn_with_env};
use tokio::io::AsyncWriteExt as _;

/// One server for the tests of this file that do not stop it; each test
/// takes locks in a namespace of its own.
fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

fn locks(url: &str, namespace: i32, dir: &Path) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .postgres(url)
        .postgres_namespace(namespace)
        .postgres_heartbeat(Duration::from_millis(500))
        .build()
        .expect("locks")
}

/// Entry point of the child processes these tests spawn.
#[test]
fn child_entry() {
    if let Some((role, args)) = support::child_role() {
        support::run_child(&role.clone(), || async move {
            match role.as_str() {
                "pg_count" => pg_count(&args).await,
                "pg_hold" => pg_hold(&args).await,
                other => panic!("unknown role {other}"),
            }
        });
    }
}

/// `pg_count URL NS DIR TARGET COUNT`: COUNT times take the lock, prove
/// nobody else is inside (an `O_EXCL` marker), bump a counter file, and
/// append the token to `DIR/tokens`.
async fn pg_count(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[2]);
    let locks = locks(&args[0], args[1].parse().expect("ns"), &dir);
    let count: usize = args[4].parse().expect("count");
    say("ready");
    for _ in 0..count {
        let guard = locks
            .acquire(Category::Sqlite, &args[3])
            .wait_forever()
            .await?;
        support::bump_counter_alone(support::in_dir(&dir), Duration::ZERO);
        let mut tokens = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("tokens"))
            .expect("tokens");
        writeln!(tokens, "{}", guard.token()?.get()).expect("token");
        guard.release().await?;
    }
    Ok(())
}

/// `pg_hold URL NS DIR TARGET`: holds the lock, says `ready TOKEN`, lets go
/// when told (or is killed).
async fn pg_hold(args: &[String]) -> Result<(), LockError> {
    let locks = locks(&args[0], args[1].parse().expect("ns"), Path::new(&args[2]));
    let guard = locks.lock(Category::Artifact, &args[3]).await?;
    say(&format!("ready {}", guard.token()?.get()));
    let _ = tokio::task::spawn_blocking(support::hear).await;
    guard.release().await
}

/// Sessions waiting on the server for the locks of namespace 13.
const WAITING_13: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 13::oid AND NOT granted";

fn read_tokens(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("tokens"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("token"))
        .collect()
}

#[test]
fn exclusion_across_processes_with_strictly_growing_tokens() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.db");
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| {
            spawn_with_env(
                "pg_count",
                &[
                    server.url(),
                    "11".into(),
                    arg(dir.path()),
                    arg(&target),
                    "40".into(),
                ],
                &[],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    for w in workers {
        w.finish();
    }
    let n = support::counter_in(dir.path());
    assert_eq!(n, 120);
    let tokens = read_tokens(dir.path());
    assert_eq!(tokens.len(), 120);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[tokio::test]
async fn shared_holders_coexist_and_exclude_an_exclusive_one_across_connections() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("summary.json");
    let (a, b, c) = (
        locks(&server.url(), 12, dir.path()),
        locks(&server.url(), 12, dir.path()),
        locks(&server.url(), 12, dir.path()),
    );
    let r1 = a.lock_shared(Category::Summary, &target).await.unwrap();
    let r2 = b.lock_shared(Category::Summary, &target).await.unwrap();
    assert!(
        c.try_lock(Category::Summary, &target)
            .await
            .unwrap()
            .is_none()
    );
    drop((r1, r2));
    let w = c.lock(Category::Summary, &target).await.unwrap();
    assert!(
        a.try_lock_shared(Category::Summary, &target)
            .await
            .unwrap()
            .is_none()
    );
    w.release().await.unwrap();
}

#[test]
fn a_timeout_leaves_nothing_waiting_on_the_server_and_names_the_holder() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let mut holder = spawn_with_env(
        "pg_hold",
        &[server.url(), "13".into(), arg(dir.path()), arg(&target)],
        &[],
    );
    assert!(holder.read().starts_with("ready "));
    let rt = support::runtime();
    rt.block_on(async {
        let waiter = locks(&server.url(), 13, dir.path());
        let err = waiter
            .acquire(Category::Artifact, &target)
            .timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        let LockError::Timeout {
            holder: Some(h), ..
        } = &err
        else {
            panic!("a timeout naming the holder, got {err}");
        };
        assert_eq!(h.pid(), Some(holder.pid()), "{err}");
        assert!(h.command().is_some(), "{err}");
        // The wait on the server is cancelled with the acquisition: soon
        // no session waits for this namespace's locks.
        let waiting = settles_to_zero(server, WAITING_13).await;
        assert_eq!(waiting, "0", "a wait left on the server");
        // A wait with no deadline, dropped: its wait on the server (which
        // would otherwise last a minute) is cancelled at once.
        let forever = {
            let (waiter, target) = (waiter.clone(), target.clone());
            tokio::spawn(async move {
                let _ = waiter
                    .acquire(Category::Artifact, &target)
                    .wait_forever()
                    .await;
            })
        };
        let mut seen_waiting = false;
        for _ in 0..100 {
            if server.query(WAITING_13).await != ["0"] {
                seen_waiting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen_waiting, "the head wait waits on the server");
        forever.abort();
        let _ = forever.await;
        let waiting = settles_to_zero(server, WAITING_13).await;
        assert_eq!(waiting, "0", "a dropped wait left on the server");
    });
    holder.tell("release");
    holder.finish();
}

/// A thousand acquisitions whose deadlines land as the holder lets go:
/// whichever way each ends, no advisory lock is left on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_deadlines_at_the_release_strand_no_lock() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("hot.bin");
    let holder = locks(&server.url(), 14, dir.path());
    let waiters = locks(&server.url(), 14, dir.path());
    let guard = holder.lock(Category::Artifact, &target).await.unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (waiters, target) = (waiters.clone(), target.clone());
            tokio::spawn(async move {
                let timeout = Duration::from_millis(280 + (i % 40));
                match waiters
                    .acquire(Category::Artifact, &target)
                    .timeout(timeout)
                    .await
                {
                    Ok(g) => {
                        g.release().await.unwrap();
                        true
                    }
                    Err(e) => {
                        assert!(e.is_timeout(), "{e}");
                        false
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    guard.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let left = settles_to_zero(
        server,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 14::oid",
    )
    .await;
    assert_eq!(left, "0", "advisory locks stranded on the server");
}

/// The holder's session is terminated: its guard learns it within a
/// heartbeat, a waiter gets the lock, the lost holder's commit is refused,
/// and the new token is larger.
#[tokio::test]
async fn a_terminated_session_loses_its_locks_and_its_writer_cannot_commit() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("paper.pdf");
    let holder = locks(&server.url(), 15, dir.path());
    let Artifact::Write(mut writer) = ArtifactWriter::builder(&target)
        .locks(holder.clone())
        .open()
        .await
        .unwrap()
    else {
        panic!("absent target, free lock");
    };
    writer.write_all(b"half").await.unwrap();
    let old = writer.token().unwrap();
    let me = std::process::id();
    let killed = server
        .query(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE 'async-filelock pid {me} %' AND pid IN \
             (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 15::oid)"
        ))
        .await;
    assert_eq!(killed, vec!["1".to_owned()]);
    assert!(eventually(Duration::from_secs(5), || writer.is_lost()));
    // A waiter in another process (this one's queue still has the lost
    // writer in it, as it should until the writer lets go).
    let mut waiter = spawn_with_env(
        "pg_hold",
        &[server.url(), "15".into(), arg(dir.path()), arg(&target)],
        &[],
    );
    let said = waiter.read();
    let new: u64 = said.strip_prefix("ready ").expect(&said).parse().unwrap();
    assert!(new > old.get(), "{new} after {old}");
    let err = writer.commit().await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(!target.exists());
    waiter.tell("release");
    waiter.finish();
}

/// The server goes away while a lock is held and another is waited for:
/// the holder hears of the loss, the wait ends with an error in time, and
/// once the server is back locks work again.
#[tokio::test]
async fn a_server_restart_is_a_clear_error_then_recovered_from() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let holder = locks(&server.url(), 16, dir.path());
    let waiter = locks(&server.url(), 16, dir.path());
    let guard = holder.lock(Category::Artifact, &target).await.unwrap();
    let wait = {
        let (waiter, target) = (waiter.clone(), target.clone());
        tokio::spawn(async move {
            waiter
                .acquire(Category::Artifact, &target)
                .timeout(Duration::from_secs(3))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop();
    assert!(eventually(Duration::from_secs(5), || guard.is_lost()));
    match wait.await.unwrap() {
        Ok(_) => panic!("granted while the server was down"),
        Err(e) => assert!(e.is_timeout() || matches!(e, LockError::Io { .. }), "{e}"),
    }
    assert!(guard.release().await.unwrap_err().is_lost());
    server.start_again();
    let again = waiter
        .acquire(Category::Artifact, &target)
        .timeout(Duration::from_secs(20))
        .await
        .unwrap();
    again.release().await.unwrap();
}

#[test]
fn a_killed_holders_lock_is_freed_and_the_next_token_is_larger() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let mut child = spawn_with_env(
        "pg_hold",
        &[server.url(), "17".into(), arg(dir.path()), arg(&target)],
        &[],
    );
    let said = child.read();
    let old: u64 = said.strip_prefix("ready ").expect(&said).parse().unwrap();
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    let rt = support::runtime();
    rt.block_on(async {
        let locks = locks(&server.url(), 17, dir.path());
        let guard = locks
            .acquire(Category::Artifact, &target)
            .timeout(Duration::from_secs(20))
            .await
            .unwrap();
        assert!(guard.token().unwrap().get() > old);
        guard.release().await.unwrap();
    });
}

/// A thousand held locks and a thousand waits in one process use no more
/// sessions than configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_and_a_thousand_waiting_stay_within_the_connection_bound() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let holder = locks(&server.url(), 18, dir.path());
    let waiter = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .postgres(server.url())
        .postgres_namespace(18)
        .postgres_connections(3)
        .build()
        .unwrap();
    let targets: Vec<PathBuf> = (0..1000)
        .map(|i| dir.path().join(format!("f{i}")))
        .collect();
    let mut held = Vec::new();
    for t in &targets[..500] {
        held.push(holder.lock(Category::Artifact, t).await.unwrap());
    }
    // The waiter holds 500 others and waits for the holder's 500, with
    // five hundred more waits on the held ones from other tasks.
    let mut own = Vec::new();
    for t in &targets[500..] {
        own.push(waiter.lock(Category::Artifact, t).await.unwrap());
    }
    let waits: Vec<_> = targets[..500]
        .iter()
        .chain(targets[..500].iter())
        .map(|t| {
            let (waiter, t) = (waiter.clone(), t.clone());
            tokio::spawn(async move {
                let _ = waiter
                    .acquire(Category::Artifact, &t)
                    .timeout(Duration::from_secs(2))
                    .await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sessions holding this test's locks (other tests of this process use
    // other namespaces): the holder's handle (4 by default) and the
    // waiter's (3), whatever the number of locks and waits.
    let sessions: usize = server
        .query("SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = 18::oid")
        .await[0]
        .parse()
        .unwrap();
    assert!(sessions <= 7, "{sessions} sessions");
    let metrics = waiter.metrics();
    let pg = match metrics.backend() {
        async_filelock::BackendMetrics::Postgres(pg) => *pg,
        other => panic!("{other:?}"),
    };
    assert!(pg.connections_now <= 3, "{pg:?}");
    let shown = metrics.to_string();
    assert!(
        shown.contains("postgres backend: ") && shown.contains("sessions open"),
        "{shown}"
    );
    for w in waits {
        w.await.unwrap();
    }
    drop((held, own));
}

/// `lock-doctor list --backend postgres` names the holder of a lock (a
/// child process) by pid and command, with the waiter count, in the table
/// and in JSON.
#[test]
fn lock_doctor_lists_the_advisory_locks_of_a_namespace() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let mut holder = spawn_with_env(
        "pg_hold",
        &[server.url(), "19".into(), arg(dir.path()), arg(&target)],
        &[],
    );
    assert!(holder.read().starts_with("ready "));
    let doctor = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lock-doctor"));
        c.args([
            "list",
            "--backend",
            "postgres",
            "--url",
            &server.url(),
            "--namespace",
            "19",
        ])
        .args(extra);
        c.output().expect("run lock-doctor")
    };
    let table = doctor(&[]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("WRITE") && text.contains(&holder.pid().to_string()),
        "{text}"
    );
    let json = doctor(&["--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let locks = parsed["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 1, "{parsed}");
    assert_eq!(locks[0]["pid"], holder.pid());
    assert_eq!(locks[0]["mode"], "WRITE");
    assert_eq!(locks[0]["waiters"], 0);
    holder.tell("release");
    holder.finish();
}

/// Polls `sql` (a count) until it says 0, for up to two seconds; the last
/// count.
async fn settles_to_zero(server: &PgServer, sql: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = server.query(sql).await.remove(0);
        if last == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// Acquisitions given up at every moment of their round trip (before it,
/// during it, with the grant already sent but unread): none strands a lock
/// on the server, and none leaves a wait there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquisitions_given_up_at_any_moment_strand_nothing() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(&server.url(), 20, dir.path());
    for i in 0..200u64 {
        let target = dir.path().join(format!("t{}", i % 7));
        let give_up = Duration::from_micros(i * 37 % 3000);
        let _ = tokio::time::timeout(give_up, locks.try_lock(Category::Artifact, &target)).await;
    }
    // Waits on a held lock (on the server, for the head one), dropped.
    let holder = super_holder(&server.url(), dir.path(), 20).await;
    for i in 0..30u64 {
        let (locks, target) = (locks.clone(), dir.path().join("held"));
        let wait = tokio::spawn(async move {
            let _ = locks
                .acquire(Category::Artifact, &target)
                .wait_forever()
                .await;
        });
        tokio::time::sleep(Duration::from_micros(i * 173 % 4000)).await;
        wait.abort();
        let _ = wait.await;
    }
    holder.release().await.unwrap();
    let left = settles_to_zero(
        server,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 20::oid",
    )
    .await;
    assert_eq!(left, "0", "advisory locks or waits left on the server");
    // The session kept for waits is free again: a wait that must wait on
    // the server still gets the lock.
    let again = locks
        .acquire(Category::Artifact, dir.path().join("held"))
        .timeout(Duration::from_secs(10))
        .await
        .unwrap();
    again.release().await.unwrap();
}

/// Holds `held` in `dir` with a handle of its own.
async fn super_holder(url: &str, dir: &Path, namespace: i32) -> async_filelock::LockGuard {
    let holder = locks(url, namespace, dir);
    holder
        .lock(Category::Artifact, dir.join("held"))
        .await
        .unwrap()
}

/// A token that cannot be written (here a constraint refuses it) fails the
/// acquisition, and the advisory lock taken in the same statement is let go,
/// not stranded.
#[tokio::test]
async fn a_failed_token_write_lets_go_of_the_lock() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    // The token table exists once any handle has connected.
    let first = locks(&server.url(), 22, dir.path());
    first
        .lock(Category::Sqlite, dir.path().join("x"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    server
        .query("ALTER TABLE async_filelock_tokens ADD CONSTRAINT refuse_21 CHECK (namespace <> 21)")
        .await;
    let locks = locks(&server.url(), 21, dir.path());
    let err = locks
        .try_lock(Category::Sqlite, dir.path().join("db"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refuse_21") || err.to_string().contains("23514"),
        "{err}"
    );
    let left = settles_to_zero(
        server,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 21::oid",
    )
    .await;
    server
        .query("ALTER TABLE async_filelock_tokens DROP CONSTRAINT refuse_21")
        .await;
    assert_eq!(
        left, "0",
        "the lock taken with the failed token stayed held"
    );
}

/// Handles that meet a database without the token table all at once each
/// create it, and every one of them locks: a session that loses the race
/// meets the table, or its row type, made by another (found in CI: "type
/// async_filelock_tokens already exists", SQLSTATE 42710).
#[test]
fn handles_creating_the_token_table_at_once_all_lock() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let rt = support::runtime();
    rt.block_on(async {
        for round in 0..20 {
            let db = format!("fresh_tokens_{round}");
            server.query(&format!("CREATE DATABASE {db}")).await;
            let url = server
                .url()
                .replace("dbname=postgres", &format!("dbname={db}"));
            let takers: Vec<_> = (0..16)
                .map(|i| {
                    let locks = locks(&url, 23, dir.path());
                    let target = dir.path().join(format!("{db}-{i}.bin"));
                    tokio::spawn(async move {
                        let guard = locks.lock(Category::Artifact, &target).await?;
                        guard.release().await
                    })
                })
                .collect();
            for taker in takers {
                taker.await.unwrap().unwrap_or_else(|e| panic!("{db}: {e}"));
            }
        }
    });
}
