//! [`clean`]: removes what crashed processes left in a lock dir, each
//! thing only while holding the lock that guards it, through the code the
//! crate's own processes use, so a process that wants the lock meanwhile
//! waits or finds it as it would find any other holder's:
//!
//! * a `.part` and its marker, under the artifact lock of its target (the
//!   crate's engine: [`crate::lock::Locks::try_lock`]), only if the marker
//!   names it (`write::artifact::part`); a marker whose `.part` is gone;
//! * atomic-write temps beside a target, under its summary lock, only for
//!   targets whose summary lock file is in this lock dir (proof that their
//!   writers lock here) and only names of the exact temp pattern
//!   (`write::atomic::temp_target`);
//! * stale soft locks, through the breakers' door
//!   (`backend::soft::breaking::break_stale`), never by a plain unlink;
//! * free OS lock files not written for `older_than`: taken with the OS
//!   backend and released with removal, which removes a file only while it
//!   is still the one locked (`backend::os`'s identity check), so a waiter
//!   on it moves to the next file, as it does after any holder's removal.
//!
//! Never removed: a `<lock>.token` (a soft lock's fencing tokens), a break
//! door, a file whose name or content is not provably this crate's (an OS
//! lock file must record a target whose hash is its name's), a held lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::output::human_duration;
use super::scan::{self, Kind, LockFile, Marker, SoftLeftover};
use crate::backend::dirs::{self, LockDirFd};
use crate::backend::os::OsBackend;
use crate::backend::soft::breaking;
use crate::backend::soft::found;
use crate::backend::soft::record::Verdict;
use crate::backend::{Backend as _, BackendChoice, LockRequest};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::guard::LockGuard;
use crate::lock::policy::{BESIDE_TARGET_DIR, Policy};
use crate::lock::{Locks, LocksBuilder};
use crate::mode::LockMode;
use crate::write::artifact::part::{PartPaths, part_named_by};
use crate::write::atomic::temp_target;
use crate::write::commit::with_guard;

/// What [`clean`] does.
///
/// ```
/// use async_filelock::doctor::CleanOptions;
/// use std::time::Duration;
/// let mut options = CleanOptions::default();
/// assert_eq!(options.older_than, Duration::from_secs(3600));
/// options.dry_run = true;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanOptions {
    /// Free OS lock files last written at least this long ago are removed
    /// (default an hour). A lock file is cheap and is made again when
    /// needed, so this only keeps a busy lock dir from being churned.
    pub older_than: Duration,
    /// Only say what would be removed.
    pub dry_run: bool,
    /// The backend to lock with where no lock file says which one the
    /// target's processes use (default: the environment's,
    /// `ASYNC_FILELOCK_BACKEND`). Where a lock file exists, its kind
    /// decides: an OS lock file is locked with the OS backend, a soft lock
    /// file with soft locks.
    pub backend: Option<BackendChoice>,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            older_than: Duration::from_secs(3600),
            dry_run: false,
            backend: None,
        }
    }
}

/// What kind of leftover a removed file was.
///
/// ```
/// assert_eq!(async_filelock::doctor::Orphan::Temp.to_string(), "temp file");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Orphan {
    /// A soft lock whose owner is gone or whose lease ran out.
    StaleSoftLock,
    /// An OS lock file nobody held.
    FreeLockFile,
    /// A `.part` of a writer that stopped.
    Part,
    /// The lock dir's marker of a `.part`.
    PartMarker,
    /// An atomic-write temp of a writer that stopped.
    Temp,
    /// A soft lock's record that its creator never linked (it died between
    /// the write and the link).
    SoftLockTemp,
    /// A soft lock's break door left by a breaker that died in it.
    BreakDoor,
}

impl fmt::Display for Orphan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Orphan::StaleSoftLock => "stale soft lock",
            Orphan::FreeLockFile => "free lock file",
            Orphan::Part => ".part",
            Orphan::PartMarker => ".part marker",
            Orphan::Temp => "temp file",
            Orphan::SoftLockTemp => "unlinked soft lock record",
            Orphan::BreakDoor => "break door",
        })
    }
}

