//! [`ArtifactWriter`]: writes `<target>.part` while holding the artifact
//! lock, commits it by rename (law 6), and removes it on abort, error or
//! drop.

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

use super::part::PartPaths;
use super::prepare::{Expect, PartFile, hex};
use super::{CommitReport, Progress};
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::lock::LockGuard;
use crate::write::commit::sync_dir_after_commit;

/// A progress callback.
pub(super) type ProgressFn = Box<dyn FnMut(Progress) + Send>;

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
    paths: PartPaths,
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
        let paths = self.paths.clone();
        let guard = self.guard.take();
        Some(move || remove_part_then_release(&paths, guard))
    }
}

/// The cleanup of an uncommitted write: removes the `.part`, then lets go
/// of the lock, so nobody sees a `.part` whose lock is free. Under a lock
/// lost while held (a soft lock's lease) the `.part` is left alone: its
/// name belongs to the new holder, who may be resuming it.
pub(super) fn remove_part_then_release(
    paths: &PartPaths,
    guard: Option<LockGuard>,
) -> Result<(), LockError> {
    let lost = guard.as_ref().is_some_and(LockGuard::is_lost);
    let removed = if lost {
        Ok(())
    } else {
        paths
            .remove()
            .map_err(|e| LockError::io("remove", &paths.part, e))
    };
    let released = guard.map_or(Ok(()), LockGuard::release_blocking);
    removed.and(released)
}

