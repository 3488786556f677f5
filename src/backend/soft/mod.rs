//! Soft locks: a lock file created with `O_CREAT|O_EXCL` holding an owner
//! record, kept by a lease, for filesystems where `flock` is refused,
//! emulated or local to one client (ARCHITECTURE.md, "Soft locks").
//!
//! * [`record`]: the owner record and the judgement of staleness (owner
//!   gone on this host, or lease run out).
//! * [`found`]: a lock file as read: identity, record, age.
//! * [`breaking`]: removing a stale lock so that exactly one breaker wins.
//! * [`lease`]: the thread that renews held locks and tells their loss.
//! * [`wake`]: the thread that wakes waits when a busy file is released.
//!
//! A soft lock is exclusive in every mode: a shared request takes it alone
//! (shared holders of one process still share it, as the lock layer does
//! for every backend). Waits poll with backoff from 1 ms up to the
//! configured interval, on the calling task, and are woken early when the
//! busy file is released where the filesystem reports it; no thread per
//! wait.
//!
//! May use: the backend contract (`super`), `dirs`, `tokens`, `sys`,
//! `per_process`, `mounts`, `blocking`, the vocabulary.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendMetrics, HeldLock, LockRequest, LostSignal};
use crate::backend::dirs::{self, LockDirFd};
use crate::backend::os::flock::{try_flock, unlock};
use crate::backend::tokens;
use crate::error::{Holder, LockError};
use crate::fencing::FencingToken;
use crate::mode::LockMode;

pub(crate) mod breaking;
pub(crate) mod found;
mod lease;
pub(crate) mod metrics;
pub(crate) mod record;
mod wake;

use breaking::Door;
use lease::Lease;
use record::{OwnerRecord, Verdict};

/// The default lease: a holder that stops renewing for this long loses
/// the lock to the next waiter.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The default longest pause between two attempts of a waiting soft lock.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// How many times one attempt creates, judges and breaks before it calls
/// the lock busy.
const ATTEMPTS: usize = 8;

/// How many times a release tries the door a breaker is in, 1 ms apart.
const DOOR_TRIES: usize = 20;

/// The suffix of the file that keeps a soft lock's fencing tokens.
pub(crate) const TOKEN_SUFFIX: &str = ".token";

/// Settings of the soft backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SoftSettings {
    /// How long a held lock stays its holder's without a renewal.
    pub lease: Duration,
    /// The longest pause between two attempts of a wait.
    pub poll: Duration,
}

impl Default for SoftSettings {
    fn default() -> Self {
        SoftSettings {
            lease: DEFAULT_LEASE,
            poll: DEFAULT_POLL,
        }
    }
}

/// The soft lock backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct SoftBackend {
    pub settings: SoftSettings,
}

fn split(path: &Path) -> Result<(&Path, &OsStr), LockError> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(LockError::UnsafeLockFile {
            path: path.to_path_buf(),
            reason: "it names no file in a directory".into(),
        }),
    }
}

