//! [`LockError`]: one error type for every operation of the crate. Each variant
//! names the path involved so that a log line alone tells an operator where to
//! look.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::category::Category;

/// Everything that can go wrong while taking, holding or releasing a lock.
///
/// Every variant names the path it concerns and reads as a complete log line:
///
/// ```
/// use async_filelock::{Category, Holder, LockError};
/// use std::time::Duration;
/// let err = LockError::Timeout {
///     category: Category::Manifest,
///     target: "/run/manifest.jsonl".into(),
///     lock_path: "/run/.locks/manifest.0123.lock".into(),
///     waited: Duration::from_millis(1500),
///     holder: Some(Box::new(Holder::ThisTask)),
/// };
/// assert!(err.is_timeout());
/// let line = err.to_string();
/// assert!(line.contains("/run/manifest.jsonl") && line.contains("held by this same task"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock was not granted before the timeout.
    #[error(
        "timed out after {waited:.3?} waiting for the {category} lock on {} (lock file {}){}",
        .target.display(),
        .lock_path.display(),
        holder_suffix(.holder.as_deref())
    )]
    Timeout {
        /// The category of the lock.
        category: Category,
        /// The file the lock guards.
        target: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// How long the caller waited.
        waited: Duration,
        /// Who held the lock when the wait ended, where that is known: this
        /// same task, or a process the OS names (Linux: `/proc/locks`).
        /// Boxed: it carries names, and every `Result` of the crate would
        /// otherwise be as large.
        holder: Option<Box<Holder>>,
    },

    /// The lock was lost while held: a soft lock whose lease ran out before
    /// it was renewed, or whose file another process took after judging
    /// it stale; a database session that died. Whatever the holder was
    /// writing was not committed under it; a store that checks fencing
    /// tokens ([`crate::LockGuard::token`]) rejects the stale holder's
    /// writes.
    #[error(
        "the {category} lock on {} (lock file {}) was lost while held: {why}; nothing more was committed under it",
        .target.display(),
        .lock_path.display()
    )]
    Lost {
        /// The category of the lock.
        category: Category,
        /// The file the lock guards.
        target: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// What happened.
        why: String,
    },

    /// An I/O operation failed. Running out of descriptors or disk space
    /// says so in the message, with what to raise or free.
    #[error("{op} {}: {source}{}", .path.display(), io_hint(source))]
    Io {
        /// What was being done, such as "open lock file".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error (shared, so that the error is `Clone`: one failed
        /// commit answers every append that went out in it).
        #[source]
        source: Arc<io::Error>,
    },

    /// The target cannot be locked: empty, a directory, or otherwise unusable.
    #[error("cannot lock {}: {reason}", .target.display())]
    InvalidTarget {
        /// The target as the caller gave it.
        target: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },

    /// The lock directory cannot be used: it exists and is not a directory,
    /// or a component of its path is a file.
    #[error("cannot use lock dir {}: {reason}", .path.display())]
    LockDir {
        /// The lock directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// The lock path exists but is not a plain file this crate may use: a
    /// symlink (never followed, law 10), a directory, a FIFO.
    #[error("refusing lock file {}: {reason}", .path.display())]
    UnsafeLockFile {
        /// The lock file path.
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// A lock dir, a symlink leading to one, or a lock file that someone
    /// other than this user (or the shared group) could control: another
    /// user could hold our locks forever, swap a lock file under us or
    /// redirect where lock files go. Nothing was locked; `fix` says what to
    /// change.
    #[error(
        "refusing {what} {}: owned by uid {uid} (gid {gid}) with mode {mode:04o}; {fix}",
        .path.display()
    )]
    Untrusted {
        /// "lock dir", "lock dir symlink", "lock dir parent" or "lock file".
        what: &'static str,
        /// The path refused.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Its permission bits.
        mode: u32,
        /// What to do about it.
        fix: String,
    },

    /// The calling task already holds this lock and the handle refuses to
    /// wait for it ([`crate::SameTask::Refuse`]).
    #[error(
        "this task already holds the {category} lock on {} (lock file {}); refused under SameTask::Refuse: a nested acquire in one future would wait forever",
        .target.display(),
        .lock_path.display()
    )]
    WouldDeadlock {
        /// The category of the lock.
        category: Category,
        /// The file the lock guards.
        target: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
    },

    /// Acquiring this lock now would break the lock order of law 7 (category,
    /// then lock path) while the task holds a later lock: the shape of a
    /// deadlock. Use [`crate::Locks::lock_many`] to take several locks.
    #[error(
        "lock order: this task holds the {held_category} lock {} and asks for the {category} lock {}, which comes first; take both with Locks::lock_many",
        .held_lock_path.display(),
        .lock_path.display()
    )]
    OrderViolation {
        /// The category asked for.
        category: Category,
        /// The lock file asked for.
        lock_path: PathBuf,
        /// The category of the later lock already held.
        held_category: Category,
        /// The lock file of the later lock already held.
        held_lock_path: PathBuf,
    },

    /// A read-modify-write found a newer revision than the caller's copy.
    #[error(
        "revision conflict on {}: expected revision {expected}, found {found}; reload and retry",
        .path.display()
    )]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The revision the caller's copy was read at.
        expected: u64,
        /// The revision in the file.
        found: u64,
    },

    /// A file's content is not the JSON expected, or a value would not
    /// serialise. The file is left as it was.
    #[error("{op} {}: {source}", .path.display())]
    Json {
        /// What was being done, such as "parse".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// serde_json's error, with line and column.
        #[source]
        source: Arc<serde_json::Error>,
    },

    /// A line of a JSONL file is not a record of the expected type.
    #[error("bad record at line {line} (byte {offset}) of {}: {source}", .path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Byte offset where the line starts.
        offset: u64,
        /// serde_json's error.
        #[source]
        source: Arc<serde_json::Error>,
    },

    /// A written file is not what the caller said it would be. The partial
    /// file was removed and the target left as it was.
    #[error("verification of {} failed: {what}", .path.display())]
    Verification {
        /// The target.
        path: PathBuf,
        /// Which check, with expected and actual values.
        what: String,
    },

    /// Not enough free space for a file of known size; nothing was written.
    #[error(
        "not enough space for {}: {needed} bytes needed, {available} available",
        .path.display()
    )]
    InsufficientSpace {
        /// The target.
        path: PathBuf,
        /// Bytes still to write.
        needed: u64,
        /// Bytes available to this user on that filesystem.
        available: u64,
    },

    /// The source of a streamed write (an HTTP body, a reader) failed.
    #[error("reading the source for {} failed: {source}", .path.display())]
    Source {
        /// The target being written.
        path: PathBuf,
        /// The source's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// A configuration value (builder call or environment variable) is invalid.
    #[error("invalid configuration {key}: {reason}")]
    Config {
        /// The setting, such as `ASYNC_FILELOCK_TIMEOUT_SQLITE`.
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

/// What an operator can do about the errors that are about resources, not
/// about the path.
fn io_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EMFILE) => {
            "; this process is out of file descriptors: raise its limit (RLIMIT_NOFILE, `ulimit -n`) or hold fewer files open"
        }
        Some(libc::ENFILE) => "; the system is out of file descriptors (fs.file-max)",
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) => {
            "; this filesystem refuses flock: use soft locks there (ASYNC_FILELOCK_BACKEND=soft, or auto to fall back where refused)"
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; the filesystem is full (or the quota reached): free space there"
        }
        _ => "",
    }
}

