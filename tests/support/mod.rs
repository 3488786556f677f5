//! Child processes for multi-process tests.
//!
//! A test binary re-runs itself as a child: `spawn(role, args)` starts
//! `current_exe() child_entry --exact` with the role and its arguments in the
//! environment, and the binary's `child_entry` test calls [`child_entry`],
//! which runs the role and exits. Children talk to the parent with lines on
//! stdout (`ready`, results) and take orders as lines on stdin.
#![allow(dead_code)]

pub mod exhaustion;
pub mod hot;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use async_filelock::{Category, LockError, Locks};

const ROLE_VAR: &str = "ASYNC_FILELOCK_TEST_ROLE";
const ARGS_VAR: &str = "ASYNC_FILELOCK_TEST_ARGS";

/// A running child process with its pipes.
pub struct Worker {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// Starts this test binary again as a child running `role` with `args`.
pub fn spawn(role: &str, args: &[String]) -> Worker {
    spawn_with_env(role, args, &[])
}

/// [`spawn`] with more environment variables for the child.
pub fn spawn_with_env(role: &str, args: &[String], envs: &[(&str, &str)]) -> Worker {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .envs(envs.iter().copied())
        .args([
            "child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join("\u{1f}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    Worker {
        child,
        stdin,
        stdout,
    }
}

impl Worker {
    /// The next line the role printed with [`say`], skipping test-harness
    /// noise. Panics if the child exits first.
    pub fn read(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read child stdout");
            assert!(n > 0, "child exited before saying anything more");
            if let Some(msg) = line.trim_end().strip_prefix("@@ ") {
                return msg.to_owned();
            }
        }
    }

    /// Waits for the child to say `ready`.
    pub fn wait_ready(&mut self) {
        let msg = self.read();
        assert_eq!(msg, "ready", "child said {msg:?}");
    }

    /// Sends one line to the child.
    pub fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("child stdin open");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes stdin (children holding locks release and exit) and waits.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait child");
        assert!(status.success(), "child failed: {status}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a `hold` child: MODE (`shared`/`exclusive`) locks of CATEGORY on
/// every target, with lock files in `dir/locks`.
pub fn spawn_holder(dir: &Path, mode: &str, category: &str, targets: &[&Path]) -> Worker {
    let mut args = vec![path_arg(dir), mode.to_owned(), category.to_owned()];
    args.extend(targets.iter().map(|t| path_arg(t)));
    spawn("hold", &args)
}

/// A path as a child argument (temp paths are UTF-8).
pub fn path_arg(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// Prints a message for the parent.
pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {msg}");
    let _ = out.flush();
}

/// Blocks until the parent sends a line (or closes stdin: `None`).
pub fn hear() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

/// A multi-thread runtime with two workers, the size of the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `Locks` with its lock files in `dir/locks`, and the rest of its
/// settings from the environment (so that a child can be told to use
/// another backend with `ASYNC_FILELOCK_BACKEND`).
pub fn locks_in(dir: &Path) -> Locks {
    Locks::builder()
        .env()
        .expect("environment")
        .lock_dir(dir.join("locks"))
        .build()
        .expect("locks")
}

/// A `Locks` like [`locks_in`] whose `category` removes (or keeps) its lock
/// files on release.
pub fn locks_removing(dir: &Path, category: Category, remove: bool) -> Locks {
    Locks::builder()
        .lock_dir(dir.join("locks"))
        .remove_on_release(category, remove)
        .build()
        .expect("locks")
}

/// The role and arguments this process was started with by [`spawn`], if
/// it is such a child.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let raw = std::env::var(ARGS_VAR).unwrap_or_default();
    Some((role, raw.split('\u{1f}').map(str::to_owned).collect()))
}

/// Runs a child's role on a fresh runtime and exits the process: 0 if it
/// succeeded, 1 (saying why on stderr) if not.
pub fn run_child<F, Fut>(role: &str, run: F) -> !
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), LockError>>,
{
    let rt = runtime();
    let result = rt.block_on(run());
    if let Err(e) = result {
        eprintln!("child {role} failed: {e}");
        std::process::exit(1);
    }
    drop(rt);
    std::process::exit(0);
}

/// Proves the caller alone inside its lock (an `O_EXCL` marker it creates
/// and removes) while it bumps the number in `counter` read-modify-write,
/// pausing `pause` in between so that a second holder would be caught.
/// [`in_dir`] gives the usual two paths.
pub fn bump_counter_alone((marker, counter): (PathBuf, PathBuf), pause: Duration) {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .expect("marker already present: two holders at once");
    let n: u64 = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::thread::sleep(pause);
    std::fs::write(&counter, format!("{}\n", n + 1)).expect("write counter");
    std::fs::remove_file(&marker).expect("remove marker");
}

/// The marker and counter of [`bump_counter_alone`] in `dir`.
pub fn in_dir(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("inside"), dir.join("counter"))
}

/// The counter [`bump_counter_alone`] keeps in `dir` (see [`in_dir`]).
pub fn counter_in(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("counter"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the requested role and exits the process, if this process is a child.
pub fn child_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    run_child(&role.clone(), || async move {
        match role.as_str() {
            "append" => append(&args).await,
            "hold" => hold(&args).await,
            "churn" => churn(&args).await,
            "increment" => increment(&args).await,
            "rewrite" => rewrite(&args).await,
            "sqlite" => sqlite(&args).await,
            "jsonl_append" => jsonl_append(&args).await,
            "jsonl_acks" => jsonl_acks(&args).await,
            "fetch" => {
                let outcome = fetch(
                    &locks_in(Path::new(&args[0])),
                    &args[1],
                    Path::new(&args[2]),
                    args[3].parse().expect("len"),
                    &args[4],
                )
                .await?;
                say(outcome);
                Ok(())
            }
            "fetch_fsize" => fetch_fsize(&args).await,
            "lock_without_room" => lock_without_room(&args).await,
            "jsonl_out_of_room" => jsonl_out_of_room(&args).await,
            "leave_part" => leave_part(&args).await,
            "on_network_fs" => on_network_fs(&args).await,
            "network_fs_stalled" => network_fs_stalled(&args),
            "jsonl_refilled" => jsonl_refilled(&args).await,
            "nofile" => exhaustion::nofile(&args).await,
            "nofile_hot" => exhaustion::nofile_hot(&args).await,
            "hold_linger" => hot::hold_linger(&args).await,
            "event_waiter" => hot::event_waiter(&args).await,
            "nofile_waits" => exhaustion::nofile_waits(&args).await,
            "hold_numbered" => exhaustion::hold_numbered(&args).await,
            "fsize_writers" => exhaustion::fsize_writers(&args).await,
            "full_disk_fsize" => exhaustion::full_disk_fsize(&args).await,
            other => panic!("unknown role {other}"),
        }
    });
}

fn category(s: &str) -> Category {
    s.parse().expect("category")
}

/// `append DIR FILE COUNT ID`: COUNT times, take the exclusive manifest lock
/// and append one line in two separate writes with a yield in between, so
/// that without the lock lines would tear.
async fn append(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let file = PathBuf::from(&args[1]);
    let count: usize = args[2].parse().expect("count");
    let id = &args[3];
    let locks = locks_in(&dir);
    say("ready");
    for i in 0..count {
        let guard = locks.lock(Category::Manifest, &file).await?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&file)
            .expect("open data file");
        f.write_all(format!("{{\"writer\":\"{id}\",").as_bytes())
            .expect("write");
        tokio::task::yield_now().await;
        f.write_all(format!("\"seq\":{i}}}\n").as_bytes())
            .expect("write");
        drop(f);
        guard.release().await?;
    }
    Ok(())
}

/// `hold DIR MODE CATEGORY TARGET...`: take MODE (`shared`/`exclusive`) locks
/// on every target, say `ready`, and hold them until stdin says `release` or
/// closes; then say `released` and exit.
async fn hold(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let shared = args[1] == "shared";
    let cat = category(&args[2]);
    let locks = locks_in(&dir);
    let mut guards = Vec::new();
    for target in &args[3..] {
        let acquire = locks.acquire(cat, target).wait_forever();
        let acquire = if shared { acquire.shared() } else { acquire };
        guards.push(acquire.await?);
    }
    say("ready");
    let _ = tokio::task::spawn_blocking(hear).await;
    drop(guards);
    say("released");
    Ok(())
}

/// `churn DIR TARGET COUNT`: COUNT times take the exclusive artifact lock
/// (whose file is removed on every release), prove nobody else is inside by
/// creating a marker with O_EXCL, bump a counter file read-modify-write,
/// then remove the marker and release.
async fn churn(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let target = PathBuf::from(&args[1]);
    let count: usize = args[2].parse().expect("count");
    let locks = Locks::builder()
        .lock_dir(dir.join("locks"))
        .remove_on_release(Category::Artifact, true)
        .wait_forever(Category::Artifact)
        .build()?;
    say("ready");
    for _ in 0..count {
        let guard = locks.lock(Category::Artifact, &target).await?;
        bump_counter_alone(in_dir(&dir), Duration::from_micros(50));
        guard.release().await?;
    }
    Ok(())
}

/// `increment DIR FILE COUNT`: COUNT read-modify-write increments of the
/// counter in the JSON state FILE.
async fn increment(args: &[String]) -> Result<(), LockError> {
    let locks = locks_in(Path::new(&args[0]));
    let count: usize = args[2].parse().expect("count");
    say("ready");
    for _ in 0..count {
        async_filelock::update_json_with(&locks, &args[1], |n: &mut u64| *n += 1).await?;
    }
    Ok(())
}

/// `rewrite DIR FILE`: replaces FILE with big JSON documents, alternating
/// "a" and "b" fillers, until killed; says `ready` after the first.
async fn rewrite(args: &[String]) -> Result<(), LockError> {
    let locks = locks_in(Path::new(&args[0]));
    let docs = [big_doc('a'), big_doc('b')];
    for i in 0.. {
        async_filelock::write_atomic_with(&locks, &args[1], docs[i % 2].clone()).await?;
        if i == 0 {
            say("ready");
        }
    }
    Ok(())
}

/// A JSON document of about 1 MiB whose content is all `fill`.
pub fn big_doc(fill: char) -> Vec<u8> {
    format!("{{\"fill\":\"{}\"}}", fill.to_string().repeat(1 << 20)).into_bytes()
}

/// `sqlite DIR DB ROWS ID`: inserts ROWS rows in batches of 100, each batch
/// one transaction under the SQLite lock, with SQLite's own busy timeout
/// off, so any "database is locked" would surface as an error.
async fn sqlite(args: &[String]) -> Result<(), LockError> {
    let locks = locks_in(Path::new(&args[0]));
    let db = PathBuf::from(&args[1]);
    let rows: usize = args[2].parse().expect("rows");
    let id = args[3].clone();
    let conn = rusqlite::Connection::open(&db).expect("open db");
    conn.busy_timeout(Duration::ZERO).expect("busy timeout");
    {
        let _guard = locks.lock(Category::Sqlite, &db).await?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .expect("wal");
        conn.execute_batch("CREATE TABLE IF NOT EXISTS rows (writer TEXT, n INTEGER)")
            .expect("create table");
    }
    say("ready");
    let conn = std::sync::Arc::new(std::sync::Mutex::new(conn));
    for batch in 0..rows / 100 {
        let guard = locks.lock(Category::Sqlite, &db).await?;
        let (conn, id) = (conn.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("conn");
            let tx = conn.transaction().expect("begin: database is locked?");
            for n in 0..100 {
                tx.execute(
                    "INSERT INTO rows VALUES (?1, ?2)",
                    rusqlite::params![id, (batch * 100 + n) as i64],
                )
                .expect("insert: database is locked?");
            }
            tx.commit().expect("commit: database is locked?");
        })
        .await
        .expect("batch");
        guard.release().await?;
    }
    Ok(())
}