/// A file [`clean`] removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleaned {
    /// What it was.
    pub what: Orphan,
    /// Where it was.
    pub path: PathBuf,
    /// Why it could go.
    pub why: String,
}

/// A candidate [`clean`] left where it was, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Left {
    /// The file.
    pub path: PathBuf,
    /// Why it stays.
    pub why: String,
}

/// What [`clean`] did.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::doctor::{self, CleanOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let report = doctor::clean(dir.path(), &CleanOptions::default()).await?;
/// assert!(report.removed.is_empty());
/// assert!(report.to_string().starts_with("nothing to clean"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanReport {
    /// The lock dir cleaned.
    pub lock_dir: PathBuf,
    /// Whether nothing was removed, only listed.
    pub dry_run: bool,
    /// What was removed (or, in a dry run, would be).
    pub removed: Vec<Cleaned>,
    /// Candidates left alone.
    pub left: Vec<Left>,
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if self.removed.is_empty() {
            writeln!(f, "nothing to clean in {}", self.lock_dir.display())?;
        }
        for c in &self.removed {
            writeln!(f, "{verb} {} {}: {}", c.what, c.path.display(), c.why)?;
        }
        for l in &self.left {
            writeln!(f, "left {}: {}", l.path.display(), l.why)?;
        }
        Ok(())
    }
}

/// Cleans the lock dir `lock_dir` as the module docs say, with the
/// environment's configuration (`ASYNC_FILELOCK_*`, as
/// [`crate::LocksBuilder::env`] reads it) for backends, modes and the
/// soft lease. Work under a target's lock runs on tokio's blocking pool;
/// reading the lock dir, breaking stale soft locks and removing free lock
/// files run on the calling task, a few local file calls each: call it
/// where that is fine (the `lock-doctor` program runs it on a runtime of
/// its own).
///
/// # Errors
///
/// [`LockError::LockDir`] if `lock_dir` does not exist or is not a
/// directory; [`LockError::Untrusted`] if it is not a lock dir this user
/// may trust (law 10); [`LockError::Config`] for an invalid environment;
/// [`LockError::Io`] naming the lock dir if it cannot be listed. A
/// candidate that fails on its own is reported in [`CleanReport::left`]
/// with its error, and the rest go on.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::doctor::{self, CleanOptions, Orphan};
/// use async_filelock::{Category, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let lock_dir = dir.path().join("locks");
/// let locks = Locks::builder().lock_dir(&lock_dir).build()?;
/// // A summary lock taken and let go leaves its (free) lock file.
/// locks.lock(Category::Summary, dir.path().join("s.json")).await?.release().await?;
/// let mut options = CleanOptions::default();
/// options.older_than = std::time::Duration::ZERO;
/// let report = doctor::clean(&lock_dir, &options).await?;
/// assert_eq!(report.removed.len(), 1);
/// assert_eq!(report.removed[0].what, Orphan::FreeLockFile);
/// assert!(doctor::list(&lock_dir)?.is_empty());
/// # Ok(()) }
/// ```
pub async fn clean(lock_dir: &Path, options: &CleanOptions) -> Result<CleanReport, LockError> {
    let dir = super::resolve_lock_dir(lock_dir)?;
    let scan = scan::scan(&dir)?;
    let base = Locks::builder().env()?;
    let policy = base.clone().build()?.policy().clone();
    let beside = dir.file_name().is_some_and(|n| n == BESIDE_TARGET_DIR);
    let mut cleaner = Cleaner {
        backend: options.backend.unwrap_or(policy.backend),
        report: CleanReport {
            lock_dir: dir.clone(),
            dry_run: options.dry_run,
            ..CleanReport::default()
        },
        broken: BTreeSet::new(),
        dir,
        base,
        policy,
        beside,
        dry_run: options.dry_run,
    };
    // Trusted before anything is touched, as a process of the crate checks
    // it before its first lock there.
    let dir_fd = dirs::lock_dir(&cleaner.dir, &cleaner.request(&cleaner.dir, &cleaner.dir))?;
    // `.part`s and temps first: their targets are known from lock files
    // (records of stale soft locks included) that the later steps remove.
    for marker in &scan.markers {
        cleaner.part(marker).await;
    }
    for (lock_path, target) in summary_targets(&scan.lock_files) {
        cleaner.temps(&lock_path, &target).await;
    }
    for file in &scan.lock_files {
        if matches!(file.kind, Kind::Soft(_) | Kind::UnreadableSoft)
            && !cleaner.broken.contains(&file.path)
        {
            cleaner.stale_soft(&dir_fd, file);
        }
    }
    let now = SystemTime::now();
    for file in &scan.lock_files {
        cleaner.free_lock_file(file, options.older_than, now);
    }
    for leftover in &scan.soft_leftovers {
        cleaner.soft_leftover(&dir_fd, leftover, now);
    }
    Ok(cleaner.report)
}

