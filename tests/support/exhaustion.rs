//! Roles and checks of `tests/exhaustion.rs`: resources run out in a child
//! process (its descriptor or file-size limit) or on a filesystem of the
//! test's own (a small tmpfs), never in the test binary shared by the
//! rest of the suite.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_filelock::{
    Artifact, ArtifactWriter, Category, FsyncPolicy, JsonlSink, LockError, Locks, Versioned,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use super::{hear, locks_in, say};

/// Sets both limits of `resource` (the hard one too: the crate raises the
/// soft descriptor limit to the hard one when its first event wait starts).
pub fn set_limit(resource: Resource, soft: Option<u64>, hard: Option<u64>) {
    setrlimit(
        resource,
        Rlimit {
            current: soft,
            maximum: hard,
        },
    )
    .expect("setrlimit");
}

/// Ignores `SIGXFSZ`, so that a write past `RLIMIT_FSIZE` fails with
/// `EFBIG` instead of killing the process.
pub fn ignore_sigxfsz() {
    // SAFETY: a plain libc call installing SIG_IGN for one signal.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Opens `/dev/null` until the process is out of descriptors (`EMFILE`),
/// adding the descriptors to `fillers`.
pub fn fill_descriptors(fillers: &mut Vec<File>) {
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                return;
            }
        }
        assert!(fillers.len() < 100_000, "no descriptor limit in force");
    }
}

/// The `id` of every line of a JSONL file, asserting that the file holds
/// only whole lines (each ends with a newline and parses).
pub fn jsonl_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line: ...{:?}",
        path.display(),
        &text[text.len().saturating_sub(40)..]
    );
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{}: a line that is not whole JSON ({e}): {:?}",
                    path.display(),
                    &line[..line.len().min(60)]
                )
            });
            v["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

/// Temp files `write_atomic` may leave beside `target`
/// (`.{name}.{random}.tmp`).
pub fn temps_of(target: &Path) -> Vec<PathBuf> {
    let name = target.file_name().unwrap().to_str().unwrap();
    let prefix = format!(".{name}.");
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".tmp")
        })
        .collect()
}

/// `<target>.part`.
pub fn part_of(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

/// The bytes downloaded as `label`'s artifact: 48 KiB in chunks of 16.
pub fn artifact_bytes(label: &str) -> Vec<Vec<u8>> {
    (0..3u8)
        .map(|i| {
            let mut chunk = format!("{label}-{i}:").into_bytes();
            chunk.resize(16 << 10, b'a' + i);
            chunk
        })
        .collect()
}

/// Opens an artifact writer on `target` and downloads `chunks` through it.
pub async fn download(locks: &Locks, target: &Path, chunks: Vec<Vec<u8>>) -> Result<(), LockError> {
    let Artifact::Write(writer) = ArtifactWriter::builder(target)
        .locks(locks.clone())
        .open()
        .await?
    else {
        panic!("{} is present or busy", target.display());
    };
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, io::Error>));
    writer.download(stream).await.map(drop)
}

/// The writers of one directory, and what their files must hold: each
/// operation is checked against the file after it ran (an error means
/// "not written": the old content, no temp file, no `.part`, no record).
pub struct Writers {
    pub dir: PathBuf,
    pub locks: Locks,
    pub sink: JsonlSink,
    pub log: PathBuf,
    pub summary: PathBuf,
    pub state: PathBuf,
    /// What `summary` holds now.
    summary_now: Vec<u8>,
    /// What `state` holds now.
    state_now: Versioned<String>,
}

