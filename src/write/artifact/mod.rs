//! [`ArtifactWriter`]: stream a download into `<target>.part` under the
//! artifact lock; only a complete, verified file ever appears at the target.
//!
//! Commit (law 6): flush, fsync the `.part`, verify length and digest,
//! rename over the target, fsync the directory, then release the lock, with
//! an optional caller step (a manifest row) between the rename and the
//! release. Abort, an error, or dropping the writer removes the `.part` and
//! releases the lock; the target stays as it was.
//!
//! * [`builder`]: options, taking the lock, and the decision: write, already
//!   present, or busy.
//! * [`part`]: a `.part` and the marker in the lock dir that tells this
//!   crate's `.part` from a real file of that name.
//! * [`prepare`]: the blocking work under the lock before writing: is the
//!   target there, what of a leftover `.part`, is there room.
//! * [`writer`]: the writer itself, its commit and its cleanup.
//!
//! May use: the lock layer (a handle and its guards), `write::commit`,
//! `blocking`, `sys`, the vocabulary; never a backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::fencing::FencingToken;

mod builder;
pub(crate) mod part;
mod prepare;
mod writer;

pub use builder::ArtifactWriterBuilder;
pub use writer::ArtifactWriter;

/// What to do when another holder has the artifact lock.
///
/// ```
/// assert_eq!(async_filelock::OnBusy::default(), async_filelock::OnBusy::Wait);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnBusy {
    /// Wait for it, up to the artifact timeout (the default). If the other
    /// holder finished the artifact meanwhile, the result is
    /// [`Artifact::AlreadyPresent`].
    #[default]
    Wait,
    /// Give up at once with [`Artifact::Busy`]: someone else is downloading it.
    Skip,
}

/// What to do with a `.part` left by a process that crashed.
///
/// ```
/// assert_eq!(async_filelock::Leftover::default(), async_filelock::Leftover::Discard);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Leftover {
    /// Start over (the default).
    #[default]
    Discard,
    /// Keep its bytes and continue after them: [`ArtifactWriter::resume_from`]
    /// says from where (for an HTTP `Range: bytes=N-` request). The digest of
    /// the whole file is verified at commit.
    Resume,
}

/// Progress of a write: bytes in the `.part` so far and the total if known.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{Artifact, ArtifactWriter, Progress};
/// let Artifact::Write(w) = ArtifactWriter::builder(dir.path().join("a.bin"))
///     .expected_len(5)
///     .progress(|p: Progress| assert_eq!(p.total, Some(5)))
///     .open()
///     .await? else { unreachable!() };
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes written so far, including resumed ones.
    pub bytes: u64,
    /// The expected total, if given.
    pub total: Option<u64>,
}

/// What [`ArtifactWriter::commit`] did.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use tokio::io::AsyncWriteExt;
/// let mut w = async_filelock::ArtifactWriter::create(dir.path().join("a.bin")).await?;
/// w.write_all(b"hello").await.unwrap();
/// let report = w.commit().await?;
/// assert_eq!((report.bytes, report.resumed_bytes), (5, 0));
/// println!("committed under fencing token {}", report.token);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReport {
    /// The committed file.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Its SHA-256 in hex, when one was expected or asked for.
    pub sha256: Option<String>,
    /// Bytes kept from a resumed `.part`.
    pub resumed_bytes: u64,
    /// Time spent waiting for the artifact lock.
    pub waited: Duration,
    /// Time from getting the lock to the end of the commit.
    pub writing: Duration,
    /// The fencing token of the artifact lock the commit was made under
    /// (see [`crate::LockGuard::token`]): record it with the artifact where
    /// a store should refuse a superseded holder's writes.
    pub token: FencingToken,
}

/// The target was already there when the lock was granted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{Artifact, ArtifactWriter};
/// let target = dir.path().join("a.bin");
/// std::fs::write(&target, b"done").unwrap();
/// let Artifact::AlreadyPresent(p) = ArtifactWriter::builder(&target).open().await? else { unreachable!() };
/// assert_eq!((p.bytes, p.verified), (4, false));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresentReport {
    /// The existing file.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Whether its length and digest were checked against the expectations.
    pub verified: bool,
    /// Time spent waiting for the lock.
    pub waited: Duration,
}

/// The outcome of [`ArtifactWriterBuilder::open`].
// A transient return value, matched once per download: boxing the writer
// would cost an allocation to save stack space nobody keeps.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{Artifact, ArtifactWriter};
/// match ArtifactWriter::builder(dir.path().join("a.bin")).open().await? {
///     Artifact::Write(w) => { /* download into w, then commit */ w.abort().await? }
///     Artifact::AlreadyPresent(_) => { /* someone finished it meanwhile */ }
///     Artifact::Busy => { /* only with OnBusy::Skip */ }
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Artifact {
    /// We hold the lock and should write the artifact.
    Write(ArtifactWriter),
    /// It exists already (another process finished it while we waited).
    AlreadyPresent(PresentReport),
    /// Someone else holds the lock and [`OnBusy::Skip`] was asked for.
    Busy,
}
