//! The acquisition core: the one place where a lock is asked for, queued in
//! this process, tried, waited for under a deadline, checked for
//! self-deadlock and lock order, counted and traced. The async API
//! ([`crate::Locks`]) and the writers (a JSONL commit, which may be called
//! off through a cancellation token) both come here.
//!
//! Steps (see ARCHITECTURE.md, "An acquisition"):
//! 1. name the lock (law 2) and open a tracing span (law 8);
//! 2. enter the in-process table and, for a wait, check for a lock the
//!    asking task holds already (wait with a warning, or refuse, per
//!    [`super::owner::SameTask`]) and check the lock order (law 7);
//! 3. take this process's queue for the path (FIFO, law 5): at once if
//!    free, else by waiting;
//! 4. try the backend without blocking; if busy, wait for it (law 3);
//! 5. make the guard and record the wait.
//!
//! A wait ends by the lock, by the deadline ([`LockError::Timeout`], naming
//! the holder where the backend tells), or by the caller's cancellation
//! token; a dropped future (law 4) leaves every await point cleanly.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::guard::{GuardParts, Hold, LockGuard};
use super::metrics::Recorder;
use super::naming;
use super::order::{self, OrderCheck};
use super::owner::{Owner, SameTask};
use super::patience::{Missed, Patience};
use super::policy::{LockDir, Policy};
use super::shared::SharedHeld;
use super::table::{self, EntryRef};
use crate::backend::{Backend, HeldLock, LockRequest};
use crate::category::Category;
use crate::error::{Holder, LockError};
use crate::mode::LockMode;
use crate::mounts;

/// What a [`crate::Locks`] handle is: its policy, its backend and its
/// metrics. Acquisitions are methods of the engine.
#[derive(Debug)]
pub(crate) struct Engine {
    pub policy: Policy,
    pub backend: Arc<dyn Backend>,
    pub recorder: Arc<Recorder>,
}

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub category: Category,
    pub target: &'a Path,
    pub mode: LockMode,
    /// Whose acquisition it is for the same-task and lock-order checks:
    /// the asking task unless a writer acquires on a caller's behalf (a
    /// JSONL commit for its appenders). The lock, once granted, is held by
    /// whoever ran the acquisition.
    pub owner: Option<Owner>,
}

/// Who besides the deadline may end a wait, and what the caller is told
/// then. Async callers end a wait by dropping its future ([`NoCallOff`],
/// whose `Off` cannot exist); callers on the blocking pool, which cannot be
/// dropped, pass a cancellation token.
pub(crate) trait CallOff {
    /// What the caller gets when the wait was called off.
    type Off;
    /// The token to watch, if any.
    fn token(&self) -> Option<&CancellationToken>;
    /// `Some` once the wait was called off.
    fn off(&self) -> Option<Self::Off>;
}

/// Nobody calls the wait off but its deadline (or a drop).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoCallOff;

impl CallOff for NoCallOff {
    type Off = Infallible;

    fn token(&self) -> Option<&CancellationToken> {
        None
    }

    fn off(&self) -> Option<Infallible> {
        None
    }
}

/// The wait was called off through its cancellation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CalledOff;

impl CallOff for &CancellationToken {
    type Off = CalledOff;

    fn token(&self) -> Option<&CancellationToken> {
        Some(self)
    }

    fn off(&self) -> Option<CalledOff> {
        self.is_cancelled().then_some(CalledOff)
    }
}

/// How long [`Engine::take_here`] may keep its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Here {
    /// As long as another holder keeps the lock (a crate thread).
    MayWait,
    /// A non-blocking try, and only where neither it nor the release can
    /// block (an appender's runtime thread).
    Briefly,
    /// The first poll of an async acquisition: a non-blocking try where the
    /// try cannot block (a release that removes the lock file goes to the
    /// blocking pool, as always). `checked`: whether the acquisition would
    /// wait, and so is checked for the lock order as a wait is.
    AtOnce { checked: bool },
}

/// The longest a single try of a backend whose attempts are round trips
/// (a server) may take: a try has no deadline of its own.
const ASYNC_TRY_BOUND: Duration = Duration::from_secs(10);

/// A wait that begins this soon after this process let go of the same
/// lock, after a holding shorter than [`BRIEF_HOLDING`], is a back-to-back
/// taker's ([`LockRequest::just_released`]): its kernel wait gives up
/// wake-up preemption (ARCHITECTURE.md, "Kernel-wait threads of
/// back-to-back takers wake without preempting"). Far above the
/// microseconds between one holding and the next try of a loop, far below
/// the milliseconds of a worker that does anything between its holdings.
pub(crate) const JUST_RELEASED: Duration = Duration::from_micros(100);

