//! The only module that calls the OS lock functions (the soft backend
//! uses it too: soft lock files carry a `flock` where it works, so OS and
//! soft holders of one lock file exclude each other) (`clippy.toml`
//! disallows them everywhere else): one place to audit for `EINTR`
//! handling and modes.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io;

use fs4::TryLockError;

use crate::mode::LockMode;

/// One non-blocking `flock`.
pub(crate) fn try_flock(file: &File, mode: LockMode) -> Result<(), TryLockError> {
    match mode {
        LockMode::Exclusive => fs4::FileExt::try_lock(file),
        LockMode::Shared => fs4::FileExt::try_lock_shared(file),
    }
}

/// A blocking `flock`; returns `Interrupted` when a signal woke it.
pub(super) fn flock_blocking(file: &File, mode: LockMode) -> io::Result<()> {
    match mode {
        LockMode::Exclusive => fs4::FileExt::lock(file),
        LockMode::Shared => fs4::FileExt::lock_shared(file),
    }
}

/// Lets go of a lock held through `file` without closing it.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    fs4::FileExt::unlock(file)
}
