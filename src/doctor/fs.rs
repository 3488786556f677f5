//! What a lock dir's filesystem is, and whether `flock` works on it: for
//! reports (`lock-doctor policy`, `probe`). `statfs` of a path on a hung
//! network mount hangs too; the operator who asks is at the terminal, where
//! that shows, which a library caller's acquisitions never risk (they tell
//! network mounts by the mount table, `mounts`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::backend::os::scratch;
use crate::mode::LockMode;
use crate::sys;

/// A filesystem type, by its `statfs` magic number.
///
/// ```
/// let report = async_filelock::doctor::policy()?;
/// if let Ok(fs) = &report.filesystem {
///     assert!(!fs.to_string().is_empty());
/// }
/// # Ok::<(), async_filelock::LockError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filesystem {
    /// `statfs`'s `f_type`.
    pub magic: u64,
    /// Its name, for common local filesystems and for the network and FUSE
    /// ones where `flock` may be refused, emulated or local to one client.
    pub name: Option<&'static str>,
    /// Whether it is one of those network or FUSE filesystems.
    pub network: bool,
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) if self.network => write!(
                f,
                "{name} (0x{:x}; a network or FUSE filesystem)",
                self.magic
            ),
            Some(name) => write!(f, "{name} (0x{:x})", self.magic),
            None => write!(f, "unknown local filesystem, magic 0x{:x}", self.magic),
        }
    }
}

/// The filesystem of `path`, or the error `statfs` gave.
pub(crate) fn filesystem_of(path: &Path) -> std::io::Result<Filesystem> {
    let st = rustix::fs::statfs(path)?;
    // `f_type`'s integer type differs between targets; the magic numbers
    // are 32-bit values either way.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64 & 0xffff_ffff;
    let network = sys::network_fs_name(magic);
    Ok(Filesystem {
        magic,
        name: network.or_else(|| sys::local_fs_name(magic)),
        network: network.is_some(),
    })
}

/// `path` if it exists, else its nearest ancestor that does (a lock dir is
/// made on first use).
pub(crate) fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Whether `flock` works in a directory.
///
/// ```
/// use async_filelock::doctor::FlockCheck;
/// assert!(FlockCheck::Works.to_string().starts_with("works"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlockCheck {
    /// A non-blocking exclusive `flock` on a new file there was granted.
    Works,
    /// It failed, with this error (`ENOLCK`, `EOPNOTSUPP`: the filesystem
    /// does not lock; use soft locks there).
    Refused(String),
    /// Not tried: no file could be made there (read-only, no permission).
    NotTested(String),
}

impl fmt::Display for FlockCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlockCheck::Works => {
                f.write_str("works (a non-blocking exclusive flock on a new file was granted)")
            }
            FlockCheck::Refused(e) => write!(
                f,
                "refused: {e}; use soft locks here (ASYNC_FILELOCK_BACKEND=soft, or auto to fall back where flock is refused)"
            ),
            FlockCheck::NotTested(why) => write!(f, "not tested: {why}"),
        }
    }
}

/// Takes a non-blocking exclusive `flock` on a new temp file in `dir`
/// (removed again at once).
pub(crate) fn flock_check(dir: &Path) -> FlockCheck {
    let temp = match tempfile::Builder::new()
        .prefix(".lock-doctor-flock.")
        .tempfile_in(dir)
    {
        Ok(temp) => temp,
        Err(e) => {
            return FlockCheck::NotTested(format!("cannot make a file in {}: {e}", dir.display()));
        }
    };
    match scratch::try_lock_file(temp.as_file(), LockMode::Exclusive) {
        Ok(true) => FlockCheck::Works,
        Ok(false) => FlockCheck::Refused("a new file was reported busy".into()),
        Err(e) => FlockCheck::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_has_a_filesystem_and_flock_works_there() {
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem_of(dir.path()).unwrap();
        assert!(fs.magic != 0);
        assert_eq!(flock_check(dir.path()), FlockCheck::Works);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp left"
        );
        assert_eq!(nearest_existing(&dir.path().join("a/b")), dir.path());
        let missing = flock_check(&dir.path().join("missing"));
        assert!(matches!(missing, FlockCheck::NotTested(_)), "{missing:?}");
    }
}