impl SoftBackend {
    /// One attempt: create the lock file, or judge the one found and break
    /// it if stale, then try again.
    pub(crate) fn attempt(&self, req: &LockRequest) -> Result<Option<SoftHeld>, LockError> {
        let path = &*req.lock_path;
        let (dir_path, name) = split(path)?;
        let mut dir = dirs::lock_dir(dir_path, req)?;
        let mut retried_dir = false;
        for _ in 0..ATTEMPTS {
            match self.create(&dir, name, req) {
                Ok(Some(held)) => return Ok(Some(held)),
                Ok(None) => {
                    let Some(found) = found::inspect(&dir, name, path, req.shared_group)? else {
                        continue;
                    };
                    match found.verdict(self.settings.lease) {
                        Verdict::Live => return Ok(None),
                        Verdict::Stale(_) => {
                            if breaking::break_stale(
                                &dir,
                                name,
                                path,
                                req.shared_group,
                                found,
                                self.settings.lease,
                            )? {
                                metrics::broke();
                            }
                        }
                    }
                }
                // The lock dir was removed since it was checked.
                Err(Create::DirGone) if !retried_dir => {
                    dirs::forget(dir_path);
                    dir = dirs::lock_dir(dir_path, req)?;
                    retried_dir = true;
                }
                Err(Create::DirGone) => {
                    return Err(LockError::io(
                        "create soft lock file",
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                Err(Create::Failed(e)) => return Err(*e),
            }
        }
        Ok(None)
    }

    /// Creates the lock file whole: the owner record is written to a new
    /// file of its own, which is then hard-linked to the lock path (`link`
    /// fails if the path exists), so that nobody ever reads a soft lock
    /// without its record. `Ok(None)` if the path exists.
    ///
    /// Where hard links are refused (some FUSE and SMB mounts) it falls back
    /// to `O_EXCL` and writes the record after; the lock is claimed only if
    /// the file at the path is still ours once written.
    fn create(
        &self,
        dir: &Arc<LockDirFd>,
        name: &OsStr,
        req: &LockRequest,
    ) -> Result<Option<SoftHeld>, Create> {
        let path = &*req.lock_path;
        let nonce = nonce();
        let mut temp = name.to_os_string();
        temp.push(".new.");
        temp.push(&nonce);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(req.file_mode);
        let file = match rustix::fs::openat(dir.fd(), &temp, flags, mode) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Err(Create::DirGone),
            Err(e) => {
                return Err(Create::from(LockError::io(
                    "create soft lock file",
                    path,
                    e.into(),
                )));
            }
        };
        // A `flock` too, where it works: an OS-backend process meeting this
        // file (a mixed configuration, a transient fallback) then finds it
        // busy, and a soft waiter finds a file still without its record
        // busy rather than stale. Kept with the file until released.
        let _ = try_flock(&file, LockMode::Exclusive);
        // The token is issued before the lock is ours, under no lock: it
        // is only given out, and the `.token` file only advanced, once the
        // link below made us the holder.
        let record = OwnerRecord::mine(&req.target, self.settings.lease, 0, nonce.clone());
        let unlink_temp = || {
            let _ = rustix::fs::unlinkat(dir.fd(), &temp, AtFlags::empty());
        };
        if let Err(e) = file.write_all_at(&record.to_line(), 0) {
            unlink_temp();
            return Err(Create::from(LockError::io(
                "write soft lock record",
                path,
                e,
            )));
        }
        match rustix::fs::linkat(dir.fd(), &temp, dir.fd(), name, AtFlags::empty()) {
            Ok(()) => {
                unlink_temp();
                self.took(file, Arc::clone(dir), name, req, record)
                    .map(Some)
                    .map_err(|e| Create::Failed(Box::new(e)))
            }
            Err(rustix::io::Errno::EXIST) => {
                unlink_temp();
                Ok(None)
            }
            Err(
                rustix::io::Errno::PERM | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS,
            ) => {
                unlink_temp();
                self.create_in_place(dir, name, req, record)
            }
            Err(e) => {
                unlink_temp();
                Err(Create::from(LockError::io(
                    "link soft lock file",
                    path,
                    e.into(),
                )))
            }
        }
    }

    /// [`Self::create`] where hard links are refused: `O_EXCL`, the record,
    /// then a check that the path is still our file (a breaker that saw it
    /// empty may have removed it).
    fn create_in_place(
        &self,
        dir: &Arc<LockDirFd>,
        name: &OsStr,
        req: &LockRequest,
        record: OwnerRecord,
    ) -> Result<Option<SoftHeld>, Create> {
        let path = &*req.lock_path;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file =
            match rustix::fs::openat(dir.fd(), name, flags, Mode::from_raw_mode(req.file_mode)) {
                Ok(fd) => File::from(fd),
                Err(rustix::io::Errno::EXIST) => return Ok(None),
                Err(rustix::io::Errno::NOENT) => return Err(Create::DirGone),
                Err(e) => {
                    return Err(Create::from(LockError::io(
                        "create soft lock file",
                        path,
                        e.into(),
                    )));
                }
            };
        let _ = try_flock(&file, LockMode::Exclusive);
        let written = file.write_all_at(&record.to_line(), 0);
        let still_ours = file.metadata().ok().is_some_and(|m| {
            matches!(
                rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW),
                Ok(st) if st.st_dev == m.dev() && st.st_ino == m.ino()
            )
        });
        if !still_ours {
            return Ok(None);
        }
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty());
            return Err(Create::from(LockError::io(
                "write soft lock record",
                path,
                e,
            )));
        }
        self.took(file, Arc::clone(dir), name, req, record)
            .map(Some)
            .map_err(|e| Create::Failed(Box::new(e)))
    }

    /// The lock file `name` is ours now: issue the token (and record it),
    /// start the lease.
    fn took(
        &self,
        file: File,
        dir: Arc<LockDirFd>,
        name: &OsStr,
        req: &LockRequest,
        mut record: OwnerRecord,
    ) -> Result<SoftHeld, LockError> {
        let path = &*req.lock_path;
        let Some(token) = issue_token(&dir, name, req) else {
            let _ = rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty());
            return Err(tokens::exhausted(path));
        };
        record.token = token.get();
        // Best effort: the record names the token for tools; the token's
        // store is the `.token` file. Rewritten in place at the same
        // length or longer, so a reader sees the old record or the new.
        if let Err(e) = file.write_all_at(&record.to_line(), 0) {
            tracing::debug!(lock_path = %path.display(), error = %e, "soft lock record left without its token");
        }
        let lease = Lease::new(
            Arc::clone(&dir),
            name.to_os_string(),
            file,
            self.settings.lease,
            Arc::clone(&req.lock_path),
        );
        let lease = match lease.and_then(|l| {
            let l = Arc::new(l);
            lease::keep(Arc::clone(&l)).map(|()| l)
        }) {
            Ok(lease) => lease,
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty());
                return Err(LockError::io("start the soft lock's lease", path, e));
            }
        };
        metrics::held(1);
        Ok(SoftHeld {
            lease: Some(lease),
            token,
            nonce_key: format!("n{}", record.nonce),
            pid: std::process::id(),
        })
    }
}

