//! [`ArtifactWriterBuilder`]: the options of an artifact write, taking the
//! artifact lock, and the decision made under it: write, already present,
//! or busy. Also the constructors of [`ArtifactWriter`], which all start
//! here.

use std::fmt;
use std::path::{Path, PathBuf};

use super::part::PartPaths;
use super::prepare::{self, Expect, PartFile, PartOptions, parse_sha256};
use super::writer::{ArtifactWriter, ProgressFn, clean_up_from_drop, remove_part_then_release};
use super::{Artifact, Leftover, OnBusy, PresentReport, Progress};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::{LockGuard, Locks};

/// Options of an [`ArtifactWriter`]; from [`ArtifactWriter::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{Artifact, ArtifactWriter, OnBusy};
/// let open = ArtifactWriter::builder(dir.path().join("model.bin"))
///     .expected_len(5)
///     .on_busy(OnBusy::Skip)
///     .open()
///     .await?;
/// assert!(matches!(open, Artifact::Write(_)));
/// # Ok(()) }
/// ```
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
    /// The handle to lock with: the one given, else the default.
    fn handle(&self) -> Result<Locks, LockError> {
        match &self.locks {
            Some(locks) => Ok(locks.clone()),
            None => Locks::global(),
        }
    }

    /// The handle whose artifact lock is taken (default [`Locks::global`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// let Artifact::Write(w) = ArtifactWriter::builder(dir.path().join("a.bin")).locks(locks.clone()).open().await? else { unreachable!() };
    /// assert!(w.part_path().ends_with("a.bin.part"));
    /// # Ok(()) }
    /// ```
    pub fn locks(mut self, locks: Locks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The artifact's length: checked at commit, used to check free space
    /// and preallocate before writing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter, LockError};
    /// use tokio::io::AsyncWriteExt;
    /// let Artifact::Write(mut w) = ArtifactWriter::builder(dir.path().join("a.bin")).expected_len(5).open().await? else { unreachable!() };
    /// w.write_all(b"four").await.unwrap();
    /// assert!(matches!(w.commit().await, Err(LockError::Verification { .. })));
    /// # Ok(()) }
    /// ```
    pub fn expected_len(mut self, len: u64) -> Self {
        self.expected_len = Some(len);
        self
    }

    /// The artifact's SHA-256 (64 hex digits): checked at commit.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if `hex` is not 64 hex digits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// use tokio::io::AsyncWriteExt;
    /// let target = dir.path().join("a.bin");
    /// let Artifact::Write(mut w) = ArtifactWriter::builder(&target).expected_sha256("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")?.open().await? else { unreachable!() };
    /// w.write_all(b"hello").await.unwrap();
    /// w.commit().await?;
    /// assert!(ArtifactWriter::builder(&target).expected_sha256("not hex").is_err());
    /// # Ok(()) }
    /// ```
    pub fn expected_sha256(mut self, hex: &str) -> Result<Self, LockError> {
        self.expected_sha256 = Some(parse_sha256(hex)?);
        Ok(self)
    }

    /// Compute the SHA-256 and report it at commit, even if none is expected.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// use tokio::io::AsyncWriteExt;
    /// let Artifact::Write(mut w) = ArtifactWriter::builder(dir.path().join("a.bin")).compute_sha256().open().await? else { unreachable!() };
    /// w.write_all(b"hello").await.unwrap();
    /// assert_eq!(w.commit().await?.sha256.as_deref(), Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
    /// # Ok(()) }
    /// ```
    pub fn compute_sha256(mut self) -> Self {
        self.compute_sha256 = true;
        self
    }

    /// What to do when another holder has the lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter, OnBusy};
    /// let target = dir.path().join("a.bin");
    /// let first = ArtifactWriter::builder(&target).open().await?;
    /// let second = ArtifactWriter::builder(&target).on_busy(OnBusy::Skip).open().await?;
    /// assert!(matches!(second, Artifact::Busy), "someone else is downloading it");
    /// # Ok(()) }
    /// ```
    pub fn on_busy(mut self, on_busy: OnBusy) -> Self {
        self.on_busy = on_busy;
        self
    }

    /// What to do with a leftover `.part`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter, Leftover};
    /// let Artifact::Write(w) = ArtifactWriter::builder(dir.path().join("a.bin")).leftover(Leftover::Resume).open().await? else { unreachable!() };
    /// assert_eq!(w.resume_from(), 0, "no .part was left: start at 0");
    /// # Ok(()) }
    /// ```
    pub fn leftover(mut self, leftover: Leftover) -> Self {
        self.leftover = leftover;
        self
    }

    /// Check an existing target against the expected length and digest; if
    /// it fails, it is written anew instead of reported present.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// let target = dir.path().join("a.bin");
    /// std::fs::write(&target, b"stale").unwrap();
    /// let open = ArtifactWriter::builder(&target).expected_len(3).verify_existing().open().await?;
    /// assert!(matches!(open, Artifact::Write(_)), "the wrong file is written anew");
    /// # Ok(()) }
    /// ```
    pub fn verify_existing(mut self) -> Self {
        self.verify_existing = true;
        self
    }

    /// Write even if the target exists, replacing it at commit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// let target = dir.path().join("a.bin");
    /// std::fs::write(&target, b"old").unwrap();
    /// let open = ArtifactWriter::builder(&target).replace_existing().open().await?;
    /// assert!(matches!(open, Artifact::Write(_)));
    /// # Ok(()) }
    /// ```
    pub fn replace_existing(mut self) -> Self {
        self.replace_existing = true;
        self
    }

    /// Whether to reserve the expected length on disk first (default on).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::ArtifactWriter;
    /// let open = ArtifactWriter::builder(dir.path().join("a.bin")).expected_len(1 << 20).preallocate(false).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn preallocate(mut self, on: bool) -> Self {
        self.preallocate = on;
        self
    }

    /// Called after every write with the bytes so far and the total if known.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use tokio::io::AsyncWriteExt;
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let s = seen.clone();
    /// let Artifact::Write(mut w) = ArtifactWriter::builder(dir.path().join("a.bin"))
    ///     .progress(move |p| s.store(p.bytes, Ordering::Relaxed))
    ///     .open()
    ///     .await? else { unreachable!() };
    /// w.write_all(b"hello").await.unwrap();
    /// assert_eq!(seen.load(Ordering::Relaxed), 5);
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// let target = dir.path().join("a.bin");
    /// std::fs::write(&target, b"done").unwrap();
    /// let open = ArtifactWriter::builder(&target).open().await?;
    /// assert!(matches!(open, Artifact::AlreadyPresent(_)));
    /// # Ok(()) }
    /// ```
    pub async fn open(self) -> Result<Artifact, LockError> {
        let locks = self.handle()?;
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
        let (check_present, verify, opts) = (
            !self.replace_existing,
            self.verify_existing,
            self.part_options(),
        );
        let opened = crate::blocking::run("prepare .part for", &target, {
            let target = target.clone();
            move || {
                if check_present
                    && let Some(present) = prepare::present(&target, &opts.expect, verify)?
                {
                    if opts.leftover == Leftover::Discard {
                        prepare::remove_leftover_part(&PartPaths::new(&target, guard.lock_path()));
                    }
                    return Ok(Err((present, guard)));
                }
                Prepping::new(&target, &opts, guard).map(Ok)
            }
        })
        .await?;
        match opened {
            Ok(prepping) => Ok(Artifact::Write(
                prepping.into_writer(opts.expect, self.progress),
            )),
            Err((present, guard)) => {
                drop(guard);
                Ok(Artifact::AlreadyPresent(PresentReport {
                    path: target,
                    bytes: present.bytes,
                    verified: present.verified,
                    waited,
                }))
            }
        }
    }

    /// Prepares a fresh (or resumed) `.part` under `guard`, whatever is at
    /// the target: for [`ArtifactWriter::create`] and
    /// [`ArtifactWriter::from_guard`].
    async fn write_under(self, guard: LockGuard) -> Result<ArtifactWriter, LockError> {
        let target = guard.target().to_path_buf();
        let opts = self.part_options();
        let prepping = crate::blocking::run("prepare .part for", &target, {
            let target = target.clone();
            move || Prepping::new(&target, &opts, guard)
        })
        .await?;
        Ok(prepping.into_writer(opts.expect, self.progress))
    }

    fn part_options(&self) -> PartOptions {
        PartOptions {
            expect: Expect {
                len: self.expected_len,
                sha256: self.expected_sha256,
            },
            leftover: self.leftover,
            preallocate: self.preallocate,
            hashing: self.compute_sha256 || self.expected_sha256.is_some(),
        }
    }
}