/// See [`JUST_RELEASED`]: a holding this long or longer is worth a
/// hand-over to a waiting process at once, whatever the waiter's own
/// history (a steal costs it little, and waiting for a slice would cost
/// the waiter much under CPU load).
pub(crate) const BRIEF_HOLDING: Duration = Duration::from_micros(100);

impl Engine {
    /// One attempt that never waits: `Ok(None)` when the lock is busy, in
    /// this process's queue or at the backend.
    pub(crate) async fn try_acquire(&self, ask: Ask<'_>) -> Result<Option<LockGuard>, LockError> {
        let started = Instant::now();
        // A try has no deadline of its own; file work on a hung network
        // mount must still end (see `remote_try_bound`).
        let bound = Patience::Until {
            deadline: started.checked_add(self.remote_try_bound(ask.category)),
            token: None,
        };
        let (req, remote) = match self.request_where_safe(ask, started, bound).await? {
            Ok(found) => found,
            Err(_) => return Err(self.unresolved_timeout(ask, started)),
        };
        let span = span(ask, &req);
        async {
            let entry = table::enter(&req.lock_path);
            let remove = self.policy.remove_on_release(ask.category)
                || self.backend.releases_by_removal(&req);
            let taken = self
                .take(&entry, &req, remote.as_ref(), remove, &Patience::Now)
                .await?;
            let hold = match taken {
                Ok(hold) => hold,
                Err(Missed::Busy) => return Ok(None),
                // The network filesystem did not answer within the bound.
                Err(_) => {
                    return Err(self.timeout_error(ask.category, &req, started.elapsed(), None));
                }
            };
            // A try checks nothing; the lock is held by whoever tried.
            let holder = Owner::current();
            Ok(Some(self.new_guard(
                ask.category,
                req,
                entry,
                holder,
                hold,
                (started, Instant::now()),
            )))
        }
        .instrument(span)
        .await
    }

    /// Waits for the lock from `started` for up to `timeout` (`None`:
    /// forever; zero: one attempt). A busy lock at the deadline is
    /// [`LockError::Timeout`]; a wait called off through `call_off` is
    /// `Ok(Err(off))`.
    ///
    /// Cancel safe (law 4): every await is on a cancel-safe primitive
    /// (tokio's fair locks leave their queue when dropped; the backend
    /// gives up its wait), and what was taken before a drop is released by
    /// it.
    pub(crate) async fn acquire<C: CallOff>(
        &self,
        ask: Ask<'_>,
        started: Instant,
        timeout: Option<Duration>,
        call_off: C,
    ) -> Result<Result<LockGuard, C::Off>, LockError> {
        // Past what `Instant` can hold is forever.
        let deadline = timeout.and_then(|t| started.checked_add(t));
        // File work on a network mount runs within the caller's deadline
        // and token; a single attempt (zero timeout) gets
        // `remote_try_bound`, so that a hung server ends it too.
        let bound = Patience::Until {
            deadline: match timeout {
                Some(Duration::ZERO) => started.checked_add(self.remote_try_bound(ask.category)),
                _ => deadline,
            },
            token: call_off.token(),
        };
        let (req, remote) = match self.request_where_safe(ask, started, bound).await? {
            Ok(found) => found,
            Err(Missed::CalledOff) if let Some(off) = call_off.off() => return Ok(Err(off)),
            Err(_) => return Err(self.unresolved_timeout(ask, started)),
        };
        let span = span(ask, &req);
        async {
            let entry = table::enter(&req.lock_path);
            let owner = ask.owner.unwrap_or_else(Owner::current);
            let remove = self.policy.remove_on_release(ask.category)
                || self.backend.releases_by_removal(&req);
            let patience = match timeout {
                Some(Duration::ZERO) => Patience::Now,
                _ => {
                    self.check_before_waiting(ask.category, &req, &entry, owner)?;
                    Patience::Until {
                        deadline,
                        token: call_off.token(),
                    }
                }
            };
            match self
                .take(&entry, &req, remote.as_ref(), remove, &patience)
                .await?
            {
                Ok(hold) => {
                    // Held by whoever runs this acquisition: a commit on an
                    // appender's behalf is checked as the appender's, but
                    // its lock is not the appender task's to hold (a
                    // sibling future of that task may take other locks
                    // meanwhile without offending the lock order).
                    let holder = Owner::current();
                    let guard = self.new_guard(
                        ask.category,
                        req,
                        entry,
                        holder,
                        hold,
                        (started, Instant::now()),
                    );
                    Ok(Ok(guard))
                }
                Err(Missed::CalledOff) if let Some(off) = call_off.off() => Ok(Err(off)),
                // Busy with no patience, or the deadline (as the clock that
                // ended the wait counts it: tokio's may be paused).
                Err(_) => Err(self
                    .timed_out_on(ask.category, &req, &entry, owner, started, remote.is_some())
                    .await),
            }
        }
        .instrument(span)
        .await
    }