/// Runs a cleanup from a destructor: on the blocking pool when there is a
/// runtime (a destructor may run on a runtime thread), else here.
pub(super) fn clean_up_from_drop(cleanup: impl FnOnce() -> Result<(), LockError> + Send + 'static) {
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
    /// A writer of the prepared `.part`, holding `guard`.
    pub(super) fn new(
        guard: LockGuard,
        part: PartFile,
        expect: Expect,
        progress: Option<ProgressFn>,
    ) -> Self {
        let target = guard.target().to_path_buf();
        ArtifactWriter {
            file: tokio::fs::File::from_std(part.file),
            state: State {
                paths: PartPaths::new(&target, guard.lock_path()),
                waited: guard.waited(),
                target,
                guard: Some(guard),
                hasher: part.hasher,
                expect,
                written: part.resumed,
                resumed: part.resumed,
                started: Instant::now(),
                done: false,
                progress,
            },
        }
    }

    /// The target.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// assert!(w.target().ends_with("a.bin"));
    /// # Ok(()) }
    /// ```
    pub fn target(&self) -> &Path {
        &self.state.target
    }

    /// The `.part` being written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// assert!(w.part_path().ends_with("a.bin.part") && w.part_path().exists());
    /// # Ok(()) }
    /// ```
    pub fn part_path(&self) -> &Path {
        &self.state.paths.part
    }

    /// Bytes kept from a resumed `.part`: ask the source for the rest from
    /// here (HTTP `Range: bytes=N-`). 0 for a fresh write.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// assert_eq!(w.resume_from(), 0);
    /// # Ok(()) }
    /// ```
    pub fn resume_from(&self) -> u64 {
        self.state.resumed
    }

    /// Bytes in the `.part` so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// tokio::io::AsyncWriteExt::write_all(&mut w, b"abc").await.unwrap();
    /// assert_eq!(w.written(), 3);
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// let chunks = futures::stream::iter([Ok::<_, std::io::Error>(b"ab".to_vec()), Ok(b"c".to_vec())]);
    /// assert_eq!(w.write_stream(chunks).await?, 3);
    /// w.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_stream<S, B, E>(&mut self, stream: S) -> Result<u64, LockError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut stream = std::pin::pin!(stream);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| LockError::from_source(&self.state.target, e))?;
            let chunk = chunk.as_ref();
            self.write_all(chunk)
                .await
                .map_err(|e| LockError::io("write", self.state.paths.part.clone(), e))?;
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// let mut source: &[u8] = b"from a reader";
    /// w.copy_from(&mut source).await?;
    /// assert_eq!(w.commit().await?.bytes, 13);
    /// # Ok(()) }
    /// ```
    pub async fn copy_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<u64, LockError> {
        tokio::io::copy(reader, self)
            .await
            .map_err(|e| LockError::io("copy into", self.state.paths.part.clone(), e))
    }

    /// The fencing token of the artifact lock this writer holds (see
    /// [`LockGuard::token`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let w = async_filelock::ArtifactWriter::create(dir.path().join("a.bin")).await?;
    /// let token = w.token()?;
    /// assert_eq!(w.commit().await?.token, token);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Lost`] if the lock was lost before a token was issued.
    pub fn token(&self) -> Result<FencingToken, LockError> {
        match &self.state.guard {
            Some(guard) => guard.token(),
            None => Err(LockError::io(
                "token of",
                self.state.target.clone(),
                io::Error::other("lock already released"),
            )),
        }
    }

    /// Whether the artifact lock was lost while writing (see
    /// [`LockGuard::is_lost`]): a commit now is refused.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let w = async_filelock::ArtifactWriter::create(dir.path().join("a.bin")).await?;
    /// assert!(!w.is_lost(), "an OS lock is not lost while held");
    /// # Ok(()) }
    /// ```
    pub fn is_lost(&self) -> bool {
        self.state.guard.as_ref().is_some_and(LockGuard::is_lost)
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// let body = futures::stream::iter([Ok::<_, std::io::Error>(b"body".to_vec())]);
    /// let report = w.download(body).await?; // a reqwest `bytes_stream()` fits here
    /// assert_eq!(std::fs::read(&target).unwrap(), b"body");
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// tokio::io::AsyncWriteExt::write_all(&mut w, b"whole").await.unwrap();
    /// w.commit().await?;
    /// assert_eq!(std::fs::read(&target).unwrap(), b"whole");
    /// # Ok(()) }
    /// ```
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
    /// As [`ArtifactWriter::commit`], or the error of `step`. Once the
    /// artifact is renamed into place no error of the commit itself is
    /// returned (an error means "not written"): a failed directory fsync or
    /// lock-file removal after it is logged as a warning.
    ///
    /// # Cancel safety
    ///
    /// As [`ArtifactWriter::commit`]; dropping the future while `step` runs
    /// drops `step` (the artifact stays in place) and releases the lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// let manifest = async_filelock::JsonlSink::open(dir.path().join("manifest.jsonl")).await?;
    /// let (report, ()) = w
    ///     .commit_then(|report| {
    ///         let row = serde_json::json!({"file": "a.bin", "token": report.token});
    ///         let manifest = manifest.clone();
    ///         async move { manifest.append(&row).await } // under the artifact lock
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit_then<F, Fut, T>(mut self, step: F) -> Result<(CommitReport, T), LockError>
    where
        F: FnOnce(&CommitReport) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>>,
    {
        let part = self.state.paths.part.clone();
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
            let (paths, to) = (self.state.paths.clone(), target.clone());
            crate::blocking::run("commit", &target, move || {
                // Under a lost lock nothing is renamed, and the `.part` is
                // left alone: its name is the new holder's now.
                guard.check_not_lost()?;
                let token = guard.token()?;
                match std::fs::rename(&paths.part, &to) {
                    Ok(()) => {
                        // The marker goes once the rename is durable: a power
                        // cut before must not leave a `.part` it no longer names.
                        sync_dir_after_commit(to.parent().unwrap_or(Path::new("/")), &to);
                        paths.unmark();
                        Ok((guard, token))
                    }
                    Err(e) => {
                        let _ = paths.remove();
                        Err(LockError::io("rename .part over", &to, e))
                    }
                }
            })
            .await?
        };
        let (renamed, token) = renamed;
        let report = CommitReport {
            token,
            path: target,
            bytes: self.state.written,
            sha256,
            resumed_bytes: self.state.resumed,
            waited: self.state.waited,
            writing: self.state.started.elapsed(),
        };
        let out = step(&report).await;
        // The artifact is in place and the step ran: a failed release (the
        // lock file could not be removed) is logged, not returned. An error
        // means "not written", and would lose the step's result and invite
        // a retry that writes its manifest row twice.
        if let Err(e) = renamed.release().await {
            tracing::warn!(path = %report.path.display(), error = %e, "releasing the artifact lock after its commit");
        }
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let target = dir.path().join("a.bin");
    /// let mut w = ArtifactWriter::create(&target).await?;
    /// let part = w.part_path().to_path_buf();
    /// w.abort().await?;
    /// assert!(!part.exists() && !target.exists());
    /// # Ok(()) }
    /// ```
    pub async fn abort(mut self) -> Result<(), LockError> {
        let part = self.state.paths.part.clone();
        match self.state.take_cleanup() {
            Some(cleanup) => crate::blocking::run("abort", &part, cleanup).await,
            None => Ok(()),
        }
    }

    /// As `abort`, on an error path that reports its own error.
    async fn abort_quietly(&mut self) {
        let part = self.state.paths.part.clone();
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
        // A writer whose lock was lost (a soft lock's lease) stops at once:
        // its `.part` may be the new holder's now, resumed by it.
        if this.state.guard.as_ref().is_some_and(LockGuard::is_lost) {
            return Poll::Ready(Err(io::Error::other(
                "the artifact lock was lost while writing; nothing more is written",
            )));
        }
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