/// The targets whose summary lock file is in the lock dir, by lock file.
fn summary_targets(files: &[LockFile]) -> BTreeMap<PathBuf, PathBuf> {
    files
        .iter()
        .filter(|f| f.category == Category::Summary)
        .filter_map(|f| {
            let target = match &f.kind {
                Kind::Os {
                    target: Some(target),
                    ours: true,
                } => target.clone(),
                Kind::Soft(record) => PathBuf::from(&record.target),
                _ => return None,
            };
            Some((f.path.clone(), target))
        })
        .collect()
}

/// One run of [`clean`].
struct Cleaner {
    dir: PathBuf,
    /// The environment's settings, which each lock is taken with.
    base: LocksBuilder,
    policy: Policy,
    /// The backend where no lock file tells.
    backend: BackendChoice,
    /// Whether the lock dir is a `.locks` beside its targets.
    beside: bool,
    dry_run: bool,
    report: CleanReport,
    /// Stale soft locks broken to take their lock (already reported).
    broken: BTreeSet<PathBuf>,
}

/// What one piece of work under a lock found.
enum Outcome {
    Removed(Cleaned),
    Left(Left),
}

/// Whether a lock was had.
enum Taken {
    /// Held (`None`: a dry run judged it free without taking it).
    Free(Option<LockGuard>),
    /// Someone holds it, or it cannot be taken here: why.
    No(String),
}

/// What is at a lock path now.
enum AtPath {
    Nothing,
    Os,
    /// A soft lock, and whether it is stale (with why).
    Soft(Option<String>),
    /// Something this crate would not lock (not a regular file, an
    /// unreadable soft record).
    Other(String),
}

impl Cleaner {
    /// A request for the lock file `lock_path` of `target` with the
    /// environment's settings.
    fn request(&self, lock_path: &Path, target: &Path) -> LockRequest {
        LockRequest {
            lock_path: Arc::from(lock_path),
            target: Arc::from(target),
            mode: LockMode::Exclusive,
            file_mode: self.policy.file_mode,
            dir_mode: self.policy.dir_mode,
            create_dir_parents: !self.beside,
            shared_group: self.policy.shared_group,
            network_fs: self.policy.network_fs,
            removed_on_release: false,
            just_released: false,
        }
    }

    fn removed(&mut self, what: Orphan, path: &Path, why: impl Into<String>) {
        self.report.removed.push(Cleaned {
            what,
            path: path.to_path_buf(),
            why: why.into(),
        });
    }

    fn left(&mut self, path: &Path, why: impl Into<String>) {
        self.report.left.push(Left {
            path: path.to_path_buf(),
            why: why.into(),
        });
    }

