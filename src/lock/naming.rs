//! From a target path to its lock path (law 2).
//!
//! The target is made absolute and its parent directory resolved through the
//! filesystem (`realpath`), so `a/../b/x`, `./b/x`, `/abs/b/x` and a path
//! through a symlinked parent all name one target. The final component is not
//! resolved: a symlink target is locked as the link, the way a writer that
//! renames over it sees it. The normalised path is hashed with SHA-256 into a
//! fixed-length file name, which avoids length and punctuation limits and
//! keeps lock files out of data directories.
//!
//! Resolution costs several system calls (`realpath` walks the path), more
//! than the lock itself, so results are cached per process for
//! [`CACHE_TTL`]: a symlink in a target's path re-pointed while the process
//! runs is seen within that time.

use std::ffi::{OsStr, OsString};
use std::io;
// Fx: keys are local paths, where hash flooding is no threat and SipHash
// was a visible share of an uncontended acquisition.
use rustc_hash::FxHashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::category::Category;
use crate::error::LockError;
use crate::per_process::PerProcess;

/// Hex digits of the SHA-256 prefix in a lock file name: 128 bits, far past
/// any chance of two targets in one lock dir colliding.
const HASH_HEX_LEN: usize = 32;

/// A target after normalisation: its absolute path and its resolved parent.
#[derive(Debug, Clone)]
pub(crate) struct NormalTarget {
    pub path: Arc<Path>,
    /// Hex SHA-256 prefix of `path`, computed once per resolution.
    pub hash: Arc<str>,
}

impl NormalTarget {
    pub fn new(path: PathBuf) -> Self {
        let digest = Sha256::digest(path_bytes(&path));
        NormalTarget {
            path: path.into(),
            hash: hex::encode(&digest[..HASH_HEX_LEN / 2]).into(),
        }
    }

