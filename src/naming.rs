//! From a target path to its lock path (law 2).
//!
//! The target is made absolute and its parent directory resolved through the
//! filesystem (`realpath`), so `a/../b/x`, `./b/x`, `/abs/b/x` and a path
//! through a symlinked parent all name one target. The final component is not
//! resolved: a symlink target is locked as the link, the way a writer that
//! renames over it sees it. The normalised path is hashed with SHA-256 into a
//! fixed-length file name, which avoids length and punctuation limits and
//! keeps lock files out of data directories.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Category, LockError};

/// Hex digits of the SHA-256 prefix in a lock file name: 128 bits, far past
/// any chance of two targets in one lock dir colliding.
const HASH_HEX_LEN: usize = 32;

/// A target after normalisation: its absolute path and its resolved parent.
#[derive(Debug, Clone)]
pub(crate) struct NormalTarget {
    pub path: PathBuf,
}

impl NormalTarget {
    pub fn parent(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

/// Normalises `target`; see the module docs. Rejects empty paths, paths that
/// end in `.` or `..`, and existing directories.
pub(crate) fn normalize_target(target: &Path) -> Result<NormalTarget, LockError> {
    if target.as_os_str().is_empty() {
        return Err(LockError::invalid_target(
            target,
            "the path is empty; pass the path of the file to guard",
        ));
    }
    let name = match target.components().next_back() {
        Some(Component::Normal(name)) => name.to_owned(),
        _ => {
            return Err(LockError::invalid_target(
                target,
                "the path names a directory, not a file; lock the file inside it",
            ));
        }
    };
    let absolute = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| LockError::io("read current directory for", target, e))?
            .join(target)
    };
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let resolved = resolve_dir(parent).map_err(|e| LockError::io("resolve parent of", target, e))?;
    let path = resolved.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => Err(LockError::invalid_target(
            target,
            "it is a directory; lock a file (for a directory of outputs, lock a marker file inside it)",
        )),
        Ok(_) => Ok(NormalTarget { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NormalTarget { path }),
        Err(e) => Err(LockError::io("inspect lock target", target, e)),
    }
}

/// `realpath` of `dir`; for a directory that does not exist yet, `realpath`
/// of its longest existing ancestor plus the rest normalised lexically.
fn resolve_dir(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(dir) {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut missing: Vec<&OsStr> = Vec::new();
    let mut ancestor = dir;
    let base = loop {
        match ancestor.parent() {
            Some(up) => {
                match ancestor.file_name() {
                    Some(n) => missing.push(n),
                    None => missing.push(ancestor.as_os_str()),
                }
                ancestor = up;
                match std::fs::canonicalize(ancestor) {
                    Ok(p) => break p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            None => break PathBuf::from("/"),
        }
    };
    let mut out = base;
    for part in missing.into_iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => out.push(part),
        }
    }
    Ok(out)
}

/// `<category>.<hash>.lock` for a normalised target.
pub(crate) fn lock_file_name(category: Category, target: &NormalTarget) -> String {
    let digest = Sha256::digest(path_bytes(&target.path));
    let mut name = String::with_capacity(category.name().len() + HASH_HEX_LEN + 7);
    name.push_str(category.name());
    name.push('.');
    for byte in &digest[..HASH_HEX_LEN / 2] {
        // Writing to a String cannot fail.
        let _ = write!(name, "{byte:02x}");
    }
    name.push_str(".lock");
    name
}

/// The raw bytes of a path: Unix paths are byte strings, so non-UTF-8 names
/// hash and record exactly.
pub(crate) fn path_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_tail_of_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let got = resolve_dir(&dir.path().join("a/b/../c/./d")).unwrap();
        assert_eq!(got, base.join("a/c/d"));
    }

    #[test]
    fn lock_file_name_shape() {
        let t = NormalTarget {
            path: "/x/y".into(),
        };
        let n = lock_file_name(Category::Sqlite, &t);
        assert!(n.starts_with("sqlite.") && n.ends_with(".lock"), "{n}");
        assert_eq!(n.len(), "sqlite.".len() + HASH_HEX_LEN + ".lock".len());
        let other = NormalTarget {
            path: "/x/z".into(),
        };
        assert_ne!(n, lock_file_name(Category::Sqlite, &other));
        assert_ne!(n, lock_file_name(Category::Summary, &t));
    }
}