/// What each operation of [`Writers::run_each`] returned.
pub type Outcomes = Vec<(&'static str, Result<(), LockError>)>;

impl Writers {
    /// Files in `dir`, each written once, with room to spare.
    pub async fn set_up(dir: &Path, locks: &Locks) -> Writers {
        let log = dir.join("manifest.jsonl");
        let summary = dir.join("summary.json");
        let state = dir.join("state.json");
        let sink = JsonlSink::builder(&log)
            .locks(locks.clone())
            .fsync(FsyncPolicy::EveryCommit)
            .open()
            .await
            .expect("open sink");
        sink.append(&serde_json::json!({"id": "set-up"}))
            .await
            .expect("first append");
        let summary_now = br#"{"summary":"set-up"}"#.to_vec();
        async_filelock::write_atomic_with(locks, &summary, summary_now.clone())
            .await
            .expect("first write_atomic");
        async_filelock::update_json_with(locks, &state, |s: &mut String| *s = "set-up".into())
            .await
            .expect("first update_json");
        Writers {
            dir: dir.to_path_buf(),
            locks: locks.clone(),
            sink,
            log,
            summary,
            state,
            summary_now,
            state_now: Versioned {
                revision: 1,
                data: "set-up".into(),
            },
        }
    }

    /// Runs each operation once, tagged `label`: a lock, an artifact
    /// download, a JSONL append of `pad` bytes, a `write_atomic` and an
    /// `update_json` each of about `pad` bytes. Checks nothing: the files
    /// may not be readable now (see [`Writers::check`]).
    pub async fn run_each(&self, label: &str, pad: usize) -> Outcomes {
        let filler = "p".repeat(pad);
        let lock = match self
            .locks
            .lock(Category::Manifest, self.dir.join("locked.bin"))
            .await
        {
            Ok(guard) => guard.release().await,
            Err(e) => Err(e),
        };
        let artifact = download(
            &self.locks,
            &self.dir.join(format!("artifact-{label}.bin")),
            artifact_bytes(label),
        )
        .await;
        let append = self
            .sink
            .append(&serde_json::json!({"id": label, "pad": filler}))
            .await;
        let atomic = async_filelock::write_atomic_with(
            &self.locks,
            &self.summary,
            format!(r#"{{"summary":"{label}","pad":"{filler}"}}"#),
        )
        .await;
        let update = {
            let new = format!("{label}{filler}");
            async_filelock::update_json_with(&self.locks, &self.state, move |s: &mut String| {
                *s = new
            })
            .await
            .map(drop)
        };
        vec![
            ("lock", lock),
            ("artifact", artifact),
            ("append", append),
            ("write_atomic", atomic),
            ("update_json", update),
        ]
    }

    /// Checks the files against `outcomes` of [`Writers::run_each`] with
    /// `label` and `pad`: what succeeded is there, whole; what failed left
    /// the old content and nothing partial.
    pub fn check(&mut self, label: &str, pad: usize, outcomes: &Outcomes) {
        let filler = "p".repeat(pad);
        for (op, outcome) in outcomes {
            let ok = outcome.is_ok();
            let err = outcome.as_ref().err().map(ToString::to_string);
            match *op {
                "lock" => {}
                "artifact" => {
                    let target = self.dir.join(format!("artifact-{label}.bin"));
                    assert!(
                        !part_of(&target).exists(),
                        "{label}: a .part is left ({err:?})"
                    );
                    if ok {
                        let want: Vec<u8> = artifact_bytes(label).concat();
                        assert_eq!(std::fs::read(&target).unwrap(), want, "{label}");
                    } else {
                        assert!(
                            !target.exists(),
                            "{label}: the download failed ({err:?}) yet its artifact is in place"
                        );
                    }
                }
                "append" => {
                    let ids = jsonl_ids(&self.log);
                    let n = ids.iter().filter(|id| *id == label).count();
                    assert_eq!(
                        n,
                        usize::from(ok),
                        "{label}: append returned {err:?}, the record is in the file {n} times"
                    );
                }
                "write_atomic" => {
                    assert_eq!(temps_of(&self.summary), Vec::<PathBuf>::new(), "{label}");
                    let now = std::fs::read(&self.summary).unwrap();
                    if ok {
                        self.summary_now =
                            format!(r#"{{"summary":"{label}","pad":"{filler}"}}"#).into_bytes();
                    }
                    assert!(
                        now == self.summary_now,
                        "{label}: write_atomic returned {err:?}; the file holds {}",
                        String::from_utf8_lossy(&now[..now.len().min(60)])
                    );
                }
                "update_json" => {
                    assert_eq!(temps_of(&self.state), Vec::<PathBuf>::new(), "{label}");
                    let now: Versioned<String> =
                        serde_json::from_slice(&std::fs::read(&self.state).unwrap())
                            .expect("state parses");
                    if ok {
                        self.state_now = Versioned {
                            revision: self.state_now.revision + 1,
                            data: format!("{label}{filler}"),
                        };
                    }
                    assert!(
                        now == self.state_now,
                        "{label}: update_json returned {err:?}; the file is at revision {} (expected {})",
                        now.revision,
                        self.state_now.revision
                    );
                }
                other => panic!("unknown operation {other}"),
            }
        }
    }
}

/// Says each outcome as `OP LABEL ok` or `OP LABEL err MESSAGE`.
pub fn say_outcomes(label: &str, outcomes: &Outcomes) {
    for (op, outcome) in outcomes {
        say(&outcome_line(op, label, outcome));
    }
}

/// `nofile DIR LIMIT`: with both descriptor limits at LIMIT, and every
/// descriptor but 0, 1, 2, 3, 4 in use, runs each writer and checks its
/// files; then closes the fillers and runs each again. Says every outcome
/// (see [`say_outcomes`]; labels `free0` … `free4`, then `recovered`),
/// then `done`.
pub async fn nofile(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let limit: u64 = args[1].parse().expect("limit");
    // Every lock opens its lock file here, so that each open meets the
    // limit (`nofile_hot` covers descriptors kept open between holdings).
    async_filelock::set_max_hot_lock_files(0);
    let locks = locks_in(&dir);
    let mut writers = Writers::set_up(&dir, &locks).await;
    set_limit(Resource::Nofile, Some(limit), Some(limit));
    let mut fillers = Vec::new();
    for free in 0..=4 {
        let label = format!("free{free}");
        fill_descriptors(&mut fillers);
        fillers.truncate(fillers.len() - free);
        let outcomes = writers.run_each(&label, 16).await;
        // Reading the files back needs descriptors too.
        fillers.clear();
        writers.check(&label, 16, &outcomes);
        say_outcomes(&label, &outcomes);
    }
    let outcomes = writers.run_each("recovered", 16).await;
    writers.check("recovered", 16, &outcomes);
    say_outcomes("recovered", &outcomes);
    say("done");
    Ok(())
}

/// `nofile_hot DIR LIMIT`: with both descriptor limits at LIMIT, takes and
/// lets go of the manifest lock of `DIR/hot.jsonl` (its descriptor is kept
/// open), takes every descriptor left, then says `again OUTCOME` for the
/// same lock (served by the kept descriptor) and `other OUTCOME` for the
/// lock of `DIR/cold.jsonl` (which needs an open: the kept descriptors are
/// closed to make room), and, while that one is held, `third OUTCOME` for
/// `DIR/third.jsonl` (no kept descriptor left to close); then `done`.
pub async fn nofile_hot(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let limit: u64 = args[1].parse().expect("limit");
    let locks = locks_in(&dir);
    set_limit(Resource::Nofile, Some(limit), Some(limit));
    drop(
        locks
            .lock(Category::Manifest, dir.join("hot.jsonl"))
            .await?,
    );
    let mut fillers = Vec::new();
    fill_descriptors(&mut fillers);
    let outcome = |r: &Result<async_filelock::LockGuard, LockError>| match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err {e}"),
    };
    let again = locks.lock(Category::Manifest, dir.join("hot.jsonl")).await;
    say(&format!("again {}", outcome(&again)));
    drop(again);
    // Held while the third asks: its descriptor cannot be closed for it.
    let other = locks.lock(Category::Manifest, dir.join("cold.jsonl")).await;
    say(&format!("other {}", outcome(&other)));
    let third = locks
        .lock(Category::Manifest, dir.join("third.jsonl"))
        .await;
    say(&format!("third {}", outcome(&third)));
    drop((other, third));
    drop(fillers);
    say("done");
    Ok(())
}

/// `hold_numbered DIR COUNT`: holds the manifest locks of `DIR/paper-N.pdf`
/// for N in 0..COUNT (lock files in `DIR/locks`), says `ready`, and lets go
/// of all of them when stdin says anything or closes; then says `released`.
pub async fn hold_numbered(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let count: usize = args[1].parse().expect("count");
    super::raise_fd_limit(count as u64 + 256);
    let locks = locks_in(&dir);
    let mut guards = Vec::with_capacity(count);
    for target in numbered(&dir, count) {
        guards.push(
            locks
                .lock(Category::Manifest, &target)
                .wait_forever()
                .await?,
        );
    }
    say("ready");
    let _ = tokio::task::spawn_blocking(hear).await;
    drop(guards);
    say("released");
    Ok(())
}

/// `DIR/paper-N.pdf` for N in 0..count.
pub fn numbered(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| dir.join(format!("paper-{i}.pdf")))
        .collect()
}

/// `nofile_waits DIR COUNT LIMIT`: with both descriptor limits at LIMIT,
/// waits (60 s each) for the manifest locks of [`numbered`] targets that
/// another process holds, and lets go of each at once when granted. Says
/// `waiting` once every wait has started or ended, then (after the holder
/// let go) `done OK ERR HUNG`, then each distinct error message as
/// `error MESSAGE`, then `end`.
pub async fn nofile_waits(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let count: usize = args[1].parse().expect("count");
    let limit: u64 = args[2].parse().expect("limit");
    let locks = locks_in(&dir);
    set_limit(Resource::Nofile, Some(limit), Some(limit));
    let ended = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = numbered(&dir, count)
        .into_iter()
        .map(|target| {
            let (locks, ended) = (locks.clone(), Arc::clone(&ended));
            tokio::spawn(async move {
                let result = locks
                    .acquire(Category::Manifest, &target)
                    .timeout(Duration::from_secs(60))
                    .await
                    .map(drop);
                ended.fetch_add(1, Ordering::SeqCst);
                result
            })
        })
        .collect();
    // Every wait started (or already ended): the holder may go.
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let os = super::os_metrics(&locks);
            let waiting = os.kernel_waits_now + os.event_waits_now;
            if waiting as usize + ended.load(Ordering::SeqCst) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the waits never all started");
    say("waiting");
    let (mut ok, mut hung) = (0, 0);
    let mut errors = std::collections::BTreeSet::new();
    for task in tasks {
        // Past the waits' own 60 s deadline: only a hang gets here.
        match tokio::time::timeout(Duration::from_secs(90), task).await {
            Ok(Ok(Ok(()))) => ok += 1,
            Ok(Ok(Err(e))) => {
                errors.insert(e.to_string());
            }
            Ok(Err(panic)) => {
                errors.insert(format!("panic: {panic}"));
            }
            Err(_) => hung += 1,
        }
    }
    let err = count - ok - hung;
    say(&format!("done {ok} {err} {hung}"));
    for e in errors {
        say(&format!("error {e}"));
    }
    say("end");
    Ok(())
}

/// `fsize_writers DIR LIMIT`: with a file-size limit of LIMIT bytes
/// (`RLIMIT_FSIZE`, `SIGXFSZ` ignored), writes past it with each writer,
/// saying every outcome as [`outcome_line`]:
///
/// * `seq N`: 4 KiB records appended one at a time to `DIR/seq.jsonl`
///   until one fails;
/// * `batch N`: 48 tasks appending a 4 KiB record each at once to
///   `DIR/batch.jsonl` (group-committed);
/// * `rotation small`, `rotation big`: one commit to `DIR/rot.jsonl`
///   (rotating at 8 KiB) of a small record, then one of twice LIMIT bytes;
/// * `write_atomic big`: `DIR/summary.json` (holding `old`) replaced by
///   twice LIMIT bytes;
/// * `update_json big`: `DIR/state.json` (revision 1, `"old"`) set to a
///   string of twice LIMIT bytes;
///
/// then `done`.
pub async fn fsize_writers(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let limit: u64 = args[1].parse().expect("limit");
    let locks = locks_in(&dir);
    let summary = dir.join("summary.json");
    let state = dir.join("state.json");
    async_filelock::write_atomic_with(&locks, &summary, "old").await?;
    async_filelock::update_json_with(&locks, &state, |s: &mut String| *s = "old".into()).await?;
    ignore_sigxfsz();
    set_limit(Resource::Fsize, Some(limit), Some(limit));
    let pad = "r".repeat(4 << 10);

    let seq = JsonlSink::builder(dir.join("seq.jsonl"))
        .locks(locks.clone())
        .open()
        .await?;
    for n in 0..1000 {
        let appended = seq
            .append(&serde_json::json!({"id": n.to_string(), "pad": pad}))
            .await;
        say(&outcome_line("seq", &n.to_string(), &appended));
        if appended.is_err() {
            break;
        }
    }

    let batch = JsonlSink::builder(dir.join("batch.jsonl"))
        .locks(locks.clone())
        .open()
        .await?;
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let (batch, pad) = (batch.clone(), pad.clone());
            tokio::spawn(async move {
                batch
                    .append(&serde_json::json!({"id": n.to_string(), "pad": pad}))
                    .await
            })
        })
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        let appended = task.await.expect("append task");
        say(&outcome_line("batch", &n.to_string(), &appended));
    }

    // One commit that rotates between two records: the small one goes into
    // the file that is then rotated, the big one fails in the fresh file.
    let rotating = dir.join("rot.jsonl");
    let rot = JsonlSink::builder(&rotating)
        .locks(locks.clone())
        .rotate_bytes(8 << 10)
        .open()
        .await?;
    let held = locks.lock(Category::Manifest, &rotating).await?;
    let mut tasks = Vec::new();
    for (id, pad) in [("small", 100), ("big", 2 * limit as usize)] {
        let rot = rot.clone();
        tasks.push((
            id,
            tokio::spawn(async move {
                rot.append(&serde_json::json!({"id": id, "pad": "r".repeat(pad)}))
                    .await
            }),
        ));
        // Queued in this order behind the lock held above, so that one
        // commit takes both.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.release().await?;
    for (id, task) in tasks {
        say(&outcome_line(
            "rotation",
            id,
            &task.await.expect("append task"),
        ));
    }

    let big = "b".repeat(2 * limit as usize);
    let replaced = async_filelock::write_atomic_with(&locks, &summary, big.clone()).await;
    say(&outcome_line("write_atomic", "big", &replaced));
    let updated =
        async_filelock::update_json_with(&locks, &state, move |s: &mut String| *s = big).await;
    say(&outcome_line("update_json", "big", &updated.map(drop)));
    say("done");
    Ok(())
}

