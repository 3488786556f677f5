//! `lock-doctor`, the built program, against real processes: holders of OS
//! and soft locks (children of this test binary using the crate), killed
//! holders, writers that stopped mid-way, and processes contending while it
//! cleans.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use async_filelock::{BackendChoice, Category, LockError, Locks};
use support::{Worker, hear, path_arg as arg, say, spawn};

/// Entry point of the child processes these tests spawn: the roles of this
/// file first, then the shared ones.
#[test]
fn child_entry() {
    if let Some((role, args)) = support::child_role()
        && matches!(
            role.as_str(),
            "doctor_hold" | "doctor_count" | "doctor_write"
        )
    {
        support::run_child(&role.clone(), || async move {
            match role.as_str() {
                "doctor_hold" => hold(&args).await,
                "doctor_count" => count(&args).await,
                "doctor_write" => write(&args).await,
                _ => unreachable!(),
            }
        });
    }
    support::child_entry();
}

/// A handle with its lock files in `dir/locks`, on `backend`.
fn locks(dir: &Path, backend: &str) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .backend(match backend {
            "soft" => BackendChoice::Soft,
            _ => BackendChoice::Os,
        })
        .soft_poll(Duration::from_millis(5))
        .wait_forever(Category::Manifest)
        .wait_forever(Category::Summary)
        .build()
        .expect("locks")
}

/// `doctor_hold DIR BACKEND CATEGORY TARGET`: holds the lock until stdin
/// closes.
async fn hold(args: &[String]) -> Result<(), LockError> {
    let locks = locks(Path::new(&args[0]), &args[1]);
    let category: Category = args[2].parse().expect("category");
    let guard = locks.lock(category, &args[3]).await?;
    say("ready");
    let _ = tokio::task::spawn_blocking(hear).await;
    guard.release().await
}

/// `doctor_count DIR BACKEND TARGET COUNT`: COUNT times, under the summary
/// lock of TARGET: prove nobody else is inside (an `O_EXCL` marker), bump
/// the counter file `TARGET.count`.
async fn count(args: &[String]) -> Result<(), LockError> {
    let locks = locks(Path::new(&args[0]), &args[1]);
    let target = PathBuf::from(&args[2]);
    let times: usize = args[3].parse().expect("count");
    say("ready");
    for i in 0..times {
        let guard = locks.lock(Category::Summary, &target).await?;
        support::bump_counter_alone(
            (
                target.with_extension("inside"),
                target.with_extension("count"),
            ),
            Duration::from_micros(100),
        );
        guard.release().await?;
        // Free for a while, so that a clean finds it free and removes its
        // lock file while the others wait on it.
        tokio::time::sleep(Duration::from_micros(300 + (i as u64 * 397) % 900)).await;
    }
    Ok(())
}

/// `doctor_write DIR TARGET`: an artifact writer that has written part of
/// its `.part` and waits (until stdin closes, then abandons it).
async fn write(args: &[String]) -> Result<(), LockError> {
    use tokio::io::AsyncWriteExt as _;
    let opened = async_filelock::ArtifactWriter::builder(&args[1])
        .locks(locks(Path::new(&args[0]), "os"))
        .open()
        .await?;
    let async_filelock::Artifact::Write(mut writer) = opened else {
        panic!("expected to write");
    };
    let part = writer.part_path().to_path_buf();
    writer
        .write_all(&[7u8; 1000])
        .await
        .map_err(|e| LockError::from_source(&part, e))?;
    writer
        .flush()
        .await
        .map_err(|e| LockError::from_source(&part, e))?;
    say("ready");
    let _ = tokio::task::spawn_blocking(hear).await;
    writer.abort().await
}

fn holder(dir: &Path, backend: &str, category: &str, target: &Path) -> Worker {
    let mut w = spawn(
        "doctor_hold",
        &[arg(dir), backend.into(), category.into(), arg(target)],
    );
    w.wait_ready();
    w
}

/// Runs the built `lock-doctor` with `args`, in `cwd`, with none of the
/// crate's variables but `envs`.
fn doctor(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lock-doctor"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ASYNC_FILELOCK_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run lock-doctor")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the kernel calls process `pid` (`/proc/<pid>/comm`).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .expect("comm")
        .trim_end()
        .to_owned()
}