/// `jsonl_append DIR PATH COUNT ID ROTATE_BYTES TASKS`: TASKS tasks append
/// COUNT records in all, `{"w":ID,"i":n}`, to a sink rotating at
/// ROTATE_BYTES.
async fn jsonl_append(args: &[String]) -> Result<(), LockError> {
    let count: usize = args[2].parse().expect("count");
    let tasks: usize = args[5].parse().expect("tasks");
    let mut builder = async_filelock::JsonlSink::builder(&args[1])
        .locks(locks_in(Path::new(&args[0])))
        .fsync(async_filelock::FsyncPolicy::Never);
    // 0: no rotation.
    let rotate: u64 = args[4].parse().expect("rotate bytes");
    if rotate > 0 {
        builder = builder.rotate_bytes(rotate);
    }
    let sink = builder.open().await?;
    say("ready");
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (sink, id) = (sink.clone(), args[3].clone());
            tokio::spawn(async move {
                for n in (t..count).step_by(tasks) {
                    sink.append(&serde_json::json!({"w": id, "i": n})).await?;
                }
                Ok::<_, LockError>(())
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task")?;
    }
    sink.close().await?;
    // How many commits ran on an appender's own thread (the lock free at
    // once), the others on the sink's committer thread.
    say(&format!("inline {}", sink.stats().inline_commits));
    Ok(())
}

/// `jsonl_acks DIR PATH`: appends 64 KiB records forever, saying `acked N`
/// after each append returned; for kill -9 tests. (A kill rarely lands
/// inside a write; repair of a torn line has its own deterministic test.)
async fn jsonl_acks(args: &[String]) -> Result<(), LockError> {
    // No fsync: a killed process's writes survive in the page cache.
    let sink = async_filelock::JsonlSink::builder(&args[1])
        .locks(locks_in(Path::new(&args[0])))
        .fsync(async_filelock::FsyncPolicy::Never)
        .open()
        .await?;
    say("ready");
    let pad = "x".repeat(64 * 1024);
    for n in 0u64.. {
        sink.append(&serde_json::json!({"n": n, "pad": pad}))
            .await?;
        say(&format!("acked {n}"));
    }
    Ok(())
}

/// Fetches `url` into `target` under the artifact lock, verifying length
/// and SHA-256, resuming a leftover `.part` with an HTTP Range request.
/// Returns "downloaded", "present" or "busy".
pub async fn fetch(
    locks: &Locks,
    url: &str,
    target: &Path,
    len: u64,
    sha256: &str,
) -> Result<&'static str, LockError> {
    use async_filelock::{Artifact, ArtifactWriter, Leftover};
    let open = ArtifactWriter::builder(target)
        .locks(locks.clone())
        .expected_len(len)
        .expected_sha256(sha256)?
        .leftover(Leftover::Resume)
        .open()
        .await?;
    let writer = match open {
        Artifact::Write(w) => w,
        Artifact::AlreadyPresent(_) => return Ok("present"),
        Artifact::Busy => return Ok("busy"),
    };
    let mut request = reqwest::Client::new().get(url);
    if writer.resume_from() > 0 {
        request = request.header(
            reqwest::header::RANGE,
            format!("bytes={}-", writer.resume_from()),
        );
    }
    let source = |e: reqwest::Error| LockError::from_source(target, e);
    let response = request
        .send()
        .await
        .map_err(source)?
        .error_for_status()
        .map_err(source)?;
    writer.download(response.bytes_stream()).await?;
    Ok("downloaded")
}