/// Why creating a soft lock file failed.
#[derive(Debug)]
enum Create {
    /// The lock dir is gone (removed since it was checked).
    DirGone,
    Failed(Box<LockError>),
}

impl From<LockError> for Create {
    fn from(e: LockError) -> Self {
        Create::Failed(Box::new(e))
    }
}

/// Issues the next token through the lock's `.token` file (see
/// [`crate::backend::tokens`]); by the clock alone if that file cannot be
/// opened. `None` when the store says every token was given out.
fn issue_token(dir: &LockDirFd, name: &OsStr, req: &LockRequest) -> Option<FencingToken> {
    let mut token_name = name.to_os_string();
    token_name.push(TOKEN_SUFFIX);
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(
        dir.fd(),
        &token_name,
        flags,
        Mode::from_raw_mode(req.file_mode),
    ) {
        Ok(fd) => {
            let file = File::from(fd);
            // Shared with a group: the mode asked for, whatever the umask
            // (as the OS backend does for its lock files). Best effort.
            if req.shared_group.is_some() {
                use std::os::unix::fs::PermissionsExt;
                let _ = file.set_permissions(std::fs::Permissions::from_mode(req.file_mode));
            }
            crate::backend::tokens::issue(&file, b"", &req.lock_path)
        }
        Err(e) => {
            tracing::warn!(lock_path = %req.lock_path.display(), error = %e, "could not open the soft lock's token file; the token is kept larger by the clock alone");
            Some(FencingToken::after(0).unwrap_or(FencingToken::new(u64::MAX)))
        }
    }
}

/// A nonce naming one holding: unique per host by pid, start, time and a
/// counter, and across hosts by the host name, hashed to 16 hex digits.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let me = record::me();
    let mut hash = sha2::Sha256::new();
    hash.update(me.host.as_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(me.start_time.unwrap_or(0).to_le_bytes());
    hash.update(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes(),
    );
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&hash.finalize()[..8])
}