/// `OP LABEL ok` or `OP LABEL err MESSAGE`.
pub fn outcome_line(op: &str, label: &str, outcome: &Result<(), LockError>) -> String {
    match outcome {
        Ok(()) => format!("{op} {label} ok"),
        Err(e) => format!("{op} {label} err {e}"),
    }
}

/// How [`full_disk`] runs out of room, and gets it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// `dir` is a small tmpfs of its own: a filler file takes every block;
    /// removing it gives them back.
    Tmpfs,
    /// No mount allowed: this process's soft `RLIMIT_FSIZE` goes to 0 (no
    /// file may grow, as on a full disk); raising it again after the
    /// filler's removal stands for the space that removal frees.
    FileSizeLimit,
}

impl Room {
    /// The words of the OS error a write gets when out of room.
    pub fn error_words(self) -> &'static str {
        match self {
            Room::Tmpfs => "No space left on device",
            Room::FileSizeLimit => "File too large",
        }
    }

    fn fill(self, filler: &Path) {
        use std::io::Write;
        let mut f = File::create(filler).expect("create filler");
        let chunk = vec![0u8; 64 << 10];
        match self {
            Room::Tmpfs => loop {
                if let Err(e) = f.write_all(&chunk) {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            },
            Room::FileSizeLimit => {
                f.write_all(&chunk).expect("write filler");
                ignore_sigxfsz();
                let hard = getrlimit(Resource::Fsize).maximum;
                set_limit(Resource::Fsize, Some(0), hard);
            }
        }
    }

    fn freed(self) {
        if self == Room::FileSizeLimit {
            let hard = getrlimit(Resource::Fsize).maximum;
            set_limit(Resource::Fsize, hard, hard);
        }
    }
}

