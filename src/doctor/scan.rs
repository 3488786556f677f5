//! A lock dir read once: its lock files, each classified by what it holds
//! (an OS lock file's target record, a soft lock's owner record), and the
//! markers of `.part` files. Nothing here locks or removes; [`super::list()`]
//! and [`super::clean()`] decide from what it found.
//!
//! A file counts as this crate's only by its name *and* its content: a lock
//! file is `<category>.<hash>.lock` (`lock::naming`), and an OS lock file
//! records a target whose hash is the one in its name (or nothing yet); a
//! soft lock file holds an owner record that parses. Anything else in the
//! lock dir is left alone, whatever it is called.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::backend::soft::record::{MAX_RECORD, OwnerRecord};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::naming::NormalTarget;

/// Hex digits of the hash in a lock file name (see `lock::naming`).
const HASH_HEX_LEN: usize = 32;

/// A lock dir as read once.
#[derive(Debug)]
pub(crate) struct Scan {
    pub lock_files: Vec<LockFile>,
    pub markers: Vec<Marker>,
    /// What soft locks leave behind when a process dies mid-step: records
    /// written but never linked (`<lock>.new.<nonce>`) and break doors
    /// (`<lock>.break.<key>`).
    pub soft_leftovers: Vec<SoftLeftover>,
}

/// A file a soft lock's creation or break left behind.
#[derive(Debug)]
pub(crate) struct SoftLeftover {
    pub path: PathBuf,
    /// A door (`.break.`) rather than a record never linked (`.new.`).
    pub door: bool,
}

/// Whether `name` is `<lock file name>.new.<hex>` or
/// `<lock file name>.break.<key>` (a door), and which.
pub(crate) fn soft_leftover_name(name: &OsStr) -> Option<bool> {
    let name = std::str::from_utf8(name.as_bytes()).ok()?;
    let (lock, rest, door) = match (
        name.split_once(".lock.new."),
        name.split_once(".lock.break."),
    ) {
        (Some((lock, rest)), None) => (lock, rest, false),
        (None, Some((lock, rest))) => (lock, rest, true),
        _ => return None,
    };
    let lock = format!("{lock}.lock");
    let key_ok = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (lock_name(OsStr::new(&lock)).is_some() && key_ok).then_some(door)
}

/// A file named like one of this crate's lock files.
#[derive(Debug)]
pub(crate) struct LockFile {
    pub path: PathBuf,
    pub category: Category,
    pub dev: u64,
    pub ino: u64,
    pub modified: SystemTime,
    pub kind: Kind,
}

/// What a lock file holds.
#[derive(Debug)]
pub(crate) enum Kind {
    /// An OS (`flock`) lock file. `target`: the first line (`None` when
    /// the file is empty: created, its record not written yet, or a full
    /// disk). `ours`: empty, or a target whose hash is the name's followed
    /// by nothing but a fencing-token trailer (`backend::tokens`):
    /// provably this crate's.
    Os { target: Option<PathBuf>, ours: bool },
    /// A soft lock file whose owner record parses.
    Soft(Box<OwnerRecord>),
    /// A file that starts like a soft lock's record but does not parse as
    /// one (cut short by a crash, or not this crate's).
    UnreadableSoft,
    /// Not a regular file, or unreadable: never touched.
    Other(String),
}

/// A `.part` marker in the lock dir: `artifact.<hash>.part`.
#[derive(Debug)]
pub(crate) struct Marker {
    pub path: PathBuf,
    /// The artifact lock file it belongs to (`artifact.<hash>.lock`).
    pub lock_path: PathBuf,
}

/// The category and hash of a lock file named `name`
/// (`<category>.<32 hex digits>.lock`), or `None`.
pub(crate) fn lock_name(name: &OsStr) -> Option<(Category, &str)> {
    let name = std::str::from_utf8(name.as_bytes()).ok()?;
    let stem = name.strip_suffix(".lock")?;
    let (category, hash) = stem.split_once('.')?;
    let category = Category::ALL.into_iter().find(|c| c.name() == category)?;
    is_hash(hash).then_some((category, hash))
}

/// Whether `name` is a `.part` marker's name (`artifact.<hash>.part`).
fn is_marker_name(name: &OsStr) -> bool {
    std::str::from_utf8(name.as_bytes())
        .ok()
        .and_then(|n| n.strip_prefix("artifact."))
        .and_then(|n| n.strip_suffix(".part"))
        .is_some_and(is_hash)
}