/// A prepared `.part` and its lock, on the way from the blocking pool to
/// the writer. The guard travels with the work: if the `open` future is
/// dropped while the `.part` is being prepared, this is dropped on the
/// blocking pool, which removes the `.part` before letting go of the lock,
/// instead of leaving it behind unlocked.
struct Prepping {
    paths: PartPaths,
    file: Option<PartFile>,
    guard: Option<LockGuard>,
}

impl Prepping {
    fn new(target: &Path, opts: &PartOptions, guard: LockGuard) -> Result<Self, LockError> {
        let paths = PartPaths::new(target, guard.lock_path());
        Ok(Prepping {
            file: Some(prepare::prepare_part(target, &paths, opts)?),
            paths,
            guard: Some(guard),
        })
    }

    fn into_writer(mut self, expect: Expect, progress: Option<ProgressFn>) -> ArtifactWriter {
        let (Some(file), Some(guard)) = (self.file.take(), self.guard.take()) else {
            unreachable!("a Prepping is taken apart once, here")
        };
        ArtifactWriter::new(guard, file, expect, progress)
    }
}

impl Drop for Prepping {
    fn drop(&mut self) {
        let guard = self.guard.take();
        if let Some(file) = self.file.take() {
            drop(file);
            let paths = self.paths.clone();
            clean_up_from_drop(move || remove_part_then_release(&paths, guard));
        }
    }
}