/// `fetch_fsize DIR URL TARGET`: fetches with a 1 MiB file size limit
/// (RLIMIT_FSIZE, SIGXFSZ ignored) and no expected length, and says the
/// error it got.
async fn fetch_fsize(args: &[String]) -> Result<(), LockError> {
    // SAFETY: plain libc calls on this process's own limits and signals.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let target = PathBuf::from(&args[2]);
    let locks = locks_in(Path::new(&args[0]));
    let writer = async_filelock::ArtifactWriter::builder(&target)
        .locks(locks)
        .open()
        .await?;
    let async_filelock::Artifact::Write(writer) = writer else {
        panic!("expected to write");
    };
    let response = reqwest::get(&args[1]).await.expect("get");
    match writer.download(response.bytes_stream()).await {
        Ok(_) => say("no error"),
        Err(e) => say(&format!("error: {e}")),
    }
    Ok(())
}

/// Takes an artifact lock on `args[1]` in a process that may not grow any
/// file (`RLIMIT_FSIZE` 0, as on a full disk), then says what happened.
async fn lock_without_room(args: &[String]) -> Result<(), LockError> {
    // SAFETY: plain libc calls on this process's own limits and signals.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let locks = locks_in(Path::new(&args[0]));
    match locks.lock(Category::Artifact, &args[1]).await {
        Ok(guard) => {
            guard.release().await?;
            say("locked");
        }
        Err(e) => say(&format!("error: {e}")),
    }
    Ok(())
}

