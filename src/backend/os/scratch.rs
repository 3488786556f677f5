//! `flock` on a file of the caller's, outside any lock dir: for tools that
//! test what a filesystem does with locks (`lock-doctor policy` and
//! `probe`), which must see the bare system call, not the backend's trust
//! and identity checks around it. The calls themselves stay in
//! [`super::flock`], the one module allowed to make them.

use std::fs::File;
use std::io;

use fs4::TryLockError;

use super::flock::{try_flock, unlock};
use crate::mode::LockMode;

/// One non-blocking `flock` of `file` in `mode`: `Ok(true)` granted,
/// `Ok(false)` busy (another open file description holds it), or the
/// error the filesystem gave (`ENOLCK`, `EOPNOTSUPP`: it does not lock).
pub(crate) fn try_lock_file(file: &File, mode: LockMode) -> io::Result<bool> {
    match try_flock(file, mode) {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Lets go of a lock taken by [`try_lock_file`], keeping the file open.
pub(crate) fn unlock_file(file: &File) -> io::Result<()> {
    unlock(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptions_of_one_file_exclude_each_other_until_unlocked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let a = File::create(&path).expect("a");
        let b = File::open(&path).expect("b");
        assert!(try_lock_file(&a, LockMode::Exclusive).expect("lock a"));
        assert!(!try_lock_file(&b, LockMode::Shared).expect("try b"));
        unlock_file(&a).expect("unlock a");
        assert!(try_lock_file(&b, LockMode::Shared).expect("lock b"));
        assert!(try_lock_file(&a, LockMode::Shared).expect("share a"));
    }
}