    /// For a thread of the crate's own that may block as long as another
    /// holder keeps the lock (a JSONL commit): the lock, taken at once or by
    /// waiting on this thread if the backend's bound allows; `Ok(None)` when
    /// it would have to wait in this process's queue, the backend has no
    /// room to wait here, or the owner holds it already (then wait with
    /// [`Engine::acquire`], which has a deadline). No deadline here: the
    /// wait on this thread is not interruptible.
    pub(crate) fn acquire_here(&self, ask: Ask<'_>) -> Result<Option<LockGuard>, LockError> {
        self.take_here(ask, Here::MayWait)
    }

    /// One attempt on the calling thread that never waits and never blocks
    /// for long: the lock if it is free at once, in this process's queue
    /// and at the backend; `Ok(None)` when it is busy, or when the attempt
    /// or the release could block (a network filesystem, a backend whose
    /// attempts are round trips, a release that removes a file). For a
    /// writer that commits on the appender's own thread when it can (a
    /// JSONL commit without fsync). The lock order is checked as for a wait
    /// (the same commit waits elsewhere when the lock is busy): a refusal
    /// before the try, a warning once the lock is taken.
    pub(crate) fn try_here(&self, ask: Ask<'_>) -> Result<Option<LockGuard>, LockError> {
        self.take_here(ask, Here::Briefly)
    }

    /// Whether [`Engine::try_here`] can ever take a lock of `category`
    /// (not where every attempt is a round trip, nor where every release
    /// removes the file): a writer asks before it arranges to try.
    pub(crate) fn may_try_here(&self, category: Category) -> bool {
        !self.backend.attempts_are_async() && !self.policy.remove_on_release(category)
    }

    /// The first step of an async acquisition that started at `started`
    /// with `timeout`, on the polling thread: the lock if it is free at
    /// once, in this process's queue and at the backend, and taking it
    /// cannot block (not on a network filesystem); `Ok(None)` otherwise,
    /// and then [`Engine::acquire`] does the rest. An uncontended lock so
    /// costs no boxed future and no async state (see ARCHITECTURE.md, "The
    /// uncontended path").
    pub(crate) fn acquire_at_once(
        &self,
        ask: Ask<'_>,
        started: Instant,
        timeout: Option<Duration>,
    ) -> Result<Option<LockGuard>, LockError> {
        // A single attempt (zero timeout) is not checked for the lock order:
        // it cannot wait.
        let checked = timeout != Some(Duration::ZERO);
        self.take_here_from(ask, Here::AtOnce { checked }, started)
    }

    /// [`Engine::acquire_here`] and [`Engine::try_here`].
    fn take_here(&self, ask: Ask<'_>, here: Here) -> Result<Option<LockGuard>, LockError> {
        self.take_here_from(ask, here, Instant::now())
    }