    /// What the lock file at `lock_path` is now.
    fn at_path(&self, lock_path: &Path) -> AtPath {
        let bytes = match scan::read_head(lock_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return AtPath::Nothing,
            Err(e) => return AtPath::Other(format!("its lock file cannot be read: {e}")),
        };
        let age = std::fs::symlink_metadata(lock_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        match scan::classify(&bytes, "") {
            Kind::Os { .. } => AtPath::Os,
            Kind::Soft(record) => AtPath::Soft(
                match crate::backend::soft::record::judge(
                    Some(&record),
                    age,
                    self.policy.soft.lease,
                ) {
                    Verdict::Live => None,
                    Verdict::Stale(why) => Some(why),
                },
            ),
            Kind::UnreadableSoft => AtPath::Other(
                "its lock file starts like a soft lock's record but does not parse as one".into(),
            ),
            Kind::Other(why) => AtPath::Other(why),
        }
    }

    /// A handle that locks `target` in `category` at exactly `lock_path`
    /// with `backend`, or `None` if neither a `.locks` beside the target
    /// nor this lock dir leads there (the target's directory was moved).
    fn handle_for(
        &self,
        category: Category,
        target: &Path,
        lock_path: &Path,
        backend: BackendChoice,
        remove: bool,
    ) -> Result<Option<Locks>, LockError> {
        let mut builders = Vec::with_capacity(2);
        if self.beside {
            builders.push(self.base.clone().lock_dir_beside_target());
        }
        builders.push(self.base.clone().lock_dir(&self.dir));
        for builder in builders {
            let locks = builder
                .backend(backend)
                .remove_on_release(category, remove)
                .build()?;
            if locks.lock_path(category, target)? == lock_path {
                return Ok(Some(locks));
            }
        }
        Ok(None)
    }

    /// Takes the `category` lock of `target`, whose lock file is
    /// `lock_path`, without waiting; in a dry run a soft lock is judged
    /// instead (taking a stale one would break it).
    async fn take(
        &mut self,
        category: Category,
        target: &Path,
        lock_path: &Path,
    ) -> Result<Taken, LockError> {
        let (backend, remove, stale) = match self.at_path(lock_path) {
            // Made by us: removed again on release.
            AtPath::Nothing => (self.backend, true, None),
            AtPath::Os => (BackendChoice::Os, false, None),
            AtPath::Soft(None) => {
                return Ok(Taken::No(format!("its {category} lock is held (soft)")));
            }
            AtPath::Soft(Some(why)) => (BackendChoice::Soft, true, Some(why)),
            AtPath::Other(why) => return Ok(Taken::No(why)),
        };
        // A dry run takes nothing (taking writes a record into an empty
        // lock file, or makes one): free is judged from the OS's table.
        if self.dry_run {
            return Ok(match stale {
                Some(_) => Taken::Free(None),
                None if os_lock_held(lock_path) => {
                    Taken::No(format!("its {category} lock is held"))
                }
                None => Taken::Free(None),
            });
        }
        let Some(locks) = self.handle_for(category, target, lock_path, backend, remove)? else {
            return Ok(Taken::No(format!(
                "its target {} no longer leads to this lock dir's {category} lock (moved?)",
                target.display()
            )));
        };
        match locks.try_lock(category, target).await? {
            Some(guard) => {
                if let Some(why) = stale {
                    // The soft backend broke it to take the lock.
                    self.broken.insert(lock_path.to_path_buf());
                    self.removed(Orphan::StaleSoftLock, lock_path, why);
                }
                Ok(Taken::Free(Some(guard)))
            }
            None => Ok(Taken::No(format!("its {category} lock is held"))),
        }
    }

    /// Runs `work` under the `category` lock of `target` (at `lock_path`)
    /// and records what it found; leaves `subject` with the reason when the
    /// lock cannot be had.
    async fn under_lock<F>(
        &mut self,
        category: Category,
        target: &Path,
        lock_path: &Path,
        subject: &Path,
        work: F,
    ) where
        F: FnOnce() -> Result<Vec<Outcome>, LockError> + Send + 'static,
    {
        let outcomes = match self.take(category, target, lock_path).await {
            Ok(Taken::Free(Some(guard))) => with_guard(guard, move |_| work()).await,
            Ok(Taken::Free(None)) => {
                crate::blocking::run("look at leftovers of", target, work).await
            }
            Ok(Taken::No(why)) => {
                self.left(subject, why);
                return;
            }
            Err(e) => Err(e),
        };
        match outcomes {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        Outcome::Removed(c) => self.report.removed.push(c),
                        Outcome::Left(l) => self.report.left.push(l),
                    }
                }
            }
            Err(e) => self.left(subject, e.to_string()),
        }
    }

    /// A `.part` marker: the `.part` it names and the marker itself go if
    /// the artifact lock is free and the marker names that `.part`.
    async fn part(&mut self, marker: &Marker) {
        let part = match part_named_by(&marker.path) {
            Ok(Some(part)) => part,
            Ok(None) => {
                self.left(&marker.path, "the marker names no .part (cut short by a crash); the artifact's next writer clears it");
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.left(&marker.path, format!("cannot read it: {e}"));
                return;
            }
        };
        let Some(target) = part
            .to_str()
            .and_then(|p| p.strip_suffix(".part"))
            .map(PathBuf::from)
            .or_else(|| {
                use std::os::unix::ffi::OsStrExt as _;
                let bytes = part.as_os_str().as_bytes();
                bytes
                    .strip_suffix(b".part")
                    .map(|t| PathBuf::from(std::ffi::OsStr::from_bytes(t)))
            })
        else {
            self.left(&marker.path, "the marker names no .part file");
            return;
        };
        let (dry_run, lock_path) = (self.dry_run, marker.lock_path.clone());
        let (work_target, marker_path) = (target.clone(), marker.path.clone());
        let work = move || {
            let paths = PartPaths::new(&work_target, &lock_path);
            if paths.marker != marker_path {
                return Ok(vec![Outcome::Left(Left {
                    path: marker_path,
                    why: "its .part's target leads to another marker".into(),
                })]);
            }
            part_under_lock(&paths, dry_run)
        };
        let subject = marker.path.clone();
        self.under_lock(
            Category::Artifact,
            &target,
            &marker.lock_path,
            &subject,
            work,
        )
        .await;
    }

    /// The temps of `target`, whose summary lock file is `lock_path`.
    async fn temps(&mut self, lock_path: &Path, target: &Path) {
        // Looked for before locking: most targets have none, and then no
        // lock is taken.
        match temps_of(target) {
            Ok(found) if found.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                self.left(target, e.to_string());
                return;
            }
        }
        let (dry_run, work_target) = (self.dry_run, target.to_path_buf());
        let work = move || {
            let mut outcomes = Vec::new();
            // Listed again under the lock: only temps made before it was
            // taken are orphans (a writer makes one only under it).
            for temp in temps_of(&work_target)? {
                if !dry_run {
                    match std::fs::remove_file(&temp) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(LockError::io("remove temp file", temp, e)),
                    }
                }
                outcomes.push(Outcome::Removed(Cleaned {
                    what: Orphan::Temp,
                    path: temp,
                    why: "its summary lock is free: left by a writer that stopped".into(),
                }));
            }
            Ok(outcomes)
        };
        self.under_lock(Category::Summary, target, lock_path, target, work)
            .await;
    }

    /// A soft lock file: broken through the door if stale.
    fn stale_soft(&mut self, dir_fd: &LockDirFd, file: &LockFile) {
        let Some(name) = file.path.file_name() else {
            return;
        };
        let group = self.policy.shared_group;
        let lease = self.policy.soft.lease;
        let found = match found::inspect(dir_fd, name, &file.path, group) {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => return self.left(&file.path, e.to_string()),
        };
        // A record that does not parse is judged by its age against the
        // lease, as a waiter judges it (and `list` shows it); a file that
        // is no soft lock at all is not this step's.
        if found.not_soft {
            return;
        }
        let Verdict::Stale(why) = found.verdict(lease) else {
            return;
        };
        if self.dry_run {
            return self.removed(Orphan::StaleSoftLock, &file.path, why);
        }
        match breaking::break_stale(dir_fd, name, &file.path, group, found, lease) {
            Ok(true) => self.removed(Orphan::StaleSoftLock, &file.path, why),
            Ok(false) => self.left(
                &file.path,
                "it changed meanwhile (renewed, or taken afresh), or another process is breaking it",
            ),
            Err(e) => self.left(&file.path, e.to_string()),
        }
    }

    /// A soft lock's leftover: a record never linked (a single link, not
    /// written for [`breaking::DOOR_STALE`]: its creator takes
    /// microseconds), or a door as old as the breakers themselves take for
    /// a dead breaker's. Both name one holding only, so removing them
    /// stops nothing.
    fn soft_leftover(&mut self, dir_fd: &LockDirFd, leftover: &SoftLeftover, now: SystemTime) {
        let Some(name) = leftover.path.file_name() else {
            return;
        };
        let Ok(st) = rustix::fs::statat(dir_fd.fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        else {
            return;
        };
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
            return self.left(&leftover.path, "not a regular file; left alone");
        }
        let modified = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(st.st_mtime).unwrap_or(0),
                u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            );
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        let stale_after = if leftover.door {
            breaking::DOOR_STALE
                .max(self.policy.soft.lease)
                .min(Duration::from_secs(300))
        } else {
            breaking::DOOR_STALE
        };
        if age < stale_after || (!leftover.door && st.st_nlink > 1) {
            return;
        }
        let (what, why) = if leftover.door {
            (
                Orphan::BreakDoor,
                format!("left by a breaker that stopped {} ago", human_duration(age)),
            )
        } else {
            (
                Orphan::SoftLockTemp,
                format!("never linked; written {} ago", human_duration(age)),
            )
        };
        if self.dry_run {
            return self.removed(what, &leftover.path, why);
        }
        match rustix::fs::unlinkat(dir_fd.fd(), name, rustix::fs::AtFlags::empty()) {
            Ok(()) => self.removed(what, &leftover.path, why),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => self.left(&leftover.path, std::io::Error::from(e).to_string()),
        }
    }

    /// An OS lock file: removed if free, provably this crate's, and not
    /// written for `older_than`.
    fn free_lock_file(&mut self, file: &LockFile, older_than: Duration, now: SystemTime) {
        let Kind::Os { target, ours } = &file.kind else {
            return;
        };
        if !ours {
            return self.left(
                &file.path,
                "its content is not the target this crate records under this name; left alone",
            );
        }
        let age = now.duration_since(file.modified).unwrap_or(Duration::ZERO);
        if age < older_than {
            return;
        }
        let why = format!("free; last written {} ago", human_duration(age));
        if self.dry_run {
            if !os_lock_held(&file.path) {
                self.removed(Orphan::FreeLockFile, &file.path, why);
            }
            return;
        }
        let req = self.request(&file.path, target.as_deref().unwrap_or(&file.path));
        let held = match OsBackend.try_lock(&req) {
            Ok(Some(held)) => held,
            Ok(None) => return,
            Err(e) => return self.left(&file.path, e.to_string()),
        };
        // Held now: no process of the crate can remove or replace it (a
        // soft waiter takes a file that is no soft lock only if its flock
        // is free). Checked all the same: a soft lock found here is never
        // an OS lock file to remove.
        let soft_now = scan::read_head(&file.path)
            .is_ok_and(|bytes| bytes.trim_ascii_start().starts_with(b"{"));
        if soft_now {
            let _ = held.release(false, None);
            return self.left(&file.path, "it became a soft lock meanwhile");
        }
        match held.release(true, None) {
            Ok(()) => match std::fs::symlink_metadata(&file.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed(Orphan::FreeLockFile, &file.path, why)
                }
                _ => self.left(&file.path, "it was still there after its release"),
            },
            Err(e) => self.left(&file.path, e.to_string()),
        }
    }
}

