//! Law 9 and law 10: bad input gets a typed error naming the path; lock files
//! are private and never followed through symlinks. Law 2: every spelling of
//! a target meets on one lock.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use async_filelock::{Category, LockError, Locks, SameTask};
use support::locks_in;

#[test]
fn child_entry() {
    support::child_entry();
}

#[tokio::test]
async fn law9_empty_path_is_an_invalid_target() {
    let dir = tempfile::tempdir().unwrap();
    let err = locks_in(dir.path())
        .lock(Category::Artifact, "")
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[tokio::test]
async fn law9_a_directory_target_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let sub = dir.path().join("outputs");
    std::fs::create_dir(&sub).unwrap();
    for target in [sub.clone(), sub.join("."), sub.join("..")] {
        let err = locks.lock(Category::Artifact, &target).await.unwrap_err();
        assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
        assert!(err.to_string().contains("outputs"), "{err}");
        assert_eq!(err.path(), Some(target.as_path()));
    }
}

#[tokio::test]
async fn a_lock_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Locks::builder().lock_dir(&file).build().unwrap_err();
    assert!(matches!(err, LockError::LockDir { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert!(
        err.path().is_some_and(|p| p.ends_with("not-a-dir")),
        "{err}"
    );
    // A lock dir under a file fails at lock time, naming it.
    let locks = Locks::builder()
        .lock_dir(file.join("locks"))
        .build()
        .unwrap();
    let err = locks
        .lock(Category::Summary, dir.path().join("s.json"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// Root ignores permission bits, so as root the check runs in a child that
/// drops to `nobody`.
#[test]
fn a_lock_dir_without_permission_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if !support::is_root() {
        expect_permission_error(&locked);
        return;
    }
    support::run_as_nobody(
        dir.path(),
        "permission_child",
        &[("ASYNC_FILELOCK_TEST_LOCKED", &locked)],
    );
}

/// Runs the permission check when started by the test above as `nobody`.
#[test]
fn permission_child() {
    if let Some(locked) = std::env::var_os("ASYNC_FILELOCK_TEST_LOCKED") {
        expect_permission_error(Path::new(&locked));
    }
}

/// Locking with a lock dir inside the read-only `locked` directory fails
/// with an I/O error that names the place and says "permission".
fn expect_permission_error(locked: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let locks = Locks::builder()
        .lock_dir(locked.join("locks"))
        .build()
        .unwrap();
    let err = rt
        .block_on(locks.lock(Category::Manifest, locked.join("m.jsonl")))
        .unwrap_err();
    assert!(matches!(err, LockError::Io { .. }), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
}

#[tokio::test]
async fn law10_a_lock_path_that_is_a_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("summary.json");
    let lock_path = locks.lock_path(Category::Summary, &target).unwrap();
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, b"keep me").unwrap();
    symlink(&victim, &lock_path).unwrap();
    let err = locks.lock(Category::Summary, &target).await.unwrap_err();
    assert!(matches!(err, LockError::UnsafeLockFile { .. }), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(err.path(), Some(lock_path.as_path()));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

#[tokio::test]
async fn law10_a_lock_path_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let lock_a = locks.lock_path(Category::Summary, &a).unwrap();
    let lock_b = locks.lock_path(Category::Summary, &b).unwrap();
    std::fs::create_dir_all(&lock_a).unwrap();
    let fifo = std::ffi::CString::new(lock_b.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    for target in [&a, &b] {
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            locks.lock(Category::Summary, target),
        )
        .await
        .expect("refused at once, not hung")
        .unwrap_err();
        assert!(matches!(err, LockError::UnsafeLockFile { .. }), "{err}");
    }
}

#[tokio::test]
async fn law10_lock_dir_is_0700_and_lock_files_0600_by_default_and_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let g = locks
        .lock(Category::Sqlite, dir.path().join("s.db"))
        .await
        .unwrap();
    let dir_mode = std::fs::metadata(dir.path().join("locks")).unwrap().mode() & 0o777;
    let file_mode = std::fs::metadata(g.lock_path()).unwrap().mode() & 0o777;
    assert_eq!((dir_mode, file_mode), (0o700, 0o600));
    let custom = Locks::builder()
        .lock_dir(dir.path().join("shared-locks"))
        .dir_mode(0o750)
        .file_mode(0o640)
        .build()
        .unwrap();
    let g = custom
        .lock(Category::Sqlite, dir.path().join("s.db"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("shared-locks"))
            .unwrap()
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(g.lock_path()).unwrap().mode() & 0o777,
        0o640
    );
}

#[tokio::test]
async fn non_utf8_names_lock_and_are_recorded_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.pdf");
    let target = dir.path().join(name);
    let g = locks.lock(Category::Manifest, &target).await.unwrap();
    let recorded = std::fs::read(g.lock_path()).unwrap();
    let expected = std::fs::canonicalize(dir.path()).unwrap().join(name);
    assert_eq!(recorded, [expected.as_os_str().as_bytes(), b"\n"].concat());
    assert!(!support::is_free(&locks, Category::Manifest, &target).await);
}

#[tokio::test]
async fn law2_every_spelling_of_a_target_meets_on_one_lock() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir_all(base.join("a")).unwrap();
    std::fs::create_dir_all(base.join("b")).unwrap();
    symlink(base.join("b"), base.join("link-to-b")).unwrap();
    let locks = locks_in(base);
    let spellings = [
        base.join("b/x"),
        base.join("a/../b/x"),
        base.join("b/./x"),
        base.join("link-to-b/x"),
    ];
    let first = locks.lock_path(Category::Artifact, &spellings[0]).unwrap();
    for s in &spellings {
        assert_eq!(
            locks.lock_path(Category::Artifact, s).unwrap(),
            first,
            "{}",
            s.display()
        );
    }
    // Relative spellings, from inside the directory.
    std::env::set_current_dir(base.join("a")).unwrap();
    assert_eq!(
        locks.lock_path(Category::Artifact, "../b/x").unwrap(),
        first
    );
    std::env::set_current_dir(base.join("b")).unwrap();
    assert_eq!(locks.lock_path(Category::Artifact, "./x").unwrap(), first);
    assert_eq!(locks.lock_path(Category::Artifact, "x").unwrap(), first);
    // And they exclude each other.
    let g = locks.lock(Category::Artifact, &spellings[3]).await.unwrap();
    assert!(!support::is_free(&locks, Category::Artifact, &spellings[1]).await);
    drop(g);
    // Categories are separate locks on the same target.
    assert_ne!(
        locks.lock_path(Category::Manifest, &spellings[0]).unwrap(),
        first
    );
}

#[tokio::test]
async fn the_lock_file_records_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let locks = support::locks_removing(dir.path(), Category::Artifact, false);
    let target = dir.path().join("paper.pdf");
    let g = locks.lock(Category::Artifact, &target).await.unwrap();
    let record = std::fs::read_to_string(g.lock_path()).unwrap();
    let expected = std::fs::canonicalize(dir.path()).unwrap().join("paper.pdf");
    assert_eq!(record, format!("{}\n", expected.display()));
    assert_eq!(g.target(), expected);
}