    /// [`Engine::take_here`] for an acquisition that started at `started`.
    fn take_here_from(
        &self,
        ask: Ask<'_>,
        here: Here,
        started: Instant,
    ) -> Result<Option<LockGuard>, LockError> {
        if ask.mode != LockMode::Exclusive || self.backend.attempts_are_async() {
            return Ok(None);
        }
        let places = mounts::places();
        let briefly = here == Here::Briefly;
        if here != Here::MayWait
            && ((briefly && self.policy.remove_on_release(ask.category))
                || self.may_hang(&places, ask.target))
        {
            return Ok(None);
        }
        let req = self.request(ask, started)?;
        if here != Here::MayWait
            && ((briefly && self.backend.releases_by_removal(&req))
                || places.may_hang(&req.target)
                || places.may_hang(&req.lock_path))
        {
            return Ok(None);
        }
        // Traced and checked once per acquisition. A wait here is traced
        // and checked once it has this process's queue, before it waits; a
        // try once it has the lock. A try that finds the lock busy, and a
        // wait here that finds the queue busy, leave no trace and check
        // nothing: their caller then waits elsewhere, which does both.
        let entry = table::enter(&req.lock_path);
        let owner = ask.owner.unwrap_or_else(Owner::current);
        // Held by the asker itself: the wait (with a deadline) warns or
        // refuses.
        if entry.is_held_by(owner) {
            return Ok(None);
        }
        // Not held by the asker (ruled out above): only the lock order is
        // left to check.
        let checked = here != (Here::AtOnce { checked: false });
        // Under `OrderCheck::Error` a refusal ends the acquisition whether
        // the lock is free or not: refused before anything is taken (a pass
        // counts nothing, so a wait that follows counts a violation once).
        let refuses = checked && self.policy.order_check == OrderCheck::Error;
        if refuses {
            self.check_order(ask.category, &req, owner)?;
        }
        let Ok(queue) = Arc::clone(&entry.queue).try_write_owned() else {
            return Ok(None);
        };
        let make_span = || span(ask, &req);
        let mut _span = None;
        if here == Here::MayWait {
            _span = Some(make_span().entered());
            if !refuses {
                self.check_order(ask.category, &req, owner)?;
            }
        }
        let tried = self.backend.try_lock(&req);
        if tried.is_err() && _span.is_none() {
            _span = Some(make_span().entered());
        }
        let os = match (tried?, here) {
            (Some(os), _) => os,
            (None, Here::Briefly | Here::AtOnce { .. }) => return Ok(None),
            (None, Here::MayWait) => match self.backend.wait_here(&req) {
                Some(held) => held?,
                None => return Ok(None),
            },
        };
        if here != Here::MayWait {
            _span = Some(make_span().entered());
            // Warned (`OrderCheck::Warn`) once taken; `Off` checks nothing.
            if checked
                && !refuses
                && let Err(e) = self.check_order(ask.category, &req, owner)
            {
                drop((os, queue));
                return Err(e);
            }
        }
        let hold = Hold::Exclusive { os, queue };
        // Held by this thread, not by the owner it was checked for (see
        // `acquire`).
        let holder = if ask.owner.is_none() {
            owner
        } else {
            Owner::current()
        };
        // Taken without waiting: the clock is not read again (the few
        // microseconds this took count as held, not as waited).
        let acquired = match here {
            Here::AtOnce { .. } => started,
            Here::Briefly | Here::MayWait => Instant::now(),
        };
        Ok(Some(self.new_guard(
            ask.category,
            req,
            entry,
            holder,
            hold,
            (started, acquired),
        )))
    }

    /// How long before a deadline [`Engine::prefetch_holders`] is worth
    /// calling.
    pub(crate) const HOLDER_READ_AHEAD: Duration = crate::backend::HOLDER_READ_AHEAD;

    /// A hint that a wait ended elsewhere may soon time out (see
    /// [`Engine::timed_out`]).
    pub(crate) fn prefetch_holders(&self) {
        self.backend.prefetch_holders();
    }

    /// The timeout error of a wait for `ask` that started at `started` and
    /// ended elsewhere (a JSONL append whose commit did not come in time):
    /// counted, traced and naming the holder like any other.
    pub(crate) async fn timed_out(&self, ask: Ask<'_>, started: Instant) -> LockError {
        if self.may_hang(&mounts::places(), ask.target) {
            // Naming it must not wait on the network filesystem that
            // probably made it late.
            return self.unresolved_timeout(ask, started);
        }
        let req = match self.request(ask, started) {
            Ok(req) => req,
            Err(e) => return e,
        };
        // Resolved through a symlink into a network mount: the holder
        // lookup (a stat of the lock file) must not wait on it either.
        let places = mounts::places();
        let remote = places.may_hang(&req.target) || places.may_hang(&req.lock_path);
        let owner = ask.owner.unwrap_or_else(Owner::current);
        let entry = table::enter(&req.lock_path);
        self.timed_out_on(ask.category, &req, &entry, owner, started, remote)
            .await
    }

    /// The timeout error of a wait by `owner` that started at `started`,
    /// naming the holder: this same task, or the process the backend tells
    /// (not asked on a network filesystem, where asking may hang).
    async fn timed_out_on(
        &self,
        category: Category,
        req: &LockRequest,
        entry: &EntryRef,
        owner: Owner,
        started: Instant,
        remote: bool,
    ) -> LockError {
        let holder = if entry.is_held_by(owner) {
            Some(Holder::ThisTask)
        } else if remote && !self.backend.names_holders_off_runtime() {
            None
        } else {
            self.backend.holder(&req.lock_path, started).await
        };
        self.timeout_error(category, req, started.elapsed(), holder)
    }

