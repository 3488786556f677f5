//! The acquisition algorithm: name the lock, queue in the in-process table,
//! try the backend inline, wait on the blocking pool, all under one deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::backend::{HeldLock, LockRequest, WaitControl};
use crate::guard::{GuardParts, Hold, SharedHeld};
use crate::order::{self, OrderCheck};
use crate::table::{self, EntryRef, Owner};
use crate::{Category, LockError, LockGuard, LockMode, Locks, naming};

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Never wait: `Ok(None)` when busy.
    Try,
    /// Wait up to the limit (`None`: forever); zero means one attempt. A busy
    /// lock at the deadline is [`LockError::Timeout`].
    Until(Option<Duration>),
}

pub(crate) async fn acquire(
    locks: &Locks,
    category: Category,
    target: &Path,
    mode: LockMode,
    wait: Wait,
) -> Result<Option<LockGuard>, LockError> {
    let started = Instant::now();
    let req = request(locks, category, target, mode, started)?;
    let span = tracing::debug_span!(
        "lock",
        category = category.name(),
        lock_path = %req.lock_path.display(),
        mode = %mode,
    );
    acquire_request(locks, category, req, wait, started)
        .instrument(span)
        .await
}

/// What the backend needs to lock `target` in `category`.
fn request(
    locks: &Locks,
    category: Category,
    target: &Path,
    mode: LockMode,
    now: Instant,
) -> Result<LockRequest, LockError> {
    let policy = locks.policy();
    let normal = naming::normalize_target(target, now)?;
    let lock_path: Arc<Path> = policy.lock_path(category, &normal).into();
    Ok(LockRequest {
        lock_path,
        target: normal.path,
        mode,
        file_mode: policy.file_mode,
        dir_mode: policy.dir_mode,
        create_dir_parents: policy.lock_dir_is_fixed(),
    })
}

/// Refuses a wait that would deadlock on a lock `owner` holds, and reports
/// (or, per policy, refuses) one against the lock order.
fn check_before_waiting(
    locks: &Locks,
    category: Category,
    req: &LockRequest,
    entry: &EntryRef,
    owner: Owner,
) -> Result<(), LockError> {
    if entry.is_held_by(owner) {
        return Err(LockError::WouldDeadlock {
            category,
            target: req.target.to_path_buf(),
            lock_path: req.lock_path.to_path_buf(),
        });
    }
    let order_check = locks.policy().order_check;
    if order_check != OrderCheck::Off
        && let Some((held_category, held_lock_path)) =
            order::later_held(owner, category, &req.lock_path)
    {
        locks.recorder().order_violation(category);
        let err = LockError::OrderViolation {
            category,
            lock_path: req.lock_path.to_path_buf(),
            held_category,
            held_lock_path,
        };
        if order_check == OrderCheck::Error {
            return Err(err);
        }
        tracing::warn!(error = %err, "lock taken against the lock order");
    }
    Ok(())
}

/// Takes an exclusive lock from a thread that may block (the blocking
/// pool), within the category's timeout: for work that runs there anyway,
/// such as a JSONL commit. The OS wait happens on this thread, so when the
/// lock is granted the work starts at once, and the lock is held no longer
/// than the work (an async acquisition followed by `spawn_blocking` holds it
/// across a thread hand-off).
///
/// Nothing can drop a running blocking call, so the caller cancels through
/// `ctl` (then unparks this thread): the wait ends with `Ok(None)` and
/// nothing held.
pub(crate) fn acquire_blocking(
    locks: &Locks,
    category: Category,
    target: &Path,
    ctl: &Arc<WaitControl>,
) -> Result<Option<LockGuard>, LockError> {
    let result = acquire_blocking_inner(locks, category, target, ctl);
    // The watcher forgets a finished wait, whichever way it ended.
    ctl.finish();
    result
}

