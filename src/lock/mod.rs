//! The lock layer: [`Locks`] and what it is made of. Policy (lock dir,
//! per-category timeouts and budgets, modes), naming (target to lock path,
//! law 2), the in-process table (one FIFO queue per lock path, law 5), the
//! acquisition core, guards, lock order (law 7) and metrics (law 8).
//!
//! Layer 2 of ARCHITECTURE.md. It may use `backend` (only through the
//! [`crate::backend::Backend`] trait, so it never knows which backend holds
//! a lock; the one exception is [`locks`] choosing the OS backend as the
//! default), `blocking`, `sys` and the vocabulary (`error`, `category`,
//! `mode`). The writers above use it; it never uses them.
//!
//! * [`locks`]: the [`Locks`] handle and its builder.
//! * [`policy`], [`env`](mod@env): what a handle decides, and the environment's say.
//! * [`naming`]: target path to lock path.
//! * [`acquire`]: the acquisition core; [`acquisition`]: the public
//!   [`Acquire`] future over it.
//! * [`table`], [`shared`], [`owner`]: the in-process queue, the shared OS
//!   hold of a process, and who asks.
//! * [`guard`], [`set`]: held locks, alone and in lock order.
//! * [`order`]: the lock-order check; [`patience`]: how a wait may wait.
//! * [`metrics`]: counters and percentiles.

pub(crate) mod acquire;
pub(crate) mod acquisition;
pub(crate) mod env;
pub(crate) mod guard;
pub(crate) mod locks;
pub(crate) mod metrics;
pub(crate) mod naming;
pub(crate) mod order;
pub(crate) mod owner;
pub(crate) mod patience;
pub(crate) mod policy;
pub(crate) mod set;
pub(crate) mod shared;
pub(crate) mod table;

pub use acquisition::Acquire;
pub use env::{
    ENV_BACKEND, ENV_BATCH_WAIT_THREADS, ENV_DIR, ENV_HOT_FILES, ENV_NETWORK_FS_POLICY,
    ENV_PG_CONNECTIONS, ENV_PG_NAMESPACE, ENV_PG_URL, ENV_SOFT_LEASE, ENV_TIMEOUT_PREFIX,
    ENV_WAIT_THREADS,
};
pub use guard::LockGuard;
pub use locks::{Locks, LocksBuilder};
#[cfg(feature = "metrics")]
pub use metrics::describe_metrics;
pub use metrics::{CategoryMetrics, Metrics, Percentiles};
pub use order::OrderCheck;
pub use owner::SameTask;
pub use policy::BESIDE_TARGET_DIR;
pub use set::LockSet;
