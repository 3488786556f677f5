//! Atomic replace (law 6): `write_atomic` writes a whole file or nothing.
//!
//! Under the summary lock: a temp file `.{name}.{random}.tmp` created with
//! `O_EXCL` in the target's directory (so the rename stays on one
//! filesystem), written, fsynced, given the target's permissions, renamed
//! over the target, and the directory fsynced; then the lock is released.
//! The file work runs on the blocking pool in one closure that owns the
//! guard, so dropping the future cannot release the lock halfway through a
//! commit: the commit finishes (or is undone) under the lock either way.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::commit::{sync_dir_after_commit, with_guard};
use crate::category::Category;
use crate::error::LockError;
use crate::lock::{LockGuard, Locks};

/// Suffix of temp files; with the `.{name}.` prefix it marks a file as this
/// crate's temp for that target.
const TEMP_SUFFIX: &str = ".tmp";

/// Random characters in a temp file's name, between `.{name}.` and
/// [`TEMP_SUFFIX`].
const TEMP_RANDOM: usize = 12;

/// The name of the target whose temp file `name` is (`.{name}.{random}.tmp`,
/// with [`TEMP_RANDOM`] letters and digits), or `None` if `name` is not
/// one: for tools that find temps left by crashed writers
/// (`lock-doctor clean`), which remove one only under its target's summary
/// lock, as [`replace_file`] does.
pub(crate) fn temp_target(name: &std::ffi::OsStr) -> Option<&std::ffi::OsStr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let rest = bytes.strip_prefix(b".")?;
    let rest = rest.strip_suffix(TEMP_SUFFIX.as_bytes())?;
    let split = rest.len().checked_sub(TEMP_RANDOM + 1)?;
    let (target, random) = rest.split_at(split);
    let random = random.strip_prefix(b".")?;
    (!target.is_empty() && random.iter().all(u8::is_ascii_alphanumeric))
        .then(|| std::ffi::OsStr::from_bytes(target))
}

/// Replaces `path` with `bytes` atomically under the summary lock of the
/// default [`Locks`]: readers see the old file or the new one, never a mix,
/// and a crash leaves the old file intact.
///
/// # Errors
///
/// Lock errors as [`Locks::lock`]; [`LockError::Io`] naming the file or
/// directory if writing, syncing or renaming fails, in which case the old
/// file is intact and the temp file is gone.
///
/// # Cancel safety
///
/// Cancel safe: once the lock is granted, the write and rename complete (or
/// are undone) on the blocking pool under the lock even if the future is
/// dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let summary = dir.path().join("summary.json");
/// async_filelock::write_atomic(&summary, br#"{"done":true}"#.to_vec()).await?;
/// assert_eq!(std::fs::read(&summary).unwrap(), br#"{"done":true}"#);
/// # Ok(()) }
/// ```
pub async fn write_atomic(
    path: impl AsRef<Path>,
    bytes: impl Into<Vec<u8>>,
) -> Result<(), LockError> {
    write_atomic_with(&Locks::global()?, path, bytes).await
}

/// [`write_atomic`] with the summary lock of `locks`.
///
/// # Errors
///
/// As [`write_atomic`].
///
/// # Cancel safety
///
/// As [`write_atomic`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{write_atomic_with, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// write_atomic_with(&locks, dir.path().join("summary.json"), "{}").await?;
/// # Ok(()) }
/// ```
pub async fn write_atomic_with(
    locks: &Locks,
    path: impl AsRef<Path>,
    bytes: impl Into<Vec<u8>>,
) -> Result<(), LockError> {
    let bytes = bytes.into();
    let guard = locks.lock(Category::Summary, path).await?;
    with_guard(guard, move |guard| replace_file(guard, &bytes)).await
}

/// The blocking replace of `guard`'s target, which must not be lost when
/// the temp file is renamed over it.
pub(crate) fn replace_file(guard: &LockGuard, bytes: &[u8]) -> Result<(), LockError> {
    let target = guard.target();
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .ok_or_else(|| LockError::invalid_target(target, "it has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    remove_orphaned_temps(dir, &prefix)?;
    let existing = match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => {
            return Err(LockError::invalid_target(target, "it is a directory"));
        }
        Ok(meta) => Some(meta.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(LockError::io("inspect", target, e)),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM)
        // As `File::create` would, before the umask.
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                LockError::invalid_target(target, "its directory does not exist")
            }
            _ => LockError::io("create temp file in", dir, e),
        })?;
    let temp_path = temp.path().to_path_buf();
    temp.write_all(bytes)
        .map_err(|e| LockError::io("write temp file", &temp_path, e))?;
    if let Some(perms) = existing {
        temp.as_file()
            .set_permissions(perms)
            .map_err(|e| LockError::io("copy permissions to temp file", &temp_path, e))?;
    }
    temp.as_file()
        .sync_all()
        .map_err(|e| LockError::io("fsync temp file", &temp_path, e))?;
    // A lock lost meanwhile (a soft lock's lease) commits nothing; the
    // temp file goes with `temp`.
    guard.check_not_lost()?;
    // On failure `persist` hands the temp file back, and dropping it removes it.
    temp.persist(target)
        .map_err(|e| LockError::io("rename temp file over", target, e.error))?;
    sync_dir_after_commit(dir, target);
    Ok(())
}

/// Removes temp files of this target left by a writer that crashed. Safe
/// because temps are created only under the target's lock, which we hold:
/// any that exist now belong to no live writer.
fn remove_orphaned_temps(dir: &Path, prefix: &std::ffi::OsStr) -> Result<(), LockError> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = prefix.as_bytes();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LockError::io("list directory", dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let bytes = name.as_bytes();
        // `.{name}.` + 12 random characters + `.tmp`: exactly our temps.
        if bytes.len() == prefix.len() + TEMP_RANDOM + TEMP_SUFFIX.len()
            && bytes.starts_with(prefix)
            && bytes.ends_with(TEMP_SUFFIX.as_bytes())
        {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "removed a temp file left by a crashed writer")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LockError::io("remove orphaned temp file", path, e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_temp_name_gives_its_target_and_nothing_else_does() {
        let t = |s: &str| temp_target(OsStr::new(s)).map(|t| t.to_str().unwrap().to_owned());
        assert_eq!(
            t(".summary.json.AbC123xyz789.tmp").as_deref(),
            Some("summary.json")
        );
        assert_eq!(t("..x.AbC123xyz789.tmp").as_deref(), Some(".x"));
        assert_eq!(t(".summary.json.AbC123xyz78.tmp"), None, "11 random");
        assert_eq!(
            t(".summary.json.AbC123xyz7-9.tmp"),
            None,
            "not alphanumeric"
        );
        assert_eq!(t("summary.json.AbC123xyz789.tmp"), None, "no dot");
        assert_eq!(t("..AbC123xyz789.tmp"), None, "no target");
        assert_eq!(t(".summary.json.AbC123xyz789.tmp.bak"), None);
    }
}
