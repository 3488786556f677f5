//! Resources running out: a full disk, a file-size limit, few descriptors,
//! a blocking pool of one thread. Each runs where the limit cannot touch the
//! rest of the suite (a child process, or a tmpfs of its own).
//!
//! What every test holds the crate to: a typed error naming the path (never
//! a panic or a hang), nothing partial left behind (an error means "not
//! written"), and the same operations succeeding once the resource is back.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_filelock::{Category, Versioned};
use support::exhaustion::{Room, full_disk, jsonl_ids, numbered, said_until, temps_of};
use support::{locks_in, path_arg, spawn};

/// A generous bound: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(120);

#[test]
fn child_entry() {
    support::child_entry();
}

/// Item: a full disk must not block new lock files. The target record in a
/// lock file is for people and tools; a process that may not grow a file
/// (`RLIMIT_FSIZE` 0 fails the write with `EFBIG`, as a full disk fails it
/// with `ENOSPC`) still locks.
#[test]
fn a_lock_is_taken_when_its_target_record_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("weights.bin");
    let mut child = spawn(
        "lock_without_room",
        &[path_arg(dir.path()), path_arg(&target)],
    );
    let said = child.read();
    child.finish();
    assert_eq!(said, "locked");
}

/// One outcome a child said: `OP LABEL ok` or `OP LABEL err MESSAGE`.
struct Said {
    op: String,
    label: String,
    error: Option<String>,
}

fn parse_outcomes(lines: &[String]) -> Vec<Said> {
    lines
        .iter()
        .filter_map(|line| {
            let mut words = line.splitn(4, ' ');
            let (op, label, verdict) = (words.next()?, words.next()?, words.next()?);
            let error = match verdict {
                "ok" => None,
                "err" => Some(words.next().unwrap_or_default().to_owned()),
                _ => return None,
            };
            Some(Said {
                op: op.to_owned(),
                label: label.to_owned(),
                error,
            })
        })
        .collect()
}

/// Item: few descriptors. A process at its descriptor limit (soft and hard
/// 64, every descriptor taken, then 0 to 4 left free) takes a lock, writes
/// an artifact, appends to a JSONL sink, replaces a file and updates a JSON
/// state: each either completes or fails with an error that names a path
/// of the test's directory and says "Too many open files", and the child
/// checks after each that what failed left the old content and no temp
/// file, `.part` or record. With the descriptors closed, all succeed.
#[test]
fn out_of_descriptors_each_writer_fails_naming_its_path_and_leaves_nothing_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn("nofile", &[path_arg(dir.path()), "64".into()]);
    let (child, lines) = said_until(child, "done", HANG);
    child.finish();
    let said = parse_outcomes(&lines);
    assert_eq!(said.len(), 6 * 5, "{lines:#?}");
    let dir_text = dir.path().to_str().unwrap();
    for s in &said {
        match (&s.error, s.label.as_str()) {
            (None, "free0") => panic!("{} succeeded with no descriptor free", s.op),
            (Some(e), "recovered") => panic!("{} after the descriptors came back: {e}", s.op),
            (Some(e), _) => assert!(
                e.contains("Too many open files")
                    && e.contains("out of file descriptors")
                    && e.contains(dir_text),
                "{} {}: {e}",
                s.op,
                s.label
            ),
            (None, _) => {}
        }
    }
}

/// A descriptor kept open between holdings (a hot lock file) serves the
/// next holding of its lock with no descriptor free; a lock that needs an
/// open then gets one by closing the kept descriptors; with none left to
/// close, the open fails with a typed error naming the lock file.
#[test]
fn at_the_descriptor_limit_a_kept_lock_file_serves_its_lock_and_makes_room_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn("nofile_hot", &[path_arg(dir.path()), "64".into()]);
    let (child, lines) = said_until(child, "done", HANG);
    child.finish();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0], "again ok", "the kept descriptor needs no open");
    assert_eq!(
        lines[1], "other ok",
        "closing the kept descriptors makes room for an open"
    );
    assert!(
        lines[2].starts_with("third err") && lines[2].contains("Too many open files"),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains("manifest."),
        "names the lock file: {}",
        lines[2]
    );
}

