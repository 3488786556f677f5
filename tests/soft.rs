//! Soft locks, fencing tokens, loss, the fallback to soft locks, and holders
//! named in timeouts, across real processes.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_filelock::{
    Artifact, ArtifactWriter, BackendChoice, Category, FencingToken, LockError, Locks,
};
use support::{PythonHolder, Worker, path_arg as arg, say, spawn, spawn_with_env};
use tokio::io::AsyncWriteExt as _;

// The child processes of `test_util::ChildHolder` run this one test.
#[cfg(feature = "test-util")]
async_filelock::test_util::child_hook!();

/// Entry point of the child processes these tests spawn: the roles of this
/// file first, then the shared ones.
#[test]
fn child_entry() {
    if let Some((role, args)) = support::child_role() {
        if role == "flock_refused" {
            // Before any thread exists, so every thread inherits it.
            refuse_flock();
        }
        let run = matches!(
            role.as_str(),
            "soft_churn"
                | "soft_hold"
                | "soft_try_once"
                | "tokens"
                | "soft_writer"
                | "flock_refused"
                | "soft_wait_woken"
        );
        if run {
            support::run_child(&role.clone(), || async move {
                match role.as_str() {
                    "soft_churn" => soft_churn(&args).await,
                    "soft_hold" => soft_hold(&args).await,
                    "soft_try_once" => soft_try_once(&args).await,
                    "tokens" => tokens(&args).await,
                    "soft_writer" => soft_writer(&args).await,
                    "flock_refused" => flock_refused(&args).await,
                    "soft_wait_woken" => soft_wait_woken(&args).await,
                    _ => unreachable!(),
                }
            });
        }
    }
    support::child_entry();
}

fn soft_locks(dir: &Path, lease_ms: u64) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .backend(BackendChoice::Soft)
        .soft_lease(Duration::from_millis(lease_ms))
        .soft_poll(Duration::from_millis(5))
        .wait_forever(Category::Artifact)
        .build()
        .expect("locks")
}

/// `soft_churn DIR TARGET COUNT`: COUNT times take the soft artifact lock,
/// prove nobody else is inside with an `O_EXCL` marker, bump a counter.
async fn soft_churn(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let count: usize = args[2].parse().expect("count");
    let locks = soft_locks(&dir, 5_000);
    say("ready");
    for _ in 0..count {
        let guard = locks.lock(Category::Artifact, &args[1]).await?;
        support::bump_counter_alone(support::in_dir(&dir), Duration::ZERO);
        guard.release().await?;
    }
    Ok(())
}

/// `soft_hold DIR TARGET LEASE_MS`: holds the soft artifact lock, says
/// `ready TOKEN`, and lets go when told (or killed).
async fn soft_hold(args: &[String]) -> Result<(), LockError> {
    let locks = soft_locks(Path::new(&args[0]), args[2].parse().expect("lease"));
    let guard = locks.lock(Category::Artifact, &args[1]).await?;
    say(&format!("ready {}", guard.token()?.get()));
    let _ = tokio::task::spawn_blocking(support::hear).await;
    guard.release().await
}

/// `soft_try_once DIR TARGET`: on `go`, one attempt at the soft lock; says
/// `won` or `busy` with the number of stale locks this process broke, and
/// holds what it won until told.
async fn soft_try_once(args: &[String]) -> Result<(), LockError> {
    let locks = soft_locks(Path::new(&args[0]), 60_000);
    say("ready");
    let _ = tokio::task::spawn_blocking(support::hear).await;
    let guard = locks.try_lock(Category::Artifact, &args[1]).await?;
    let broke = locks
        .metrics()
        .backend()
        .soft()
        .map_or(0, |s| s.stale_broken);
    say(&format!(
        "{} {broke}",
        if guard.is_some() { "won" } else { "busy" }
    ));
    let _ = tokio::task::spawn_blocking(support::hear).await;
    drop(guard);
    Ok(())
}

