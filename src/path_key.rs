//! [`PathKey`]: a path as a hash-map key, compared and hashed by its bytes.
//!
//! `Path`'s own `Hash` and `Eq` walk the path component by component (so
//! that `a//b` equals `a/b`), which showed as a visible share of an
//! uncontended acquisition. The paths these maps hold are already
//! normalised (lock paths, resolved lock dirs), so their bytes are their
//! identity, and hashing the bytes is enough.

use std::borrow::Borrow;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

/// A normalised path as a map key: equal when the bytes are equal. Look it
/// up by `&OsStr` (`path.as_os_str()`).
#[derive(Debug, Clone)]
pub(crate) struct PathKey(pub Arc<Path>);

impl PartialEq for PathKey {
    fn eq(&self, other: &PathKey) -> bool {
        self.0.as_os_str() == other.0.as_os_str()
    }
}

impl Eq for PathKey {}

impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash as the `OsStr` it borrows as (see `Borrow`).
        self.0.as_os_str().hash(state);
    }
}

impl Borrow<OsStr> for PathKey {
    fn borrow(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    #[test]
    fn a_key_is_found_by_the_bytes_of_its_path() {
        let mut map = FxHashMap::default();
        map.insert(PathKey(Path::new("/run/locks/a.lock").into()), 1);
        assert_eq!(
            map.get(Path::new("/run/locks/a.lock").as_os_str()),
            Some(&1)
        );
        assert_eq!(map.get(Path::new("/run/locks/b.lock").as_os_str()), None);
    }
}