/// Item: few descriptors, many waits. 200 waits on distinct locks another
/// process holds, in a process whose limit (64, soft and hard) cannot give
/// each wait its lock file: once the holder lets go, each wait has been
/// granted or has failed with a typed error naming its lock; none hangs.
#[test]
fn contended_waits_beyond_the_descriptor_limit_end_granted_or_with_an_error_never_hang() {
    const COUNT: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut holder = spawn("hold_numbered", &[path_arg(dir.path()), COUNT.to_string()]);
    holder.wait_ready();
    let waiter = spawn(
        "nofile_waits",
        &[path_arg(dir.path()), COUNT.to_string(), "64".into()],
    );
    let (waiter, started) = said_until(waiter, "waiting", HANG);
    assert_eq!(started, ["waiting"]);
    holder.tell("release");
    let (waiter, lines) = said_until(waiter, "end", HANG);
    waiter.finish();
    holder.finish();
    let counts: Vec<usize> = lines[0]
        .strip_prefix("done ")
        .unwrap_or_else(|| panic!("{lines:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (ok, err, hung) = (counts[0], counts[1], counts[2]);
    eprintln!("{COUNT} waits with 64 descriptors: {ok} granted, {err} failed");
    assert_eq!(hung, 0, "{lines:#?}");
    assert_eq!(ok + err, COUNT);
    assert!(ok > 0, "no wait was granted: {lines:#?}");
    let locks_dir = dir.path().join("locks");
    for line in &lines[1..lines.len() - 1] {
        let e = line.strip_prefix("error ").unwrap();
        eprintln!("  {e}");
        assert!(e.contains(locks_dir.to_str().unwrap()), "{e}");
        assert!(!e.starts_with("panic"), "{e}");
    }
}

/// Item: `RLIMIT_FSIZE`. Writes past a 64 KiB file-size limit fail cleanly:
/// JSONL appends one at a time, 48 at once (group commit) and in one commit
/// that rotates leave only whole lines, exactly the records whose append
/// returned `Ok` (an append that got an error must not find its record in
/// any file, and one that is in a file must not have got an error);
/// `write_atomic` and `update_json` of a document past the limit leave the
/// old file and no temp file.
#[test]
fn past_the_file_size_limit_appends_are_whole_or_absent_and_replacements_leave_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn("fsize_writers", &[path_arg(dir.path()), "65536".into()]);
    let (child, lines) = said_until(child, "done", HANG);
    child.finish();
    let said = parse_outcomes(&lines);
    // The labels of `op`'s appends that succeeded; every error says the
    // file was too large, naming `file`.
    let succeeded = |op: &str, file: &Path| -> (Vec<String>, usize) {
        let mut ok = Vec::new();
        let mut errors = 0;
        for s in said.iter().filter(|s| s.op == op) {
            match &s.error {
                None => ok.push(s.label.clone()),
                Some(e) => {
                    errors += 1;
                    assert!(
                        e.contains("File too large") && e.contains(file.to_str().unwrap()),
                        "{op} {}: {e}",
                        s.label
                    );
                }
            }
        }
        ok.sort();
        (ok, errors)
    };
    let ids_in = |prefix: &str| -> Vec<String> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if name.starts_with(prefix) && name.ends_with(".jsonl") {
                ids.extend(jsonl_ids(&path));
            }
        }
        ids.sort();
        ids
    };

    // One at a time: whole records up to the limit, then one error, and
    // that record is not in the file.
    let (ok, errors) = succeeded("seq", &dir.path().join("seq.jsonl"));
    assert_eq!(errors, 1, "{lines:#?}");
    assert!(!ok.is_empty());
    assert_eq!(ids_in("seq."), ok);

    // At once (group commit): exactly the records whose append succeeded.
    let (ok, errors) = succeeded("batch", &dir.path().join("batch.jsonl"));
    assert_eq!(ok.len() + errors, 48);
    assert!(errors > 0, "48 records of 4 KiB fit in 64 KiB?");
    assert_eq!(
        ids_in("batch."),
        ok,
        "records in the file vs. appends that returned Ok"
    );

    // One commit that rotated between a small record and one past the
    // limit: the small one is in the rotated file, so its append succeeded.
    let (ok, errors) = succeeded("rotation", &dir.path().join("rot.jsonl"));
    assert_eq!((ok.as_slice(), errors), (&["small".to_owned()][..], 1));
    assert_eq!(ids_in("rot."), ok);

    // Replacements past the limit: the old file, no temp file.
    let summary = dir.path().join("summary.json");
    let state = dir.path().join("state.json");
    for (op, file) in [("write_atomic", &summary), ("update_json", &state)] {
        assert_eq!(succeeded(op, dir.path()), (vec![], 1), "{op}");
        assert_eq!(temps_of(file), Vec::<PathBuf>::new());
    }
    assert_eq!(std::fs::read(&summary).unwrap(), b"old");
    let now: Versioned<String> = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!((now.revision, now.data.as_str()), (1, "old"));
}