/// `tokens DIR BACKEND CATEGORY TARGET COUNT`: COUNT times take the lock
/// and append its token to `DIR/tokens` under it.
async fn tokens(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let backend = match args[1].as_str() {
        "soft" => BackendChoice::Soft,
        _ => BackendChoice::Os,
    };
    let category: Category = args[2].parse().expect("category");
    let locks = Locks::builder()
        .lock_dir(dir.join("locks"))
        .backend(backend)
        .soft_poll(Duration::from_millis(2))
        .wait_forever(category)
        .build()?;
    let count: usize = args[4].parse().expect("count");
    say("ready");
    for _ in 0..count {
        let guard = locks.lock(category, &args[3]).await?;
        let token = guard.token()?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("tokens"))
            .expect("tokens file");
        writeln!(f, "{}", token.get()).expect("append token");
        drop(f);
        guard.release().await?;
    }
    Ok(())
}

/// `soft_writer DIR TARGET LEASE_MS`: opens an artifact writer under a soft
/// lock, writes a little, says `ready TOKEN`; on `commit`, says whether the
/// lock is lost and what the commit did.
async fn soft_writer(args: &[String]) -> Result<(), LockError> {
    let locks = soft_locks(Path::new(&args[0]), args[2].parse().expect("lease"));
    let Artifact::Write(mut writer) = ArtifactWriter::builder(&args[1])
        .locks(locks)
        .open()
        .await?
    else {
        panic!("the target should be absent and the lock free");
    };
    writer
        .write_all(b"written by a holder that will stall")
        .await
        .expect("write");
    say(&format!("ready {}", writer.token()?.get()));
    let _ = tokio::task::spawn_blocking(support::hear).await;
    let lost = writer.is_lost();
    let outcome = match writer.commit().await {
        Ok(_) => "committed".to_owned(),
        Err(e) if e.is_lost() => "refused-lost".to_owned(),
        Err(e) => format!("error {e}"),
    };
    say(&format!("lost={lost} {outcome}"));
    Ok(())
}

/// `flock_refused DIR BACKEND TARGET`: with `flock` refused by the kernel
/// (a seccomp filter, installed before any thread started), takes a lock
/// with BACKEND and says what happened.
async fn flock_refused(args: &[String]) -> Result<(), LockError> {
    let backend = if args[1] == "auto" {
        BackendChoice::Auto
    } else {
        BackendChoice::Os
    };
    let locks = Locks::builder()
        .lock_dir(Path::new(&args[0]).join("locks"))
        .backend(backend)
        .build()?;
    match locks.lock(Category::Manifest, &args[2]).await {
        Ok(guard) => {
            let record = std::fs::read_to_string(guard.lock_path()).unwrap_or_default();
            let fallbacks = locks.metrics().backend().soft().map_or(0, |s| s.fallbacks);
            let soft = record.contains("\"async_filelock_soft\":1");
            say(&format!("locked soft={soft} fallbacks={fallbacks}"));
            let again = locks.lock(Category::Manifest, &args[2]);
            drop(guard);
            again.await?.release().await?;
        }
        Err(e) => say(&format!("error {e}")),
    }
    Ok(())
}

/// Makes every `flock(2)` of this process fail with `ENOLCK`, as on a
/// filesystem without locking: a seccomp filter (x86_64 and aarch64).
#[allow(unsafe_code)]
fn refuse_flock() {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k, jt, jf| libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    };
    let mut filter = [
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
        jump(libc::SYS_flock as u32, 0, 1),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOLCK as u32),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls with a filter program that outlives them.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ),
            0,
            "seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn finish_all(workers: Vec<Worker>) {
    for w in workers {
        w.finish();
    }
}

#[test]
fn soft_locks_exclude_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let mut workers: Vec<Worker> = (0..4)
        .map(|_| spawn("soft_churn", &[arg(dir.path()), arg(&target), "100".into()]))
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    finish_all(workers);
    assert_eq!(support::counter_in(dir.path()), 400);
    // Released soft locks leave no lock file behind (the token file stays).
    let left: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_killed_holders_soft_lock_is_broken_by_the_next_waiter_without_waiting_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    // A lease far longer than the waiter's timeout: only the owner's death
    // (pid and start time on this host) can free the lock in time.
    let mut holder = spawn(
        "soft_hold",
        &[arg(dir.path()), arg(&target), "600000".into()],
    );
    let said = holder.read();
    assert!(said.starts_with("ready "), "{said}");
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .backend(BackendChoice::Soft)
        .timeout(Category::Artifact, Duration::from_secs(20))
        .build()
        .unwrap();
    let guard = locks.lock(Category::Artifact, &target).await.unwrap();
    let old: u64 = said["ready ".len()..].parse().unwrap();
    assert!(guard.token().unwrap() > FencingToken::new(old));
    let soft = *locks.metrics().backend().soft().unwrap();
    assert!(soft.stale_broken >= 1, "{soft:?}");
}