/// `leave_part DIR TARGET BYTES`: writes BYTES bytes into the target's
/// `.part` and exits at once, as a writer killed mid-stream would: the
/// `.part` (and its marker) stay behind.
async fn leave_part(args: &[String]) -> Result<(), LockError> {
    use tokio::io::AsyncWriteExt;
    let bytes: usize = args[2].parse().expect("bytes");
    let opened = async_filelock::ArtifactWriter::builder(&args[1])
        .locks(locks_in(Path::new(&args[0])))
        .open()
        .await?;
    let async_filelock::Artifact::Write(mut writer) = opened else {
        panic!("expected to write");
    };
    writer
        .write_all(&vec![5u8; bytes])
        .await
        .map_err(|e| LockError::from_source(writer.part_path(), e))?;
    writer
        .flush()
        .await
        .map_err(|e| LockError::from_source(writer.part_path(), e))?;
    say("left");
    std::process::exit(0);
}

/// `on_network_fs DIR`: three manifest locks and five appends to a JSONL
/// sink in DIR (rotating every two records, never asked to fsync); says how
/// many attempts ran off the runtime thread, then how many times the sink
/// opened its file and how many fsyncs it made.
pub async fn on_network_fs(args: &[String]) -> Result<(), LockError> {
    let dir = Path::new(&args[0]);
    let locks = locks_in(dir);
    let log = dir.join("log.jsonl");
    for _ in 0..3 {
        locks
            .lock(Category::Manifest, &log)
            .await?
            .release()
            .await?;
    }
    say(&locks
        .metrics()
        .category(Category::Manifest)
        .off_runtime
        .to_string());
    let sink = async_filelock::JsonlSink::builder(&log)
        .locks(locks.clone())
        .rotate_records(2)
        .fsync(async_filelock::FsyncPolicy::Never)
        .open()
        .await?;
    for i in 0..5 {
        sink.append(&serde_json::json!({ "i": i })).await?;
    }
    sink.close().await?;
    let stats = sink.stats();
    say(&format!("{} {}", stats.opens, stats.fsyncs));
    Ok(())
}