impl ArtifactWriter {
    /// Options for writing `target`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{Artifact, ArtifactWriter};
    /// let open = ArtifactWriter::builder(dir.path().join("a.bin")).expected_len(5).open().await?;
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use tokio::io::AsyncWriteExt;
    /// let target = dir.path().join("a.bin");
    /// std::fs::write(&target, b"old").unwrap();
    /// let mut w = async_filelock::ArtifactWriter::create(&target).await?;
    /// w.write_all(b"new").await.unwrap();
    /// w.commit().await?;
    /// assert_eq!(std::fs::read(&target).unwrap(), b"new");
    /// # Ok(()) }
    /// ```
    pub async fn create(target: impl AsRef<Path>) -> Result<ArtifactWriter, LockError> {
        let builder = ArtifactWriter::builder(target);
        let locks = builder.handle()?;
        let guard = locks.lock(Category::Artifact, &builder.target).await?;
        builder.write_under(guard).await
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::{ArtifactWriter, Category};
    /// let guard = locks.lock(Category::Artifact, dir.path().join("a.bin")).await?;
    /// let w = ArtifactWriter::from_guard(guard).await?;
    /// w.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_guard(guard: LockGuard) -> Result<ArtifactWriter, LockError> {
        if guard.category() != Category::Artifact || guard.mode().is_shared() {
            return Err(LockError::invalid_target(
                guard.target(),
                "an artifact writer needs an exclusive artifact lock",
            ));
        }
        ArtifactWriter::builder(guard.target())
            .write_under(guard)
            .await
    }
}
