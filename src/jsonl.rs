//! [`JsonlSink`]: append-only JSONL files shared by many tasks and
//! processes: whole lines, group commit, rotation by rename, torn-tail repair.
//!
//! Every write happens under the sink's lock (manifest or telemetry), in
//! append mode, as one `write` of whole lines. Appends from many tasks of a
//! process are group-committed: while one batch is being written, later
//! records queue and go out together in the next write, under one lock hold
//! and one fsync. One committer per sink does the commits, on the blocking
//! pool, taking the lock there so that it is held only for the write.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::atomic::{sync_dir, with_guard};
use crate::backend::WaitControl;
use crate::{Category, LockError, Locks};

/// How long the committer waits for more records before it leaves the
/// blocking pool thread.
const LINGER: Duration = Duration::from_millis(1);

/// When a commit reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never fsync: the OS writes back when it likes. Lines are still whole
    /// and ordered; a power cut may lose the latest ones.
    Never,
    /// fsync every commit (one per group of records): `append` returns when
    /// the record is on disk.
    EveryCommit,
    /// fsync a commit only if the last fsync is older than this.
    AtMostEvery(Duration),
}

/// When the current file is rotated (`name.jsonl` → `name.0001.jsonl`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file would exceed this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate before the file would exceed this many records.
    pub max_records: Option<u64>,
}

/// What a sink has done, for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records written.
    pub records: u64,
    /// Writes (one per group commit).
    pub commits: u64,
    /// fsyncs of the file.
    pub fsyncs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Rotations this sink made.
    pub rotations: u64,
    /// Torn last lines (left by a crash mid-write) found and cut off.
    pub torn_tails_repaired: u64,
    /// Bytes cut off with them.
    pub torn_bytes_cut: u64,
    /// Byte offset where the last torn line began.
    pub last_torn_offset: Option<u64>,
}

/// Options of a [`JsonlSink`]; from [`JsonlSink::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until opened"]
pub struct JsonlSinkBuilder {
    path: PathBuf,
    category: Category,
    fsync: FsyncPolicy,
    rotation: Rotation,
    locks: Option<Locks>,
    max_pending: usize,
}

impl JsonlSinkBuilder {
    /// The lock category: [`Category::Manifest`] (default) or
    /// [`Category::Telemetry`].
    pub fn category(mut self, category: Category) -> Self {
        self.category = category;
        self
    }

    /// When commits are fsynced (default [`FsyncPolicy::EveryCommit`]).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Rotate before the file exceeds `bytes`.
    pub fn rotate_bytes(mut self, bytes: u64) -> Self {
        self.rotation.max_bytes = Some(bytes);
        self
    }

    /// Rotate before the file exceeds `records` lines.
    pub fn rotate_records(mut self, records: u64) -> Self {
        self.rotation.max_records = Some(records);
        self
    }

