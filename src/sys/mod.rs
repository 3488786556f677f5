//! Platform code: the only place that knows which Unix it runs on.
//!
//! Bottom layer (see ARCHITECTURE.md, "Layers"): it imports nothing of the
//! crate. Each platform file offers the same small set of items, so the
//! modules above read the same on every target:
//!
//! * [`lock_holders`], [`holder_key`]: who holds which `flock`, if the OS
//!   tells; [`lock_table`]: each lock's holders with their modes and its
//!   waiters, for tools that show a lock dir.
//! * [`reserve`]: reserve disk space for a file without changing its size.
//! * [`rename_noreplace`]: a rename that never replaces an existing file.
//! * [`network_mounts`]: where file calls may hang on the network;
//!   [`network_fs_name`]: which `statfs` types are network or FUSE ones;
//!   [`local_fs_name`]: the names of common local ones, for reports.
//! * [`process_state`], [`process_start_time`], [`boot_id`],
//!   [`pid_namespace`], [`command_name`]: whether a process still runs
//!   (pid and start time), and its name, for soft locks and timeouts.
//! * [`EventSource`]: events on lock files (closed, removed), so a wait can
//!   be woken without a thread of its own blocking in `flock`.
//! * [`fork_generation`]: tells a `fork()`ed child from its parent;
//!   [`set_wake_up_preemption`]: whether a thread preempts when it wakes
//!   (Linux only; nothing elsewhere). Both in [`unix`], with the crate's
//!   only `unsafe`.
//!
//! Linux ([`linux`]) is what the test suite runs on. Every other Unix gets
//! `fallback`: no holder lookup (timeouts say the holder is unknown), no
//! keep-size preallocation (files grow as written), and no file events
//! (waits beyond the kernel-wait threads poll, 1 to 50 ms). The fallback is
//! compiled and unit-tested on Linux too, so it cannot rot unseen.

mod unix;
pub(crate) use unix::{
    coarse_now, fork_generation, host_name, nanos, raise_fd_limit, set_wake_up_preemption,
};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{
    EventSource, FileChange, FileChanges, FileLocks, LockHolders, ProcessState, TableMode, WatchId,
    boot_id, command_name, holder_key, local_fs_name, lock_holders, lock_table, network_fs_name,
    network_mounts, pid_namespace, process_start_time, process_state, rename_noreplace, reserve,
};

#[cfg(any(not(target_os = "linux"), test))]
#[cfg_attr(all(target_os = "linux", test), allow(dead_code))]
mod fallback;
#[cfg(not(target_os = "linux"))]
pub(crate) use fallback::{
    EventSource, FileChange, FileChanges, FileLocks, LockHolders, ProcessState, TableMode, WatchId,
    boot_id, command_name, holder_key, local_fs_name, lock_holders, lock_table, network_fs_name,
    network_mounts, pid_namespace, process_start_time, process_state, rename_noreplace, reserve,
};
