//! The lock dirs this process trusts (law 10). A lock dir is checked when
//! first used (who owns it, who may write it, and who owns a symlink that
//! leads to it), then lock files are opened, inspected and removed through
//! the descriptor of what was checked (`openat`, `fstatat`, `unlinkat`),
//! never through its path again: a directory swapped in after the check is
//! not used.
//!
//! The default trusts a directory owned by this process's effective user
//! and writable by nobody else. With a shared group ([`LockRequest`]'s
//! `shared_group`) it also trusts one of that group, writable by the group
//! but by no one else. Anything else is [`LockError::Untrusted`], naming
//! the path, its owner and mode, and the fix: in a place others can write,
//! another user could hold our locks forever, swap a lock file under us (a
//! second holder on a new inode), or redirect where lock files go.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;
use rustix::fs::{Mode, OFlags};

use crate::backend::{LockRequest, NetworkFsPolicy};
use crate::error::LockError;
use crate::path_key::PathKey;
use crate::per_process::PerProcess;
use crate::sys::nanos;

/// How long a checked lock dir is used by descriptor before its path is
/// looked at again. A lock dir moved away and replaced while processes use
/// it (an operator's `mv`) is followed within this; a moved directory is
/// not otherwise noticed, and opening by descriptor saves a path walk per
/// acquisition.
const RECHECK: Duration = Duration::from_secs(1);

/// Checked lock dirs kept open at most (each holds a descriptor, and
/// targets may live in many directories); entries past their recheck are
/// dropped whenever one is added.
const KEPT: usize = 64;

/// A checked lock dir, open.
#[derive(Debug)]
pub(crate) struct LockDirFd {
    fd: OwnedFd,
    /// This process's effective user when the directory was checked: lock
    /// files in it are checked against it without a system call each.
    euid: u32,
    /// The directory's identity when checked: a check that finds the same
    /// directory again keeps this descriptor (and what was opened in it,
    /// such as kept lock files, stays usable).
    id: (u64, u64),
    /// The shared group it was checked for.
    group: Option<u32>,
    /// When it was last checked (found again at its path), by
    /// [`crate::sys::coarse_now`] in nanoseconds; 0 once it is known gone.
    checked_at: AtomicU64,
}

impl LockDirFd {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether this descriptor is still the trusted lock dir for a request
    /// with `group`: checked (or found again) less than [`RECHECK`] ago,
    /// for that group. What [`lock_dir`] would answer without its map
    /// lookup, for a lock file kept open in it (see `os::hot`).
    pub(crate) fn is_current_for(&self, group: Option<u32>) -> bool {
        let at = self.checked_at.load(Ordering::Relaxed);
        // 0: never checked, or forgotten; the clock itself may read under
        // a second (just after boot, or in a time namespace).
        self.group == group
            && at != 0
            && nanos(crate::sys::coarse_now()) < at.saturating_add(nanos(RECHECK))
    }

    fn checked(&self, now: Duration) {
        self.checked_at.store(nanos(now).max(1), Ordering::Relaxed);
    }

    /// A lock file found in this lock dir must be ours, or the shared
    /// group's: another user's lock file is one they can hold forever.
    pub(crate) fn check_lock_file(
        &self,
        path: &Path,
        meta: impl Into<Ownership>,
        group: Option<u32>,
    ) -> Result<(), LockError> {
        let meta = meta.into();
        if meta.uid == self.euid || group.is_some_and(|gid| meta.gid == gid) {
            return Ok(());
        }
        // The process may have changed its effective user since the check
        // (`seteuid`): its own new lock file is not another user's.
        if meta.uid == euid() {
            return Ok(());
        }
        let fix = match group {
            None => "another user's lock file can be held by them forever; remove it (lock files hold no data)".to_string(),
            Some(gid) => format!(
                "it belongs neither to this user nor to group {gid}; remove it (lock files hold no data)"
            ),
        };
        Err(untrusted("lock file", path, meta, &fix))
    }
}

// Fx over the bytes (see `PathKey`): keys are local paths, where hash
// flooding is no threat, and hashing a path is a visible share of an
// uncontended acquisition. Each lock dir knows its group and when it was
// last checked (`LockDirFd::is_current_for`).
static KNOWN: PerProcess<Mutex<FxHashMap<PathKey, Arc<LockDirFd>>>> = PerProcess::new();

