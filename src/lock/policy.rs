//! [`Policy`]: what a [`crate::Locks`] handle decides per category: where
//! lock files go, how long to wait, hold budgets, removal on release,
//! permissions and the lock-order check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::naming::{self, NormalTarget};
use super::order::OrderCheck;
use super::owner::SameTask;
use crate::backend::soft::SoftSettings;
use crate::backend::{BackendChoice, NetworkFsPolicy, PostgresSettings};
use crate::category::Category;

/// Name of the lock directory placed beside targets by default.
///
/// ```
/// assert_eq!(async_filelock::BESIDE_TARGET_DIR, ".locks");
/// ```
pub const BESIDE_TARGET_DIR: &str = ".locks";

/// Where lock files go.
#[derive(Debug, Clone)]
pub(crate) enum LockDir {
    /// `<target's directory>/.locks`: processes agree with no configuration.
    BesideTarget,
    /// One absolute directory for every target.
    Fixed(PathBuf),
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub lock_dir: LockDir,
    pub timeouts: [Option<Duration>; 5],
    pub budgets: [Option<Duration>; 5],
    pub remove_on_release: [bool; 5],
    pub file_mode: u32,
    pub dir_mode: u32,
    /// A group trusted with the lock dir and lock files besides this user.
    pub shared_group: Option<u32>,
    pub order_check: OrderCheck,
    pub same_task: SameTask,
    pub backend: BackendChoice,
    pub soft: SoftSettings,
    /// The server and settings of [`BackendChoice::Postgres`].
    pub postgres: PostgresSettings,
    pub network_fs: NetworkFsPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lock_dir: LockDir::BesideTarget,
            timeouts: Category::ALL.map(|c| Some(c.default_timeout())),
            // A hold longer than what waiters are willing to wait makes them
            // time out: that is the budget worth warning about.
            budgets: Category::ALL.map(|c| Some(c.default_timeout())),
            remove_on_release: Category::ALL.map(Category::default_remove_on_release),
            file_mode: 0o600,
            dir_mode: 0o700,
            shared_group: None,
            order_check: OrderCheck::default(),
            same_task: SameTask::default(),
            backend: BackendChoice::default(),
            soft: SoftSettings::default(),
            postgres: PostgresSettings::default(),
            network_fs: NetworkFsPolicy::default(),
        }
    }
}

impl Policy {
    pub fn timeout(&self, c: Category) -> Option<Duration> {
        self.timeouts[c.index()]
    }

    pub fn budget(&self, c: Category) -> Option<Duration> {
        self.budgets[c.index()]
    }

    pub fn remove_on_release(&self, c: Category) -> bool {
        self.remove_on_release[c.index()]
    }

    pub fn lock_dir_is_fixed(&self) -> bool {
        matches!(self.lock_dir, LockDir::Fixed(_))
    }

    pub fn lock_path(&self, category: Category, target: &NormalTarget) -> Arc<Path> {
        match &self.lock_dir {
            LockDir::BesideTarget => naming::lock_path_in(
                &[target.parent().as_os_str(), BESIDE_TARGET_DIR.as_ref()],
                category,
                target,
            ),
            LockDir::Fixed(dir) => naming::lock_path_in(&[dir.as_os_str()], category, target),
        }
    }

    /// `target` normalised (its path), and its lock path in `category`
    /// ([`Policy::lock_path`], remembered with the cached resolution).
    pub fn resolve(
        &self,
        category: Category,
        target: &Path,
        now: std::time::Instant,
    ) -> Result<(Arc<Path>, Arc<Path>), crate::error::LockError> {
        let fixed = match &self.lock_dir {
            LockDir::Fixed(dir) => Some(dir.as_path()),
            LockDir::BesideTarget => None,
        };
        naming::normalize_with_lock_path(target, now, category, fixed, |normal| {
            self.lock_path(category, normal)
        })
    }

    /// The lock dir made absolute, refused if it names something that is
    /// not a directory.
    pub fn resolve_lock_dir(&mut self) -> Result<(), crate::error::LockError> {
        use crate::error::LockError;
        let LockDir::Fixed(dir) = &self.lock_dir else {
            return Ok(());
        };
        if dir.as_os_str().is_empty() {
            return Err(LockError::Config {
                key: "lock dir".into(),
                reason: "is empty; give a directory".into(),
            });
        }
        let absolute = if dir.is_absolute() {
            dir.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| LockError::io("read current directory for lock dir", dir, e))?
                .join(dir)
        };
        // Its parent resolved like a target's directory (law 2):
        // `run/../run/locks` and `run-link/locks` name one lock dir, so one
        // lock path per target. The last component is kept as spelled: if
        // it is a symlink, the backend judges who owns it (law 10) instead
        // of never seeing it. One that cannot be resolved (a path through a
        // file) is kept as spelled: locking in it fails then, naming it.
        let absolute = match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => naming::resolve_dir(parent)
                .map(|p| p.join(name))
                .unwrap_or(absolute),
            _ => naming::resolve_dir(&absolute).unwrap_or(absolute),
        };
        if let Ok(meta) = std::fs::metadata(&absolute)
            && !meta.is_dir()
        {
            return Err(LockError::LockDir {
                path: absolute,
                reason: "it exists and is not a directory; choose another lock dir".into(),
            });
        }
        self.lock_dir = LockDir::Fixed(absolute);
        Ok(())
    }
}
