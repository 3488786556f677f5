//! [`ArtifactWriter`]: stream a download into `<target>.part` under the
//! artifact lock; only a complete, verified file ever appears at the target.
//!
//! Commit (law 6): flush, fsync the `.part`, verify length and digest,
//! rename over the target, fsync the directory, then release the lock, with
//! an optional caller step (a manifest row) between the rename and the
//! release. Abort, an error, or dropping the writer removes the `.part` and
//! releases the lock; the target stays as it was.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::atomic::sync_dir;
use crate::{Category, LockError, LockGuard, Locks};

/// What to do when another holder has the artifact lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written so far, including resumed ones.
    pub bytes: u64,
    /// The expected total, if given.
    pub total: Option<u64>,
}

/// What [`ArtifactWriter::commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// The target was already there when the lock was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
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

type ProgressFn = Box<dyn FnMut(Progress) + Send>;

/// Options of an [`ArtifactWriter`]; from [`ArtifactWriter::builder`].
#[must_use = "a builder does nothing until opened"]
pub struct ArtifactWriterBuilder {
    target: PathBuf,
    locks: Option<Locks>,
    expected_len: Option<u64>,
    expected_sha256: Option<[u8; 32]>,
    compute_sha256: bool,
    on_busy: OnBusy,
    leftover: Leftover,
    verify_existing: bool,
    replace_existing: bool,
    preallocate: bool,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for ArtifactWriterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactWriterBuilder")
            .field("target", &self.target)
            .field("expected_len", &self.expected_len)
            .field("on_busy", &self.on_busy)
            .field("leftover", &self.leftover)
            .finish_non_exhaustive()
    }
}

