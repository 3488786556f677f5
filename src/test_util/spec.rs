//! [`HoldSpec`]: what a holder child needs to take a lock as the parent's
//! handle would (lock dir, backend, permissions, timeout), passed to it in
//! one environment variable as JSON.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendChoice, NetworkFsPolicy};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::policy::LockDir;
use crate::lock::{ENV_BACKEND, ENV_NETWORK_FS_POLICY, Locks, LocksBuilder};

/// The environment variable that makes a test program a holder child.
pub(super) const HOLD_VAR: &str = "ASYNC_FILELOCK_TEST_UTIL_HOLD";

/// The lock a child takes, and the settings of the handle it takes it
/// with. Paths travel as JSON strings: test paths are UTF-8.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HoldSpec {
    pub category: String,
    pub shared: bool,
    pub target: PathBuf,
    /// `None`: `.locks` beside the target.
    pub lock_dir: Option<PathBuf>,
    pub backend: String,
    pub soft_lease_ms: u64,
    pub soft_poll_ms: u64,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub shared_group: Option<u32>,
    pub remove_on_release: bool,
    pub network_fs: String,
    /// `None`: wait as long as it takes.
    pub timeout_ms: Option<u64>,
    /// The server of the PostgreSQL backend, when the handle has one.
    #[serde(default)]
    pub postgres: Option<PostgresSpec>,
}

/// The PostgreSQL backend's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PostgresSpec {
    pub url: String,
    pub namespace: i32,
    pub connections: usize,
    pub heartbeat_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl HoldSpec {
    /// The lock `category`/`target` as `locks` would take it.
    pub fn new(locks: &Locks, category: Category, target: PathBuf, shared: bool) -> HoldSpec {
        let policy = locks.policy();
        HoldSpec {
            category: category.name().to_owned(),
            shared,
            target,
            lock_dir: match &policy.lock_dir {
                LockDir::Fixed(dir) => Some(dir.clone()),
                LockDir::BesideTarget => None,
            },
            backend: policy.backend.name().to_owned(),
            soft_lease_ms: millis(policy.soft.lease),
            soft_poll_ms: millis(policy.soft.poll),
            file_mode: policy.file_mode,
            dir_mode: policy.dir_mode,
            shared_group: policy.shared_group,
            remove_on_release: policy.remove_on_release(category),
            network_fs: match policy.network_fs {
                NetworkFsPolicy::Warn => "warn",
                NetworkFsPolicy::Refuse => "refuse",
                NetworkFsPolicy::Allow => "allow",
            }
            .to_owned(),
            timeout_ms: policy.timeout(category).map(millis),
            postgres: policy
                .postgres
                .url
                .as_ref()
                .filter(|_| policy.backend == BackendChoice::Postgres)
                .map(|url| PostgresSpec {
                    url: url.clone(),
                    namespace: policy.postgres.namespace,
                    connections: policy.postgres.connections,
                    heartbeat_ms: millis(policy.postgres.heartbeat),
                }),
        }
    }

    pub fn category(&self) -> Result<Category, LockError> {
        self.category.parse().map_err(|e| LockError::Config {
            key: HOLD_VAR.to_owned(),
            reason: format!("{e}"),
        })
    }

    /// The handle the child locks with.
    pub fn locks(&self) -> Result<Locks, LockError> {
        let (backend, network_fs) = (self.backend.clone(), self.network_fs.clone());
        let by_server = self.postgres.is_some();
        let builder: LocksBuilder = Locks::builder().env_from(|key| match key {
            ENV_BACKEND if !by_server => Some(backend.clone().into()),
            ENV_NETWORK_FS_POLICY => Some(network_fs.clone().into()),
            _ => None,
        })?;
        let builder = match &self.lock_dir {
            Some(dir) => builder.lock_dir(dir),
            None => builder.lock_dir_beside_target(),
        };
        let mut builder = builder
            .soft_lease(Duration::from_millis(self.soft_lease_ms))
            .soft_poll(Duration::from_millis(self.soft_poll_ms))
            .file_mode(self.file_mode)
            .dir_mode(self.dir_mode)
            .remove_on_release(self.category()?, self.remove_on_release);
        if let Some(gid) = self.shared_group {
            builder = builder.shared_group(gid);
        }
        if let Some(pg) = &self.postgres {
            builder = builder
                .postgres(pg.url.clone())
                .postgres_namespace(pg.namespace)
                .postgres_connections(pg.connections)
                .postgres_heartbeat(Duration::from_millis(pg.heartbeat_ms));
        }
        builder.build()
    }

    pub fn to_json(&self) -> Result<String, LockError> {
        serde_json::to_string(self).map_err(|e| LockError::Config {
            key: HOLD_VAR.to_owned(),
            reason: format!("the lock to hold does not serialise ({e}): is the target UTF-8?"),
        })
    }

    pub fn from_json(text: &str) -> Result<HoldSpec, LockError> {
        serde_json::from_str(text).map_err(|e| LockError::Config {
            key: HOLD_VAR.to_owned(),
            reason: format!("not a lock to hold: {e}"),
        })
    }
}
