//! Law 6 (commit by rename inside the guard) for whole-file writers:
//! `write_atomic`, `update_json`, `save_if_revision`; and the SQLite guard.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use async_filelock::{LockError, Locks, Versioned};
use support::{Worker, big_doc, locks_in, path_arg as arg, spawn};

#[test]
fn child_entry() {
    support::child_entry();
}

#[test]
fn law6_many_processes_incrementing_with_update_json_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter.json");
    let (procs, each) = (4, 150);
    let mut workers: Vec<Worker> = (0..procs)
        .map(|_| {
            spawn(
                "increment",
                &[arg(dir.path()), arg(&state), each.to_string()],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    for w in workers {
        w.finish();
    }
    let v: Versioned<u64> = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(v.data, (procs * each) as u64);
    assert_eq!(v.revision, (procs * each) as u64);
}

fn temps_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Kill -9 a writer at random moments, many times: the file always parses
/// and is one whole version; the next writer clears the leftover temp.
#[test]
fn law6_kill_9_mid_write_never_leaves_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("summary.json");
    let (a, b) = (big_doc('a'), big_doc('b'));
    let mut saw_leftover = false;
    for round in 0..25 {
        let mut w = spawn("rewrite", &[arg(dir.path()), arg(&target)]);
        w.wait_ready();
        std::thread::sleep(Duration::from_millis(5 + (round * 7) % 40));
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        let now = std::fs::read(&target).unwrap();
        assert!(
            now == a || now == b,
            "round {round}: torn file of {} bytes",
            now.len()
        );
        serde_json::from_slice::<serde_json::Value>(&now).unwrap();
        saw_leftover |= !temps_in(dir.path()).is_empty();
    }
    // Whatever the kills left behind, the next write under the lock clears it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async_filelock::write_atomic_with(
        &locks_in(dir.path()),
        &target,
        b"{}".to_vec(),
    ))
    .unwrap();
    assert!(
        temps_in(dir.path()).is_empty(),
        "temps left: {:?}",
        temps_in(dir.path())
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"{}");
    eprintln!("a kill left a temp file behind in some round: {saw_leftover}");
}

#[tokio::test]
async fn write_atomic_keeps_permissions_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("report.json");
    async_filelock::write_atomic_with(&locks, &target, b"1".to_vec())
        .await
        .unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    async_filelock::write_atomic_with(&locks, &target, b"2".to_vec())
        .await
        .unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::read(&target).unwrap(), b"2");
    assert!(temps_in(dir.path()).is_empty());
}

#[tokio::test]
async fn stale_revision_is_a_conflict_naming_both_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let state = dir.path().join("state.json");
    async_filelock::update_json_with(&locks, &state, |v: &mut Vec<u32>| v.push(1))
        .await
        .unwrap();
    let stale = async_filelock::load_json_with::<Vec<u32>>(&locks, &state)
        .await
        .unwrap();
    assert_eq!(
        stale,
        Versioned {
            revision: 1,
            data: vec![1]
        }
    );
    async_filelock::update_json_with(&locks, &state, |v: &mut Vec<u32>| v.push(2))
        .await
        .unwrap();
    async_filelock::update_json_with(&locks, &state, |v: &mut Vec<u32>| v.push(3))
        .await
        .unwrap();
    let before = std::fs::read(&state).unwrap();
    let err = async_filelock::save_if_revision_with(&locks, &state, stale.revision, &vec![9])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Conflict {
                expected: 1,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("expected revision 1") && msg.contains("found 3"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "nothing written on conflict"
    );
    let fresh = async_filelock::load_json_with::<Vec<u32>>(&locks, &state)
        .await
        .unwrap();
    assert_eq!(
        async_filelock::save_if_revision_with(&locks, &state, fresh.revision, &vec![9])
            .await
            .unwrap(),
        4
    );
}

#[tokio::test]
async fn update_json_refuses_a_file_that_is_not_its_json_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    for (name, content) in [
        ("garbage.json", &b"not json{"[..]),
        ("other.json", br#"{"a":1}"#),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = async_filelock::update_json_with(&locks, &path, |n: &mut u64| *n += 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::Json { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "file untouched");
    }
}

#[tokio::test]
async fn whole_file_writers_refuse_bad_targets() {
    let dir = tempfile::tempdir().unwrap();
    let beside = Locks::builder().build().unwrap();
    let fixed = locks_in(dir.path());
    // A directory.
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let err = async_filelock::write_atomic_with(&fixed, dir.path().join("d"), b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
    // A missing parent, with either kind of lock dir: nothing is created.
    let missing = dir.path().join("no/such/dir/summary.json");
    for locks in [&beside, &fixed] {
        let err = async_filelock::write_atomic_with(locks, &missing, b"x".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
    assert!(!dir.path().join("no").exists());
}

/// Root reads anything, so the unreadable-file check runs as `nobody`.
#[test]
fn update_json_on_an_unreadable_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("secret.json");
    std::fs::write(&state, br#"{"revision":1,"data":5}"#).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o000)).unwrap();
    if !support::is_root() {
        expect_unreadable(&state);
        return;
    }
    support::run_as_nobody(
        dir.path(),
        "unreadable_child",
        &[("ASYNC_FILELOCK_TEST_STATE", &state)],
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        br#"{"revision":1,"data":5}"#
    );
}

/// Runs the unreadable-file check when started by the test above.
#[test]
fn unreadable_child() {
    if let Some(state) = std::env::var_os("ASYNC_FILELOCK_TEST_STATE") {
        expect_unreadable(Path::new(&state));
    }
}

fn expect_unreadable(state: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = state.parent().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.join("nobody-locks"))
        .build()
        .unwrap();
    let err = rt
        .block_on(async_filelock::update_json_with(
            &locks,
            state,
            |n: &mut u64| *n += 1,
        ))
        .unwrap_err();
    assert!(matches!(err, LockError::Io { .. }), "{err}");
    assert!(err.to_string().contains("secret.json"), "{err}");
}

#[test]
fn sqlite_lock_keeps_database_is_locked_from_callers_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (procs, rows) = (4, 2000);
    let mut workers: Vec<Worker> = (0..procs)
        .map(|i| {
            spawn(
                "sqlite",
                &[arg(dir.path()), arg(&db), rows.to_string(), format!("w{i}")],
            )
        })
        .collect();
    for w in &mut workers {
        w.wait_ready();
    }
    for w in workers {
        w.finish();
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, (procs * rows) as i64);
    let writers: i64 = conn
        .query_row("SELECT COUNT(DISTINCT writer) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(writers, procs as i64);
}

/// With remove-on-release, the summary lock file is gone by the time
/// `write_atomic` and `update_json` return: the work on the blocking pool
/// lets go there, rather than handing the removal to another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_writes_remove_their_lock_file_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let locks = support::locks_removing(dir.path(), async_filelock::Category::Summary, true);
    let (summary, state) = (
        dir.path().join("summary.txt"),
        dir.path().join("state.json"),
    );
    let lock_of = |p: &Path| {
        locks
            .lock_path(async_filelock::Category::Summary, p)
            .unwrap()
    };
    for i in 0..100u64 {
        async_filelock::write_atomic_with(&locks, &summary, i.to_string())
            .await
            .unwrap();
        assert!(
            !lock_of(&summary).exists(),
            "write {i} returned before its release"
        );
        async_filelock::update_json_with(&locks, &state, |n: &mut u64| *n += 1)
            .await
            .unwrap();
        assert!(
            !lock_of(&state).exists(),
            "update {i} returned before its release"
        );
    }
}