/// `network_fs_stalled DIR` (DIR named a network filesystem): on a runtime
/// whose one blocking thread is busy, as it would be with a hung server, a
/// lock with a 200 ms timeout; says `timeout` if it ended with its timeout
/// before the blocking thread came free (it is freed after at most 60 s).
pub fn network_fs_stalled(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let said = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let locks = Locks::builder()
                .lock_dir(dir.join("locks"))
                .timeout(Category::Manifest, Duration::from_millis(200))
                .build()?;
            let (free, freed) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || {
                let _ = freed.recv_timeout(Duration::from_secs(60));
            });
            let outcome = locks.lock(Category::Manifest, dir.join("m.jsonl")).await;
            let _ = free.send(());
            busy.await.expect("blocking task");
            Ok::<_, LockError>(match outcome {
                Err(e) if e.is_timeout() => "timeout".to_owned(),
                Err(e) => format!("error: {e}"),
                Ok(_) => "granted only once the blocking thread came free".to_owned(),
            })
        })
    })
    .join()
    .expect("thread")?;
    say(&said);
    Ok(())
}

/// `jsonl_refilled DIR` (DIR named a network filesystem): three appends to
/// a sink rotating every ten records, then the file is cut and refilled in
/// place with ten lines (as logrotate's copytruncate and another writer
/// would), then one more append; says how many rotations the sink made.
pub async fn jsonl_refilled(args: &[String]) -> Result<(), LockError> {
    let dir = Path::new(&args[0]);
    let log = dir.join("log.jsonl");
    let sink = async_filelock::JsonlSink::builder(&log)
        .locks(locks_in(dir))
        .rotate_records(10)
        .open()
        .await?;
    let pad = "x".repeat(100);
    for i in 0..3 {
        sink.append(&serde_json::json!({ "i": i, "pad": pad }))
            .await?;
    }
    // Nine short lines, then a long one: ten records, most of their
    // newlines before the size the sink last saw.
    let mut lines: String = (0..9).map(|i| format!("{{\"o\":{i}}}\n")).collect();
    lines.push_str(&format!("{{\"o\":9,\"pad\":\"{}\"}}\n", "y".repeat(400)));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open log");
    file.set_len(0).expect("truncate");
    std::os::unix::fs::FileExt::write_all_at(&file, lines.as_bytes(), 0).expect("refill");
    drop(file);
    sink.append(&serde_json::json!({ "i": 3 })).await?;
    sink.close().await?;
    say(&sink.stats().rotations.to_string());
    Ok(())
}