/// Whether someone holds an OS lock on the file at `path`, as the OS's
/// lock table says (a dry run looks, and takes nothing). Without a table
/// (other Unix systems), held: a dry run then promises nothing it cannot
/// see.
fn os_lock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    crate::sys::lock_table().is_none_or(|table| {
        table
            .get(&crate::sys::holder_key(meta.dev(), meta.ino()))
            .is_some_and(|locks| !locks.holders.is_empty())
    })
}

/// Under the artifact lock: the `.part` `paths` names and its marker.
fn part_under_lock(paths: &PartPaths, dry_run: bool) -> Result<Vec<Outcome>, LockError> {
    let marker_gone = |paths: &PartPaths| -> Outcome {
        if !dry_run {
            paths.unmark();
        }
        match std::fs::symlink_metadata(&paths.marker) {
            Ok(_) if !dry_run => Outcome::Left(Left {
                path: paths.marker.clone(),
                why: "it could not be removed".into(),
            }),
            _ => Outcome::Removed(Cleaned {
                what: Orphan::PartMarker,
                path: paths.marker.clone(),
                why: "its artifact lock is free".into(),
            }),
        }
    };
    let found = match std::fs::symlink_metadata(&paths.part) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![marker_gone(paths)]),
        Err(e) => return Err(LockError::io("inspect", &paths.part, e)),
    };
    let ours = paths
        .is_ours(&found)
        .map_err(|e| LockError::io("read .part marker", &paths.marker, e))?;
    if !ours {
        return Ok(vec![Outcome::Left(Left {
            path: paths.part.clone(),
            why: "its marker names another file (kept as evidence, with the marker)".into(),
        })]);
    }
    if !dry_run {
        paths
            .remove()
            .map_err(|e| LockError::io("remove leftover", &paths.part, e))?;
    }
    Ok(vec![
        Outcome::Removed(Cleaned {
            what: Orphan::Part,
            path: paths.part.clone(),
            why: "its artifact lock is free: left by a writer that stopped".into(),
        }),
        marker_gone(paths),
    ])
}