/// The holder is another process, held with the crate's own test helper
/// (`test_util::ChildHolder`, which runs this test program again with the
/// handle's settings: soft locks, a short lease).
#[cfg(feature = "test-util")]
#[tokio::test]
async fn a_live_holders_soft_lock_is_never_broken_and_the_timeout_names_it() {
    use async_filelock::test_util::ChildHolder;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    // A short lease, renewed by the live holder: waiting several leases
    // long never finds it stale.
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .backend(BackendChoice::Soft)
        .soft_lease(Duration::from_millis(300))
        .timeout(Category::Artifact, Duration::from_millis(1500))
        .build()
        .unwrap();
    let holder = ChildHolder::hold(&locks, Category::Artifact, &target)
        .await
        .unwrap();
    let err = locks.lock(Category::Artifact, &target).await.unwrap_err();
    let LockError::Timeout {
        holder: Some(h), ..
    } = &err
    else {
        panic!("expected a timeout naming the holder, got {err}");
    };
    assert_eq!(h.pid(), Some(holder.pid()));
    assert!(
        h.held_for().is_some(),
        "a soft lock records when it was taken"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("held by pid {}", holder.pid())) && text.contains(" for "),
        "{text}"
    );
    holder.release().await.unwrap();
    assert!(locks.lock(Category::Artifact, &target).await.is_ok());
}

/// Two and eight processes find one stale lock (its owner killed) and try
/// at once: exactly one wins, and at most one breaks it.
#[test]
fn breakers_racing_on_one_stale_lock_let_exactly_one_win() {
    for racers in [2, 8] {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        let mut owner = spawn(
            "soft_hold",
            &[arg(dir.path()), arg(&target), "600000".into()],
        );
        assert!(owner.read().starts_with("ready "));
        owner.child.kill().unwrap();
        owner.child.wait().unwrap();
        let mut workers: Vec<Worker> = (0..racers)
            .map(|_| spawn("soft_try_once", &[arg(dir.path()), arg(&target)]))
            .collect();
        for w in &mut workers {
            w.wait_ready();
        }
        for w in &mut workers {
            w.tell("go");
        }
        let said: Vec<String> = workers.iter_mut().map(Worker::read).collect();
        let winners = said.iter().filter(|s| s.starts_with("won")).count();
        let broke: u64 = said
            .iter()
            .map(|s| s.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(winners, 1, "{racers} racers said {said:?}");
        assert!(broke <= 1, "{racers} racers said {said:?}");
        for w in &mut workers {
            w.tell("release");
        }
        finish_all(workers);
    }
}

/// A holder stopped past its lease loses the lock to a waiter; once it runs
/// again its guard says so, its writer refuses to commit, and its token is
/// smaller than the new holder's.
#[tokio::test]
async fn law12_a_stalled_holder_loses_its_lease_and_its_writer_refuses_to_commit() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("paper.pdf");
    let mut holder = spawn(
        "soft_writer",
        &[arg(dir.path()), arg(&target), "400".into()],
    );
    let said = holder.read();
    let old: u64 = said.strip_prefix("ready ").expect(&said).parse().unwrap();
    let pid = rustix::process::Pid::from_raw(holder.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .backend(BackendChoice::Soft)
        .timeout(Category::Artifact, Duration::from_secs(30))
        .build()
        .unwrap();
    let guard = locks.lock(Category::Artifact, &target).await.unwrap();
    let new = guard.token().unwrap();
    assert!(new > FencingToken::new(old), "{new} after {old}");
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    holder.tell("commit");
    assert_eq!(holder.read(), "lost=true refused-lost");
    holder.finish();
    assert!(!target.exists(), "the stalled holder committed nothing");
    assert!(!guard.is_lost());
    guard.release().await.unwrap();
}

fn tokens_strictly_increase(backend: &str, category: &str) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.db");
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| {
            spawn(
                "tokens",
                &[
                    arg(dir.path()),
                    backend.into(),
                    category.into(),
                    arg(&target),
                    "40".into(),
                ],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    finish_all(workers);
    let text = std::fs::read_to_string(dir.path().join("tokens")).unwrap();
    let tokens: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(tokens.len(), 120);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "{backend}/{category}: tokens not strictly increasing: {tokens:?}"
    );
}

#[test]
fn tokens_strictly_increase_across_holders_and_processes_for_each_backend() {
    // Manifest lock files stay; artifact lock files are removed on every
    // release, so their tokens rest on the clock floor.
    tokens_strictly_increase("os", "manifest");
    tokens_strictly_increase("os", "artifact");
    tokens_strictly_increase("soft", "manifest");
}

#[test]
fn where_flock_is_refused_auto_falls_back_to_soft_locks_and_os_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let mut auto = spawn(
        "flock_refused",
        &[arg(dir.path()), "auto".into(), arg(&target)],
    );
    assert_eq!(auto.read(), "locked soft=true fallbacks=1");
    auto.finish();
    let mut os = spawn(
        "flock_refused",
        &[arg(dir.path()), "os".into(), arg(&target)],
    );
    let said = os.read();
    assert!(
        said.starts_with("error ") && said.contains("soft locks") && said.contains("lock"),
        "{said}"
    );
    os.finish();
}