    /// The handle whose locks the sink takes (default [`Locks::global`]).
    pub fn locks(mut self, locks: Locks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// How many records may wait for a commit before `append` waits too
    /// (backpressure; default 65,536).
    pub fn max_pending(mut self, records: usize) -> Self {
        self.max_pending = records.max(1);
        self
    }

    /// Opens the sink: takes the lock once to create the file and repair a
    /// torn last line left by a crash.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTarget`] for a directory or a category other than
    /// manifest or telemetry; lock and I/O errors naming the path.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases the lock; a torn-tail repair in progress completes under it.
    pub async fn open(self) -> Result<JsonlSink, LockError> {
        if !matches!(self.category, Category::Manifest | Category::Telemetry) {
            return Err(LockError::invalid_target(
                &self.path,
                format!(
                    "a JSONL sink takes the manifest or telemetry lock, not {}",
                    self.category
                ),
            ));
        }
        let locks = match self.locks {
            Some(locks) => locks,
            None => Locks::global()?,
        };
        let guard = locks.lock(self.category, &self.path).await?;
        let path = guard.target().to_path_buf();
        let shared = Arc::new(Shared {
            path: path.clone(),
            fsync: self.fsync,
            rotation: self.rotation,
            file: Mutex::new(None),
            stats: Mutex::new(SinkStats::default()),
        });
        let opening = Arc::clone(&shared);
        with_guard(guard, move |_| opening.prepare().map(drop)).await?;
        Ok(JsonlSink {
            inner: Arc::new(Inner {
                locks,
                category: self.category,
                path,
                shared,
                pending: Mutex::new(Pending::default()),
                idle: Notify::new(),
                more: std::sync::Condvar::new(),
                permits: Semaphore::new(self.max_pending),
                max_pending: self.max_pending,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// An async JSONL sink. `append` takes `&self`, and the sink is a cheap
/// `Clone`, so one sink serves many tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::JsonlSink;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("manifest.jsonl");
/// let sink = JsonlSink::open(&path).await?;
/// sink.append(&serde_json::json!({"id": 1, "ok": true})).await?;
/// sink.append_batch(&[serde_json::json!({"id": 2}), serde_json::json!({"id": 3})]).await?;
/// sink.close().await?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct JsonlSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    locks: Locks,
    category: Category,
    path: PathBuf,
    shared: Arc<Shared>,
    pending: Mutex<Pending>,
    /// Told when the committer finds nothing left to do.
    idle: Notify,
    /// Wakes a lingering committer when a record is queued.
    more: std::sync::Condvar,
    permits: Semaphore,
    max_pending: usize,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    queue: VecDeque<Entry>,
    /// Whether a committer task is running; it takes everything queued,
    /// batch after batch, until the queue is empty.
    committing: bool,
    /// Whether the committer is waiting on `Inner::more` for records.
    lingering: bool,
    /// The committer's lock wait, and its thread: cancelled when the last
    /// queued record is withdrawn, so that a wait nobody needs any more
    /// (every append dropped, as at runtime shutdown) ends at once instead
    /// of holding a blocking-pool thread, and the runtime's shutdown, until
    /// the lock is granted.
    waiting: Option<(Arc<WaitControl>, std::thread::Thread)>,
    /// Commits finished, and the error of the latest if it failed: `close`
    /// reports a failure of the commits that ran while it waited.
    rounds: u64,
    last_error: Option<LockError>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    lines: Vec<u8>,
    records: u64,
    done: oneshot::Sender<Result<(), LockError>>,
}

/// State the commit closure (on the blocking pool) needs.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    fsync: FsyncPolicy,
    rotation: Rotation,
    file: Mutex<Option<OpenFile>>,
    stats: Mutex<SinkStats>,
}

/// The open current file and what this process knows of it.
#[derive(Debug)]
struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    /// Size and record count as of our last look.
    size: u64,
    records: u64,
    last_sync: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JsonlSink {
    /// Options for a sink on `path`.
    pub fn builder(path: impl AsRef<Path>) -> JsonlSinkBuilder {
        JsonlSinkBuilder {
            path: path.as_ref().to_path_buf(),
            category: Category::Manifest,
            fsync: FsyncPolicy::EveryCommit,
            rotation: Rotation::default(),
            locks: None,
            max_pending: 65_536,
        }
    }

    /// A sink on `path` with the defaults: manifest lock from the default
    /// [`Locks`], fsync every commit, no rotation.
    ///
    /// # Errors
    ///
    /// As [`JsonlSinkBuilder::open`].
    ///
    /// # Cancel safety
    ///
    /// As [`JsonlSinkBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<JsonlSink, LockError> {
        JsonlSink::builder(path).open().await
    }

    /// The file the sink appends to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the sink has done so far.
    pub fn stats(&self) -> SinkStats {
        *lock(&self.inner.shared.stats)
    }

    /// Appends one record as one line. Returns when the line is in the file
    /// (and on disk, per the fsync policy).
    ///
    /// # Errors
    ///
    /// [`LockError::Json`] if the record does not serialise (nothing is
    /// written for it); lock and I/O errors of the commit it went out in.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before the record went into a
    /// commit, the record is not written; after, it is written whole. It is
    /// never written in part.
    pub async fn append<T: Serialize + ?Sized>(&self, record: &T) -> Result<(), LockError> {
        let mut lines = serde_json::to_vec(record).map_err(|source| LockError::Json {
            op: "serialize record for",
            path: self.inner.path.clone(),
            source,
        })?;
        lines.push(b'\n');
        self.submit(lines, 1).await
    }

    /// Appends records as consecutive lines in one commit. If any record
    /// does not serialise, none is written.
    ///
    /// # Errors
    ///
    /// As [`JsonlSink::append`].
    ///
    /// # Cancel safety
    ///
    /// As [`JsonlSink::append`]: the batch is written whole or not at all.
    pub async fn append_batch<T: Serialize>(&self, records: &[T]) -> Result<(), LockError> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(|source| LockError::Json {
                op: "serialize record for",
                path: self.inner.path.clone(),
                source,
            })?;
            lines.push(b'\n');
        }
        if records.is_empty() {
            return Ok(());
        }
        self.submit(lines, records.len() as u64).await
    }

    async fn submit(&self, lines: Vec<u8>, records: u64) -> Result<(), LockError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(LockError::io(
                "append to",
                &inner.path,
                io::Error::new(io::ErrorKind::BrokenPipe, "the sink is closed"),
            ));
        }
        let wanted = u32::try_from(records.min(inner.max_pending as u64)).unwrap_or(u32::MAX);
        let permit = inner
            .permits
            .acquire_many(wanted)
            .await
            .map_err(|e| LockError::io("queue record for", &inner.path, io::Error::other(e)))?;
        let (done, result) = oneshot::channel();
        let (id, start_committer) = {
            let mut pending = lock(&inner.pending);
            let id = pending.next_id;
            pending.next_id += 1;
            pending.queue.push_back(Entry {
                id,
                lines,
                records,
                done,
            });
            let start = !pending.committing;
            pending.committing = true;
            if pending.lingering {
                inner.more.notify_one();
            }
            (id, start)
        };
        if start_committer {
            let committer = Arc::clone(inner);
            tokio::task::spawn_blocking(move || run_committer(committer));
        }
        // Dropped before the committer took it: take it back out.
        let withdraw = Withdraw {
            inner,
            id: Some(id),
        };
        let outcome = result.await.unwrap_or_else(|_| {
            Err(LockError::io(
                "append to",
                &inner.path,
                io::Error::other("its commit was abandoned (the runtime shut down)"),
            ))
        });
        withdraw.disarm();
        drop(permit);
        outcome
    }