#[async_trait]
impl Backend for SoftBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        Ok(self
            .attempt(req)?
            .map(|held| Box::new(held) as Box<dyn HeldLock>))
    }

    async fn wait(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        let remote = crate::mounts::may_hang(&req.lock_path);
        let mut pause = Duration::from_millis(1);
        loop {
            // Watched before the attempt, so that a release between a busy
            // attempt and the wait still wakes it; where the filesystem
            // tells (not on a network mount: its events are this host's
            // only, and the watch itself may hang). A file not there yet
            // is not watched: the attempt will likely take it.
            let watch = if remote {
                None
            } else {
                wake::watch(&req.lock_path)
            };
            let released = watch.as_ref().map(|w| w.notify.notified());
            tokio::pin!(released);
            if let Some(released) = released.as_mut().as_pin_mut() {
                released.enable();
            }
            let attempt = if remote {
                // On a network mount an attempt may hang: off the runtime,
                // and given up at the deadline or on cancellation. Dropped,
                // its result (a lock it got) is released.
                let (backend, owned) = (self.clone(), req.clone());
                let attempt =
                    crate::blocking::run("lock", &req.lock_path, move || backend.attempt(&owned));
                let expired = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let cancelled = async {
                    match cancel {
                        Some(token) => token.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    attempt = attempt => attempt?,
                    () = expired => return Ok(None),
                    () = cancelled => return Ok(None),
                }
            } else {
                self.attempt(req)?
            };
            if let Some(held) = attempt {
                return Ok(Some(Box::new(held)));
            }
            let mut until = Instant::now()
                .checked_add(pause)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                until = until.min(deadline);
            }
            let cancelled = async {
                match cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let released = async {
                match released.as_mut().as_pin_mut() {
                    Some(released) => released.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                () = released => metrics::woken(),
                () = cancelled => return Ok(None),
            }
            pause = pause
                .saturating_mul(2)
                .min(self.settings.poll.max(Duration::from_millis(1)));
        }
    }

    fn wait_here(&self, _req: &LockRequest) -> Option<Result<Box<dyn HeldLock>, LockError>> {
        None
    }

    async fn holder(&self, lock_path: &Path, _since: Instant) -> Option<Holder> {
        if !crate::mounts::may_hang(lock_path) {
            return read_holder(lock_path);
        }
        // On a network mount the read may hang: off the runtime, and not
        // waited for beyond a moment (the timeout it decorates is due).
        let path = lock_path.to_path_buf();
        let read = crate::blocking::run("read soft lock record", lock_path, move || {
            Ok(read_holder(&path))
        });
        tokio::time::timeout(Duration::from_millis(100), read)
            .await
            .ok()?
            .ok()?
    }

    fn names_holders_off_runtime(&self) -> bool {
        true
    }

    fn releases_by_removal(&self, _req: &LockRequest) -> bool {
        true
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::Soft(metrics::snapshot())
    }
}

/// The holder the soft lock file at `lock_path` names: never through a
/// symlink, never blocking on a FIFO, at most [`record::MAX_RECORD`] read.
fn read_holder(lock_path: &Path) -> Option<Holder> {
    use std::io::Read as _;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(lock_path, flags, Mode::empty()).ok()?);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::with_capacity(512);
    file.take(record::MAX_RECORD as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(holder_of(&OwnerRecord::parse(&bytes)?))
}

/// The holder a record names, as a timeout error says it.
pub(crate) fn holder_of(record: &OwnerRecord) -> Holder {
    Holder::Process {
        pid: record.pid,
        command: record.command.as_deref().map(Box::from),
        held_for: Some(record.held_for(SystemTime::now())),
        host: (record.host != record::me().host).then(|| Box::from(record.host.as_str())),
    }
}

/// A held soft lock.
#[derive(Debug)]
pub(crate) struct SoftHeld {
    /// `None` once released.
    lease: Option<Arc<Lease>>,
    token: FencingToken,
    nonce_key: String,
    /// The process that took it (a `fork()`ed child is another).
    pid: u32,
}

impl SoftHeld {
    /// Removes the lock file if it is still this holding, through the
    /// breakers' door (see [`breaking`]): a breaker at work means the lock
    /// is being taken from us.
    fn let_go(&mut self) -> Result<(), LockError> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        // A `fork()`ed child that drops what it inherited lets go of
        // nothing: the lock is its parent's.
        if std::process::id() != self.pid {
            return Ok(());
        }
        lease.end();
        metrics::held(-1);
        // A breaker in the door holds it for a few system calls: it finds
        // this holding live and leaves it, or stale and removes it.
        let mut door = Ok(Door::Busy);
        for _ in 0..DOOR_TRIES {
            door = breaking::open_door(
                &lease.dir,
                &lease.name,
                &self.nonce_key,
                lease.lease,
                &lease.lock_path,
            );
            if !matches!(door, Ok(Door::Busy)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let door = match door {
            Ok(Door::Opened(door)) => Some(door),
            // A loss is told through the signal, which the guard reads
            // (and names its lock in the error): the breaker removes it.
            Ok(Door::Busy) => {
                lease
                    .signal
                    .mark("another process was breaking it as stale when it was released");
                let _ = unlock(&lease.file);
                return Ok(());
            }
            // No door can be made (a full disk, say): no breaker can make
            // one either, so the file is removed by its identity alone
            // rather than left to stall every waiter for a lease.
            Err(e) => {
                tracing::warn!(lock_path = %lease.lock_path.display(), error = %e, "releasing a soft lock without its door");
                None
            }
        };
        let removed = if lease.still_mine() {
            match rustix::fs::unlinkat(lease.dir.fd(), &lease.name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(LockError::io(
                    "remove soft lock file",
                    &*lease.lock_path,
                    e.into(),
                )),
            }
        } else {
            lease.signal.mark("its lock file was removed or replaced: another process judged it stale and took the lock");
            Ok(())
        };
        // Unlinked first: an OS waiter on this inode then finds it gone.
        let _ = unlock(&lease.file);
        if let Some(door) = door {
            breaking::close_door(&lease.dir, &door);
        }
        removed
    }
}

impl HeldLock for SoftHeld {
    fn release(
        mut self: Box<Self>,
        _remove_file: bool,
        _held_for: Option<Duration>,
    ) -> Result<(), LockError> {
        self.let_go()
    }

    fn token(&self) -> Result<FencingToken, LockError> {
        Ok(self.token)
    }

    fn lost(&self) -> Option<&LostSignal> {
        self.lease.as_ref().map(|l| &l.signal)
    }
}

impl Drop for SoftHeld {
    fn drop(&mut self) {
        if let Err(e) = self.let_go() {
            tracing::warn!(error = %e, "releasing soft lock");
        }
    }
}