fn known() -> MutexGuard<'static, FxHashMap<PathKey, Arc<LockDirFd>>> {
    KNOWN
        .get(|| Mutex::new(FxHashMap::default()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The checked lock dir `dir` for `req`, creating it (with the request's
/// mode) if it is missing.
pub(crate) fn lock_dir(dir: &Path, req: &LockRequest) -> Result<Arc<LockDirFd>, LockError> {
    if let Some(k) = known().get(dir.as_os_str())
        && k.is_current_for(req.shared_group)
    {
        return Ok(Arc::clone(k));
    }
    // A lock dir beside its targets shares their directory: whoever may
    // write that may replace the targets themselves, so its parent is not
    // held to more than they are. A configured one is checked up to there.
    let configured = req.create_dir_parents;
    let checked = match open_checked(dir, req.shared_group, configured, req.network_fs)? {
        Some(checked) => checked,
        None => {
            // Nothing is made where it would be refused.
            if configured {
                check_parent(dir, req.shared_group)?;
            }
            create(dir, req)?;
            open_checked(dir, req.shared_group, configured, req.network_fs)?
                .ok_or_else(|| vanished(dir))?
        }
    };
    let mut known = known();
    // Checked again and found the same directory: the descriptor of the
    // last check is as good, and lock files opened in it stay usable.
    let dir_fd = match known.get(dir.as_os_str()) {
        Some(k) if k.group == req.shared_group && k.id == checked.id && k.euid == checked.euid => {
            Arc::clone(k)
        }
        _ => Arc::new(checked),
    };
    dir_fd.checked(crate::sys::coarse_now());
    // Entries past their recheck would be checked again anyway: dropped
    // now, with their descriptors, so that an idle process keeps none.
    known.retain(|_, k| k.is_current_for(k.group));
    if known.len() >= KEPT {
        known.clear();
    }
    known.insert(PathKey(dir.into()), Arc::clone(&dir_fd));
    Ok(dir_fd)
}

/// Forgets `dir` (it was removed since it was checked): the next use checks
/// the directory now at its path.
pub(crate) fn forget(dir: &Path) {
    if let Some(k) = known().remove(dir.as_os_str()) {
        // Lock files kept open in it must not be used either.
        k.checked_at.store(0, Ordering::Relaxed);
    }
}

/// Opens `dir` and checks it; `None` if it does not exist.
fn open_checked(
    dir: &Path,
    group: Option<u32>,
    check_its_parent: bool,
    network_fs: NetworkFsPolicy,
) -> Result<Option<LockDirFd>, LockError> {
    let link = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LockError::io("inspect lock dir", dir, e)),
    };
    if link.file_type().is_symlink() && !trusted_owner(link.uid()) {
        return Err(untrusted(
            "lock dir symlink",
            dir,
            &link,
            "another user's symlink could point the lock files anywhere; remove it, or give the real directory as the lock dir",
        ));
    }
    let is_link = link.file_type().is_symlink();
    // Not a symlink when looked at: never followed when opened either, so
    // one planted in between is refused, not used.
    let nofollow = if is_link {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    };
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | nofollow,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A symlink to nothing: creating the lock dir at its path cannot
        // work (`mkdir` never follows it), and the crate makes nothing
        // where it points.
        Err(rustix::io::Errno::NOENT) if link.file_type().is_symlink() => {
            return Err(LockError::LockDir {
                path: dir.to_path_buf(),
                reason: "it is a symlink to nothing (dangling); remove it, or create the directory it points to".into(),
            });
        }
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return Err(LockError::LockDir {
                path: dir.to_path_buf(),
                reason: "it is not a directory; choose another lock dir".into(),
            });
        }
        Err(e) => return Err(LockError::io("open lock dir", dir, e.into())),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| LockError::io("inspect lock dir", dir, e))?;
    if !is_link && (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
        return Err(LockError::LockDir {
            path: dir.to_path_buf(),
            reason: "it was replaced while it was being checked; try again, and find out who replaces it".into(),
        });
    }
    check_dir(dir, &meta, group)?;
    if check_its_parent {
        check_parent(dir, group)?;
    }
    let fs = rustix::fs::fstatfs(&file)
        .ok()
        .and_then(|st| crate::sys::network_fs_name((st.f_type as u64) & 0xffff_ffff));
    check_filesystem(dir, fs, network_fs)?;
    Ok(Some(LockDirFd {
        fd: file.into(),
        euid: euid(),
        id: (meta.dev(), meta.ino()),
        group,
        checked_at: AtomicU64::new(0),
    }))
}