    /// The timeout error of an acquisition whose target could not be
    /// resolved in time (a network filesystem that did not answer), named
    /// without asking the filesystem.
    fn unresolved_timeout(&self, ask: Ask<'_>, started: Instant) -> LockError {
        let req = self.request_for(ask, naming::normalize_without_io(ask.target));
        self.timeout_error(ask.category, &req, started.elapsed(), None)
    }

    /// How long file work on a network filesystem may take for a caller
    /// without a deadline of its own (a try, a single attempt, `lock_many`'s
    /// resolution): the category's timeout, or its default where that is
    /// none or zero, so that a hung server ends it too.
    fn remote_try_bound(&self, category: Category) -> Duration {
        match self.policy.timeout(category) {
            Some(t) if !t.is_zero() => t,
            _ => category.default_timeout(),
        }
    }

    /// Whether file work for `target` (or in the lock dir) may hang, by
    /// the network `places` known.
    fn may_hang(&self, places: &mounts::Places, target: &Path) -> bool {
        let lock_dir_remote = match &self.policy.lock_dir {
            LockDir::Fixed(dir) => places.may_hang(dir),
            LockDir::BesideTarget => false,
        };
        lock_dir_remote || places.may_hang(target)
    }

    /// The lock path of `target` in `category`, resolved where that is safe
    /// (see [`Engine::request_where_safe`]; within the category's default
    /// timeout on a network filesystem).
    pub(crate) async fn lock_path_where_safe(
        &self,
        category: Category,
        target: &Path,
    ) -> Result<std::path::PathBuf, LockError> {
        let started = Instant::now();
        let ask = Ask {
            category,
            target,
            mode: LockMode::Exclusive,
            owner: None,
        };
        let bound = Patience::Until {
            deadline: started.checked_add(self.remote_try_bound(category)),
            token: None,
        };
        match self.request_where_safe(ask, started, bound).await? {
            Ok((req, _)) => Ok(req.lock_path.to_path_buf()),
            Err(_) => Err(self.unresolved_timeout(ask, started)),
        }
    }