/// Two spellings of one lock dir (`run/locks`, `run/../run/locks`, a
/// symlink to it) are one lock dir: one lock path per target, so one entry
/// in the in-process table, one queue and one self-deadlock check.
#[tokio::test(flavor = "current_thread")]
async fn law2_two_spellings_of_one_lock_dir_are_one_lock_dir() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("locks")).unwrap();
    symlink(&run, dir.path().join("run-link")).unwrap();
    let target = dir.path().join("manifest.jsonl");
    let spellings = [
        run.join("locks"),
        run.join("../run/locks"),
        run.join("./locks/"),
        dir.path().join("run-link/locks"),
    ];
    let handles: Vec<Locks> = spellings
        .iter()
        .map(|d| {
            Locks::builder()
                .lock_dir(d)
                .same_task(SameTask::Refuse)
                .build()
                .unwrap()
        })
        .collect();
    let first = handles[0].lock_path(Category::Manifest, &target).unwrap();
    for (locks, spelled) in handles.iter().zip(&spellings) {
        assert_eq!(
            locks.lock_path(Category::Manifest, &target).unwrap(),
            first,
            "lock dir spelled {}",
            spelled.display()
        );
    }
    // One table entry: a guard taken through one spelling is this task's
    // lock through every other, so asking again is a self-deadlock, not a
    // wait on a second descriptor.
    let guard = handles[1].lock(Category::Manifest, &target).await.unwrap();
    let err = handles[3]
        .acquire(Category::Manifest, &target)
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::WouldDeadlock { .. }), "{err}");
    drop(guard);
}