fn holder_suffix(holder: Option<&Holder>) -> String {
    match holder {
        Some(Holder::ThisTask) => ", held by this same task: a nested acquire in one future is never granted (a sibling future's would be)".to_owned(),
        Some(h @ Holder::Process { .. }) => format!(", {h}"),
        None => ", and the holder is unknown (the OS did not name it in time, or it does not tell)".to_owned(),
    }
}

/// Who held a lock when a wait for it ended (in [`LockError::Timeout`]).
///
/// ```
/// use async_filelock::Holder;
/// let h = Holder::ThisTask;
/// assert!(h.is_this_task());
/// assert_eq!(h.pid(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// The task (or `block_on` thread) that asked: a sibling future of the
    /// same task, which will let go, or a nested acquire in the same
    /// future, which waits forever.
    ThisTask,
    /// A process, as the OS (or a soft lock's owner record) names it.
    #[non_exhaustive]
    Process {
        /// Its process id (on `host`, where that is given).
        pid: u32,
        /// Its command name (`/proc/<pid>/comm`), where known.
        command: Option<Box<str>>,
        /// How long it has held the lock, where known: a soft lock records
        /// when it was taken; the OS does not say for `flock`.
        held_for: Option<Duration>,
        /// The host it runs on, for a holder on another host (a soft lock
        /// on a shared filesystem).
        host: Option<Box<str>>,
    },
}

impl Holder {
    /// A holder process named by its pid, with its command name where this
    /// host can read it.
    pub(crate) fn process(pid: u32) -> Holder {
        Holder::Process {
            pid,
            command: crate::sys::command_name(pid).map(String::into_boxed_str),
            held_for: None,
            host: None,
        }
    }

    /// True for [`Holder::ThisTask`].
    ///
    /// ```
    /// assert!(async_filelock::Holder::ThisTask.is_this_task());
    /// ```
    pub fn is_this_task(&self) -> bool {
        matches!(self, Holder::ThisTask)
    }

