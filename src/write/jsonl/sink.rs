//! [`JsonlSink`] and its builder: appends serialise and queue records; the
//! appender that leads a commit, or the committer thread, writes them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, oneshot};

use super::committer::{commits_inline, lead, take_yielded_lead};
use super::file::Shared;
use super::file::lock;
use super::queue::{Entry, Inner, Pending};
use super::{FsyncPolicy, Rotation, SinkStats};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::Locks;
use crate::lock::acquire::{Ask, Engine};
use crate::lock::owner::Owner;
use crate::mode::LockMode;
use crate::write::commit::with_guard;

/// Options of a [`JsonlSink`]; from [`JsonlSink::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{Category, FsyncPolicy, JsonlSink};
/// let sink = JsonlSink::builder(dir.path().join("metrics.jsonl"))
///     .category(Category::Telemetry)
///     .fsync(FsyncPolicy::Never)
///     .rotate_bytes(64 << 20)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until opened"]
pub struct JsonlSinkBuilder {
    path: PathBuf,
    category: Category,
    fsync: FsyncPolicy,
    rotation: Rotation,
    locks: Option<Locks>,
    max_pending: usize,
    token_field: Option<String>,
}

impl JsonlSinkBuilder {
    /// Stamps every record with the fencing token of the commit that writes
    /// it, as the first member `field` of its object (records must then be
    /// JSON objects), and keeps the last in [`SinkStats::last_token`]. A
    /// reader of the log can then drop records of a holder that had lost
    /// its lock (a smaller token after a larger one).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use async_filelock::{JsonlSink, Locks};
    /// let dir = tempfile::tempdir().unwrap();
    /// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let path = dir.path().join("manifest.jsonl");
    /// let sink = JsonlSink::builder(&path).locks(locks).record_token("lock_token").open().await?;
    /// sink.append(&serde_json::json!({"file": "a.pdf"})).await?;
    /// let line = std::fs::read_to_string(&path).unwrap();
    /// let row: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    /// assert_eq!(row["lock_token"], sink.stats().last_token.unwrap().get());
    /// # Ok(()) }
    /// ```
    pub fn record_token(mut self, field: impl Into<String>) -> Self {
        self.token_field = Some(field.into());
        self
    }

    /// The lock category: [`Category::Manifest`] (default) or
    /// [`Category::Telemetry`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Category, JsonlSink};
    /// let sink = JsonlSink::builder(dir.path().join("t.jsonl")).category(Category::Telemetry).open().await?;
    /// let wrong = JsonlSink::builder(dir.path().join("x.jsonl")).category(Category::Sqlite).open().await;
    /// assert!(wrong.is_err(), "manifest or telemetry only");
    /// # Ok(()) }
    /// ```
    pub fn category(mut self, category: Category) -> Self {
        self.category = category;
        self
    }

    /// When commits are fsynced (default [`FsyncPolicy::EveryCommit`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{FsyncPolicy, JsonlSink};
    /// use std::time::Duration;
    /// let sink = JsonlSink::builder(dir.path().join("t.jsonl"))
    ///     .fsync(FsyncPolicy::AtMostEvery(Duration::from_secs(1)))
    ///     .open()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Rotate before the file exceeds `bytes`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::JsonlSink;
    /// let log = dir.path().join("log.jsonl");
    /// let sink = JsonlSink::builder(&log).rotate_bytes(10).open().await?;
    /// sink.append(&"0123456789").await?;
    /// sink.append(&"0123456789").await?;
    /// assert!(dir.path().join("log.0001.jsonl").exists());
    /// # Ok(()) }
    /// ```
    pub fn rotate_bytes(mut self, bytes: u64) -> Self {
        self.rotation.max_bytes = Some(bytes);
        self
    }

    /// Rotate before the file exceeds `records` lines.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::JsonlSink;
    /// let log = dir.path().join("log.jsonl");
    /// let sink = JsonlSink::builder(&log).rotate_records(2).open().await?;
    /// sink.append_batch(&[1, 2]).await?;
    /// sink.append(&3).await?;
    /// assert_eq!(sink.stats().rotations, 1);
    /// # Ok(()) }
    /// ```
    pub fn rotate_records(mut self, records: u64) -> Self {
        self.rotation.max_records = Some(records);
        self
    }

