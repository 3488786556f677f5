//! The advisory-lock key of a lock: the two-int form `(namespace, hash)`,
//! where the hash is taken from the lock's name (its category and the
//! SHA-256 of its normalised target, as in the lock file's name) and the
//! namespace keeps applications sharing a server apart. The two-int and
//! the bigint key spaces of PostgreSQL do not overlap, so bigint locks of
//! other software never collide with these.
//!
//! Stable across versions: the golden test below pins it. Changing it
//! would let two versions of the crate hold one lock at once.

use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The advisory-lock key of one lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub namespace: i32,
    pub hash: i32,
}

impl Key {
    /// The key of the lock whose lock path is `lock_path` (only its file
    /// name counts: the lock dir is where files go on this host, not part
    /// of the lock's identity across hosts).
    pub(crate) fn of(namespace: i32, lock_path: &Path) -> Key {
        use std::os::unix::ffi::OsStrExt as _;
        let name = lock_path.file_name().map_or(&[][..], |n| n.as_bytes());
        let mut hash = Sha256::new();
        hash.update(b"async-filelock advisory key v1\0");
        hash.update(name);
        let digest = hash.finalize();
        Key {
            namespace,
            hash: i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default namespace: "af" in ASCII.
    const DEFAULT_NAMESPACE: i32 = 0x6166;

    /// Pins the key function: a change here is a change of every lock's
    /// identity on the server.
    #[test]
    fn golden_keys_never_change() {
        let k = Key::of(
            DEFAULT_NAMESPACE,
            Path::new("/any/dir/artifact.0123456789abcdef0123456789abcdef.lock"),
        );
        assert_eq!(k.namespace, 0x6166);
        assert_eq!(k.hash, GOLDEN);
        let same = Key::of(
            DEFAULT_NAMESPACE,
            Path::new("/other/dir/artifact.0123456789abcdef0123456789abcdef.lock"),
        );
        assert_eq!(k, same, "the lock dir is not part of the key");
        let other = Key::of(
            DEFAULT_NAMESPACE,
            Path::new("/any/dir/summary.0123456789abcdef0123456789abcdef.lock"),
        );
        assert_ne!(k.hash, other.hash);
    }

    const GOLDEN: i32 = 1_130_568_115;
}