/// The variable that sets the policy (read by the lock layer's `env`).
const NETWORK_FS_POLICY_VAR: &str = "ASYNC_FILELOCK_NETWORK_FS_POLICY";

/// A lock dir on a network or FUSE filesystem (`fs`, by `statfs` magic) is
/// warned about once, refused, or allowed, as `policy` says: `flock` there
/// may be refused, emulated with byte-range locks, or local to one client.
fn check_filesystem(
    dir: &Path,
    fs: Option<&'static str>,
    policy: NetworkFsPolicy,
) -> Result<(), LockError> {
    let Some(fs) = fs else {
        return Ok(());
    };
    const REMEDIES: &str = "flock there may be refused, emulated, or local to one client; use soft locks where flock is refused or local only (ASYNC_FILELOCK_BACKEND=soft, or auto to fall back when refused), and the PostgreSQL backend when several hosts share the files; `lock-doctor probe` tests what locking does there";
    match policy {
        NetworkFsPolicy::Allow => Ok(()),
        NetworkFsPolicy::Refuse => Err(LockError::LockDir {
            path: dir.to_path_buf(),
            reason: format!(
                "it is on a {fs} filesystem and the network-filesystem policy is refuse ({}); {REMEDIES}",
                NETWORK_FS_POLICY_VAR
            ),
        }),
        NetworkFsPolicy::Warn => {
            static WARNED: PerProcess<Mutex<rustc_hash::FxHashSet<PathBuf>>> = PerProcess::new();
            let first = WARNED
                .get(Mutex::default)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dir.to_path_buf());
            if first {
                tracing::warn!(
                    lock_dir = %dir.display(),
                    filesystem = fs,
                    "lock dir on a {fs} filesystem: {REMEDIES}; set {}=refuse to fail closed, or allow to silence this",
                    NETWORK_FS_POLICY_VAR
                );
            }
            Ok(())
        }
    }
}

/// Whoever may write a configured lock dir's parent may rename the lock
/// dir away and put another in its place (renaming needs no right on the
/// directory itself), splitting holders between the two: so the parent
/// must be writable by no one else, unless its sticky bit stops others from
/// renaming what is not theirs (as on `/tmp`), or it is the shared group's.
/// (The parent's owner can always rename: not checked, see ARCHITECTURE.md,
/// "Known limits".)
fn check_parent(dir: &Path, group: Option<u32>) -> Result<(), LockError> {
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let meta = match std::fs::metadata(parent) {
        Ok(meta) => meta,
        // Not there yet: creating the lock dir makes it (checked then) or
        // says the target's directory is missing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LockError::io("inspect lock dir parent", parent, e)),
    };
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    let others_write = mode & 0o002 != 0;
    let group_write = mode & 0o020 != 0 && group != Some(meta.gid());
    if sticky || !(others_write || group_write) {
        return Ok(());
    }
    Err(untrusted(
        "lock dir parent",
        parent,
        &meta,
        "others may write this directory, so they could rename the lock dir away and put their own in its place: use a lock dir in a place only this user can write (LocksBuilder::lock_dir, ASYNC_FILELOCK_DIR), set LocksBuilder::shared_group if a group shares it, or `chmod +t` it",
    ))
}