    /// [`Engine::request`], and, if the file work of this acquisition may
    /// hang (its target or lock dir is on a network filesystem; see
    /// `mounts`), the bound within which it runs on the blocking pool:
    /// the target is resolved there, and [`Engine::take`] makes its attempts
    /// there too. On local disks both stay on this thread, where they
    /// cannot hang. `Ok(Err(missed))`: the resolution outlasted `bound`.
    async fn request_where_safe<'p>(
        &self,
        ask: Ask<'_>,
        now: Instant,
        bound: Patience<'p>,
    ) -> Result<Result<(LockRequest, Option<Patience<'p>>), Missed>, LockError> {
        let places = mounts::places();
        if !self.may_hang(&places, ask.target) {
            let req = self.request(ask, now)?;
            // Resolved through a symlink into a network mount?
            if places.may_hang(&req.target) || places.may_hang(&req.lock_path) {
                self.recorder.off_runtime(ask.category);
                return Ok(Ok((req, Some(bound))));
            }
            return Ok(Ok((req, None)));
        }
        self.recorder.off_runtime(ask.category);
        let target = ask.target.to_path_buf();
        let resolving = crate::blocking::run("resolve lock target", ask.target, move || {
            naming::normalize_target(&target, now)
        });
        // Given up on, the resolution finishes on the pool and is dropped.
        Ok(match bound.wait(resolving).await {
            Ok(normal) => Ok((self.request_for(ask, normal?), Some(bound))),
            Err(missed) => Err(missed),
        })
    }

    /// What the backend needs to lock `ask.target` in `ask.category`.
    fn request(&self, ask: Ask<'_>, now: Instant) -> Result<LockRequest, LockError> {
        let (target, lock_path) = self.policy.resolve(ask.category, ask.target, now)?;
        Ok(self.request_at(ask, target, lock_path))
    }

    fn request_for(&self, ask: Ask<'_>, normal: naming::NormalTarget) -> LockRequest {
        let lock_path = self.policy.lock_path(ask.category, &normal);
        self.request_at(ask, normal.path, lock_path)
    }

    fn request_at(&self, ask: Ask<'_>, target: Arc<Path>, lock_path: Arc<Path>) -> LockRequest {
        LockRequest {
            lock_path,
            target,
            mode: ask.mode,
            file_mode: self.policy.file_mode,
            dir_mode: self.policy.dir_mode,
            create_dir_parents: self.policy.lock_dir_is_fixed(),
            shared_group: self.policy.shared_group,
            network_fs: self.policy.network_fs,
            removed_on_release: self.policy.remove_on_release(ask.category),
            just_released: false,
        }
    }

    /// Refuses a wait that would deadlock on a lock `owner` holds, and
    /// reports (or, per policy, refuses) one against the lock order.
    fn check_before_waiting(
        &self,
        category: Category,
        req: &LockRequest,
        entry: &EntryRef,
        owner: Owner,
    ) -> Result<(), LockError> {
        if entry.is_held_by(owner) {
            match self.policy.same_task {
                SameTask::Refuse => {
                    return Err(LockError::WouldDeadlock {
                        category,
                        target: req.target.to_path_buf(),
                        lock_path: req.lock_path.to_path_buf(),
                    });
                }
                _ => tracing::warn!(
                    category = category.name(),
                    target = %req.target.display(),
                    lock_path = %req.lock_path.display(),
                    "waiting for a lock this same task holds: fine if a sibling future \
                     (join!, select!, buffer_unordered) holds it, a deadlock until the \
                     timeout if it is a nested acquire in one future"
                ),
            }
        }
        self.check_order(category, req, owner)
    }

    /// Reports (or, per policy, refuses) an acquisition by `owner` against
    /// the lock order.
    fn check_order(
        &self,
        category: Category,
        req: &LockRequest,
        owner: Owner,
    ) -> Result<(), LockError> {
        let check = self.policy.order_check;
        if check != OrderCheck::Off
            && let Some((held_category, held_lock_path)) =
                order::later_held(owner, category, &req.lock_path)
        {
            self.recorder.order_violation(category);
            let err = LockError::OrderViolation {
                category,
                lock_path: req.lock_path.to_path_buf(),
                held_category,
                held_lock_path,
            };
            if check == OrderCheck::Error {
                return Err(err);
            }
            tracing::warn!(error = %err, "lock taken against the lock order");
        }
        Ok(())
    }

    /// One pass over the queue and the backend; `Ok(Err(missed))` when a
    /// step missed.
    async fn take(
        &self,
        entry: &EntryRef,
        req: &LockRequest,
        remote: Option<&Patience<'_>>,
        remove: bool,
        patience: &Patience<'_>,
    ) -> Result<Result<Hold, Missed>, LockError> {
        match req.mode {
            LockMode::Exclusive => {
                let queue = match Arc::clone(&entry.queue).try_write_owned() {
                    Ok(queue) => queue,
                    Err(_) => match patience.wait(Arc::clone(&entry.queue).write_owned()).await {
                        Ok(queue) => queue,
                        Err(missed) => return Ok(Err(missed)),
                    },
                };
                Ok(self
                    .take_backend(entry, req, remote, patience)
                    .await?
                    .map(|os| Hold::Exclusive { os, queue }))
            }
            LockMode::Shared => {
                let queue = match Arc::clone(&entry.queue).try_read_owned() {
                    Ok(queue) => queue,
                    Err(_) => match patience.wait(Arc::clone(&entry.queue).read_owned()).await {
                        Ok(queue) => queue,
                        Err(missed) => return Ok(Err(missed)),
                    },
                };
                // Shared holders of this process share one backend lock; the
                // slot's mutex makes concurrent shared waiters take it once.
                let mut slot = match entry.shared.try_lock() {
                    Ok(slot) => slot,
                    Err(_) => match patience.wait(entry.shared.lock()).await {
                        Ok(slot) => slot,
                        Err(missed) => return Ok(Err(missed)),
                    },
                };
                if let Some(os) = slot.upgrade() {
                    return Ok(Ok(Hold::Shared { os, queue }));
                }
                let os = match self.take_backend(entry, req, remote, patience).await? {
                    Ok(os) => os,
                    Err(missed) => return Ok(Err(missed)),
                };
                let os = Arc::new(SharedHeld::new(os, remove, Arc::clone(&req.lock_path)));
                *slot = Arc::downgrade(&os);
                Ok(Ok(Hold::Shared { os, queue }))
            }
        }
    }

    /// The backend's lock: a non-blocking attempt, then, if patience
    /// allows, a wait run by its driver.
    async fn take_backend(
        &self,
        entry: &EntryRef,
        req: &LockRequest,
        remote: Option<&Patience<'_>>,
        patience: &Patience<'_>,
    ) -> Result<Result<Box<dyn HeldLock>, Missed>, LockError> {
        let tried = if self.backend.attempts_are_async() {
            // A round trip to a server: within the caller's deadline and
            // token (a try, within a bound of its own), however long the
            // server or the network takes. The backend keeps a dropped
            // attempt from stranding a lock.
            let attempt = self.backend.try_lock_async(req);
            let got = match patience {
                Patience::Until { .. } => patience.wait(attempt).await,
                Patience::Now => tokio::time::timeout(ASYNC_TRY_BOUND, attempt)
                    .await
                    .map_err(|_| Missed::Deadline),
            };
            match got {
                Ok(got) => Ok(got?),
                Err(missed) => Err(missed),
            }
        } else {
            self.try_backend(req, remote).await?
        };
        match tried {
            Ok(Some(os)) => return Ok(Ok(os)),
            Ok(None) => {}
            Err(missed) => return Ok(Err(missed)),
        }
        let Patience::Until { deadline, token } = *patience else {
            return Ok(Err(Missed::Busy));
        };
        tracing::debug!("held by another process; waiting");
        // Whether this process let go of the lock, after a brief holding,
        // just before this wait began: it takes the lock back to back.
        let marked;
        let req = if entry.released_within_after_brief(JUST_RELEASED, BRIEF_HOLDING, Instant::now())
        {
            marked = LockRequest {
                just_released: true,
                ..req.clone()
            };
            &marked
        } else {
            req
        };
        Ok(match self.backend.wait(req, deadline, token).await? {
            Some(os) => Ok(os),
            // A backend ends a wait without the lock only at the deadline
            // or when the token is cancelled; the token tells which.
            None if token.is_some_and(CancellationToken::is_cancelled) => Err(Missed::CalledOff),
            None => Err(Missed::Deadline),
        })
    }

    /// One non-blocking attempt at the backend: on this thread, or, where
    /// the file work may hang (`remote`: within that bound), on the
    /// blocking pool. If the attempt is given up on, or this future is
    /// dropped, a lock it got is dropped with its result, which lets go of
    /// it (and meanwhile another attempt of this process only finds the
    /// lock busy: two descriptors exclude each other like two processes).
    async fn try_backend(
        &self,
        req: &LockRequest,
        remote: Option<&Patience<'_>>,
    ) -> Result<Result<Option<Box<dyn HeldLock>>, Missed>, LockError> {
        let Some(bound) = remote else {
            return self.backend.try_lock(req).map(Ok);
        };
        let (backend, owned) = (Arc::clone(&self.backend), req.clone());
        let attempt =
            crate::blocking::run("lock", &req.lock_path, move || backend.try_lock(&owned));
        match bound.wait(attempt).await {
            Ok(tried) => tried.map(Ok),
            Err(missed) => Ok(Err(missed)),
        }
    }

    /// The guard for a lock asked for at `started` and granted at
    /// `acquired`; records the acquisition.
    fn new_guard(
        &self,
        category: Category,
        req: LockRequest,
        entry: EntryRef,
        owner: Owner,
        hold: Hold,
        (started, acquired): (Instant, Instant),
    ) -> LockGuard {
        let remove_on_release =
            self.policy.remove_on_release(category) || self.backend.releases_by_removal(&req);
        let waited = acquired.saturating_duration_since(started);
        self.recorder.acquired(category, waited);
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
            order_checked: self.policy.order_check != OrderCheck::Off,
            budget: self.policy.budget(category),
            recorder: Arc::clone(&self.recorder),
            token: OnceLock::new(),
            lost: None,
        })
    }

    fn timeout_error(
        &self,
        category: Category,
        req: &LockRequest,
        waited: Duration,
        holder: Option<Holder>,
    ) -> LockError {
        self.recorder.timed_out(category);
        tracing::info!(
            wait_ms = waited.as_secs_f64() * 1e3,
            holder = ?holder,
            "timed out waiting for lock"
        );
        LockError::Timeout {
            category,
            target: req.target.to_path_buf(),
            lock_path: req.lock_path.to_path_buf(),
            waited,
            holder: holder.map(Box::new),
        }
    }
}

