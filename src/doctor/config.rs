//! [`policy`]: the configuration a process of this crate would run with in
//! this environment (`Locks::builder().env()`), and what the lock dir's
//! filesystem is and does with `flock`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::fs::{self, Filesystem, FlockCheck};
use crate::backend::{BackendChoice, NetworkFsPolicy};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::Locks;
use crate::lock::env::ENV_DIR;
use crate::lock::policy::{BESIDE_TARGET_DIR, LockDir};

/// The effective configuration, as [`policy`] reports it.
///
/// ```
/// let report = async_filelock::doctor::policy()?;
/// let text = report.to_string();
/// assert!(text.contains("backend") && text.contains("lock dir"));
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyReport {
    /// The configured lock dir (`ASYNC_FILELOCK_DIR`), resolved; `None`:
    /// a `.locks` beside each target (the default).
    pub lock_dir: Option<PathBuf>,
    /// The directory whose filesystem was looked at: the lock dir, or for
    /// the default `./.locks`; its nearest existing ancestor if it does not
    /// exist yet.
    pub examined: PathBuf,
    /// The backend.
    pub backend: BackendChoice,
    /// The lease of soft locks.
    pub soft_lease: Duration,
    /// What happens with a lock dir on a network filesystem.
    pub network_fs: NetworkFsPolicy,
    /// Permission bits of new lock files.
    pub file_mode: u32,
    /// Permission bits of new lock dirs.
    pub dir_mode: u32,
    /// A group trusted with lock dirs and files besides this user.
    pub shared_group: Option<u32>,
    /// Each category's timeout (`None`: waits forever).
    pub timeouts: Vec<(Category, Option<Duration>)>,
    /// Threads that may block in the kernel waiting for OS locks.
    pub wait_threads: usize,
    /// The filesystem of [`PolicyReport::examined`], or why `statfs` failed.
    pub filesystem: Result<Filesystem, String>,
    /// Whether `flock` works in [`PolicyReport::examined`].
    pub flock: FlockCheck,
}

/// The effective configuration from this process's environment, and what
/// its lock dir's filesystem does (a `statfs` and a non-blocking `flock`
/// on a temp file there, removed at once).
///
/// # Errors
///
/// [`LockError::Config`] naming the variable when the environment holds an
/// invalid value (as every process of the crate would report it);
/// [`LockError::LockDir`] when the configured lock dir is not a directory.
///
/// ```
/// use async_filelock::doctor;
/// let report = doctor::policy()?;
/// assert_eq!(report.timeouts.len(), 5);
/// # Ok::<(), async_filelock::LockError>(())
/// ```
pub fn policy() -> Result<PolicyReport, LockError> {
    let locks = Locks::builder().env()?.build()?;
    let policy = locks.policy();
    let lock_dir = match &policy.lock_dir {
        LockDir::Fixed(dir) => Some(dir.clone()),
        LockDir::BesideTarget => None,
    };
    let wanted = match &lock_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .map_err(|e| LockError::io("read current directory for", ".", e))?
            .join(BESIDE_TARGET_DIR),
    };
    let examined = fs::nearest_existing(&wanted);
    Ok(PolicyReport {
        filesystem: fs::filesystem_of(&examined).map_err(|e| e.to_string()),
        flock: fs::flock_check(&examined),
        lock_dir,
        examined,
        backend: policy.backend,
        soft_lease: policy.soft.lease,
        network_fs: policy.network_fs,
        file_mode: policy.file_mode,
        dir_mode: policy.dir_mode,
        shared_group: policy.shared_group,
        timeouts: Category::ALL
            .into_iter()
            .map(|c| (c, policy.timeout(c)))
            .collect(),
        wait_threads: crate::backend::os::waits::max_kernel_waits(),
    })
}

fn network_fs_name(policy: NetworkFsPolicy) -> &'static str {
    match policy {
        NetworkFsPolicy::Warn => "warn",
        NetworkFsPolicy::Refuse => "refuse",
        NetworkFsPolicy::Allow => "allow",
    }
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lock_dir {
            Some(dir) => writeln!(f, "lock dir:      {} ({ENV_DIR})", dir.display())?,
            None => writeln!(
                f,
                "lock dir:      {BESIDE_TARGET_DIR} beside each target (default; {ENV_DIR} unset)"
            )?,
        }
        writeln!(f, "backend:       {}", self.backend.name())?;
        writeln!(f, "soft lease:    {:.3} s", self.soft_lease.as_secs_f64())?;
        writeln!(f, "network fs:    {}", network_fs_name(self.network_fs))?;
        writeln!(f, "file mode:     {:04o}", self.file_mode)?;
        writeln!(f, "dir mode:      {:04o}", self.dir_mode)?;
        match self.shared_group {
            Some(gid) => writeln!(f, "shared group:  {gid}")?,
            None => writeln!(f, "shared group:  none")?,
        }
        let timeouts: Vec<String> = self
            .timeouts
            .iter()
            .map(|(c, t)| match t {
                Some(t) => format!("{c} {} s", t.as_secs_f64()),
                None => format!("{c} inf"),
            })
            .collect();
        writeln!(f, "timeouts:      {}", timeouts.join(", "))?;
        writeln!(f, "wait threads:  {}", self.wait_threads)?;
        writeln!(f, "examined:      {}", self.examined.display())?;
        match &self.filesystem {
            Ok(fs) => writeln!(f, "filesystem:    {fs}")?,
            Err(e) => writeln!(f, "filesystem:    unknown (statfs failed: {e})")?,
        }
        writeln!(f, "flock:         {}", self.flock)
    }
}
