//! Streaming artifact writer against a real HTTP server on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_filelock::{
    Artifact, ArtifactWriter, Category, JsonlSink, Leftover, LockError, Locks, OrderCheck,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use rand::RngExt;
use sha2::{Digest, Sha256};
use support::{Worker, eventually, fetch, locks_in, path_arg as arg, spawn};
use tokio::io::AsyncWriteExt;

#[test]
fn child_entry() {
    support::child_entry();
}

/// What the test server serves, and how many GETs it answered.
struct Served {
    body: Vec<u8>,
    chunk_delay: Duration,
    requests: AtomicUsize,
}

impl Served {
    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.body))
    }
}

async fn file(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let from: usize = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = if from > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let chunks: Vec<Bytes> = s.body[from.min(s.body.len())..]
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let delay = s.chunk_delay;
    let stream = futures::stream::iter(chunks).then(move |c| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::io::Error>(c)
    });
    Response::builder()
        .status(status)
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Serves `len` deterministic bytes at `/file` on 127.0.0.1.
async fn serve(len: usize, chunk_delay: Duration) -> (String, Arc<Served>) {
    let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let served = Arc::new(Served {
        body,
        chunk_delay,
        requests: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .route("/file", axum::routing::get(file))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, served)
}

/// A child that downloads `url` into `target` (expecting `len` bytes with
/// digest `sha`), with lock files in `dir/locks`.
fn spawn_fetch(dir: &Path, url: &str, target: &Path, len: u64, sha: &str) -> Worker {
    spawn(
        "fetch",
        &[
            arg(dir),
            url.to_owned(),
            arg(target),
            len.to_string(),
            sha.to_owned(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_and_processes_download_an_artifact_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let (url, served) = serve(3 << 20, Duration::from_millis(2)).await;
    let (len, sha) = (served.body.len() as u64, served.sha256());
    let mut children: Vec<_> = (0..3)
        .map(|_| spawn_fetch(dir.path(), &url, &target, len, &sha))
        .collect();
    let locks = locks_in(dir.path());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (locks, url, target, sha) =
                (locks.clone(), url.clone(), target.clone(), sha.clone());
            tokio::spawn(async move { fetch(&locks, &url, &target, len, &sha).await })
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *outcomes
            .entry(t.await.unwrap().unwrap().to_owned())
            .or_default() += 1;
    }
    for c in children.iter_mut() {
        let said = tokio::task::block_in_place(|| c.read());
        *outcomes.entry(said).or_default() += 1;
    }
    for c in children {
        tokio::task::spawn_blocking(move || c.finish())
            .await
            .unwrap();
    }
    assert_eq!(outcomes.get("downloaded"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("present"), Some(&6), "{outcomes:?}");
    assert_eq!(
        served.requests.load(Ordering::SeqCst),
        1,
        "exactly one download"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        served.body,
        "byte-identical"
    );
    assert!(!dir.path().join("model.bin.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law6_kill_9_mid_stream_never_leaves_a_partial_target_and_the_next_writer_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("dataset.tar");
    let part = dir.path().join("dataset.tar.part");
    let (url, served) = serve(4 << 20, Duration::from_millis(4)).await;
    let (len, sha) = (served.body.len() as u64, served.sha256());
    let locks = locks_in(dir.path());
    let mut resumed_rounds = 0;
    for round in 0..6u64 {
        let mut child = spawn_fetch(dir.path(), &url, &target, len, &sha);
        let wait = rand::rng().random_range(40..200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.child.kill().unwrap();
        child.child.wait().unwrap();
        assert!(!target.exists(), "round {round}: a partial target appeared");
        // The dead process's lock is free at once.
        let g = locks.try_lock(Category::Artifact, &target).await.unwrap();
        assert!(g.is_some(), "round {round}: lock still held after kill -9");
        drop(g);
        let left = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if round % 3 == 2 {
            // Discard: start over.
            let Artifact::Write(w) = ArtifactWriter::builder(&target)
                .locks(locks.clone())
                .expected_len(len)
                .expected_sha256(&sha)
                .unwrap()
                .open()
                .await
                .unwrap()
            else {
                panic!("expected to write");
            };
            assert_eq!(w.resume_from(), 0);
            let body = reqwest::get(&url).await.unwrap().bytes_stream();
            let report = w.download(body).await.unwrap();
            assert_eq!(report.resumed_bytes, 0);
        } else {
            assert_eq!(
                fetch(&locks, &url, &target, len, &sha).await.unwrap(),
                "downloaded"
            );
            resumed_rounds += u64::from(left > 0);
        }
        assert_eq!(
            std::fs::read(&target).unwrap(),
            served.body,
            "round {round}"
        );
        assert!(!part.exists());
        std::fs::remove_file(&target).unwrap();
    }
    assert!(resumed_rounds > 0, "no round left a .part to resume");
}

#[tokio::test]
async fn law12_a_digest_or_length_mismatch_fails_the_commit_and_leaves_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("paper.pdf");
    std::fs::write(&target, b"old version").unwrap();
    let wrong_sha = hex::encode(Sha256::digest(b"something else"));
    for (len, sha) in [(Some(3), None), (None, Some(wrong_sha.as_str()))] {
        let mut b = ArtifactWriter::builder(&target)
            .locks(locks.clone())
            .replace_existing();
        if let Some(len) = len {
            b = b.expected_len(len);
        }
        if let Some(sha) = sha {
            b = b.expected_sha256(sha).unwrap();
        }
        let Artifact::Write(mut w) = b.open().await.unwrap() else {
            panic!("expected to write");
        };
        w.write_all(b"new version").await.unwrap();
        let err = w.commit().await.unwrap_err();
        assert!(matches!(err, LockError::Verification { .. }), "{err}");
        assert!(err.to_string().contains("paper.pdf"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old version");
        assert!(!dir.path().join("paper.pdf.part").exists());
        assert!(support::is_free(&locks, Category::Artifact, &target).await);
    }
}

#[tokio::test]
async fn no_space_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("huge.bin");
    let err = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .expected_len(u64::MAX / 2)
        .open()
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InsufficientSpace { .. }), "{err}");
    assert!(err.to_string().contains("huge.bin"), "{err}");
    assert!(!dir.path().join("huge.bin.part").exists());
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_runs_out_of_room_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big.bin");
    let (url, _served) = serve(4 << 20, Duration::ZERO).await;
    let mut child = spawn("fetch_fsize", &[arg(dir.path()), url, arg(&target)]);
    let said = tokio::task::spawn_blocking(move || {
        let said = child.read();
        child.finish();
        said
    })
    .await
    .unwrap();
    assert!(said.starts_with("error: "), "{said}");
    assert!(said.contains("big.bin.part"), "{said}");
    assert!(said.to_lowercase().contains("too large"), "{said}");
    assert!(!target.exists());
    assert!(!dir.path().join("big.bin.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_at_random_points_leaves_old_or_new_and_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("weights.bin");
    let old = vec![1u8; 300_000];
    std::fs::write(&target, &old).unwrap();
    let handles: Vec<_> = (0..80)
        .map(|i| {
            let (locks, target) = (locks.clone(), target.clone());
            let wait = Duration::from_micros(rand::rng().random_range(0..20_000));
            tokio::spawn(async move {
                let work = async {
                    let Artifact::Write(mut w) = ArtifactWriter::builder(&target)
                        .locks(locks)
                        .replace_existing()
                        .open()
                        .await?
                    else {
                        unreachable!()
                    };
                    for _ in 0..30 {
                        w.write_all(&[(i % 250) as u8 + 2; 10_000]).await.unwrap();
                    }
                    w.commit().await
                };
                let _ = tokio::time::timeout(wait, work).await;
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || !dir
            .path()
            .join("weights.bin.part")
            .exists()),
        "a stray .part remained"
    );
    let g = locks
        .acquire(Category::Artifact, &target)
        .timeout(Duration::from_secs(5))
        .await
        .expect("nothing left holding the lock");
    drop(g);
    let now = std::fs::read(&target).unwrap();
    assert_eq!(now.len(), 300_000, "never mixed lengths");
    assert!(now.iter().all(|b| *b == now[0]), "never mixed content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_appends_the_manifest_row_before_the_artifact_lock_goes() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .order_check(OrderCheck::Error)
        .build()
        .unwrap();
    let target = dir.path().join("paper.pdf");
    let manifest = JsonlSink::builder(dir.path().join("manifest.jsonl"))
        .locks(locks.clone())
        .open()
        .await
        .unwrap();
    let Artifact::Write(mut writer) = ArtifactWriter::builder(&target)
        .locks(locks.clone())
        .compute_sha256()
        .open()
        .await
        .unwrap()
    else {
        panic!("expected to write");
    };
    writer.write_all(b"%PDF").await.unwrap();
    let (report, still_locked) = writer
        .commit_then(|report| {
            let (manifest, locks, target) = (manifest.clone(), locks.clone(), target.clone());
            let row = serde_json::json!({"path": report.path, "sha256": report.sha256, "bytes": report.bytes});
            async move {
                // The artifact is in place and still locked while the row goes in.
                assert!(target.exists());
                let other = tokio::spawn(async move { locks.try_lock(Category::Artifact, &target).await });
                let still_locked = other.await.unwrap()?.is_none();
                manifest.append(&row).await?;
                Ok(still_locked)
            }
        })
        .await
        .unwrap();
    assert!(still_locked, "the artifact lock was held during the step");
    assert_eq!(
        report.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(b"%PDF")).as_str())
    );
    let rows = std::fs::read_to_string(dir.path().join("manifest.jsonl")).unwrap();
    assert!(rows.contains("paper.pdf"), "{rows}");
    assert!(support::is_free(&locks, Category::Artifact, &target).await);
}

/// An `open` dropped while it prepares the `.part` (here: hashing a large
/// leftover to resume from) must not leave the `.part` behind, and must hold
/// the lock until the preparation is over and cleaned up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dropped_mid_preparation_leaves_no_part_and_the_lock_free() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let target = dir.path().join("weights.bin");
    let part = dir.path().join("weights.bin.part");
    // Large enough that hashing it outlasts the first poll of the timeout.
    support::leave_part_of(dir.path(), &target, 32 << 20);
    let open = ArtifactWriter::builder(&target)
        .locks(locks.clone())
        .leftover(Leftover::Resume)
        .compute_sha256()
        .open();
    let dropped = tokio::time::timeout(Duration::from_millis(5), open).await;
    assert!(dropped.is_err(), "the preparation should still be running");
    // The preparation holds the lock until it has cleaned up after itself.
    // (Asked from another task: this one still owns the abandoned guard
    // until it drops, and would be refused as a self-deadlock.)
    let (lock_target, lock_part) = (target.clone(), part.clone());
    let part_seen = tokio::spawn(async move {
        let guard = locks
            .acquire(Category::Artifact, &lock_target)
            .timeout(Duration::from_secs(60))
            .await
            .expect("the lock is released after the cleanup");
        let seen = lock_part.exists();
        drop(guard);
        seen
    })
    .await
    .unwrap();
    assert!(
        !part_seen,
        "the abandoned .part was removed before the lock was let go"
    );
    assert!(!part.exists());
    assert!(!target.exists());
}

/// `stream::iter(urls).map(download).buffer_unordered(8)` runs every
/// download in one task: two of them on one target are sibling futures,
/// not a nested acquire, and the second must wait for the first and find
/// the artifact present, not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_unordered_over_duplicate_targets_in_one_task_writes_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks_in(dir.path());
    let targets: Vec<_> = (0..40)
        .map(|i| dir.path().join(format!("file-{}", i % 10)))
        .collect();
    let outcomes: Vec<Result<&str, LockError>> = futures::stream::iter(targets)
        .map(|target| {
            let locks = locks.clone();
            async move {
                match ArtifactWriter::builder(&target).locks(locks).open().await? {
                    Artifact::Write(mut w) => {
                        w.write_all(b"body").await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        w.commit().await?;
                        Ok("written")
                    }
                    Artifact::AlreadyPresent(_) => Ok("present"),
                    Artifact::Busy => Ok("busy"),
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut count = HashMap::new();
    for outcome in outcomes {
        *count
            .entry(outcome.expect("no download fails"))
            .or_insert(0) += 1;
    }
    assert_eq!(count.get("written"), Some(&10), "{count:?}");
    assert_eq!(count.get("present"), Some(&30), "{count:?}");
}

/// A `.part` left by a writer killed mid-stream, for a target another
/// writer has committed since: under the artifact lock it belongs to
/// nobody, so finding the target present removes it. (Issue "Nothing
/// lost", item 4: it stayed forever.)
#[tokio::test]
async fn a_leftover_part_of_a_present_target_is_removed_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("paper.pdf");
    let part = dir.path().join("paper.pdf.part");
    support::leave_part_of(dir.path(), &target, 3);
    assert!(part.exists());
    std::fs::write(&target, b"whole").unwrap();
    let opened = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .open()
        .await
        .unwrap();
    assert!(matches!(opened, Artifact::AlreadyPresent(_)));
    assert!(!part.exists(), "the leftover .part is gone");
    assert_eq!(std::fs::read(&target).unwrap(), b"whole");
}

/// A symlink planted at `<target>.part` must not redirect a download's
/// bytes into the file it points to. (Issue "Nothing lost", item 9.)
#[tokio::test]
async fn a_symlink_planted_at_the_part_path_is_refused_and_its_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("model.bin.part")).unwrap();
    let result = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .leftover(Leftover::Resume)
        .open()
        .await;
    let err = result.unwrap_err();
    assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
    assert!(err.to_string().contains("model.bin.part"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// An error means "not written": once the artifact is renamed into place and
/// the step (its manifest row) ran, a failure to remove the lock file on
/// release is logged, not returned, so the step's result is not lost and a
/// retry does not add a second row. Root may remove files anywhere, so as
/// root the check runs in a child that drops to `nobody`.
#[test]
fn a_release_error_after_commit_then_does_not_hide_the_committed_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if !support::is_root() {
        expect_commit_stands(&data);
        return;
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o1777)).unwrap();
    support::run_as_nobody(
        dir.path(),
        "release_error_child",
        &[("ASYNC_FILELOCK_TEST_DATA", &data)],
    );
}

/// Runs the check above when started by it as `nobody`.
#[test]
fn release_error_child() {
    if let Some(data) = std::env::var_os("ASYNC_FILELOCK_TEST_DATA") {
        expect_commit_stands(Path::new(&data));
    }
}

/// Commits an artifact whose step makes the lock dir read-only (so the
/// release cannot remove the lock file), and expects the step's result.
fn expect_commit_stands(data: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lock_dir = data.join("locks");
    let locks = Locks::builder().lock_dir(&lock_dir).build().unwrap();
    let target = data.join("model.bin");
    let outcome = rt.block_on(async {
        let Artifact::Write(mut w) = ArtifactWriter::builder(&target)
            .locks(locks)
            .open()
            .await
            .unwrap()
        else {
            panic!("expected to write");
        };
        w.write_all(b"weights").await.unwrap();
        w.commit_then(|_| async {
            std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o500))
                .map_err(|e| LockError::from_source(&lock_dir, e))?;
            Ok("manifest row")
        })
        .await
    });
    std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, row) = outcome.expect("the commit and its step succeeded");
    assert_eq!(row, "manifest row");
    // The release did fail: the lock file it was to remove is still there.
    let left = std::fs::read_dir(&lock_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("lock".as_ref()))
        .count();
    assert_eq!(left, 1, "the release was to fail removing the lock file");
    assert_eq!(std::fs::read(&target).unwrap(), b"weights");
}

/// A file called `<target>.part` that this crate did not make (an artifact
/// whose own name ends in `.part`, a user's file) is not a leftover: it is
/// never removed or resumed, and a write that would need its name is
/// refused naming it. (Issue "Nothing lost", item 9.)
#[tokio::test]
async fn a_real_file_named_like_a_part_is_never_taken_for_a_leftover() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("notes.txt");
    let real = dir.path().join("notes.txt.part");
    std::fs::write(&real, b"a real file").unwrap();
    // Present target: the real file stays.
    std::fs::write(&target, b"whole").unwrap();
    let opened = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .open()
        .await
        .unwrap();
    assert!(matches!(opened, Artifact::AlreadyPresent(_)));
    assert_eq!(std::fs::read(&real).unwrap(), b"a real file");
    // A write (discarding or resuming leftovers) is refused, naming it.
    for leftover in [Leftover::Discard, Leftover::Resume] {
        let err = ArtifactWriter::builder(&target)
            .locks(locks_in(dir.path()))
            .replace_existing()
            .leftover(leftover)
            .open()
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::InvalidTarget { .. }), "{err}");
        assert!(err.to_string().contains("notes.txt.part"), "{err}");
        assert_eq!(std::fs::read(&real).unwrap(), b"a real file");
    }
    // The artifact literally named `notes.txt.part` is written as any other.
    let mut w = writer(
        ArtifactWriter::builder(&real)
            .locks(locks_in(dir.path()))
            .replace_existing(),
    )
    .await;
    w.write_all(b"new").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(std::fs::read(&real).unwrap(), b"new");
}

/// A leftover of this crate (its marker in the lock dir) is resumed, and a
/// commit removes the marker with the `.part`.
#[tokio::test]
async fn a_marked_leftover_is_resumed_and_its_marker_goes_with_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data.bin");
    support::leave_part_of(dir.path(), &target, 100);
    let markers = || {
        std::fs::read_dir(dir.path().join("locks"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("part".as_ref()))
            .count()
    };
    assert_eq!(markers(), 1);
    let mut w = writer(
        ArtifactWriter::builder(&target)
            .locks(locks_in(dir.path()))
            .leftover(Leftover::Resume),
    )
    .await;
    assert_eq!(w.resume_from(), 100);
    w.write_all(&[6u8; 10]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 110);
    assert_eq!(markers(), 0);
}

/// A marker outlives its `.part` (an operator removed the `.part` by hand
/// after a crash); a real file later made at that name is not the one the
/// marker names, and is never taken for a leftover. (Found in review.)
#[tokio::test]
async fn a_stale_marker_never_claims_a_new_file_of_its_parts_name() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x");
    let part = dir.path().join("x.part");
    support::leave_part_of(dir.path(), &target, 10);
    std::fs::remove_file(&part).unwrap();
    // The artifact literally named `x.part`, written through the crate.
    let mut w = writer(ArtifactWriter::builder(&part).locks(locks_in(dir.path()))).await;
    w.write_all(b"real").await.unwrap();
    w.commit().await.unwrap();
    let err = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .open()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("x.part"), "{err}");
    assert_eq!(std::fs::read(&part).unwrap(), b"real");
    // With the target present too, the real file stays.
    std::fs::write(&target, b"whole").unwrap();
    let opened = ArtifactWriter::builder(&target)
        .locks(locks_in(dir.path()))
        .open()
        .await
        .unwrap();
    assert!(matches!(opened, Artifact::AlreadyPresent(_)));
    assert_eq!(std::fs::read(&part).unwrap(), b"real");
}

/// The writer `builder` opens, which must be to write (not present, not
/// busy).
async fn writer(builder: async_filelock::ArtifactWriterBuilder) -> ArtifactWriter {
    match builder.open().await.unwrap() {
        Artifact::Write(w) => w,
        other => panic!("expected to write, got {other:?}"),
    }
}