    /// Drains the queue and refuses further appends.
    ///
    /// # Errors
    ///
    /// The error of the final commit, if it failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the records already queued are committed whether or not
    /// this future is polled to the end.
    pub async fn close(&self) -> Result<(), LockError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        let rounds_before = lock(&inner.pending).rounds;
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            // Registered before looking, so a committer that finishes
            // between the look and the await still wakes us.
            idle.as_mut().enable();
            {
                let pending = lock(&inner.pending);
                if !pending.committing {
                    let ran = pending.rounds > rounds_before;
                    return match &pending.last_error {
                        Some(e) if ran => Err(e.duplicate()),
                        _ => Ok(()),
                    };
                }
            }
            idle.await;
        }
    }
}

/// The sink's committer: at most one per sink, on the blocking pool,
/// started by the first append that finds none running. Each round it takes
/// the lock, then everything queued by then (records that arrived while it
/// waited for the lock join the batch), writes it as one `write` with at most
/// one fsync, lets go of the lock and replies to each append; it goes round
/// until the queue is empty. Group commit without a leader election, with no
/// thread hand-off between the lock grant and the write, and an append that
/// is dropped never abandons anyone else's record.
fn run_committer(inner: Arc<Inner>) {
    loop {
        let ctl = WaitControl::new();
        {
            let mut pending = lock(&inner.pending);
            if pending.queue.is_empty() {
                // Appenders just answered usually queue again within
                // microseconds: wait a little for them rather than leave and
                // be started again (a blocking-pool hand-off per commit).
                pending.lingering = true;
                pending = inner
                    .more
                    .wait_timeout_while(pending, LINGER, |p| p.queue.is_empty())
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                pending.lingering = false;
            }
            if pending.queue.is_empty() {
                pending.committing = false;
                drop(pending);
                inner.idle.notify_waiters();
                return;
            }
            // Set under the same lock as the look at the queue, so that the
            // withdrawal of its last record always finds the wait to cancel.
            pending.waiting = Some((Arc::clone(&ctl), std::thread::current()));
        }
        let locked =
            crate::acquire::acquire_blocking(&inner.locks, inner.category, &inner.path, &ctl);
        let mut pending = lock(&inner.pending);
        pending.waiting = None;
        let guard = match locked {
            // Cancelled: every record of the round was withdrawn (the runtime
            // may be shutting down). Records queued since then start a new
            // round; none of them hears of this wait.
            Ok(None) => continue,
            Ok(Some(guard)) => Ok(guard),
            Err(e) => Err(e),
        };
        // Everything queued by now, including what came while we waited.
        let mut batch: Vec<Entry> = pending.queue.drain(..).collect();
        drop(pending);
        if batch.is_empty() {
            // Withdrawn after the lock was granted: nothing to write.
            continue;
        }
        let result = guard.and_then(|guard| {
            // Moved, not copied: each entry keeps only its reply channel.
            let chunks: Vec<(Vec<u8>, u64)> = batch
                .iter_mut()
                .map(|e| (std::mem::take(&mut e.lines), e.records))
                .collect();
            let written = inner.shared.write_batch(&chunks);
            // Let go before replying: another process may go at once.
            guard.release_blocking_or_warn();
            written
        });
        // Recorded before anyone hears back, so a `close` called after an
        // append returned knows this commit ran before it.
        {
            let mut pending = lock(&inner.pending);
            pending.rounds += 1;
            pending.last_error = result.as_ref().err().map(LockError::duplicate);
        }
        for entry in batch {
            let _ = entry
                .done
                .send(result.as_ref().map(|_| ()).map_err(LockError::duplicate));
        }
    }
}