fn acquire_blocking_inner(
    locks: &Locks,
    category: Category,
    target: &Path,
    ctl: &Arc<WaitControl>,
) -> Result<Option<LockGuard>, LockError> {
    let started = Instant::now();
    let req = request(locks, category, target, LockMode::Exclusive, started)?;
    let _span = tracing::debug_span!(
        "lock",
        category = category.name(),
        lock_path = %req.lock_path.display(),
        mode = %LockMode::Exclusive,
    )
    .entered();
    let entry = table::enter(&req.lock_path);
    let owner = Owner::current();
    check_before_waiting(locks, category, &req, &entry, owner)?;
    let deadline = locks.policy().timeout(category).map(|t| started + t);
    // Ended without the lock: a timeout at the deadline, else the caller's
    // cancellation.
    let gave_up = |req: &LockRequest| {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let holder = locks.backend().holder(&req.lock_path);
            Err(timeout_error(
                locks,
                category,
                req,
                started.elapsed(),
                holder,
            ))
        } else {
            Ok(None)
        }
    };
    let queue = match Arc::clone(&entry.queue).try_write_owned() {
        Ok(queue) => queue,
        Err(_) => {
            let queued = Arc::clone(&entry.queue).write_owned();
            match crate::blocking::wait_until(queued, deadline, || ctl.is_cancelled()) {
                Some(queue) => queue,
                None => return gave_up(&req),
            }
        }
    };
    let os = match locks.backend().try_lock(&req)? {
        Some(os) => os,
        None => {
            // Only a wait that blocks needs the waker thread to end it at
            // the deadline; the uncontended path never involves it.
            if let Some(deadline) = deadline {
                ctl.cancel_at(deadline);
            }
            match locks.backend().lock_blocking(&req, ctl)? {
                Some(os) => os,
                None => return gave_up(&req),
            }
        }
    };
    let remove = locks.policy().remove_on_release(category);
    Ok(Some(new_guard(
        locks,
        category,
        req,
        entry,
        owner,
        Hold::Exclusive { os, queue },
        started,
        remove,
    )))
}

async fn acquire_request(
    locks: &Locks,
    category: Category,
    req: LockRequest,
    wait: Wait,
    started: Instant,
) -> Result<Option<LockGuard>, LockError> {
    let entry = table::enter(&req.lock_path);
    let owner = Owner::current();
    // Only a wait can deadlock; a try by the holder just finds the lock busy.
    let would_wait = !matches!(wait, Wait::Try | Wait::Until(Some(Duration::ZERO)));
    if would_wait {
        check_before_waiting(locks, category, &req, &entry, owner)?;
    }
    let remove = locks.policy().remove_on_release(category);
    let hold = match wait {
        Wait::Try => match take(locks, &entry, &req, remove, true).await? {
            Some(hold) => Some(hold),
            None => return Ok(None),
        },
        Wait::Until(None) => take(locks, &entry, &req, remove, false).await?,
        Wait::Until(Some(limit)) => {
            let attempt = take(locks, &entry, &req, remove, limit.is_zero());
            // Boxed: the timer is large, and a wait without a deadline should
            // not carry its space (10,000 waiters stay under 1 KiB each).
            let timed = Box::pin(tokio::time::timeout_at((started + limit).into(), attempt));
            match timed.await {
                Ok(Ok(Some(hold))) => Some(hold),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) | Err(_) => {
                    return Err(timed_out(locks, category, &req, started).await);
                }
            }
        }
    };
    // Only `try_only` attempts return None, and those were handled above.
    let Some(hold) = hold else {
        return Err(timed_out(locks, category, &req, started).await);
    };
    Ok(Some(new_guard(
        locks, category, req, entry, owner, hold, started, remove,
    )))
}