fn json_locks(out: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    v["locks"].as_array().expect("a locks array").clone()
}

fn kill_9(mut w: Worker) {
    w.child.kill().expect("SIGKILL");
    w.child.wait().expect("reap");
}

#[test]
fn list_shows_the_pid_and_command_of_an_os_holder() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let target = dir.path().join("m.jsonl");
    let w = holder(dir.path(), "os", "manifest", &target);
    let (pid, command) = (w.pid(), comm(w.pid()));

    let out = doctor(&["list", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("CATEGORY") && lines[0].ends_with("LOCK FILE"));
    for part in [
        "manifest",
        "WRITE",
        &pid.to_string(),
        &command,
        " os ",
        target.to_str().unwrap(),
    ] {
        assert!(lines[1].contains(part), "{part:?} not in {text}");
    }

    let out = doctor(&["list", "--json", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let locks = json_locks(&out);
    assert_eq!(locks.len(), 1);
    let lock = &locks[0];
    assert_eq!(lock["pid"], pid);
    assert_eq!(lock["command"], command.as_str());
    assert_eq!(lock["mode"], "WRITE");
    assert_eq!(lock["backend"], "os");
    assert_eq!(lock["category"], "manifest");
    assert_eq!(lock["target"], target.to_str().unwrap());
    assert_eq!(
        lock["held"],
        serde_json::Value::Null,
        "flock says not since when"
    );
    assert_eq!(lock["waiters"], 0);
    assert!(
        lock["lock_file"]
            .as_str()
            .unwrap()
            .starts_with(lock_dir.to_str().unwrap())
    );

    // Columns, raw, no headings; and the lock dir from the environment.
    let out = doctor(
        &["list", "-o", "pid,COMMAND", "--raw", "--noheadings"],
        &[("ASYNC_FILELOCK_DIR", lock_dir.to_str().unwrap())],
    );
    assert_eq!(stdout(&out), format!("{pid} {command}\n"));

    w.finish();
    let out = doctor(&["list", "--json", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0));
    let lock = &json_locks(&out)[0];
    assert_eq!(lock["mode"], "-");
    assert_eq!(lock["pid"], serde_json::Value::Null);
}

#[test]
fn list_shows_a_held_soft_lock_and_a_killed_holders_as_stale() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let (live_target, dead_target) = (dir.path().join("live.json"), dir.path().join("dead.json"));
    let live = holder(dir.path(), "soft", "summary", &live_target);
    let out = doctor(&["list", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(" soft ") && text.contains(&live.pid().to_string()),
        "{text}"
    );

    let dead = holder(dir.path(), "soft", "summary", &dead_target);
    let dead_pid = dead.pid();
    kill_9(dead);
    let out = doctor(&["list", "--json", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a stale lock is a problem: {out:?}"
    );
    let locks = json_locks(&out);
    assert_eq!(locks.len(), 2, "{locks:?}");
    let row = |target: &Path| {
        locks
            .iter()
            .find(|l| l["target"] == target.to_str().unwrap())
            .cloned()
            .expect("a row for the target")
    };
    let (live_row, dead_row) = (row(&live_target), row(&dead_target));
    assert_eq!(live_row["backend"], "soft");
    assert_eq!(live_row["mode"], "WRITE");
    assert_eq!(live_row["pid"], live.pid());
    assert!(
        live_row["held"].as_f64().is_some(),
        "a soft lock says since when"
    );
    assert_eq!(dead_row["mode"], "STALE");
    assert_eq!(dead_row["pid"], dead_pid);

    let out = doctor(&["list", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("STALE"), "{}", stdout(&out));
    live.finish();
}

#[test]
fn clean_among_contending_processes_never_lets_two_hold_one_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let (os_target, soft_target) = (dir.path().join("os.json"), dir.path().join("soft.json"));
    let (os_workers, os_times, soft_workers, soft_times) = (3, 150, 2, 40);
    let mut workers = Vec::new();
    for _ in 0..os_workers {
        let args = [
            arg(dir.path()),
            "os".into(),
            arg(&os_target),
            os_times.to_string(),
        ];
        workers.push(spawn("doctor_count", &args));
    }
    for _ in 0..soft_workers {
        let args = [
            arg(dir.path()),
            "soft".into(),
            arg(&soft_target),
            soft_times.to_string(),
        ];
        workers.push(spawn("doctor_count", &args));
    }
    for w in &mut workers {
        w.wait_ready();
    }
    let mut cleans = 0;
    let mut removals = 0;
    loop {
        let out = doctor(
            &["clean", lock_dir.to_str().unwrap(), "--older-than", "0"],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        removals += stdout(&out).matches("removed free lock file").count();
        cleans += 1;
        if workers
            .iter_mut()
            .all(|w| w.child.try_wait().expect("try_wait").is_some())
        {
            break;
        }
    }
    for w in workers {
        w.finish();
    }
    let counted = |target: &Path| -> u64 {
        std::fs::read_to_string(target.with_extension("count"))
            .expect("counter")
            .trim()
            .parse()
            .expect("a number")
    };
    assert_eq!(counted(&os_target), os_workers * os_times);
    assert_eq!(counted(&soft_target), soft_workers * soft_times);
    assert!(
        removals > 0,
        "{cleans} cleans never found the lock free: the test proved nothing"
    );
    // Every lock is free now: a last clean leaves only the soft lock's
    // token file (never removed) and nothing named like a lock.
    let out = doctor(
        &["clean", lock_dir.to_str().unwrap(), "--older-than", "0"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = doctor(&["list", "--json", lock_dir.to_str().unwrap()], &[]);
    assert!(json_locks(&out).is_empty(), "{}", stdout(&out));
    let left: Vec<String> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.len() == 1 && left[0].ends_with(".lock.token"),
        "{left:?}"
    );
}

/// Sets `path`'s mtime two hours back.
fn age(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .expect("set mtime");
}

#[tokio::test]
async fn clean_removes_exactly_the_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lock_dir = d.join("locks");
    let locks = locks(d, "os");

    // Orphans.
    let stale = holder(d, "soft", "manifest", &d.join("a.jsonl"));
    kill_9(stale);
    let stale_lock = locks
        .lock_path(Category::Manifest, d.join("a.jsonl"))
        .unwrap();
    let stale_token = PathBuf::from(format!("{}.token", stale_lock.display()));
    let old = locks
        .lock_path(Category::Telemetry, d.join("t.jsonl"))
        .unwrap();
    // With a fencing token stored in it, as an exclusive holder that asked
    // for one leaves it.
    let guard = locks
        .lock(Category::Telemetry, d.join("t.jsonl"))
        .await
        .unwrap();
    guard.token().unwrap();
    guard.release().await.unwrap();
    assert!(std::fs::read(&old).unwrap().contains(&0), "a token trailer");
    age(&old);
    support::leave_part_of(d, &d.join("orphan.bin"), 100);
    let orphan_part = d.join("orphan.bin.part");
    let orphan_marker = locks
        .lock_path(Category::Artifact, d.join("orphan.bin"))
        .unwrap()
        .with_extension("part");
    locks
        .lock(Category::Summary, d.join("s.json"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let temp = d.join(".s.json.AbCdEf123456.tmp");
    std::fs::write(&temp, b"half").unwrap();
    let orphans = [&stale_lock, &old, &orphan_part, &orphan_marker, &temp];

    // What must stay: a held lock (and a temp under it), a live writer's
    // `.part` and marker, a fresh free lock file, files not of the crate.
    let held = holder(d, "os", "summary", &d.join("held.json"));
    let held_lock = locks
        .lock_path(Category::Summary, d.join("held.json"))
        .unwrap();
    let held_temp = d.join(".held.json.AbCdEf123456.tmp");
    std::fs::write(&held_temp, b"busy").unwrap();
    let mut writer = spawn("doctor_write", &[arg(d), arg(&d.join("live.bin"))]);
    writer.wait_ready();
    let live_part = d.join("live.bin.part");
    let live_marker = locks
        .lock_path(Category::Artifact, d.join("live.bin"))
        .unwrap()
        .with_extension("part");
    let fresh = locks
        .lock_path(Category::Sqlite, d.join("db.sqlite"))
        .unwrap();
    locks
        .lock(Category::Sqlite, d.join("db.sqlite"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let summary_lock = locks
        .lock_path(Category::Summary, d.join("s.json"))
        .unwrap();
    let not_ours = [
        lock_dir.join("notes.txt"),
        lock_dir.join("summary.zzz.lock"),
        d.join(".s.json.short.tmp"),
        d.join("s.json.part"),
    ];
    for file in &not_ours {
        std::fs::write(file, b"keep me").unwrap();
    }
    // Named like a lock file, but recording another target: not provably ours.
    let forged = lock_dir.join(format!("telemetry.{}.lock", "0".repeat(32)));
    std::fs::write(&forged, b"/some/other/target\n").unwrap();
    age(&forged);
    let stays = [
        &held_lock,
        &held_temp,
        &live_part,
        &live_marker,
        &fresh,
        &summary_lock,
        &stale_token,
        &forged,
    ];
    for path in orphans.iter().chain(&stays) {
        assert!(
            path.exists(),
            "{} should be there to begin with",
            path.display()
        );
    }

    let out = doctor(&["clean", "--dry-run", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for orphan in orphans {
        assert!(
            text.contains("would remove") && text.contains(orphan.to_str().unwrap()),
            "{} not in:\n{text}",
            orphan.display()
        );
        assert!(orphan.exists(), "a dry run removed {}", orphan.display());
    }

    let out = doctor(&["clean", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for (what, path) in [
        ("stale soft lock", &stale_lock),
        ("free lock file", &old),
        (".part", &orphan_part),
        (".part marker", &orphan_marker),
        ("temp file", &temp),
    ] {
        assert!(
            text.contains(&format!("removed {what} {}", path.display())),
            "{what} {} not in:\n{text}",
            path.display()
        );
        assert!(!path.exists(), "{} is still there", path.display());
    }
    assert_eq!(text.matches("removed ").count(), 5, "{text}");
    for path in stays.iter().copied().chain(&not_ours) {
        assert!(path.exists(), "{} was removed:\n{text}", path.display());
    }
    let out = doctor(&["list", lock_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "no stale lock is left: {out:?}");

    writer.finish();
    held.finish();
}

#[test]
fn probe_passes_on_a_local_disk_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = doctor(&["probe", dir.path().to_str().unwrap()], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{out:?}");
    assert!(!text.contains("FAIL"), "{text}");
    for check in [
        "exclusive excludes exclusive",
        "shared holders coexist",
        "removal is seen",
        "soft locks exclude",
        "verdict",
    ] {
        assert!(text.contains(check), "{check} not in {text}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "probe files left"
    );
}

#[test]
fn policy_prints_the_backend_and_lock_dir() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let out = doctor(
        &["policy"],
        &[
            ("ASYNC_FILELOCK_DIR", lock_dir.to_str().unwrap()),
            ("ASYNC_FILELOCK_BACKEND", "soft"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("backend:       soft"), "{text}");
    assert!(text.contains(lock_dir.to_str().unwrap()), "{text}");
    assert!(text.contains("flock:         works"), "{text}");
    let bad = doctor(&["policy"], &[("ASYNC_FILELOCK_BACKEND", "carrier-pigeon")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ASYNC_FILELOCK_BACKEND"));
}

#[test]
fn usage_errors_exit_2_and_a_missing_lock_dir_is_named() {
    for args in [
        &["list", "--bogus"][..],
        &["list", "-o", "size"],
        &["clean", "--older-than", "soon"],
        &[],
        &["frobnicate"],
    ] {
        assert_eq!(doctor(args, &[]).status.code(), Some(2), "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = doctor(&["list", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()));
}

/// A probe child that answers every command with `answer` (`nlink` with
/// `ok 1`): a filesystem that refuses every lock, or grants every one.
fn fake_child(answer: &str) -> async_filelock::doctor::ProbeCommand {
    let script = format!(
        "while read -r verb rest; do case $verb in quit) exit 0;; nlink) echo 'ok 1';; *) echo '{answer}';; esac; done"
    );
    async_filelock::doctor::ProbeCommand::new("sh")
        .arg("-c")
        .arg(script)
}

#[test]
fn probe_fails_where_locks_are_refused_or_do_not_exclude_and_names_remedies() {
    use async_filelock::doctor::{Outcome, probe};
    let dir = tempfile::tempdir().unwrap();
    let outcome = |report: &async_filelock::doctor::ProbeReport, name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
            .outcome
    };

    let refused = probe(
        dir.path(),
        &fake_child("err Operation not supported (os error 95)"),
    )
    .unwrap();
    assert!(!refused.passed(), "{refused}");
    assert_eq!(outcome(&refused, "flock is granted"), Outcome::Fail);
    assert_eq!(
        outcome(&refused, "exclusive excludes exclusive"),
        Outcome::Skipped
    );
    let text = refused.to_string();
    assert!(
        text.contains("soft locks") && text.contains("PostgreSQL"),
        "{text}"
    );

    let lying = probe(dir.path(), &fake_child("ok")).unwrap();
    assert!(!lying.passed(), "{lying}");
    assert_eq!(outcome(&lying, "flock is granted"), Outcome::Pass);
    assert_eq!(
        outcome(&lying, "exclusive excludes exclusive"),
        Outcome::Fail
    );
    assert_eq!(
        outcome(&lying, "removal is seen by a process with the file open"),
        Outcome::Fail
    );
    assert_eq!(outcome(&lying, "O_EXCL creation excludes"), Outcome::Fail);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "probe files left"
    );
}

/// What soft locks leave when a process dies mid-step (a record written but
/// never linked, a break door) goes once old; a fresh one, and a record
/// still linked to its lock, stay.
#[test]
fn clean_removes_old_soft_lock_leftovers_only() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    std::fs::create_dir(&lock_dir).unwrap();
    let lock = "artifact.0123456789abcdef0123456789abcdef.lock";
    let old_temp = lock_dir.join(format!("{lock}.new.aaaaaaaaaaaaaaaa"));
    let old_door = lock_dir.join(format!("{lock}.break.nbbbbbbbbbbbbbbbb"));
    let fresh_door = lock_dir.join(format!("{lock}.break.ncccccccccccccccc"));
    let not_ours = lock_dir.join("something.break.x");
    for p in [&old_temp, &old_door, &fresh_door, &not_ours] {
        std::fs::write(p, b"pid 1 host h\n").unwrap();
    }
    let linked_temp = lock_dir.join(format!("{lock}.new.dddddddddddddddd"));
    std::fs::hard_link(&old_temp, &linked_temp).unwrap();
    for p in [&old_door, &linked_temp] {
        age(p);
    }
    age(&old_temp);
    let out = doctor(&["clean", lock_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stdout(&out));
    // The linked pair had two links when looked at: both kept (one link is
    // a live lock's own name, in the real case).
    assert!(
        old_temp.exists() && linked_temp.exists(),
        "{}",
        stdout(&out)
    );
    assert!(!old_door.exists(), "{}", stdout(&out));
    assert!(fresh_door.exists() && not_ours.exists());
    std::fs::remove_file(&linked_temp).unwrap();
    let out = doctor(&["clean", lock_dir.to_str().unwrap()], &[]);
    assert!(!old_temp.exists(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("unlinked soft lock record"),
        "{}",
        stdout(&out)
    );
}

/// A dry run takes no lock: an empty lock file stays empty (taking it
/// would write its target record), and nothing new appears in the lock dir.
#[test]
fn a_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    std::fs::create_dir(&lock_dir).unwrap();
    let empty = lock_dir.join("summary.0123456789abcdef0123456789abcdef.lock");
    std::fs::write(&empty, b"").unwrap();
    age(&empty);
    let before: Vec<_> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = doctor(
        &[
            "clean",
            "--dry-run",
            "--older-than",
            "0",
            lock_dir.to_str().unwrap(),
        ],
        &[("ASYNC_FILELOCK_BACKEND", "auto")],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("free lock file"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(&empty).unwrap(),
        b"",
        "the dry run wrote into the lock file"
    );
    let after: Vec<_> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the dry run made files");
}
