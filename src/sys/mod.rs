//! Platform code: the only place in the crate allowed `unsafe`, and the only
//! place that knows which Unix it runs on.
//!
//! Bottom layer (see ARCHITECTURE.md, "Layers"): it imports nothing of the
//! crate. Each platform file offers the same small set of functions, so the
//! modules above read the same on every target:
//!
//! * [`holder_of`]: the pid holding a `flock` on a lock file, if the OS tells.
//! * [`reserve`]: reserve disk space for a file without changing its size.
//! * [`WaitingThread`], [`install_wake_handler`]: wake one thread out of a
//!   blocking `flock` with a signal, so a cancelled wait gives its thread
//!   back (see `backend::os::interrupt`).
//!
//! Linux ([`linux`]) is what the test suite runs on. Every other Unix gets
//! [`fallback`]: no holder lookup (timeouts say the holder is unknown), no
//! keep-size preallocation (files grow as written), and no wake signal
//! (cancelled and timed waits poll, 1 to 50 ms, instead of being woken).
//! The fallback is compiled and unit-tested on Linux too, so it cannot rot
//! unseen.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{WaitingThread, holder_of, install_wake_handler, reserve};

#[cfg(any(not(target_os = "linux"), test))]
mod fallback;
#[cfg(not(target_os = "linux"))]
pub(crate) use fallback::{WaitingThread, holder_of, install_wake_handler, reserve};