#[tokio::test]
async fn a_timeout_names_a_foreign_holder_by_pid_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let locks = support::locks_in(dir.path());
    let target = dir.path().join("m.jsonl");
    let lock_path = locks.lock_path(Category::Manifest, &target).unwrap();
    let holder = PythonHolder::hold(dir.path(), &[lock_path], "exclusive");
    let err = locks
        .acquire(Category::Manifest, &target)
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("held by pid {} (python3)", holder.pid())),
        "{text}"
    );
    assert!(text.contains("for how long the OS does not say"), "{text}");
}

#[tokio::test]
async fn jsonl_records_carry_the_token_of_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.jsonl");
    let sink = async_filelock::JsonlSink::builder(&path)
        .locks(support::locks_in(dir.path()))
        .record_token("lock_token")
        .open()
        .await
        .unwrap();
    for i in 0..5 {
        sink.append(&serde_json::json!({ "i": i })).await.unwrap();
    }
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tokens: Vec<u64> = rows
        .iter()
        .map(|r| r["lock_token"].as_u64().unwrap())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(
        sink.stats().last_token.map(FencingToken::get),
        tokens.last().copied()
    );
    let err = sink.append(&[1, 2]).await.unwrap_err();
    assert!(err.to_string().contains("JSON objects"), "{err}");
}

const SOFT: &[(&str, &str)] = &[("ASYNC_FILELOCK_BACKEND", "soft")];

/// The writers work unchanged on soft locks: lines never tear, increments
/// never get lost, JSONL records are each written once.
#[test]
fn writers_work_unchanged_on_soft_locks_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, state, log) = (
        dir.path().join("lines.txt"),
        dir.path().join("state.json"),
        dir.path().join("manifest.jsonl"),
    );
    let mut workers: Vec<Worker> = Vec::new();
    for i in 0..3 {
        let id = format!("w{i}");
        workers.push(spawn_with_env(
            "append",
            &[arg(dir.path()), arg(&file), "60".into(), id.clone()],
            SOFT,
        ));
        workers.push(spawn_with_env(
            "increment",
            &[arg(dir.path()), arg(&state), "30".into()],
            SOFT,
        ));
        workers.push(spawn_with_env(
            "jsonl_append",
            &[
                arg(dir.path()),
                arg(&log),
                "80".into(),
                id,
                (1u64 << 30).to_string(),
                "4".into(),
            ],
            SOFT,
        ));
    }
    for w in &mut workers {
        w.wait_ready();
    }
    finish_all(workers);
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), 180);
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("torn line {line:?}: {e}"));
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(state["data"], 90, "{state}");
    let records: std::collections::HashSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(records.len(), 240);
    // Nothing of the soft locks is left held.
    let held: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(held.is_empty(), "{held:?}");
    // And soft locks they were: each lock keeps its tokens beside it.
    let token_files = std::fs::read_dir(dir.path().join("locks"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".lock.token")
        })
        .count();
    assert_eq!(token_files, 3, "the append, state and JSONL locks");
}