impl ArtifactWriterBuilder {
    /// The handle whose artifact lock is taken (default [`Locks::global`]).
    pub fn locks(mut self, locks: Locks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The artifact's length: checked at commit, used to check free space
    /// and preallocate before writing.
    pub fn expected_len(mut self, len: u64) -> Self {
        self.expected_len = Some(len);
        self
    }

    /// The artifact's SHA-256 (64 hex digits): checked at commit.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if `hex` is not 64 hex digits.
    pub fn expected_sha256(mut self, hex: &str) -> Result<Self, LockError> {
        self.expected_sha256 = Some(parse_sha256(hex)?);
        Ok(self)
    }

    /// Compute the SHA-256 and report it at commit, even if none is expected.
    pub fn compute_sha256(mut self) -> Self {
        self.compute_sha256 = true;
        self
    }

    /// What to do when another holder has the lock.
    pub fn on_busy(mut self, on_busy: OnBusy) -> Self {
        self.on_busy = on_busy;
        self
    }

    /// What to do with a leftover `.part`.
    pub fn leftover(mut self, leftover: Leftover) -> Self {
        self.leftover = leftover;
        self
    }

    /// Check an existing target against the expected length and digest; if
    /// it fails, it is written anew instead of reported present.
    pub fn verify_existing(mut self) -> Self {
        self.verify_existing = true;
        self
    }

    /// Write even if the target exists, replacing it at commit.
    pub fn replace_existing(mut self) -> Self {
        self.replace_existing = true;
        self
    }

    /// Whether to reserve the expected length on disk first (default on).
    pub fn preallocate(mut self, on: bool) -> Self {
        self.preallocate = on;
        self
    }

    /// Called after every write with the bytes so far and the total if known.
    pub fn progress(mut self, f: impl FnMut(Progress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Takes the artifact lock and decides: write, already present, or busy.
    ///
    /// # Errors
    ///
    /// Lock errors as [`Locks::lock`]; [`LockError::InsufficientSpace`] when
    /// the expected length does not fit; I/O errors naming the `.part`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases whatever it took.
    pub async fn open(self) -> Result<Artifact, LockError> {
        let locks = match &self.locks {
            Some(locks) => locks.clone(),
            None => Locks::global()?,
        };
        let guard = match self.on_busy {
            OnBusy::Wait => locks.lock(Category::Artifact, &self.target).await?,
            OnBusy::Skip => match locks.try_lock(Category::Artifact, &self.target).await? {
                Some(guard) => guard,
                None => return Ok(Artifact::Busy),
            },
        };
        self.open_with(guard).await
    }

    async fn open_with(self, guard: LockGuard) -> Result<Artifact, LockError> {
        let target = guard.target().to_path_buf();
        let waited = guard.waited();
        let expect = Expect {
            len: self.expected_len,
            sha256: self.expected_sha256,
        };
        let hashing = self.compute_sha256 || self.expected_sha256.is_some();
        let (replace, verify, leftover, prealloc) = (
            self.replace_existing,
            self.verify_existing,
            self.leftover,
            self.preallocate,
        );
        // The guard travels with the work: if this future is dropped while
        // the `.part` is being prepared, the result is dropped on the
        // blocking pool, which removes the `.part` before letting go of the
        // lock (see `Prepping`), instead of leaving it behind unlocked.
        let mut prepping = crate::blocking::run("prepare .part for", &target, {
            let target = target.clone();
            move || {
                let prepared = prepare(
                    &target, &expect, replace, verify, leftover, prealloc, hashing,
                )?;
                Ok(Prepping {
                    part: part_path(&target),
                    prepared: Some(prepared),
                    guard: Some(guard),
                })
            }
        })
        .await?;
        let (Some(prepared), Some(guard)) = (prepping.prepared.take(), prepping.guard.take())
        else {
            unreachable!("a Prepping is taken apart once, here")
        };
        let (file, resumed, hasher) = match prepared {
            Prepared::Present { bytes, verified } => {
                drop(guard);
                return Ok(Artifact::AlreadyPresent(PresentReport {
                    path: target,
                    bytes,
                    verified,
                    waited,
                }));
            }
            Prepared::Part {
                file,
                resumed,
                hasher,
            } => (file, resumed, hasher),
        };
        Ok(Artifact::Write(ArtifactWriter {
            file: tokio::fs::File::from_std(file),
            state: State {
                part: part_path(&target),
                target,
                guard: Some(guard),
                hasher,
                expect,
                written: resumed,
                resumed,
                waited,
                started: Instant::now(),
                done: false,
                progress: self.progress,
            },
        }))
    }
}

/// A prepared `.part` and its lock, on the way from the blocking pool to
/// the writer. Dropped before it got there (the `open` future was dropped),
/// it removes the `.part` and then releases the lock.
struct Prepping {
    part: PathBuf,
    prepared: Option<Prepared>,
    guard: Option<LockGuard>,
}

impl Drop for Prepping {
    fn drop(&mut self) {
        let guard = self.guard.take();
        match self.prepared.take() {
            Some(Prepared::Part { file, .. }) => {
                drop(file);
                let part = std::mem::take(&mut self.part);
                clean_up_from_drop(move || remove_part_then_release(&part, guard));
            }
            _ => drop(guard),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Expect {
    len: Option<u64>,
    sha256: Option<[u8; 32]>,
}

pin_project! {
    /// Writes `<target>.part` while holding the artifact lock on `target`;
    /// [`ArtifactWriter::commit`] renames it into place. Implements tokio's
    /// `AsyncWrite`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// use async_filelock::ArtifactWriter;
    /// use tokio::io::AsyncWriteExt;
    /// let dir = tempfile::tempdir().unwrap();
    /// let target = dir.path().join("paper.pdf");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// w.write_all(b"%PDF-1.7 ...").await.unwrap();
    /// let report = w.commit().await?;
    /// assert_eq!(report.bytes, 12);
    /// assert_eq!(std::fs::read(&target).unwrap(), b"%PDF-1.7 ...");
    /// assert!(!dir.path().join("paper.pdf.part").exists());
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the writer (or any of its futures, which own it or borrow
    /// it) before commit removes the `.part` and releases the lock; the
    /// removal runs on the blocking pool, and the lock is released after it.
    /// A commit, once its rename started, completes under the lock.
    pub struct ArtifactWriter {
        #[pin]
        file: tokio::fs::File,
        state: State,
    }

    impl PinnedDrop for ArtifactWriter {
        fn drop(this: Pin<&mut Self>) {
            if let Some(cleanup) = this.project().state.take_cleanup() {
                clean_up_from_drop(cleanup);
            }
        }
    }
}

struct State {
    target: PathBuf,
    part: PathBuf,
    guard: Option<LockGuard>,
    hasher: Option<Sha256>,
    expect: Expect,
    written: u64,
    resumed: u64,
    waited: Duration,
    started: Instant,
    done: bool,
    progress: Option<ProgressFn>,
}

impl State {
    /// The one cleanup of an uncommitted writer, for drop, `abort` and
    /// failed commits: removes the `.part`, then releases the lock. `None`
    /// once the writer is committed or already cleaned up.
    fn take_cleanup(&mut self) -> Option<impl FnOnce() -> Result<(), LockError> + Send + 'static> {
        if self.done {
            return None;
        }
        self.done = true;
        let part = self.part.clone();
        let guard = self.guard.take();
        Some(move || remove_part_then_release(&part, guard))
    }
}

/// The cleanup of an uncommitted write: removes the `.part`, then lets go
/// of the lock, so nobody sees a `.part` whose lock is free.
fn remove_part_then_release(part: &Path, guard: Option<LockGuard>) -> Result<(), LockError> {
    let removed = remove_if_exists(part).map_err(|e| LockError::io("remove", part, e));
    let released = guard.map_or(Ok(()), LockGuard::release_blocking);
    removed.and(released)
}

/// Runs a cleanup from a destructor: on the blocking pool when there is a
/// runtime (a destructor may run on a runtime thread), else here.
fn clean_up_from_drop(cleanup: impl FnOnce() -> Result<(), LockError> + Send + 'static) {
    let cleanup = move || {
        if let Err(e) = cleanup() {
            tracing::warn!(error = %e, "removing an abandoned .part");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(cleanup);
        }
        Err(_) => cleanup(),
    }
}

impl fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("target", &self.state.target)
            .field("written", &self.state.written)
            .field("resumed", &self.state.resumed)
            .finish_non_exhaustive()
    }
}

impl ArtifactWriter {
    /// Options for writing `target`.
    pub fn builder(target: impl AsRef<Path>) -> ArtifactWriterBuilder {
        ArtifactWriterBuilder {
            target: target.as_ref().to_path_buf(),
            locks: None,
            expected_len: None,
            expected_sha256: None,
            compute_sha256: false,
            on_busy: OnBusy::Wait,
            leftover: Leftover::Discard,
            verify_existing: false,
            replace_existing: false,
            preallocate: true,
            progress: None,
        }
    }

    /// Takes the artifact lock on `target` from the default [`Locks`] and
    /// opens a fresh `<target>.part`; the commit replaces the target if it
    /// exists. For "skip if present" and the other options, use
    /// [`ArtifactWriter::builder`].
    ///
    /// # Errors
    ///
    /// As [`ArtifactWriterBuilder::open`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases whatever it took.
    pub async fn create(target: impl AsRef<Path>) -> Result<ArtifactWriter, LockError> {
        match ArtifactWriter::builder(target)
            .replace_existing()
            .open()
            .await?
        {
            Artifact::Write(w) => Ok(w),
            // `replace_existing` with `OnBusy::Wait` always writes.
            Artifact::AlreadyPresent(p) => Err(LockError::io(
                "write artifact",
                p.path,
                io::Error::other("unexpectedly present"),
            )),
            Artifact::Busy => Err(LockError::io(
                "write artifact",
                "",
                io::Error::other("unexpectedly busy"),
            )),
        }
    }

    /// As [`ArtifactWriter::create`], with an artifact lock the caller
    /// already holds.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTarget`] if `guard` is not an exclusive artifact
    /// lock; otherwise as [`ArtifactWriterBuilder::open`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases the guard and removes any `.part` it opened.
    pub async fn from_guard(guard: LockGuard) -> Result<ArtifactWriter, LockError> {
        if guard.category() != Category::Artifact || guard.mode().is_shared() {
            return Err(LockError::invalid_target(
                guard.target(),
                "an artifact writer needs an exclusive artifact lock",
            ));
        }
        let builder = ArtifactWriter::builder(guard.target()).replace_existing();
        match builder.open_with(guard).await? {
            Artifact::Write(w) => Ok(w),
            _ => Err(LockError::io(
                "write artifact",
                "",
                io::Error::other("unexpected outcome"),
            )),
        }
    }

    /// The target.
    pub fn target(&self) -> &Path {
        &self.state.target
    }

    /// The `.part` being written.
    pub fn part_path(&self) -> &Path {
        &self.state.part
    }

    /// Bytes kept from a resumed `.part`: ask the source for the rest from
    /// here (HTTP `Range: bytes=N-`). 0 for a fresh write.
    pub fn resume_from(&self) -> u64 {
        self.state.resumed
    }

    /// Bytes in the `.part` so far.
    pub fn written(&self) -> u64 {
        self.state.written
    }

    /// Writes every chunk of `stream` (reqwest's `bytes_stream()`, or any
    /// stream of byte chunks).
    ///
    /// # Errors
    ///
    /// [`LockError::Source`] if the stream fails, [`LockError::Io`] if a
    /// write fails. The writer is still usable for `abort` (or drop).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: a chunk may be written in part, but the writer (and so the lock) is still yours; commit, abort or drop it. Nothing reaches the target.
    pub async fn write_stream<S, B, E>(&mut self, stream: S) -> Result<u64, LockError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut stream = std::pin::pin!(stream);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| LockError::Source {
                path: self.state.target.clone(),
                source: Box::new(e),
            })?;
            let chunk = chunk.as_ref();
            self.write_all(chunk)
                .await
                .map_err(|e| LockError::io("write", self.state.part.clone(), e))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Copies everything from `reader`.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] naming the `.part` (a failing reader surfaces here
    /// too, as tokio's copy does not tell the two apart).
    ///
    /// # Cancel safety
    ///
    /// As [`ArtifactWriter::write_stream`].
    pub async fn copy_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<u64, LockError> {
        tokio::io::copy(reader, self)
            .await
            .map_err(|e| LockError::io("copy into", self.state.part.clone(), e))
    }

    /// Writes `stream` and commits; on any error, aborts (removes the
    /// `.part`, releases the lock) before returning it.
    ///
    /// # Errors
    ///
    /// As [`ArtifactWriter::write_stream`] and [`ArtifactWriter::commit`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the writer, which removes the `.part` and releases the lock; a commit whose rename started completes under the lock.
    pub async fn download<S, B, E>(mut self, stream: S) -> Result<CommitReport, LockError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self.write_stream(stream).await {
            Ok(_) => self.commit().await,
            Err(e) => {
                if let Err(cleanup) = self.abort().await {
                    tracing::warn!(error = %cleanup, "aborting after a failed download");
                }
                Err(e)
            }
        }
    }

    /// Flushes, fsyncs, verifies, renames over the target, fsyncs the
    /// directory and releases the lock.
    ///
    /// # Errors
    ///
    /// [`LockError::Verification`] if the length or digest is wrong (the
    /// `.part` is removed, the target untouched); I/O errors naming the file.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the rename leaves the target untouched and
    /// removes the `.part`; once the rename started, it completes and the
    /// lock is released after it.
    pub async fn commit(self) -> Result<CommitReport, LockError> {
        self.commit_then(|_| async { Ok(()) })
            .await
            .map(|(report, ())| report)
    }

    /// As [`ArtifactWriter::commit`], running `step` after the rename and
    /// before the artifact lock is released: two-phase commit of an artifact
    /// and, typically, its manifest row. Taking the manifest lock inside
    /// `step` follows the lock order (artifact before manifest). If `step`
    /// fails, the artifact stays in place and the error is returned.
    ///
    /// # Errors
    ///
    /// As [`ArtifactWriter::commit`], or the error of `step`.
    pub async fn commit_then<F, Fut, T>(mut self, step: F) -> Result<(CommitReport, T), LockError>
    where
        F: FnOnce(&CommitReport) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>>,
    {
        let part = self.state.part.clone();
        if let Err(e) = async {
            self.flush().await?;
            self.file.sync_all().await
        }
        .await
        {
            self.abort_quietly().await;
            return Err(LockError::io("flush and fsync", part, e));
        }
        if let Err(what) = self.check() {
            self.abort_quietly().await;
            return Err(LockError::Verification {
                path: self.state.target.clone(),
                what,
            });
        }
        let sha256 = self.state.hasher.take().map(|h| hex(&h.finalize()));
        // From here the rename belongs to the blocking closure, which owns
        // the guard: the writer's drop must not remove anything.
        self.state.done = true;
        let Some(guard) = self.state.guard.take() else {
            return Err(LockError::io(
                "commit",
                part,
                io::Error::other("lock already released"),
            ));
        };
        let target = self.state.target.clone();
        let renamed = {
            let (part, to) = (part.clone(), target.clone());
            crate::blocking::run("commit", &target, move || {
                match std::fs::rename(&part, &to) {
                    Ok(()) => sync_dir(to.parent().unwrap_or(Path::new("/"))).map(|()| guard),
                    Err(e) => {
                        let _ = remove_if_exists(&part);
                        Err(LockError::io("rename .part over", &to, e))
                    }
                }
            })
            .await?
        };
        let report = CommitReport {
            path: target,
            bytes: self.state.written,
            sha256,
            resumed_bytes: self.state.resumed,
            waited: self.state.waited,
            writing: self.state.started.elapsed(),
        };
        let out = step(&report).await;
        renamed.release().await?;
        out.map(|t| (report, t))
    }

    /// Removes the `.part` and releases the lock; the target stays as it was.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] if the `.part` cannot be removed (the lock is
    /// released regardless).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the removal runs on the blocking pool and completes, then releases the lock, even if the future is dropped.
    pub async fn abort(mut self) -> Result<(), LockError> {
        let part = self.state.part.clone();
        match self.state.take_cleanup() {
            Some(cleanup) => crate::blocking::run("abort", &part, cleanup).await,
            None => Ok(()),
        }
    }

    /// As `abort`, on an error path that reports its own error.
    async fn abort_quietly(&mut self) {
        let part = self.state.part.clone();
        if let Some(cleanup) = self.state.take_cleanup()
            && let Err(e) = crate::blocking::run("abort", &part, cleanup).await
        {
            tracing::warn!(error = %e, "removing .part after a failed commit");
        }
    }

    fn check(&self) -> Result<(), String> {
        let s = &self.state;
        if let Some(len) = s.expect.len
            && len != s.written
        {
            return Err(format!("length: expected {len} bytes, wrote {}", s.written));
        }
        if let (Some(want), Some(h)) = (s.expect.sha256, &s.hasher) {
            let got: [u8; 32] = h.clone().finalize().into();
            if got != want {
                return Err(format!(
                    "sha256: expected {}, got {}",
                    hex(&want),
                    hex(&got)
                ));
            }
        }
        Ok(())
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.file.poll_write(cx, buf))?;
        let state = this.state;
        if let Some(h) = state.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        state.written += n as u64;
        if let Some(progress) = state.progress.as_mut() {
            progress(Progress {
                bytes: state.written,
                total: state.expect.len,
            });
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().file.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().file.poll_shutdown(cx)
    }
}

enum Prepared {
    Present {
        bytes: u64,
        verified: bool,
    },
    Part {
        file: std::fs::File,
        resumed: u64,
        hasher: Option<Sha256>,
    },
}

/// `<target>.part`.
fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

/// Blocking, under the lock: present or not, leftovers, space, the `.part`.
fn prepare(
    target: &Path,
    expect: &Expect,
    replace: bool,
    verify: bool,
    leftover: Leftover,
    prealloc: bool,
    hashing: bool,
) -> Result<Prepared, LockError> {
    if !replace {
        match std::fs::metadata(target) {
            Ok(meta) if meta.is_file() => {
                if !verify {
                    return Ok(Prepared::Present {
                        bytes: meta.len(),
                        verified: false,
                    });
                }
                if matches_expectations(target, meta.len(), expect)? {
                    return Ok(Prepared::Present {
                        bytes: meta.len(),
                        verified: true,
                    });
                }
                tracing::warn!(target = %target.display(), "existing artifact fails verification; writing it anew");
            }
            Ok(_) => {
                return Err(LockError::invalid_target(
                    target,
                    "it is not a regular file",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LockError::io("inspect", target, e)),
        }
    }
    let part = part_path(target);
    let mut resumed = 0;
    if leftover == Leftover::Resume
        && let Ok(meta) = std::fs::metadata(&part)
        && meta.is_file()
        && expect.len.is_none_or(|len| meta.len() <= len)
    {
        resumed = meta.len();
    }
    if resumed == 0 {
        remove_if_exists(&part).map_err(|e| LockError::io("remove leftover", &part, e))?;
    } else {
        tracing::info!(part = %part.display(), bytes = resumed, "resuming a leftover .part");
    }
    if let Some(len) = expect.len {
        let needed = len.saturating_sub(resumed);
        let dir = target.parent().unwrap_or(Path::new("/"));
        let available =
            fs4::available_space(dir).map_err(|e| LockError::io("check free space in", dir, e))?;
        if available < needed {
            return Err(LockError::InsufficientSpace {
                path: target.to_path_buf(),
                needed,
                available,
            });
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                LockError::invalid_target(target, "its directory does not exist")
            }
            _ => LockError::io("open", &part, e),
        })?;
    let hasher = if hashing {
        let mut h = Sha256::new();
        if resumed > 0 {
            io::copy(&mut io::Read::take(&file, resumed), &mut HashWriter(&mut h))
                .map_err(|e| LockError::io("hash resumed bytes of", &part, e))?;
        }
        Some(h)
    } else {
        None
    };
    io::Seek::seek(&mut file, io::SeekFrom::Start(resumed))
        .map_err(|e| LockError::io("seek", &part, e))?;
    if prealloc && let Some(len) = expect.len {
        reserve(&file, len);
    }
    Ok(Prepared::Part {
        file,
        resumed,
        hasher,
    })
}

/// Reserves `len` bytes of disk for `file` without changing its size, so a
/// `.part` left by a crash still measures exactly what was written (which
/// resuming relies on). fs4's `allocate` extends the size, hence this call to
/// `fallocate(FALLOC_FL_KEEP_SIZE)`; filesystems without it just skip it.
fn reserve(file: &std::fs::File, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    // SAFETY: a valid descriptor owned by `file`; fallocate does not touch
    // memory.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "preallocation skipped");
    }
}

fn matches_expectations(target: &Path, len: u64, expect: &Expect) -> Result<bool, LockError> {
    if expect.len.is_some_and(|want| want != len) {
        return Ok(false);
    }
    if let Some(want) = expect.sha256 {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(target).map_err(|e| LockError::io("open", target, e))?;
        io::copy(&mut f, &mut HashWriter(&mut h)).map_err(|e| LockError::io("hash", target, e))?;
        let got: [u8; 32] = h.finalize().into();
        return Ok(got == want);
    }
    Ok(true)
}

/// Feeds `io::copy` into a hasher: digest 0.11 deliberately implements no
/// `io::Write` for its hashers.
struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn parse_sha256(hex_digest: &str) -> Result<[u8; 32], LockError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).map_err(|e| LockError::Config {
        key: "expected_sha256".into(),
        reason: format!("{hex_digest:?} is not 64 hex digits: {e}"),
    })?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_round_trips_and_rejects_garbage() {
        let digest: [u8; 32] = Sha256::digest(b"abc").into();
        let text = hex(&digest);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256(&text).unwrap(), digest);
        assert!(parse_sha256("xyz").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn part_path_sits_beside_the_target() {
        assert_eq!(part_path(Path::new("/a/b.pdf")), Path::new("/a/b.pdf.part"));
    }
}