    /// The handle whose locks the sink takes (default [`Locks::global`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::JsonlSink;
    /// let sink = JsonlSink::builder(dir.path().join("m.jsonl")).locks(locks.clone()).open().await?;
    /// sink.append(&"row").await?;
    /// # Ok(()) }
    /// ```
    pub fn locks(mut self, locks: Locks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// How many records may wait for a commit before `append` waits too
    /// (backpressure; default 65,536).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::JsonlSink;
    /// let sink = JsonlSink::builder(dir.path().join("m.jsonl")).max_pending(1024).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn max_pending(mut self, records: usize) -> Self {
        self.max_pending = records.max(1);
        self
    }

    /// Opens the sink: takes the lock once to create the file and repair a
    /// torn last line left by a crash: a last line that is one whole JSON
    /// value (written by another program without its newline) gets its
    /// newline; one that is not (a write cut short) is moved to a side file
    /// `<log>.torn-<offset>` and cut off. A last line ending in a digit is
    /// always set aside: a number cut short still parses (`12` of `123`).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTarget`] for a directory, a symbolic link (never
    /// appended through: the lock guards the link, not where it leads), or a
    /// category other than manifest or telemetry; lock and I/O errors naming
    /// the path.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases the lock; a torn-tail repair in progress completes under it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::JsonlSink;
    /// let log = dir.path().join("m.jsonl");
    /// std::fs::write(&log, "{\"whole\":1}\n{\"torn").unwrap(); // a crash mid-line
    /// let sink = JsonlSink::builder(&log).open().await?;
    /// assert_eq!(sink.stats().torn_tails_repaired, 1);
    /// assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"whole\":1}\n");
    /// # Ok(()) }
    /// ```
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
            // On a network filesystem the file is reopened for each commit:
            // NFS promises close-to-open consistency, not an append
            // position shared between hosts (see `file`).
            reopen_each_commit: crate::mounts::may_hang(&path),
            closed: Mutex::new(None),
            // JSON-encoding a string cannot fail.
            token_field: self
                .token_field
                .map(|f| serde_json::to_string(&f).unwrap_or_default()),
        });
        let opening = Arc::clone(&shared);
        with_guard(guard, move |_| {
            opening.prepare().map(drop)?;
            opening.done_with_commit();
            Ok(())
        })
        .await?;
        let commits_inline = commits_inline(&shared, &locks, self.category);
        Ok(JsonlSink {
            inner: Arc::new(Inner {
                commits_inline,
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

impl JsonlSink {
    /// Options for a sink on `path`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::JsonlSink;
    /// let sink = JsonlSink::builder(dir.path().join("m.jsonl")).rotate_records(1000).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> JsonlSinkBuilder {
        JsonlSinkBuilder {
            path: path.as_ref().to_path_buf(),
            category: Category::Manifest,
            fsync: FsyncPolicy::EveryCommit,
            rotation: Rotation::default(),
            locks: None,
            max_pending: 65_536,
            token_field: None,
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
    /// sink.append(&serde_json::json!({"ok": true})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<JsonlSink, LockError> {
        JsonlSink::builder(path).open().await
    }

    /// The file the sink appends to.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = dir.path().join("m.jsonl");
    /// let sink = async_filelock::JsonlSink::open(&log).await?;
    /// assert_eq!(sink.path(), log);
    /// # Ok(()) }
    /// ```
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the sink has done so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
    /// sink.append_batch(&[1, 2, 3]).await?;
    /// let stats = sink.stats();
    /// assert_eq!((stats.records, stats.commits), (3, 1));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> SinkStats {
        lock(&self.inner.shared.stats).clone()
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
    /// let tasks: Vec<_> = (0..8)
    ///     .map(|i| {
    ///         let sink = sink.clone();
    ///         tokio::spawn(async move { sink.append(&serde_json::json!({"task": i})).await })
    ///     })
    ///     .collect();
    /// for t in tasks {
    ///     t.await.unwrap()?;
    /// }
    /// assert_eq!(sink.stats().records, 8);
    /// # Ok(()) }
    /// ```
    pub async fn append<T: Serialize + ?Sized>(&self, record: &T) -> Result<(), LockError> {
        let mut lines = serde_json::to_vec(record).map_err(|source| {
            LockError::json("serialize record for", self.inner.path.clone(), source)
        })?;
        lines.push(b'\n');
        self.check_stampable(&lines)?;
        self.submit(lines, 1).await
    }

    /// With [`JsonlSinkBuilder::record_token`], records must be objects.
    fn check_stampable(&self, lines: &[u8]) -> Result<(), LockError> {
        let Some(field) = &self.inner.shared.token_field else {
            return Ok(());
        };
        super::stamp::stampable(lines, field).map_err(|why| LockError::Config {
            key: "JsonlSinkBuilder::record_token".into(),
            reason: format!(
                "records of {} {why}; nothing was written",
                self.inner.path.display()
            ),
        })
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
    /// sink.append_batch(&["a", "b"]).await?; // consecutive lines, one commit
    /// assert_eq!(sink.stats().commits, 1);
    /// # Ok(()) }
    /// ```
    pub async fn append_batch<T: Serialize>(&self, records: &[T]) -> Result<(), LockError> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(|source| {
                LockError::json("serialize record for", self.inner.path.clone(), source)
            })?;
            lines.push(b'\n');
        }
        if records.is_empty() {
            return Ok(());
        }
        self.check_stampable(&lines)?;
        self.submit(lines, records.len() as u64).await
    }

    /// What an append of this task waits for: the sink's lock.
    fn ask(&self) -> Ask<'_> {
        Ask {
            category: self.inner.category,
            target: &self.inner.path,
            mode: LockMode::Exclusive,
            owner: Some(Owner::current()),
        }
    }

    async fn submit(&self, lines: Vec<u8>, records: u64) -> Result<(), LockError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(closed_error(&inner.path));
        }
        // The category's deadline counts from here: a wait for room in a
        // full queue (behind a commit that cannot get the lock) is part of
        // the wait for the lock.
        let started = Instant::now();
        let deadline = inner
            .locks
            .timeout(inner.category)
            .and_then(|t| started.checked_add(t));
        let wanted = u32::try_from(records.min(inner.max_pending as u64)).unwrap_or(u32::MAX);
        let room = inner.permits.acquire_many(wanted);
        let room = match deadline {
            None => room.await,
            Some(at) => match tokio::time::timeout_at(at.into(), room).await {
                Ok(room) => room,
                Err(_) => return Err(inner.locks.engine().timed_out(self.ask(), started).await),
            },
        };
        let permit =
            room.map_err(|e| LockError::io("queue record for", &inner.path, io::Error::other(e)))?;
        let (done, mut result) = oneshot::channel();
        let (id, start_committer) = {
            let mut pending = lock(&inner.pending);
            // Checked again under the queue's lock, which `close` takes
            // after setting the flag: an append that waited for room while
            // `close` drained the queue is refused, never written after
            // `close` returned.
            if inner.closed.load(Ordering::SeqCst) {
                return Err(closed_error(&inner.path));
            }
            let id = pending.next_id;
            pending.next_id += 1;
            pending.queue.push_back(Entry {
                id,
                owner: Owner::current(),
                lines,
                records,
                done,
            });
            let start = !pending.committing;
            pending.committing = true;
            if start && inner.commits_inline {
                // The lead yields once before it writes (see `lead`).
                pending.yielding = true;
                pending.yielding_runtime = tokio::runtime::Handle::try_current().ok();
            }
            // One wake per linger: the committer clears the flag itself
            // once awake, and every later notify would be a futex call.
            if pending.lingering {
                pending.lingering = false;
                inner.more.notify_one();
            }
            (id, start)
        };
        // Dropped before the committer took it: take it back out.
        let mut withdraw = Withdraw {
            inner,
            id: Some(id),
        };
        if start_committer {
            lead(inner).await;
        }
        // The category's deadline holds here too: a commit that waits for
        // the lock on a thread of its own cannot be interrupted, so an
        // append whose record it has not taken yet gives up by itself.
        let replied = match deadline {
            None => (&mut result).await,
            Some(at) => match with_holders_read_ahead(inner, at, &mut result).await {
                Ok(replied) => replied,
                Err(_) if withdraw.now() => {
                    return Err(inner.locks.engine().timed_out(self.ask(), started).await);
                }
                // Taken into a commit already: it is being written.
                Err(_) => (&mut result).await,
            },
        };
        let outcome = replied.unwrap_or_else(|_| {
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
    /// The error of the final commit, if it failed; [`LockError::Io`] if the
    /// fsync of what `FsyncPolicy::AtMostEvery` left unsynced fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the records already queued are committed whether or not
    /// this future is polled to the end.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
    /// sink.append(&1).await?;
    /// sink.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<(), LockError> {
        let inner = &self.inner;
        let rounds_before = {
            let pending = lock(&inner.pending);
            inner.closed.store(true, Ordering::SeqCst);
            pending.rounds
        };
        let drained = loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            // Registered before looking, so a committer that finishes
            // between the look and the await still wakes us.
            idle.as_mut().enable();
            {
                let pending = lock(&inner.pending);
                // Done when nothing is queued or being written: a commit
                // thread may still be waiting for the lock in `flock`, for
                // records that have all been withdrawn since.
                if !pending.committing
                    || (pending.queue.is_empty() && !pending.writing && !pending.yielding)
                {
                    let ran = pending.rounds > rounds_before;
                    break match &pending.last_error {
                        Some(e) if ran => Err(e.clone()),
                        _ => Ok(()),
                    };
                }
            }
            // An appender that leads holds the lead across one yield; its
            // future may never run again (dropped later, or just not
            // polled while this task closes): the committer thread takes
            // over.
            if take_yielded_lead(inner) {
                continue;
            }
            idle.await;
        };
        // What `FsyncPolicy::AtMostEvery` left unsynced reaches the disk
        // now, even after a failed commit (what earlier ones wrote stands).
        let shared = Arc::clone(&inner.shared);
        let synced = crate::blocking::run("fsync", &inner.path, move || shared.sync_rest()).await;
        drained.and(synced)
    }
}

/// `result` until `at`, reading who holds the lock shortly before, so that
/// a timeout names the holder at once.
async fn with_holders_read_ahead<F: std::future::Future>(
    inner: &Inner,
    at: Instant,
    result: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(result);
    let ahead = at.checked_sub(Engine::HOLDER_READ_AHEAD);
    if let Some(ahead) = ahead
        && let Ok(out) = tokio::time::timeout_at(ahead.into(), &mut result).await
    {
        return Ok(out);
    }
    inner.locks.engine().prefetch_holders();
    tokio::time::timeout_at(at.into(), result).await
}

fn closed_error(path: &Path) -> LockError {
    LockError::io(
        "append to",
        path,
        io::Error::new(io::ErrorKind::BrokenPipe, "the sink is closed"),
    )
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

    /// Takes the record out of the queue now if no commit has taken it;
    /// returns whether it did (then nothing of it will be written).
    fn now(&mut self) -> bool {
        let Some(id) = self.id else {
            return false;
        };
        let mut pending = lock(&self.inner.pending);
        let before = pending.queue.len();
        pending.queue.retain(|e| e.id != id);
        let withdrawn = pending.queue.len() < before;
        let empty = pending.queue.is_empty();
        if withdrawn {
            self.id = None;
            if empty && let Some(token) = &pending.waiting {
                token.cancel();
            }
        }
        drop(pending);
        if withdrawn && empty {
            self.inner.idle.notify_waiters();
        }
        withdrawn
    }
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        // Taken into a commit already: the committer answers (and wakes a
        // `close`) when it is written.
        self.now();
    }
}