/// The atomic-write temps beside `target` (`.{name}.{random}.tmp`).
fn temps_of(target: &Path) -> Result<Vec<PathBuf>, LockError> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LockError::io("list directory", dir, e)),
    };
    let mut temps: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| temp_target(&e.file_name()) == Some(name))
        .map(|e| e.path())
        .collect();
    temps.sort();
    Ok(temps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::naming;
    use std::time::Instant;

    /// The summary lock path `target` has in `dir`.
    fn summary_lock_in(dir: &Path, target: &Path) -> Result<PathBuf, LockError> {
        let normal = naming::normalize_target(target, Instant::now())?;
        Ok(dir.join(naming::lock_file_name(Category::Summary, &normal)))
    }

    #[test]
    fn only_summary_lock_files_that_are_ours_name_temp_targets() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("s.json");
        let lock_path = summary_lock_in(dir.path(), &target).unwrap();
        let normal = naming::normalize_target(&target, Instant::now()).unwrap();
        let file = |kind| LockFile {
            path: lock_path.clone(),
            category: Category::Summary,
            dev: 0,
            ino: 0,
            modified: SystemTime::UNIX_EPOCH,
            kind,
        };
        let ours = file(Kind::Os {
            target: Some(normal.path.to_path_buf()),
            ours: true,
        });
        let not_ours = file(Kind::Os {
            target: Some(PathBuf::from("/elsewhere")),
            ours: false,
        });
        let targets = summary_targets(&[ours, not_ours]);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[&lock_path], &*normal.path);
    }

    #[test]
    fn temps_are_found_by_their_exact_pattern_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("s.json");
        for name in [
            ".s.json.AbC123xyz789.tmp",
            ".s.json.AbC123xyz78.tmp",
            ".t.json.AbC123xyz789.tmp",
            "s.json",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(
            temps_of(&target).unwrap(),
            [dir.path().join(".s.json.AbC123xyz789.tmp")]
        );
    }
}