/// Leaves a `.part` of `bytes` bytes for `target`, as a killed writer of
/// this crate would (see `leave_part`).
pub fn leave_part_of(dir: &Path, target: &Path, bytes: usize) {
    let mut child = spawn(
        "leave_part",
        &[path_arg(dir), path_arg(target), bytes.to_string()],
    );
    assert_eq!(child.read(), "left");
    child.finish();
}

/// Limits this process's files to `limit` bytes (`RLIMIT_FSIZE`; a write
/// past it fails with `EFBIG` after writing what fits, as on a full disk).
pub fn limit_file_size(limit: u64) {
    // SAFETY: plain libc calls on this process's own limits and signals.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

/// `jsonl_out_of_room DIR LOG SCENARIO`: appends to a log in a process whose
/// files may not grow past 1,000 bytes, and says `ok ID` or `err ID` for
/// each record, as the append answered.
///
/// * `batch`: one 900-byte record, then a batch of twenty 100-byte records
///   (900 bytes of which would fit).
/// * `rotation` (rotating at 1,500 bytes): one 900-byte record, then, in one
///   commit, a 50-byte record (fits, then the file is rotated) and a
///   1,200-byte one (fits in no file).
async fn jsonl_out_of_room(args: &[String]) -> Result<(), LockError> {
    use async_filelock::{Category, JsonlSink};
    limit_file_size(1000);
    let locks = locks_in(Path::new(&args[0]));
    let sink = JsonlSink::builder(&args[1])
        .locks(locks.clone())
        .rotate_bytes(1500)
        .open()
        .await?;
    let record = |id: &str, len: usize| {
        let pad = "x".repeat(len - 20 - id.len());
        serde_json::json!({"id": id, "pad": pad})
    };
    let answer = |id: &str, r: Result<(), LockError>| match r {
        Ok(()) => say(&format!("ok {id}")),
        Err(e) => say(&format!("err {id} {e}")),
    };
    answer("first", sink.append(&record("first", 900)).await);
    match args[2].as_str() {
        "batch" => {
            let batch: Vec<_> = (0..20).map(|i| record(&format!("b{i:02}"), 100)).collect();
            answer("batch", sink.append_batch(&batch).await);
        }
        "rotation" => {
            // Held while both appends queue, so they go out in one commit.
            let held = locks.lock(Category::Manifest, &args[1]).await?;
            let (small, big) = (sink.clone(), sink.clone());
            // Small first: queued behind it, the big record fails after
            // the small one is written (the other order writes neither).
            let small = tokio::spawn(async move { small.append(&record("small", 50)).await });
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let big = tokio::spawn(async move { big.append(&record("big", 1200)).await });
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            held.release().await?;
            answer("small", small.await.expect("task"));
            answer("big", big.await.expect("task"));
        }
        other => panic!("unknown scenario {other}"),
    }
    say("done");
    Ok(())
}

/// Runs `test` (a test of this binary) in a copy of this binary as user
/// `nobody`, with `envs`: for checks that root's permission override would
/// defeat. The copy lives in `dir` (made world-readable) because the
/// checkout may sit where `nobody` cannot enter.
pub fn run_as_nobody(dir: &Path, test: &str, envs: &[(&str, &Path)]) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // Sticky, as /tmp: `nobody` may create here, and a lock dir here is one
    // others may not rename away (law 10).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod dir");
    let exe = dir.join("test-binary");
    let me = std::env::current_exe().expect("exe");
    // A hard link opens no descriptor for writing; a copy does, and a child
    // forked meanwhile by another test inherits it, making exec fail with
    // ETXTBSY until that child execs: hence the retries below.
    if std::fs::hard_link(&me, &exe).is_err() {
        std::fs::copy(&me, &exe).expect("copy test binary");
    }
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
    let mut cmd = Command::new(&exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .current_dir(dir)
        .uid(65534)
        .gid(65534);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut tries = 0;
    let status = loop {
        match cmd.status() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.expect("run as nobody"),
        }
    };
    assert!(status.success(), "{test} as nobody: {status}");
}