/// Removes a queued record whose `append` was dropped before any commit
/// took it.
struct Withdraw<'a> {
    inner: &'a Inner,
    id: Option<u64>,
}

impl Withdraw<'_> {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut pending = lock(&self.inner.pending);
            pending.queue.retain(|e| e.id != id);
            if pending.queue.is_empty()
                && let Some((ctl, thread)) = &pending.waiting
            {
                ctl.cancel();
                thread.unpark();
            }
        }
    }
}

impl Shared {
    /// Under the lock: makes sure `file` is the current file (another
    /// process may have rotated it), repairs a torn tail, and returns it.
    fn prepare(&self) -> Result<MutexGuard<'_, Option<OpenFile>>, LockError> {
        let path = &self.path;
        let mut slot = lock(&self.file);
        let at_path = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(LockError::invalid_target(path, "it is a directory"));
            }
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LockError::io("inspect", path, e)),
        };
        // The file at the path is ours: its size is in hand. Otherwise it
        // was rotated (or removed) since: open the current one.
        let (size, fresh) = match (&*slot, &at_path) {
            (Some(f), Some(meta)) if f.dev == meta.dev() && f.ino == meta.ino() => {
                (meta.len(), false)
            }
            _ => {
                let opened = open_current(path, self.rotation.max_records.is_some())?;
                let size = opened.size;
                *slot = Some(opened);
                (size, true)
            }
        };
        let Some(open) = slot.as_mut() else {
            return Err(LockError::io("open", path, io::Error::other("no file")));
        };
        // Only a file someone else wrote since our last look can end torn:
        // our own writes end with a newline or fail (and leave the size
        // differing from the one we keep).
        let unseen = fresh || size != open.size;
        if size != open.size {
            // Others appended (whole lines, under the lock) since we looked.
            // Their lines are counted only if a record limit needs the count:
            // reading them back would cost every commit as much as writing.
            if self.rotation.max_records.is_some() {
                let from = if size < open.size { 0 } else { open.size };
                let seen = if size < open.size { 0 } else { open.records };
                open.records = seen
                    + count_lines(&open.file, from, size)
                        .map_err(|e| LockError::io("read", path, e))?;
            }
            open.size = size;
        }
        let torn = if unseen {
            repair_torn_tail(&open.file, open.size).map_err(|e| LockError::io("repair", path, e))?
        } else {
            None
        };
        if let Some(cut) = torn {
            tracing::warn!(path = %path.display(), offset = cut.0, bytes = cut.1, "cut off a torn last line left by a crash");
            open.size = cut.0;
            let mut stats = lock(&self.stats);
            stats.torn_tails_repaired += 1;
            stats.torn_bytes_cut += cut.1;
            stats.last_torn_offset = Some(cut.0);
        }
        Ok(slot)
    }

    /// Under the lock: writes the chunks (each whole lines), rotating where
    /// a limit would be crossed.
    fn write_batch(&self, chunks: &[(Vec<u8>, u64)]) -> Result<(), LockError> {
        let path = &self.path;
        let mut slot = self.prepare()?;
        let mut rest = chunks;
        while !rest.is_empty() {
            let Some(open) = slot.as_mut() else {
                return Err(LockError::io("open", path, io::Error::other("no file")));
            };
            let fit = self.fitting(open, rest);
            if fit == 0 {
                // Not even one more record fits in a non-empty file.
                self.rotate(&mut slot)?;
                continue;
            }
            let (now, later) = rest.split_at(fit);
            let mut bytes = Vec::with_capacity(now.iter().map(|(b, _)| b.len()).sum());
            for (chunk, _) in now {
                bytes.extend_from_slice(chunk);
            }
            let records: u64 = now.iter().map(|(_, r)| r).sum();
            (&open.file)
                .write_all(&bytes)
                .map_err(|e| LockError::io("append to", path, e))?;
            open.size += bytes.len() as u64;
            open.records += records;
            let fsynced = self.maybe_sync(open)?;
            let mut stats = lock(&self.stats);
            stats.records += records;
            stats.bytes += bytes.len() as u64;
            stats.commits += 1;
            stats.fsyncs += u64::from(fsynced);
            rest = later;
        }
        Ok(())
    }

    /// How many of `chunks` go into the current file before a limit; at
    /// least one if the file is empty.
    fn fitting(&self, open: &OpenFile, chunks: &[(Vec<u8>, u64)]) -> usize {
        let (mut size, mut records) = (open.size, open.records);
        let mut n = 0;
        for (bytes, count) in chunks {
            let over_bytes = self
                .rotation
                .max_bytes
                .is_some_and(|m| size + bytes.len() as u64 > m);
            let over_records = self
                .rotation
                .max_records
                .is_some_and(|m| records + count > m);
            if (over_bytes || over_records) && (size > 0 || n > 0) {
                break;
            }
            size += bytes.len() as u64;
            records += count;
            n += 1;
        }
        n
    }

    fn maybe_sync(&self, open: &mut OpenFile) -> Result<bool, LockError> {
        let due = match self.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryCommit => true,
            FsyncPolicy::AtMostEvery(d) => open.last_sync.elapsed() >= d,
        };
        if due {
            open.file
                .sync_data()
                .map_err(|e| LockError::io("fsync", &self.path, e))?;
            open.last_sync = Instant::now();
        }
        Ok(due)
    }

    /// `name.jsonl` → `name.NNNN.jsonl` (next free number), then a fresh file.
    fn rotate(&self, slot: &mut MutexGuard<'_, Option<OpenFile>>) -> Result<(), LockError> {
        let path = &self.path;
        if let Some(open) = slot.as_ref() {
            open.file
                .sync_data()
                .map_err(|e| LockError::io("fsync before rotating", path, e))?;
        }
        let to = rotated_path(path, next_rotation_number(path)?);
        std::fs::rename(path, &to).map_err(|e| LockError::io("rotate (rename)", path, e))?;
        **slot = Some(open_current(path, self.rotation.max_records.is_some())?);
        sync_dir(path.parent().unwrap_or(Path::new("/")))?;
        lock(&self.stats).rotations += 1;
        tracing::info!(path = %path.display(), to = %to.display(), "rotated");
        Ok(())
    }
}