    pub fn parent(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

/// How long a resolved target is reused without asking the filesystem again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries kept at most; past that, expired entries go, then all.
const CACHE_MAX: usize = 8192;

/// Keyed by the caller's spelling as bytes: `Path`'s own `Hash` parses
/// components, a visible share of an uncontended acquisition, and two
/// spellings of one target are merely two entries with the same value.
type Cache = FxHashMap<OsString, Cached>;

/// A resolution, when it was made, and the last lock path made from it.
#[derive(Debug)]
struct Cached {
    normal: NormalTarget,
    at: Instant,
    lock_path: Option<LockPathMemo>,
}

/// A lock path made from a cached resolution, and what it was made for:
/// the same target asked for again in the same category and lock dir (a
/// hot lock taken again and again) gets it without building its path anew,
/// a visible share of an uncontended acquisition. One per target: a target
/// asked for in turn in two categories builds its path each time, as
/// without the memo.
#[derive(Debug)]
struct LockPathMemo {
    category: Category,
    /// The fixed lock dir it is in; `None`: beside the target.
    lock_dir: Option<Arc<Path>>,
    lock_path: Arc<Path>,
}

/// Per process: a child made by `fork()` must not find it locked by a
/// parent thread that does not exist in the child (see `per_process`).
static CACHE: PerProcess<Mutex<Cache>> = PerProcess::new();

fn cache() -> MutexGuard<'static, Cache> {
    CACHE
        .get(|| Mutex::new(FxHashMap::default()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Normalises `target`; see the module docs. Rejects empty paths, paths that
/// end in `.` or `..`, and existing directories. `now` dates the cache
/// entry (callers have it already: one clock read less per acquisition).
pub(crate) fn normalize_target(target: &Path, now: Instant) -> Result<NormalTarget, LockError> {
    if !target.is_absolute() {
        return resolve_target(target);
    }
    if let Some(cached) = cache().get(target.as_os_str())
        && now.duration_since(cached.at) < CACHE_TTL
    {
        return Ok(cached.normal.clone());
    }
    let resolved = resolve_target(target)?;
    insert(target, resolved.clone(), now, None);
    Ok(resolved)
}

/// [`normalize_target`] (the path alone) and the lock path of the result in `category` and
/// `lock_dir` (`None`: beside the target), made by `make` unless the cached
/// resolution remembers it (see [`LockPathMemo`]).
pub(crate) fn normalize_with_lock_path(
    target: &Path,
    now: Instant,
    category: Category,
    lock_dir: Option<&Path>,
    make: impl FnOnce(&NormalTarget) -> Arc<Path>,
) -> Result<(Arc<Path>, Arc<Path>), LockError> {
    if !target.is_absolute() {
        let normal = resolve_target(target)?;
        let lock_path = make(&normal);
        return Ok((normal.path, lock_path));
    }
    let memo_for = |memo: &LockPathMemo| {
        memo.category == category
            && memo.lock_dir.as_deref().map(Path::as_os_str) == lock_dir.map(Path::as_os_str)
    };
    if let Some(cached) = cache().get_mut(target.as_os_str())
        && now.duration_since(cached.at) < CACHE_TTL
    {
        // The path alone: its hash is in the lock path already.
        let path = Arc::clone(&cached.normal.path);
        if let Some(memo) = cached.lock_path.as_ref().filter(|m| memo_for(m)) {
            return Ok((path, Arc::clone(&memo.lock_path)));
        }
        let lock_path = make(&cached.normal);
        // A target taken in turn in two categories keeps its lock dir's
        // copy rather than making one per acquisition.
        let lock_dir = match (
            cached.lock_path.as_ref().and_then(|m| m.lock_dir.as_ref()),
            lock_dir,
        ) {
            (Some(kept), Some(dir)) if kept.as_os_str() == dir.as_os_str() => {
                Some(Arc::clone(kept))
            }
            (_, dir) => dir.map(Arc::from),
        };
        cached.lock_path = Some(LockPathMemo {
            category,
            lock_dir,
            lock_path: Arc::clone(&lock_path),
        });
        return Ok((path, lock_path));
    }
    let normal = resolve_target(target)?;
    let lock_path = make(&normal);
    let memo = LockPathMemo {
        category,
        lock_dir: lock_dir.map(Arc::from),
        lock_path: Arc::clone(&lock_path),
    };
    let path = Arc::clone(&normal.path);
    insert(target, normal, now, Some(memo));
    Ok((path, lock_path))
}

/// Caches `normal` for `target`, resolved at `now`.
fn insert(target: &Path, normal: NormalTarget, now: Instant, lock_path: Option<LockPathMemo>) {
    let mut cache = cache();
    if cache.len() >= CACHE_MAX {
        cache.retain(|_, cached| now.duration_since(cached.at) < CACHE_TTL);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(
        target.as_os_str().to_owned(),
        Cached {
            normal,
            at: now,
            lock_path,
        },
    );
}

fn resolve_target(target: &Path) -> Result<NormalTarget, LockError> {
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
    let resolved =
        resolve_dir(parent).map_err(|e| LockError::io("resolve parent of", target, e))?;
    let path = resolved.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => Err(LockError::invalid_target(
            target,
            "it is a directory; lock a file (for a directory of outputs, lock a marker file inside it)",
        )),
        Ok(_) => Ok(NormalTarget::new(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NormalTarget::new(path)),
        Err(e) => Err(LockError::io("inspect lock target", target, e)),
    }
}

/// `target` normalised without asking the filesystem, for where asking may
/// hang (a network mount) and only a name is needed (a timeout error): the
/// last resolution if one was cached (however old), else the path made
/// absolute and its `.` and `..` folded lexically.
pub(crate) fn normalize_without_io(target: &Path) -> NormalTarget {
    if let Some(cached) = cache().get(target.as_os_str()) {
        return cached.normal.clone();
    }
    let absolute = if target.is_absolute() {
        target.to_path_buf()
    } else {
        // getcwd reads the kernel's record of the directory: no I/O.
        std::env::current_dir()
            .map(|cwd| cwd.join(target))
            .unwrap_or_else(|_| target.to_path_buf())
    };
    let mut folded = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    NormalTarget::new(folded)
}

/// `realpath` of `dir`; for a directory that does not exist yet, `realpath`
/// of its longest existing prefix plus the rest normalised lexically.
pub(crate) fn resolve_dir(dir: &Path) -> io::Result<PathBuf> {
    let parts: Vec<Component<'_>> = dir.components().collect();
    for keep in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..keep].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut resolved) => {
                for part in &parts[keep..] {
                    match part {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::Normal(name) => resolved.push(name),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no existing ancestor",
    ))
}

/// `<category>.<hash>.lock`, the name [`lock_path_in`] gives a lock file:
/// for tests, which build lock paths the plain way to check it.
#[cfg(test)]
pub(crate) fn lock_file_name(category: Category, target: &NormalTarget) -> String {
    [category.name(), ".", &target.hash, ".lock"].concat()
}

/// The lock path of `target` in `category`: the directory `dirs` (joined
/// by `/`; each after the first relative, as `Path::join` would otherwise
/// replace, not append), then `CATEGORY.HASH.lock`. Built as bytes in one
/// allocation, the `Arc` itself: it is made on every acquisition, and `Path::join` (which
/// parses components) with its intermediate strings was a visible share.
pub(crate) fn lock_path_in(
    dirs: &[&OsStr],
    category: Category,
    target: &NormalTarget,
) -> Arc<Path> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes: smallvec::SmallVec<[u8; 256]> = smallvec::SmallVec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let dir = dir.as_bytes();
        debug_assert!(i == 0 || !dir.starts_with(b"/"), "a later part is relative");
        if !bytes.is_empty() && bytes.last() != Some(&b'/') {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(dir);
    }
    if bytes.last() != Some(&b'/') {
        bytes.push(b'/');
    }
    for part in [category.name(), ".", &target.hash, ".lock"] {
        bytes.extend_from_slice(part.as_bytes());
    }
    Arc::from(Path::new(OsStr::from_bytes(&bytes)))
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
    fn a_lock_path_built_as_bytes_is_the_joined_path() {
        let target = NormalTarget::new(PathBuf::from("/data/run/manifest.jsonl"));
        for dirs in [
            &["/run/locks"][..],
            &["/run/locks/"],
            &["/"],
            &["/data/run", ".locks"],
            &["/", ".locks"],
            &["/a//b", "c"],
        ] {
            let mut joined = PathBuf::new();
            for d in dirs {
                joined = joined.join(d);
            }
            let joined = joined.join(lock_file_name(Category::Manifest, &target));
            let dirs: Vec<&OsStr> = dirs.iter().map(OsStr::new).collect();
            let built = lock_path_in(&dirs, Category::Manifest, &target);
            assert_eq!(built.as_os_str(), joined.as_os_str(), "{dirs:?}");
        }
    }

    #[test]
    fn lexical_tail_of_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let got = resolve_dir(&dir.path().join("a/b/../c/./d")).unwrap();
        assert_eq!(got, base.join("a/c/d"));
    }

    #[test]
    fn a_name_without_io_folds_dots_and_prefers_the_cached_resolution() {
        let t = normalize_without_io(Path::new("/never/x/../y/./z.json"));
        assert_eq!(&*t.path, Path::new("/never/y/z.json"));
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        let resolved = normalize_target(&target, Instant::now()).unwrap();
        assert_eq!(normalize_without_io(&target).hash, resolved.hash);
    }

    /// A target asked for again in the same category and lock dir gets the
    /// lock path made the first time; another category or lock dir gets
    /// its own, made anew, and a resolution past its time starts afresh.
    #[test]
    fn a_lock_path_is_remembered_for_its_category_and_lock_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("memo.json");
        let made = std::cell::Cell::new(0);
        let ask = |category, lock_dir: Option<&Path>, now| {
            normalize_with_lock_path(&target, now, category, lock_dir, |normal| {
                made.set(made.get() + 1);
                let dirs = [lock_dir.unwrap_or(Path::new("/beside")).as_os_str()];
                lock_path_in(&dirs, category, normal)
            })
            .unwrap()
        };
        let now = Instant::now();
        let (normal, first) = ask(Category::Manifest, Some(Path::new("/l1")), now);
        assert_eq!(
            &*normal,
            dir.path().canonicalize().unwrap().join("memo.json")
        );
        let (_, again) = ask(Category::Manifest, Some(Path::new("/l1")), now);
        assert!(Arc::ptr_eq(&first, &again), "remembered");
        assert_eq!(made.get(), 1);
        let (_, other_dir) = ask(Category::Manifest, Some(Path::new("/l2")), now);
        let (_, beside) = ask(Category::Manifest, None, now);
        let (_, other_category) = ask(Category::Summary, None, now);
        assert_eq!(made.get(), 4, "each made anew");
        assert!(other_dir.starts_with("/l2") && beside.starts_with("/beside"));
        assert!(
            other_category
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("summary.")
        );
        let (_, back) = ask(Category::Manifest, Some(Path::new("/l1")), now);
        assert_eq!(
            back, first,
            "the same path, made again: one memo per target"
        );
        assert_eq!(made.get(), 5);
        let later = now + CACHE_TTL;
        let (_, expired) = ask(Category::Manifest, Some(Path::new("/l1")), later);
        assert_eq!(expired, first);
        assert_eq!(
            made.get(),
            6,
            "a resolution past its time is made afresh, memo and all"
        );
    }

    #[test]
    fn lock_file_name_shape() {
        let t = NormalTarget::new("/x/y".into());
        let n = lock_file_name(Category::Sqlite, &t);
        assert!(n.starts_with("sqlite.") && n.ends_with(".lock"), "{n}");
        assert_eq!(n.len(), "sqlite.".len() + HASH_HEX_LEN + ".lock".len());
        let other = NormalTarget::new("/x/z".into());
        assert_ne!(n, lock_file_name(Category::Sqlite, &other));
        assert_ne!(n, lock_file_name(Category::Summary, &t));
    }
}