/// A full filesystem at `dir`: new artifact and manifest locks are taken;
/// a JSONL append, `write_atomic`, `update_json` and a download each fail
/// with an error naming their file and leave nothing partial; the filler is
/// removed under its artifact lock; then every writer succeeds again.
pub async fn full_disk(dir: &Path, room: Room) {
    let locks = locks_in(dir);
    let mut writers = Writers::set_up(dir, &locks).await;
    let filler = dir.join("filler.bin");
    room.fill(&filler);

    // New locks, with new lock files whose target record cannot be written.
    for (category, target) in [
        (Category::Artifact, dir.join("new-artifact.bin")),
        (Category::Manifest, dir.join("new-manifest.jsonl")),
    ] {
        let guard = locks
            .lock(category, &target)
            .await
            .unwrap_or_else(|e| panic!("{category} lock on a full disk: {e}"));
        guard.release().await.expect("release");
    }

    // Each writer fails, and leaves what was there. 6 KiB each: more than
    // the slack in the last page of any file.
    let outcomes = writers.run_each("full", 6 << 10).await;
    for (op, outcome) in &outcomes {
        if *op == "lock" {
            outcome.as_ref().expect("a lock on a full disk");
            continue;
        }
        let err = match outcome {
            Ok(()) => panic!("{op} succeeded on a full disk"),
            Err(e) => e.to_string(),
        };
        eprintln!("  {op} on a full disk: {err}");
        assert!(
            err.contains(room.error_words()) && err.contains(dir.to_str().unwrap()),
            "{op}: {err}"
        );
    }
    writers.check("full", 6 << 10, &outcomes);

    // The cleanup that frees space, under the filler's artifact lock.
    let guard = locks
        .lock(Category::Artifact, &filler)
        .await
        .expect("the filler's artifact lock on a full disk");
    tokio::fs::remove_file(&filler)
        .await
        .expect("remove filler");
    guard.release().await.expect("release the filler's lock");
    room.freed();

    let outcomes = writers.run_each("freed", 6 << 10).await;
    for (op, outcome) in &outcomes {
        if let Err(e) = outcome {
            panic!("{op} after the filler was removed: {e}");
        }
    }
    writers.check("freed", 6 << 10, &outcomes);
}

/// `full_disk_fsize DIR`: [`full_disk`] with [`Room::FileSizeLimit`];
/// says `ok`.
pub async fn full_disk_fsize(args: &[String]) -> Result<(), LockError> {
    full_disk(Path::new(&args[0]), Room::FileSizeLimit).await;
    say("ok");
    Ok(())
}

/// The lines `worker` says up to and including `last`, read on a thread of
/// their own: a child that has not said `last` within `limit` (a hang, not
/// a slow child: keep it generous) is killed and the test fails.
pub fn said_until(
    worker: super::Worker,
    last: &str,
    limit: Duration,
) -> (super::Worker, Vec<String>) {
    let pid = worker.pid();
    let last = last.to_owned();
    let reader = std::thread::spawn(move || {
        let mut worker = worker;
        let mut lines = Vec::new();
        loop {
            let line = worker.read();
            let done = line == last;
            lines.push(line);
            if done {
                return (worker, lines);
            }
        }
    });
    if !super::eventually(limit, || reader.is_finished()) {
        // SAFETY: a signal to our own child, which the reader still owns.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        panic!("the child said nothing more for {limit:?}: it hangs");
    }
    reader.join().expect("the child ended before its last line")
}