fn open_current(path: &Path, count_records: bool) -> Result<OpenFile, LockError> {
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EISDIR) => LockError::invalid_target(path, "it is a directory"),
            _ => LockError::io("open for appending", path, e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| LockError::io("inspect", path, e))?;
    let records = if count_records {
        count_lines(&file, 0, meta.len()).map_err(|e| LockError::io("read", path, e))?
    } else {
        0
    };
    Ok(OpenFile {
        file,
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        records,
        last_sync: Instant::now(),
    })
}

/// Newlines in `file[from..to]`.
fn count_lines(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, mut n) = (from, 0u64);
    while at < to {
        let want = ((to - at) as usize).min(buf.len());
        let got = file.read_at(&mut buf[..want], at)?;
        if got == 0 {
            break;
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        at += got as u64;
    }
    Ok(n)
}

/// If the file does not end with a newline, cuts it back to just after the
/// last one; returns (offset, bytes cut).
fn repair_torn_tail(file: &File, size: u64) -> io::Result<Option<(u64, u64)>> {
    if size == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(Some((keep, size - keep)))
}

/// `dir/name.0007.jsonl` for `dir/name.jsonl` and 7.
pub(crate) fn rotated_path(path: &Path, n: u64) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n:04}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n:04}"),
    };
    path.with_file_name(name)
}

/// The rotation numbers present for `path`, sorted.
pub(crate) fn rotation_numbers(path: &Path) -> Result<Vec<u64>, LockError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut numbers = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LockError::io("list directory", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(stem.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if middle.len() >= 4
            && middle.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = middle.parse::<u64>()
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn next_rotation_number(path: &Path) -> Result<u64, LockError> {
    Ok(rotation_numbers(path)?.last().map_or(1, |n| n + 1))
}
