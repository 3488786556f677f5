//! JSONL files shared by many tasks and processes: [`JsonlSink`] appends
//! whole lines with group commit, rotation by rename and torn-tail repair;
//! [`JsonlReader`] reads them back, rotations first.
//!
//! Every write happens under the sink's lock (manifest or telemetry), in
//! append mode, as one `write` of whole lines. Appends from many tasks of a
//! process are group-committed: while one batch is being written, later
//! records queue and go out together in the next write, under one lock hold
//! and one fsync. The appender that finds no commit under way leads the
//! next one: on its own thread when the lock is free at once and the commit
//! cannot stall it (no fsync, no rotation, a local file), else on the
//! sink's committer thread (the crate's, not tokio's blocking pool), which
//! takes the lock there so that it is held only for the write.
//!
//! * [`sink`]: the public sink and its builder; appends queue records.
//! * [`queue`]: what appenders and the committer share.
//! * [`committer`]: takes the lock and writes what is queued, batch by batch.
//! * [`file`](mod@file): the file under the lock: current-file checks, torn-tail
//!   repair, writes, fsync, rotation.
//! * [`reader`]: reading back.
//!
//! May use: the lock layer (a handle, its guards and the acquisition core,
//! for commits that lock on a thread of their own), `write::commit`,
//! `blocking`, the vocabulary; never a backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::fencing::FencingToken;

mod committer;
mod file;
mod queue;
mod reader;
mod sink;
mod stamp;

pub use reader::JsonlReader;
pub use sink::{JsonlSink, JsonlSinkBuilder};

/// When a commit reaches the disk.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{FsyncPolicy, JsonlSink};
/// let sink = JsonlSink::builder(dir.path().join("t.jsonl")).fsync(FsyncPolicy::Never).open().await?;
/// sink.append(&1).await?;
/// assert_eq!(sink.stats().fsyncs, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Never fsync: the OS writes back when it likes. Lines are still whole
    /// and ordered; a power cut may lose the latest ones. (On a network
    /// filesystem every commit is flushed before it is answered, whatever
    /// the policy: only a flush reports the server's errors.)
    Never,
    /// fsync every commit (one per group of records): `append` returns when
    /// the record is on disk.
    EveryCommit,
    /// fsync a commit only if the last fsync is older than this.
    AtMostEvery(Duration),
}

/// When the current file is rotated (`name.jsonl` → `name.0001.jsonl`, …).
///
/// ```
/// use async_filelock::Rotation;
/// let none = Rotation::default();
/// assert_eq!((none.max_bytes, none.max_records), (None, None));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// Rotate before the file would exceed this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate before the file would exceed this many records.
    pub max_records: Option<u64>,
}

/// What a sink has done, for operators and tests.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let sink = async_filelock::JsonlSink::open(dir.path().join("m.jsonl")).await?;
/// sink.append(&1).await?;
/// let stats = sink.stats();
/// assert_eq!(stats.records, 1);
/// assert_eq!(stats.bytes, 2, "one line: `1` and its newline");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkStats {
    /// Records written.
    pub records: u64,
    /// Writes (one per group commit).
    pub commits: u64,
    /// fsyncs of the file.
    pub fsyncs: u64,
    /// fsyncs of its directory (after creating the file, and rotating).
    pub dir_fsyncs: u64,
    /// Times the current file was opened: when first used, after another
    /// process rotated it, after rotating; and, on a network filesystem,
    /// for every commit (close-to-open consistency).
    pub opens: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Rotations this sink made.
    pub rotations: u64,
    /// Whole last records found without their newline (written by another
    /// program) and given it.
    pub last_records_completed: u64,
    /// Torn last lines (left by a crash mid-write) found, moved to a side
    /// file and cut off.
    pub torn_tails_repaired: u64,
    /// Bytes cut off with them.
    pub torn_bytes_cut: u64,
    /// Byte offset where the last torn line began.
    pub last_torn_offset: Option<u64>,
    /// The side file the last torn line was kept in: `<log>.torn-<offset>`
    /// beside the log.
    pub last_torn_file: Option<PathBuf>,
    /// The fencing token of the last commit, when the sink stamps records
    /// with it ([`crate::JsonlSinkBuilder::record_token`]).
    pub last_token: Option<FencingToken>,
    /// Lock holdings in which an appender committed on its own thread
    /// because the lock was free at once (sinks without fsync or rotation,
    /// on a local filesystem); [`SinkStats::commits`] counts writes, which
    /// a rotation may split.
    pub inline_commits: u64,
}