/// Whether a symlink owned by `uid` may lead to our lock dir: ours, or
/// root's (as `/var/lock` → `/run/lock`).
fn trusted_owner(uid: u32) -> bool {
    uid == euid() || uid == 0
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Ours and writable by nobody else; or, with a shared `group`, that
/// group's and writable by no one outside it.
fn check_dir(dir: &Path, meta: &std::fs::Metadata, group: Option<u32>) -> Result<(), LockError> {
    let mode = meta.mode();
    let ours = meta.uid() == euid();
    let (trusted, fix) = match group {
        None => (
            ours && mode & 0o022 == 0,
            "a lock dir must be owned by this user and writable by no one else: use a private directory, or `chmod go-w` it if it is yours, or set LocksBuilder::shared_group if a group shares it".to_string(),
        ),
        Some(gid) => (
            (ours || meta.gid() == gid)
                && mode & 0o002 == 0
                && (mode & 0o020 == 0 || meta.gid() == gid),
            format!(
                "a shared lock dir must belong to group {gid} (or this user) and be writable by no one outside that group: `chgrp {gid}` and `chmod o-w` it"
            ),
        ),
    };
    if trusted {
        Ok(())
    } else {
        Err(untrusted("lock dir", dir, meta, &fix))
    }
}

fn untrusted(what: &'static str, path: &Path, meta: impl Into<Ownership>, fix: &str) -> LockError {
    let meta = meta.into();
    LockError::Untrusted {
        what,
        path: path.to_path_buf(),
        uid: meta.uid,
        gid: meta.gid,
        mode: meta.mode & 0o7777,
        fix: fix.into(),
    }
}

/// Who owns a file, and its mode: what the trust checks read, from
/// `std::fs::Metadata` or from a bare `fstat` (an acquisition's, which
/// costs less than std's `statx` of every field).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl From<&std::fs::Metadata> for Ownership {
    fn from(meta: &std::fs::Metadata) -> Self {
        Ownership {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }
}

impl From<&rustix::fs::Stat> for Ownership {
    fn from(stat: &rustix::fs::Stat) -> Self {
        Ownership {
            uid: stat.st_uid,
            gid: stat.st_gid,
            // `st_mode` is `u32` on Linux and `u16` elsewhere.
            #[allow(clippy::useless_conversion)]
            mode: u32::from(stat.st_mode),
        }
    }
}

/// Creates the lock dir with the request's mode (and its parents, for a
/// configured lock dir).
fn create(dir: &Path, req: &LockRequest) -> Result<(), LockError> {
    match std::fs::DirBuilder::new()
        .recursive(req.create_dir_parents)
        .mode(req.dir_mode)
        .create(dir)
    {
        Ok(()) => {
            // Shared with a group: the mode asked for, not what the umask
            // left of it (0o2770 under umask 022 would lock the group out).
            if req.shared_group.is_some() {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(req.dir_mode);
                std::fs::set_permissions(dir, mode)
                    .map_err(|e| LockError::io("set the mode of lock dir", dir, e))?;
            }
            Ok(())
        }
        // Made meanwhile by someone else: checked like any found one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LockError::invalid_target(
            &*req.target,
            "its directory does not exist; create it first",
        )),
        Err(e) => Err(dir_error(dir, e)),
    }
}

/// The lock dir vanished between its creation and its opening.
fn vanished(dir: &Path) -> LockError {
    LockError::io(
        "open lock dir",
        dir,
        io::Error::new(io::ErrorKind::NotFound, "removed as soon as it was created"),
    )
}

pub(crate) fn dir_error(dir: &Path, e: io::Error) -> LockError {
    match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTDIR) => LockError::LockDir {
            path: dir.to_path_buf(),
            reason: "a path component is a file, not a directory; choose another lock dir".into(),
        },
        _ => LockError::io("create lock dir", dir, e),
    }
}

#[cfg(test)]
mod filesystem_tests {
    use super::*;

    #[test]
    fn a_network_lock_dir_is_refused_warned_or_allowed_as_the_policy_says() {
        let dir = Path::new("/mnt/share/locks");
        let refused = check_filesystem(dir, Some("nfs"), NetworkFsPolicy::Refuse).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("/mnt/share/locks") && text.contains("nfs") && text.contains("soft"),
            "{text}"
        );
        assert!(check_filesystem(dir, Some("nfs"), NetworkFsPolicy::Warn).is_ok());
        assert!(check_filesystem(dir, Some("nfs"), NetworkFsPolicy::Allow).is_ok());
        assert!(check_filesystem(dir, None, NetworkFsPolicy::Refuse).is_ok());
    }
}

#[cfg(test)]
mod current_tests {
    use super::*;

    fn request(dir: &Path) -> LockRequest {
        LockRequest::exclusive_in(dir, "manifest.test")
    }

    /// A kept lock file trusts its dir by the dir's own last check: for
    /// the group it was checked for, until it is forgotten (removed from
    /// under us); never for a dir never checked, whatever the clock reads.
    #[test]
    fn a_checked_lock_dir_is_current_for_its_group_until_forgotten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("locks");
        let req = request(&dir);
        let fd = lock_dir(&dir, &req).expect("checked");
        assert!(fd.is_current_for(None));
        assert!(!fd.is_current_for(Some(12345)), "checked for no group");
        forget(&dir);
        assert!(!fd.is_current_for(None), "forgotten: checked again");
        let again = lock_dir(&dir, &req).expect("checked again");
        assert!(again.is_current_for(None));
        let never = LockDirFd {
            fd: rustix::fs::open(
                tmp.path(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .expect("open"),
            euid: euid(),
            id: (0, 0),
            group: None,
            checked_at: AtomicU64::new(0),
        };
        assert!(!never.is_current_for(None), "never checked");
    }
}