/// A tmpfs mounted on a directory for one test; lazily unmounted on drop
/// (a panic included), before the directory is removed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`, or says why it could not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Item: a full filesystem. On a 256 KiB tmpfs filled to `ENOSPC` (or, where
/// mounting is not permitted, in a child whose `RLIMIT_FSIZE` is 0): new
/// artifact and manifest locks are taken; a JSONL append, `write_atomic`,
/// `update_json` and an artifact download each fail with an error naming
/// their file, leaving whole lines, the old files, no temp file and no
/// `.part`; removing the filler under its artifact lock works; then every
/// writer succeeds again. See `support::exhaustion::full_disk`.
#[test]
fn on_a_full_filesystem_locks_work_writers_fail_cleanly_and_the_cleanup_under_lock_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    match Tmpfs::mount(dir.path(), "256k") {
        Ok(mounted) => {
            eprintln!(
                "full filesystem: a 256 KiB tmpfs at {}",
                dir.path().display()
            );
            support::runtime().block_on(full_disk(dir.path(), Room::Tmpfs));
            drop(mounted);
        }
        Err(why) => {
            eprintln!(
                "full filesystem: cannot mount a tmpfs ({why}); RLIMIT_FSIZE 0 in a child instead"
            );
            let child = spawn("full_disk_fsize", &[path_arg(dir.path())]);
            let (child, _) = said_until(child, "ok", HANG);
            child.finish();
        }
    }
}

/// Item: a blocking pool of one thread (`max_blocking_threads(1)`). 2,000
/// waits on distinct locks another process holds must not need tokio's
/// blocking pool: a `tokio::fs` call made while they all wait completes
/// before the holder is told to let go (an order, not a time: were any
/// wait on the pool's one thread, the call would queue behind it until the
/// release), and every wait is granted after the release.
#[test]
fn two_thousand_waits_on_a_one_thread_blocking_pool_leave_tokio_fs_free_and_all_end_granted() {
    const COUNT: usize = 2000;
    support::raise_fd_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let mut holder = spawn("hold_numbered", &[path_arg(dir.path()), COUNT.to_string()]);
    holder.wait_ready();
    let locks = locks_in(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let unrelated = dir.path().join("unrelated.txt");
    std::fs::write(&unrelated, "x").unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = numbered(dir.path(), COUNT)
            .into_iter()
            .map(|target| {
                let locks = locks.clone();
                tokio::spawn(async move {
                    locks
                        .acquire(Category::Manifest, &target)
                        .timeout(Duration::from_secs(60))
                        .await
                        .map(drop)
                })
            })
            .collect();
        let all_waiting = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let os = support::os_metrics(&locks);
                if (os.kernel_waits_now + os.event_waits_now) as usize == COUNT {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(all_waiting.is_ok(), "the {COUNT} waits never all started");
        let meta = tokio::time::timeout(Duration::from_secs(60), tokio::fs::metadata(&unrelated))
            .await
            .expect("tokio::fs::metadata queued behind the lock waits");
        assert_eq!(meta.unwrap().len(), 1);
        holder.tell("release");
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a wait outlived the release by a minute")
                .unwrap()
                .expect("granted after the release");
        }
    });
    holder.finish();
}