/// A soft wait is woken by the holder's release (a file event), not only
/// by its backoff poll: with a poll of a minute, the release still ends it,
/// and the waiter (a process of its own, so that no other test's waits
/// count) says an event woke it.
#[test]
fn a_soft_wait_is_woken_by_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let mut holder = spawn(
        "soft_hold",
        &[arg(dir.path()), arg(&target), "60000".into()],
    );
    assert!(holder.read().starts_with("ready "));
    let mut waiter = spawn("soft_wait_woken", &[arg(dir.path()), arg(&target)]);
    assert_eq!(waiter.read(), "waiting");
    holder.tell("release");
    holder.finish();
    assert_eq!(waiter.read(), "granted woken=true");
    waiter.finish();
}

/// `soft_wait_woken DIR TARGET`: waits for the soft lock with a poll of a
/// minute; says `waiting` once its backoff is past a second, then
/// `granted woken=<whether a file event woke a wait>`.
async fn soft_wait_woken(args: &[String]) -> Result<(), LockError> {
    let locks = Locks::builder()
        .lock_dir(Path::new(&args[0]).join("locks"))
        .backend(BackendChoice::Soft)
        .soft_poll(Duration::from_secs(60))
        .wait_forever(Category::Artifact)
        .build()?;
    let waiter = {
        let (locks, target) = (locks.clone(), args[1].clone());
        tokio::spawn(async move { locks.lock(Category::Artifact, &target).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiter.is_finished(), "granted while the holder held it");
    say("waiting");
    let guard = waiter.await.expect("wait task")?;
    let woken = locks
        .metrics()
        .backend()
        .soft()
        .map_or(0, |s| s.woken_by_events);
    say(&format!("granted woken={}", woken > 0));
    guard.release().await
}

/// A soft lock and a `flock` on one lock file exclude each other (a mixed
/// configuration, or a fallback in one process only): a soft waiter never
/// takes a file someone holds with `flock` for stale, and an OS waiter finds
/// a soft lock busy.
#[tokio::test]
async fn os_and_soft_holders_of_one_lock_file_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let soft = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .backend(BackendChoice::Soft)
        .build()
        .unwrap();
    let os = support::locks_in(dir.path());
    let lock_path = os.lock_path(Category::Artifact, &target).unwrap();
    {
        // A foreign flock holder (not this crate) on an OS-style lock file.
        let mut holder =
            PythonHolder::hold(dir.path(), std::slice::from_ref(&lock_path), "exclusive");
        assert!(
            soft.try_lock(Category::Artifact, &target)
                .await
                .unwrap()
                .is_none()
        );
        holder.release();
        let taken = soft.try_lock(Category::Artifact, &target).await.unwrap();
        assert!(taken.is_some(), "free once the flock holder let go");
    }
    let mut holder = spawn(
        "soft_hold",
        &[arg(dir.path()), arg(&target), "60000".into()],
    );
    assert!(holder.read().starts_with("ready "));
    assert!(
        os.try_lock(Category::Artifact, &target)
            .await
            .unwrap()
            .is_none()
    );
    holder.tell("release");
    holder.finish();
    assert!(
        os.try_lock(Category::Artifact, &target)
            .await
            .unwrap()
            .is_some()
    );
}

/// OS-backend and soft processes taking one lock at once (a mixed
/// configuration): the manifest lock, whose OS lock file stays after each
/// release, so soft processes keep meeting it and must take it only when
/// no OS process holds or waits to hold it. Lines written in two parts
/// never tear, none is lost.
#[test]
fn os_and_soft_processes_contending_for_one_lock_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    let mut workers: Vec<Worker> = (0..5)
        .map(|i| {
            let args = [arg(dir.path()), arg(&file), "300".into(), format!("w{i}")];
            if i < 3 {
                spawn("append", &args)
            } else {
                spawn_with_env("append", &args, SOFT)
            }
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    finish_all(workers);
    let text = std::fs::read_to_string(&file).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("torn line {line:?}: {e}"));
    }
    assert_eq!(text.lines().count(), 1500);
}