/// Whether this process runs as root (which ignores permission bits).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Threads of this process blocked in the kernel's file-lock wait, counted
/// from `/proc/self/task/*/wchan`: an independent check of how many blocking
/// threads wait for OS locks.
pub fn threads_in_flock_wait() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("wchan"))
                .map(|w| w.contains("lock_inode_wait") || w.contains("flock"))
                .unwrap_or(false)
        })
        .count()
}

/// Polls `cond` every 10 ms for up to `limit`; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `target`'s lock in `category` is free: a try succeeds (and lets
/// go at once).
pub async fn is_free(locks: &Locks, category: Category, target: impl AsRef<Path>) -> bool {
    locks
        .try_lock(category, target)
        .await
        .expect("try_lock")
        .is_some()
}

/// Whether the process's count of blocking-pool threads waiting for an OS
/// lock reaches `n` within `limit`.
/// The OS backend's process-wide counters, as `locks` reports them.
pub fn os_metrics(locks: &Locks) -> async_filelock::OsMetrics {
    *locks
        .metrics()
        .backend()
        .os()
        .expect("these tests run on the OS backend")
}

pub fn blocking_waits_reach(locks: &Locks, n: u64, limit: Duration) -> bool {
    eventually(limit, || os_metrics(locks).kernel_waits_now == n)
}

/// Queues a task for `target`'s manifest lock, tells `holder` to release,
/// and checks that the task is granted the lock. The 10 s bound is generous:
/// it catches a hand-over that never happens, not a slow one.
pub async fn granted_after_release(locks: &Locks, target: &Path, holder: &mut Worker) {
    let waiter = tokio::spawn({
        let (locks, target) = (locks.clone(), target.to_path_buf());
        async move { locks.lock(Category::Manifest, &target).wait_forever().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.tell("release");
    let guard = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("granted after the holder released")
        .expect("waiter task")
        .expect("lock");
    drop(guard);
}

/// Tracing output captured as text, for tests that check what the crate
/// logs. Install with `tracing::subscriber::set_default(log.subscriber())`
/// on the thread that runs the code (a current-thread runtime).
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || log.clone())
            .finish()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Python process holding `flock` locks on the given lock files: a
/// holder that is not this crate. `release` lets go of all of them at once.
pub struct PythonHolder {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

const PYTHON_HOLDER: &str = r#"
import fcntl, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
paths = [p for p in open(sys.argv[1]).read().split("\n") if p]
want = len(paths) + 64
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
fds = []
for p in paths:
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX if sys.argv[2] == "exclusive" else fcntl.LOCK_SH)
    fds.append(fd)
print("held", flush=True)
sys.stdin.readline()
for fd in fds:
    os.close(fd)
print("released", flush=True)
sys.stdin.readline()
"#;

impl PythonHolder {
    /// Starts `python3` holding `lock_paths` in `mode` (`exclusive` or
    /// `shared`); returns once it holds them all.
    pub fn hold(dir: &Path, lock_paths: &[PathBuf], mode: &str) -> PythonHolder {
        let list = dir.join(format!("python-holder-{}.txt", std::process::id()));
        let text: Vec<String> = lock_paths.iter().map(|p| path_arg(p)).collect();
        std::fs::write(&list, text.join("\n")).expect("write the holder's list");
        for p in lock_paths {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("lock dir");
            }
        }
        let mut child = Command::new("python3")
            .args(["-c", PYTHON_HOLDER])
            .arg(&list)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("python holder");
        assert_eq!(line.trim(), "held", "python holder said {line:?}");
        PythonHolder { child, stdout }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets go of every lock at once (closing the descriptors).
    pub fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin).expect("tell python holder");
        stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("python holder");
        assert_eq!(line.trim(), "released", "python holder said {line:?}");
    }
}

impl Drop for PythonHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Threads of this process now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Raises this process's soft descriptor limit to at least `n` (up to the
/// hard limit), for tests that keep thousands of lock files open.
pub fn raise_fd_limit(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < n) {
        limit.current = Some(limit.maximum.map_or(n, |m| m.min(n)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Runs `work` on a thread and says whether it finished while a holder
/// that never lets go on its own still holds its locks: within a minute,
/// which only a hang exceeds. An ordering check, not a speed check.
pub fn finishes_while_held(work: impl FnOnce() + Send + 'static) -> bool {
    let done = std::thread::spawn(work);
    eventually(Duration::from_secs(60), || done.is_finished())
}