/// The guard for a lock just granted; records the acquisition.
#[allow(clippy::too_many_arguments)] // the parts of one acquisition, named
fn new_guard(
    locks: &Locks,
    category: Category,
    req: LockRequest,
    entry: EntryRef,
    owner: Owner,
    hold: Hold,
    started: Instant,
    remove_on_release: bool,
) -> LockGuard {
    let acquired = Instant::now();
    let waited = acquired - started;
    locks.recorder().acquired(category, waited);
    tracing::debug!(wait_ms = waited.as_secs_f64() * 1e3, "acquired");
    LockGuard::new(GuardParts {
        acquired,
        hold,
        entry,
        owner,
        category,
        target: req.target,
        lock_path: req.lock_path,
        waited,
        remove_on_release,
        track_order: locks.policy().order_check != OrderCheck::Off,
        budget: locks.policy().budget(category),
        recorder: Arc::clone(locks.recorder()),
    })
}

/// Queues in this process, then takes the backend lock. With `try_only`,
/// nothing waits and a busy lock gives `Ok(None)`.
///
/// Cancel safe: every await is on a cancel-safe primitive (tokio's fair
/// locks leave their queue when dropped; the backend stops its wait), and
/// what was taken before the drop is released by the drop.
async fn take(
    locks: &Locks,
    entry: &EntryRef,
    req: &LockRequest,
    remove: bool,
    try_only: bool,
) -> Result<Option<Hold>, LockError> {
    match req.mode {
        LockMode::Exclusive => {
            let queue = match Arc::clone(&entry.queue).try_write_owned() {
                Ok(queue) => queue,
                Err(_) if try_only => return Ok(None),
                Err(_) => Arc::clone(&entry.queue).write_owned().await,
            };
            Ok(take_backend(locks, req, try_only)
                .await?
                .map(|os| Hold::Exclusive { os, queue }))
        }
        LockMode::Shared => {
            let queue = match Arc::clone(&entry.queue).try_read_owned() {
                Ok(queue) => queue,
                Err(_) if try_only => return Ok(None),
                Err(_) => Arc::clone(&entry.queue).read_owned().await,
            };
            let mut slot = match entry.shared.try_lock() {
                Ok(slot) => slot,
                Err(_) if try_only => return Ok(None),
                Err(_) => entry.shared.lock().await,
            };
            if let Some(os) = slot.upgrade() {
                return Ok(Some(Hold::Shared { os, queue }));
            }
            let Some(os) = take_backend(locks, req, try_only).await? else {
                return Ok(None);
            };
            let os = Arc::new(SharedHeld::new(os, remove, Arc::clone(&req.lock_path)));
            *slot = Arc::downgrade(&os);
            Ok(Some(Hold::Shared { os, queue }))
        }
    }
}

async fn take_backend(
    locks: &Locks,
    req: &LockRequest,
    try_only: bool,
) -> Result<Option<Box<dyn HeldLock>>, LockError> {
    if let Some(os) = locks.backend().try_lock(req)? {
        return Ok(Some(os));
    }
    if try_only {
        return Ok(None);
    }
    tracing::debug!("held by another process; waiting on the blocking pool");
    locks.backend().lock(req).await.map(Some)
}

async fn timed_out(
    locks: &Locks,
    category: Category,
    req: &LockRequest,
    started: Instant,
) -> LockError {
    let backend = Arc::clone(locks.backend());
    let path = Arc::clone(&req.lock_path);
    let holder = tokio::task::spawn_blocking(move || backend.holder(&path))
        .await
        .ok()
        .flatten();
    timeout_error(locks, category, req, started.elapsed(), holder)
}

fn timeout_error(
    locks: &Locks,
    category: Category,
    req: &LockRequest,
    waited: Duration,
    holder: Option<u32>,
) -> LockError {
    locks.recorder().timed_out(category);
    tracing::info!(
        wait_ms = waited.as_secs_f64() * 1e3,
        holder,
        "timed out waiting for lock"
    );
    LockError::Timeout {
        category,
        target: req.target.to_path_buf(),
        lock_path: req.lock_path.to_path_buf(),
        waited,
        holder,
    }
}