    /// The holder's pid, where a process holds it.
    ///
    /// ```
    /// assert_eq!(async_filelock::Holder::ThisTask.pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        match self {
            Holder::Process { pid, .. } => Some(*pid),
            Holder::ThisTask => None,
        }
    }

    /// The holder's command name, where known.
    ///
    /// ```
    /// assert_eq!(async_filelock::Holder::ThisTask.command(), None);
    /// ```
    pub fn command(&self) -> Option<&str> {
        match self {
            Holder::Process { command, .. } => command.as_deref(),
            Holder::ThisTask => None,
        }
    }

    /// How long the holder has held the lock, where known.
    ///
    /// ```
    /// assert_eq!(async_filelock::Holder::ThisTask.held_for(), None);
    /// ```
    pub fn held_for(&self) -> Option<Duration> {
        match self {
            Holder::Process { held_for, .. } => *held_for,
            Holder::ThisTask => None,
        }
    }

    /// The holder's host, for one on another host.
    ///
    /// ```
    /// assert_eq!(async_filelock::Holder::ThisTask.host(), None);
    /// ```
    pub fn host(&self) -> Option<&str> {
        match self {
            Holder::Process { host, .. } => host.as_deref(),
            Holder::ThisTask => None,
        }
    }
}

/// As operators know it from apt: `held by pid 4121 (python3) for 12.4 s`.
///
/// ```
/// use async_filelock::Holder;
/// assert_eq!(Holder::ThisTask.to_string(), "held by this same task");
/// ```
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::ThisTask => f.write_str("held by this same task"),
            Holder::Process {
                pid,
                command,
                held_for,
                host,
            } => {
                if *pid == std::process::id() && host.is_none() {
                    write!(f, "held by this process (pid {pid})")?;
                } else {
                    write!(f, "held by pid {pid}")?;
                }
                if let Some(command) = command {
                    write!(f, " ({command})")?;
                }
                if let Some(host) = host {
                    write!(f, " on host {host}")?;
                }
                match held_for {
                    Some(d) => write!(f, " for {:.1} s", d.as_secs_f64()),
                    None => f.write_str(", for how long the OS does not say"),
                }
            }
        }
    }
}

impl LockError {
    /// True for [`LockError::Timeout`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let s = dir.path().join("s.json");
    /// let _held = locks.lock(Category::Summary, &s).await?;
    /// let late = tokio::spawn(locks.acquire(Category::Summary, &s).timeout(std::time::Duration::ZERO));
    /// assert!(late.await.unwrap().unwrap_err().is_timeout());
    /// # Ok(()) }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockError::Timeout { .. })
    }

    /// True for [`LockError::Lost`].
    ///
    /// ```
    /// use async_filelock::{Category, LockError};
    /// let err = LockError::Lost {
    ///     category: Category::Artifact,
    ///     target: "/data/model.bin".into(),
    ///     lock_path: "/data/.locks/artifact.0123.lock".into(),
    ///     why: "its lease ran out".into(),
    /// };
    /// assert!(err.is_lost() && err.to_string().contains("/data/model.bin"));
    /// ```
    pub fn is_lost(&self) -> bool {
        matches!(self, LockError::Lost { .. })
    }

    /// The path the error concerns: the target, the lock file, or the path of
    /// the failed I/O operation. `None` only for configuration errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// let err = locks.lock(Category::Manifest, dir.path()).await.unwrap_err(); // a directory
    /// assert_eq!(err.path(), Some(dir.path()));
    /// # Ok(()) }
    /// ```
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            LockError::Timeout { lock_path, .. }
            | LockError::WouldDeadlock { lock_path, .. }
            | LockError::Lost { lock_path, .. } => Some(lock_path),
            LockError::OrderViolation { lock_path, .. } => Some(lock_path),
            LockError::Io { path, .. }
            | LockError::UnsafeLockFile { path, .. }
            | LockError::Untrusted { path, .. }
            | LockError::LockDir { path, .. }
            | LockError::Conflict { path, .. }
            | LockError::Json { path, .. }
            | LockError::BadRecord { path, .. }
            | LockError::Verification { path, .. }
            | LockError::InsufficientSpace { path, .. }
            | LockError::Source { path, .. } => Some(path),
            LockError::InvalidTarget { target, .. } => Some(target),
            LockError::Config { .. } => None,
        }
    }

    /// A [`LockError::Source`]: the source of a streamed write to `path`
    /// (an HTTP body, a reader) failed with `source`.
    ///
    /// ```
    /// use async_filelock::LockError;
    /// let err = LockError::from_source("out/x.pdf", std::io::Error::other("connection reset"));
    /// assert!(err.to_string().contains("out/x.pdf"));
    /// ```
    pub fn from_source(
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        LockError::Source {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LockError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// Whether this is an I/O error of a process (or system) out of file
    /// descriptors (`EMFILE`, `ENFILE`).
    pub(crate) fn is_out_of_descriptors(&self) -> bool {
        matches!(self, LockError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
    }

    pub(crate) fn json(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: serde_json::Error,
    ) -> Self {
        LockError::Json {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn invalid_target(target: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        LockError::InvalidTarget {
            target: target.into(),
            reason: reason.into(),
        }
    }
}