fn is_hash(hash: &str) -> bool {
    hash.len() == HASH_HEX_LEN
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads the lock dir `dir`: every lock file and marker in it, sorted by
/// path. Files of other names are not looked at.
///
/// # Errors
///
/// [`LockError::LockDir`] if `dir` does not exist or is not a directory;
/// [`LockError::Io`] naming it if it cannot be listed.
pub(crate) fn scan(dir: &Path) -> Result<Scan, LockError> {
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LockError::LockDir {
            path: dir.to_path_buf(),
            reason: "it does not exist".into(),
        },
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => LockError::LockDir {
            path: dir.to_path_buf(),
            reason: "it is not a directory".into(),
        },
        _ => LockError::io("list lock dir", dir, e),
    })?;
    let mut scan = Scan {
        lock_files: Vec::new(),
        markers: Vec::new(),
        soft_leftovers: Vec::new(),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LockError::io("list lock dir", dir, e))?;
        let name: OsString = entry.file_name();
        let path = dir.join(&name);
        if let Some((category, hash)) = lock_name(&name) {
            if let Some(lock_file) = read_lock_file(path, category, hash) {
                scan.lock_files.push(lock_file);
            }
        } else if is_marker_name(&name) {
            scan.markers.push(Marker {
                lock_path: path.with_extension("lock"),
                path,
            });
        } else if let Some(door) = soft_leftover_name(&name) {
            scan.soft_leftovers.push(SoftLeftover { path, door });
        }
    }
    scan.lock_files.sort_by(|a, b| a.path.cmp(&b.path));
    scan.markers.sort_by(|a, b| a.path.cmp(&b.path));
    scan.soft_leftovers.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

/// Reads one lock file; `None` if it went away meanwhile.
fn read_lock_file(path: PathBuf, category: Category, hash: &str) -> Option<LockFile> {
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(LockFile {
                path,
                category,
                dev: 0,
                ino: 0,
                modified: SystemTime::UNIX_EPOCH,
                kind: Kind::Other(format!("cannot inspect it: {e}")),
            });
        }
    };
    let mut lock_file = LockFile {
        category,
        dev: meta.dev(),
        ino: meta.ino(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        kind: Kind::Other("not a regular file".into()),
        path,
    };
    if !meta.file_type().is_file() {
        return Some(lock_file);
    }
    lock_file.kind = match read_head(&lock_file.path) {
        Ok(bytes) => classify(&bytes, hash),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => Kind::Other(format!("cannot read it: {e}")),
    };
    Some(lock_file)
}

/// The first [`MAX_RECORD`] bytes of a lock file, opened without following
/// a symlink or blocking on a FIFO swapped in since it was looked at.
pub(crate) fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::with_capacity(512);
    file.take(MAX_RECORD as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What the bytes of a lock file named with `hash` say it is.
pub(crate) fn classify(bytes: &[u8], hash: &str) -> Kind {
    if bytes.trim_ascii_start().starts_with(b"{") {
        return match OwnerRecord::parse(bytes) {
            Some(record) => Kind::Soft(Box::new(record)),
            None => Kind::UnreadableSoft,
        };
    }
    let mut lines = bytes.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    if first.is_empty() {
        let rest_empty = lines.all(<[u8]>::is_empty);
        return Kind::Os {
            target: None,
            ours: rest_empty,
        };
    }
    let target = PathBuf::from(OsStr::from_bytes(first));
    let hash_matches = target.is_absolute() && &*NormalTarget::new(target.clone()).hash == hash;
    // After the target: the fencing-token trailer (`\0token <n>`; a
    // `token <n>` line in files of earlier versions), nothing else.
    let rest_tokens = lines.all(|line| {
        line.is_empty()
            || line
                .strip_prefix(b"\0token ")
                .or_else(|| line.strip_prefix(b"token "))
                .and_then(|n| std::str::from_utf8(n).ok())
                .is_some_and(|n| n.trim().parse::<u64>().is_ok())
    });
    Kind::Os {
        target: Some(target),
        ours: hash_matches && rest_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_crates_only_in_full() {
        let hash = "0123456789abcdef0123456789abcdef";
        let name = format!("summary.{hash}.lock");
        assert_eq!(
            lock_name(OsStr::new(&name)),
            Some((Category::Summary, hash))
        );
        for bad in [
            format!("summary.{hash}.lock.token"),
            format!("summary.{hash}.lock.break.n1"),
            format!("other.{hash}.lock"),
            format!("summary.{}.lock", &hash[1..]),
            format!("summary.{}.lock", hash.to_uppercase()),
            "summary.lock".to_owned(),
        ] {
            assert_eq!(lock_name(OsStr::new(&bad)), None, "{bad}");
        }
        assert!(is_marker_name(OsStr::new(&format!("artifact.{hash}.part"))));
        assert!(!is_marker_name(OsStr::new(&format!("summary.{hash}.part"))));
    }

    #[test]
    fn an_os_lock_file_is_ours_when_its_target_hashes_to_its_name() {
        let target = PathBuf::from("/data/x.json");
        let hash = NormalTarget::new(target.clone()).hash;
        let ours = |bytes: &[u8], hash: &str| match classify(bytes, hash) {
            Kind::Os { ours, .. } => ours,
            other => panic!("{other:?}"),
        };
        assert!(ours(b"/data/x.json\n", &hash));
        assert!(ours(b"/data/x.json\n\0token 17\n", &hash));
        assert!(
            ours(b"/data/x.json\ntoken 17\n", &hash),
            "an earlier version's"
        );
        assert!(ours(b"", &hash));
        assert!(!ours(b"/data/y.json\n", &hash), "another target");
        assert!(!ours(b"/data/x.json\nrm -rf\n", &hash), "not a token line");
        assert!(!ours(b"\n\nsomething\n", &hash));
        assert!(matches!(
            classify(b"{\"x\":1}", &hash),
            Kind::UnreadableSoft
        ));
    }
}