/// The span of one acquisition. Not made at all where no subscriber can
/// record DEBUG (the level hint of every subscriber, and the static
/// bound, rule it out): a span made and then disabled still cost a visible
/// share of an uncontended acquisition. The hint is an upper bound, so a
/// subscriber that may want the span (a per-span or span-only filter)
/// still gets it; where `tracing`'s `log` feature is on and no subscriber
/// is set, spans are no longer echoed as `log` records (events still are).
fn span(ask: Ask<'_>, req: &LockRequest) -> tracing::Span {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    if tracing::Level::DEBUG > STATIC_MAX_LEVEL || tracing::Level::DEBUG > LevelFilter::current() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "lock",
        category = ask.category.name(),
        lock_path = %req.lock_path.display(),
        mode = %ask.mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks_in(dir: &Path) -> crate::lock::Locks {
        crate::lock::Locks::builder()
            .lock_dir(dir.join("locks"))
            .build()
            .expect("locks")
    }

    /// Handles with different lock dirs, and two categories, taking one
    /// target in turn each get the lock path a fresh resolution gives
    /// (`naming` remembers one lock path per target, for one category and
    /// lock dir).
    #[tokio::test]
    async fn handles_taking_one_target_in_turn_each_get_their_own_lock_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixed = locks_in(dir.path());
        let beside = crate::lock::Locks::builder().build().expect("locks");
        let target = dir.path().join("shared.json");
        for _ in 0..3 {
            for (locks, category, dir_name) in [
                (&fixed, Category::Manifest, "locks"),
                (&beside, Category::Manifest, ".locks"),
                (&fixed, Category::Summary, "locks"),
                (&beside, Category::Summary, ".locks"),
            ] {
                let guard = locks.lock(category, &target).await.expect("lock");
                let fresh = locks.lock_path(category, &target).expect("lock path");
                assert_eq!(guard.lock_path(), fresh);
                assert!(
                    fresh.parent().is_some_and(|p| p.ends_with(dir_name)),
                    "{fresh:?}"
                );
                let name = fresh
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                assert!(name.starts_with(&format!("{}.", category.name())), "{name}");
            }
        }
    }

    /// A request says whether its category's lock files are removed on
    /// release: an event wait polls by it (a release that keeps the file
    /// may be told by no event).
    #[test]
    fn a_request_says_whether_its_lock_file_is_removed_on_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = locks_in(dir.path());
        let target = dir.path().join("paper.pdf");
        let request = |category| {
            let ask = Ask {
                category,
                target: &target,
                mode: LockMode::Exclusive,
                owner: None,
            };
            locks
                .engine()
                .request(ask, Instant::now())
                .expect("request")
        };
        assert!(request(Category::Artifact).removed_on_release);
        for category in [
            Category::Manifest,
            Category::Telemetry,
            Category::Sqlite,
            Category::Summary,
        ] {
            assert!(!request(category).removed_on_release, "{category:?}");
        }
    }

    /// A wait that begins right after this process let go of the same lock
    /// (a task taking it back to back, which another descriptor took in
    /// between) is served by a kernel thread that gives up wake-up
    /// preemption; one that begins after a pause keeps the normal policy.
    /// Through `Locks`: the guard notes its release, the wait marks its
    /// request, the kernel thread sets its policy. The back-to-back case is
    /// tried up to 20 times (a preempted test thread may begin its wait more
    /// than 100 µs after the release); the paused one sleeps 5 ms.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_back_to_back_takers_wait_gives_up_wake_up_preemption_and_a_later_one_does_not() {
        use crate::backend::os::waits::policy_probe::{
            hold_switch, policies_are_visible, threads_in_flock_on,
        };
        let _switch = hold_switch();
        if !policies_are_visible() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = locks_in(dir.path());
        let target = dir.path().join("manifest.jsonl");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The policy of the kernel wait for an acquisition that begins
        // `pause` after a release, while another descriptor holds the lock.
        let policy_after = |pause: Duration| -> u32 {
            rt.block_on(async {
                let guard = locks.lock(Category::Manifest, &target).await.expect("lock");
                let lock_path = std::fs::canonicalize(guard.lock_path()).expect("lock file");
                let rival = std::fs::File::open(&lock_path).expect("open");
                drop(guard);
                // Free: ours was just let go.
                crate::backend::os::flock::try_flock(&rival, LockMode::Exclusive).expect("rival");
                std::thread::sleep(pause);
                let mut waiting = Box::pin(locks.lock(Category::Manifest, &target));
                assert!(
                    futures_util::poll!(&mut waiting).is_pending(),
                    "the lock was free"
                );
                let since = Instant::now();
                let mut found = threads_in_flock_on(&lock_path);
                while found.is_empty() && since.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(1));
                    found = threads_in_flock_on(&lock_path);
                }
                drop(rival);
                drop(waiting.await.expect("granted"));
                assert_eq!(found.len(), 1, "{found:?}");
                found[0].1
            })
        };
        let batch = libc::SCHED_BATCH as u32;
        assert!(
            (0..20).any(|_| policy_after(Duration::ZERO) == batch),
            "no back-to-back wait gave up wake-up preemption"
        );
        assert_eq!(
            policy_after(Duration::from_millis(5)),
            libc::SCHED_OTHER as u32,
            "a wait after a pause gave up wake-up preemption"
        );
    }
}
