//! Property tests of the in-process table and the acquisition core.
//!
//! Each case is a few tasks, each running a random sequence of operations on
//! a few locks (three lock paths in two categories, one of them removed on
//! release) through real [`Locks`] handles on a real lock dir in a tempdir:
//! waits with a timeout, waits without one, tries, waits dropped before
//! their first poll, after a few polls or after some milliseconds,
//! `lock_many`, releases (by drop or by `release`), holds, and "foreign"
//! holds that take the lock file with `flock` on a descriptor of their own,
//! as another process would. The handles' [`SameTask`] and [`OrderCheck`]
//! policies and the bound on kernel waits (16, or 1 so that most waits at
//! the backend are event waits) are drawn per case. Cases run on a
//! current-thread and on a multi-thread runtime.
//!
//! What is checked, for every case:
//!
//! * **Exclusion.** A model counts the holders of each lock, updated inside
//!   the critical section (after the grant, before the release): no grant
//!   may find an exclusive holder, and no exclusive grant a shared one,
//!   whether the other holder is a guard or a foreign descriptor. On every
//!   grant, a fresh descriptor of the guard's lock file must fail to take
//!   `LOCK_EX | LOCK_NB` (`flock` on another open file description conflicts
//!   as another process would), so the guard really holds the OS lock, on
//!   the file at the lock path.
//! * **Typed outcomes.** A wait ends in a guard or in the error the model
//!   predicts: `WouldDeadlock` exactly when the task holds the lock under
//!   `SameTask::Refuse`, `OrderViolation` exactly when it holds a later lock
//!   under `OrderCheck::Error`, else `Timeout` (naming this task as the
//!   holder exactly when it holds the lock). `lock_many` returns its guards
//!   in lock order.
//! * **No lost waiter.** Every operation finishes within 30 s (a liveness
//!   bound, never a timing assertion), and a wait without a timeout by a
//!   task that holds nothing (single or `lock_many`) must be granted: every
//!   holder it can wait for lets go in bounded time. A whole case that does
//!   not finish within 120 s (a runtime thread blocked) fails too.
//! * **At rest.** Once every task has finished: the in-process table is
//!   empty ([`paths_in_use`]), the backend has no wait in progress,
//!   abandoned ones included, each handle released as many locks as it
//!   granted and counted as many timeouts as the tasks saw, and then every
//!   lock can be taken at once by a try, and after that by a fresh
//!   descriptor.
//!
//! Real time, not tokio's paused clock: under a paused clock tokio jumps
//! ahead whenever the runtime idles, which it does while a wait sits in a
//! crate thread, so the liveness bounds themselves would fire at once.
//! (`tests/api.rs` covers timed waits under a paused clock.)
//!
//! The two properties run 250 cases each by default (about 20 s in all in
//! a debug build on two cores). More:
//!
//! ```text
//! PROPTEST_CASES=10000 cargo test --test properties
//! ```
//!
//! Other `PROPTEST_*` variables apply as usual. Shrinking stops after 300
//! steps or 5 minutes, whichever comes first (a lost waiter costs 30 s a
//! step), unless `PROPTEST_MAX_SHRINK_ITERS` or `PROPTEST_MAX_SHRINK_TIME`
//! say otherwise. Cases of the two properties never overlap (the table and
//! the backend's gauges are per process, and are checked at rest).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_filelock::{
    Category, LockError, LockGuard, LockMode, Locks, OrderCheck, SameTask, paths_in_use,
};
use proptest::prelude::*;
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 250;
/// Shrink steps unless `PROPTEST_MAX_SHRINK_ITERS` says otherwise: each
/// step runs a whole case.
const DEFAULT_SHRINK_ITERS: u32 = 300;
/// Time spent shrinking unless `PROPTEST_MAX_SHRINK_TIME` (ms) says
/// otherwise: a lost waiter costs [`LIVENESS`] per failing step.
const DEFAULT_SHRINK_MS: u32 = 300_000;
/// How long any one operation may take before its task counts as lost.
const LIVENESS: Duration = Duration::from_secs(30);
/// How long a whole case may take before a blocked runtime is assumed.
const CASE_LIMIT: Duration = Duration::from_secs(120);
/// How long after the last task the table and the backend may take to
/// settle (a release handed to the blocking pool, an abandoned kernel wait
/// letting go).
const SETTLE: Duration = Duration::from_secs(10);
/// The timeout of every category on the timed handle, and what a wait
/// without a timeout becomes in a task that holds a lock already (it could
/// be part of a deadlock, which only a timeout undoes).
const TIMED: Duration = Duration::from_millis(50);

/// The locks of every case: one removed on release (artifacts are, by
/// default), two in one category (ordered by lock path).
const TARGETS: [(Category, &str); 3] = [
    (Category::Artifact, "a.bin"),
    (Category::Sqlite, "b.db"),
    (Category::Sqlite, "c.db"),
];
const LOCKS: usize = TARGETS.len();

/// How long a wait may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// One attempt (`timeout(0)`), then `Timeout`.
    Zero,
    /// Up to this many milliseconds.
    Ms(u8),
    /// No timeout; [`TIMED`] for a task that holds a lock already.
    Forever,
}

/// When a wait is dropped, unless it finished first.
#[derive(Debug, Clone, Copy)]
enum CancelAt {
    /// Before its first poll.
    Unpolled,
    /// After this many polls, with a yield between them.
    Polls(u8),
    /// After this many milliseconds.
    Ms(u8),
}

/// One step of a task. Locks are indices into [`TARGETS`].
#[derive(Debug, Clone)]
enum Op {
    /// A wait; a guard joins the task's held locks.
    Lock {
        lock: usize,
        shared: bool,
        wait: Wait,
    },
    /// A try.
    Try { lock: usize, shared: bool },
    /// A wait dropped at `at` unless it ended before.
    Cancel {
        lock: usize,
        shared: bool,
        wait: Wait,
        at: CancelAt,
    },
    /// `lock_many` (exclusive): without timeout for a task that holds
    /// nothing, else with the categories' [`TIMED`]; dropped at `cancel`
    /// if given (then without timeout in any case).
    LockMany {
        locks: Vec<usize>,
        cancel: Option<CancelAt>,
    },
    /// Lets go of the `nth` held lock (modulo how many), by drop or by
    /// `release`.
    Release { nth: usize, by_drop: bool },
    /// Sleeps with whatever is held.
    Hold { ms: u8 },
    /// Yields to the runtime.
    Yield,
    /// Takes the lock file with `flock` on a descriptor of its own (as
    /// another process would: open, lock without waiting, check the file is
    /// still linked), retrying for up to about 20 ms, and holds it `ms`.
    Foreign { lock: usize, shared: bool, ms: u8 },
}

/// One case: the handles' policies, the bound on kernel waits (1: most
/// waits at the backend are event waits) and each task's steps.
#[derive(Debug, Clone)]
struct Case {
    same_task: SameTask,
    order_check: OrderCheck,
    wait_threads: usize,
    tasks: Vec<Vec<Op>>,
}

fn lock_index() -> impl Strategy<Value = usize> {
    0..LOCKS
}

fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        Just(Wait::Zero),
        (1u8..40).prop_map(Wait::Ms),
        Just(Wait::Forever),
    ]
}

fn cancel_at() -> impl Strategy<Value = CancelAt> {
    prop_oneof![
        Just(CancelAt::Unpolled),
        (1u8..6).prop_map(CancelAt::Polls),
        (1u8..30).prop_map(CancelAt::Ms),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (lock_index(), any::<bool>(), wait())
            .prop_map(|(lock, shared, wait)| Op::Lock { lock, shared, wait }),
        2 => (lock_index(), any::<bool>()).prop_map(|(lock, shared)| Op::Try { lock, shared }),
        3 => (lock_index(), any::<bool>(), wait(), cancel_at())
            .prop_map(|(lock, shared, wait, at)| Op::Cancel { lock, shared, wait, at }),
        2 => (
            proptest::collection::vec(lock_index(), 1..=LOCKS),
            proptest::option::of(cancel_at())
        )
            .prop_map(|(locks, cancel)| Op::LockMany { locks, cancel }),
        3 => (0usize..4, any::<bool>()).prop_map(|(nth, by_drop)| Op::Release { nth, by_drop }),
        2 => (0u8..6).prop_map(|ms| Op::Hold { ms }),
        1 => Just(Op::Yield),
        2 => (lock_index(), any::<bool>(), 0u8..8)
            .prop_map(|(lock, shared, ms)| Op::Foreign { lock, shared, ms }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(SameTask::Wait), Just(SameTask::Refuse)],
        prop_oneof![
            Just(OrderCheck::Warn),
            Just(OrderCheck::Error),
            Just(OrderCheck::Off)
        ],
        prop_oneof![Just(16), Just(1)],
        proptest::collection::vec(proptest::collection::vec(op(), 1..=8), 1..=4),
    )
        .prop_map(|(same_task, order_check, wait_threads, tasks)| Case {
            same_task,
            order_check,
            wait_threads,
            tasks,
        })
}

/// `ProptestConfig::default()` reads the `PROPTEST_*` variables; this
/// keeps them and sets this file's defaults only where they are unset.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = DEFAULT_SHRINK_ITERS;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        config.max_shrink_time = DEFAULT_SHRINK_MS;
    }
    config
}

/// Holders of one lock, as the model counts them.
#[derive(Debug, Default, Clone, Copy)]
struct Holders {
    exclusive: u32,
    shared: u32,
}

/// A refusal the model predicts for a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    SameTask,
    Order,
}

/// What every task of a case shares.
struct World {
    /// Every category times out after [`TIMED`].
    timed: Locks,
    /// Every category waits forever.
    forever: Locks,
    targets: Vec<(Category, PathBuf)>,
    /// The lock file of each lock.
    paths: Vec<PathBuf>,
    /// Each lock's place in the lock order (category, then lock path).
    rank: Vec<usize>,
    same_task: SameTask,
    order_check: OrderCheck,
    model: Mutex<[Holders; LOCKS]>,
    /// Timeouts the tasks were told of.
    timeouts_seen: AtomicU64,
}

type Held = Vec<(usize, LockGuard)>;

impl World {
    fn new(dir: &Path, case: &Case) -> Result<World, String> {
        let lock_dir = dir.join("locks");
        // For the foreign holds, which may come first.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&lock_dir)
            .map_err(|e| format!("create {}: {e}", lock_dir.display()))?;
        let builder = Locks::builder()
            .lock_dir(&lock_dir)
            .same_task(case.same_task)
            .order_check(case.order_check);
        let mut timed = builder.clone();
        let mut forever = builder;
        for c in Category::ALL {
            timed = timed.timeout(c, TIMED);
            forever = forever.wait_forever(c);
        }
        let timed = timed.build().map_err(|e| e.to_string())?;
        let forever = forever.build().map_err(|e| e.to_string())?;
        let targets: Vec<_> = TARGETS.iter().map(|&(c, t)| (c, dir.join(t))).collect();
        let paths = targets
            .iter()
            .map(|(c, t)| timed.lock_path(*c, t).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..LOCKS).collect();
        order.sort_by(|&a, &b| (targets[a].0, &paths[a]).cmp(&(targets[b].0, &paths[b])));
        let mut rank = vec![0; LOCKS];
        for (place, &lock) in order.iter().enumerate() {
            rank[lock] = place;
        }
        Ok(World {
            timed,
            forever,
            targets,
            paths,
            rank,
            same_task: case.same_task,
            order_check: case.order_check,
            model: Mutex::new([Holders::default(); LOCKS]),
            timeouts_seen: AtomicU64::new(0),
        })
    }

    fn model(&self) -> std::sync::MutexGuard<'_, [Holders; LOCKS]> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new holder of `lock`; an error if it should not have been
    /// granted.
    fn enter(&self, lock: usize, mode: LockMode, who: &str) -> Result<(), String> {
        let mut model = self.model();
        let h = &mut model[lock];
        let clash = match mode {
            LockMode::Exclusive => h.exclusive > 0 || h.shared > 0,
            _ => h.exclusive > 0,
        };
        if clash {
            return Err(format!(
                "{who} was granted lock {lock} ({mode}) while it had {} exclusive and {} shared \
                 holders",
                h.exclusive, h.shared
            ));
        }
        match mode {
            LockMode::Exclusive => h.exclusive += 1,
            _ => h.shared += 1,
        }
        Ok(())
    }

    /// Counts a holder of `lock` out, just before it lets go.
    fn leave(&self, lock: usize, mode: LockMode) {
        let mut model = self.model();
        let h = &mut model[lock];
        match mode {
            LockMode::Exclusive => h.exclusive -= 1,
            _ => h.shared -= 1,
        }
    }

    /// What the model predicts for a wait (not a try) for `lock` by a task
    /// holding `held`.
    fn refusal(&self, held: &Held, lock: usize) -> Option<Refusal> {
        if self.same_task == SameTask::Refuse && held.iter().any(|(l, _)| *l == lock) {
            return Some(Refusal::SameTask);
        }
        if self.order_check == OrderCheck::Error
            && held.iter().any(|(l, _)| self.rank[*l] > self.rank[lock])
        {
            return Some(Refusal::Order);
        }
        None
    }

    /// Takes in a guard the task was just granted: the right lock and mode,
    /// the model agrees, the OS agrees.
    fn granted(
        &self,
        held: &mut Held,
        lock: usize,
        mode: LockMode,
        guard: LockGuard,
    ) -> Result<(), String> {
        if guard.lock_path() != self.paths[lock] || guard.mode() != mode {
            return Err(format!(
                "asked for lock {lock} ({mode}), got {guard:?} (lock {lock} is {})",
                self.paths[lock].display()
            ));
        }
        self.enter(lock, mode, "a guard")?;
        let busy = os_busy(&self.paths[lock]);
        held.push((lock, guard));
        match busy {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "a fresh descriptor took LOCK_EX on {} while a guard held it ({mode})",
                self.paths[lock].display()
            )),
            Err(e) => Err(format!(
                "probing {} while a guard held it: {e}",
                self.paths[lock].display()
            )),
        }
    }

    /// Checks a timeout error for `lock`, which the task holds or not.
    fn timed_out(&self, err: &LockError, lock: usize, holds_it: bool) -> Result<(), String> {
        let LockError::Timeout {
            lock_path, holder, ..
        } = err
        else {
            return Err(format!("expected a timeout, got: {err}"));
        };
        if *lock_path != self.paths[lock] {
            return Err(format!("a timeout for lock {lock} names another: {err}"));
        }
        if holder.as_ref().is_some_and(|h| h.is_this_task()) != holds_it {
            return Err(format!(
                "a timeout for lock {lock}, which this task {}, names holder {holder:?}",
                if holds_it { "holds" } else { "does not hold" }
            ));
        }
        self.timeouts_seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Checks the outcome of a wait for `lock` against the model; a guard
    /// joins `held`. `granted_only`: the wait could only end with the lock.
    fn waited(
        &self,
        held: &mut Held,
        lock: usize,
        mode: LockMode,
        may_wait: bool,
        granted_only: bool,
        outcome: Result<LockGuard, LockError>,
    ) -> Result<(), String> {
        let refusal = if may_wait {
            self.refusal(held, lock)
        } else {
            None
        };
        let holds_it = held.iter().any(|(l, _)| *l == lock);
        match (outcome, refusal) {
            (Ok(guard), None) => self.granted(held, lock, mode, guard),
            (Ok(guard), Some(r)) => Err(format!("granted {guard:?}, expected {r:?}")),
            (Err(e), Some(r)) => check_refusal(&e, r, &self.paths[lock]),
            (Err(e), None) if granted_only => Err(format!(
                "a wait without timeout ended without the lock: {e}"
            )),
            (Err(e), None) => self.timed_out(&e, lock, holds_it),
        }
    }

    /// Checks the outcome of `lock_many` for `locks` against the model.
    fn waited_many(
        &self,
        held: &mut Held,
        locks: &[usize],
        granted_only: bool,
        outcome: Result<async_filelock::LockSet, LockError>,
    ) -> Result<(), String> {
        // Each lock is checked against what the task held before: those
        // the set takes first come earlier in the order.
        let refusals: Vec<_> = locks.iter().map(|&l| self.refusal(held, l)).collect();
        match outcome {
            Ok(set) => {
                if let Some(r) = refusals.iter().flatten().next() {
                    return Err(format!("lock_many granted, expected {r:?}"));
                }
                let got: Vec<_> = set.guards().iter().map(|g| g.lock_path()).collect();
                let wanted: Vec<_> = locks.iter().map(|&l| self.paths[l].as_path()).collect();
                if got != wanted {
                    return Err(format!(
                        "lock_many took {got:?}, not {wanted:?} (the lock order)"
                    ));
                }
                for (&lock, guard) in locks.iter().zip(set.into_guards()) {
                    self.granted(held, lock, LockMode::Exclusive, guard)?;
                }
                Ok(())
            }
            Err(e) => {
                let named = match &e {
                    LockError::Timeout { lock_path, .. }
                    | LockError::WouldDeadlock { lock_path, .. }
                    | LockError::OrderViolation { lock_path, .. } => lock_path,
                    _ => return Err(format!("lock_many: unexpected error: {e}")),
                };
                let Some(k) = locks.iter().position(|&l| self.paths[l] == *named) else {
                    return Err(format!("lock_many failed on a lock it was not given: {e}"));
                };
                if let Some(r) = refusals[..k].iter().flatten().next() {
                    return Err(format!(
                        "lock_many went past a lock it should refuse ({r:?}): {e}"
                    ));
                }
                let lock = locks[k];
                match refusals[k] {
                    Some(r) => check_refusal(&e, r, &self.paths[lock]),
                    None if granted_only => Err(format!(
                        "lock_many without timeout ended without its locks: {e}"
                    )),
                    None => self.timed_out(&e, lock, held.iter().any(|(l, _)| *l == lock)),
                }
            }
        }
    }

    /// Lets go of a held lock.
    async fn let_go(&self, lock: usize, guard: LockGuard, by_drop: bool) -> Result<(), String> {
        self.leave(lock, guard.mode());
        if by_drop {
            drop(guard);
            Ok(())
        } else {
            guard
                .release()
                .await
                .map_err(|e| format!("release of lock {lock}: {e}"))
        }
    }

    /// Runs one step of a task holding `held`.
    async fn step(&self, held: &mut Held, op: &Op) -> Result<(), String> {
        match *op {
            Op::Lock { lock, shared, wait } => {
                let wait = match wait {
                    Wait::Forever if !held.is_empty() => Wait::Ms(TIMED.as_millis() as u8),
                    w => w,
                };
                let outcome = self.acquire(lock, shared, wait).await;
                let granted_only = wait == Wait::Forever;
                self.waited(
                    held,
                    lock,
                    mode(shared),
                    wait != Wait::Zero,
                    granted_only,
                    outcome,
                )
            }
            Op::Try { lock, shared } => {
                let (category, target) = &self.targets[lock];
                let outcome = if shared {
                    self.timed.try_lock_shared(*category, target).await
                } else {
                    self.timed.try_lock(*category, target).await
                };
                match outcome {
                    Ok(Some(guard)) => self.granted(held, lock, mode(shared), guard),
                    Ok(None) => Ok(()),
                    Err(e) => Err(format!("try: {e}")),
                }
            }
            Op::Cancel {
                lock,
                shared,
                wait,
                at,
            } => match cancel(self.acquire(lock, shared, wait), at).await {
                Some(outcome) => self.waited(
                    held,
                    lock,
                    mode(shared),
                    wait != Wait::Zero,
                    wait == Wait::Forever,
                    outcome,
                ),
                None => Ok(()),
            },
            Op::LockMany {
                ref locks,
                cancel: at,
            } => {
                let mut locks = locks.clone();
                locks.sort_by_key(|&l| self.rank[l]);
                locks.dedup();
                let forever = held.is_empty() || at.is_some();
                let handle = if forever { &self.forever } else { &self.timed };
                let items = locks.iter().map(|&l| self.targets[l].clone());
                let outcome = match at {
                    None => Some(handle.lock_many(items).await),
                    Some(at) => cancel(handle.lock_many(items), at).await,
                };
                match outcome {
                    Some(outcome) => self.waited_many(held, &locks, forever, outcome),
                    None => Ok(()),
                }
            }
            Op::Release { nth, by_drop } => {
                if held.is_empty() {
                    return Ok(());
                }
                let (lock, guard) = held.swap_remove(nth % held.len());
                self.let_go(lock, guard, by_drop).await
            }
            Op::Hold { ms } => {
                tokio::time::sleep(Duration::from_millis(ms.into())).await;
                Ok(())
            }
            Op::Yield => {
                tokio::task::yield_now().await;
                Ok(())
            }
            Op::Foreign { lock, shared, ms } => self.foreign(lock, mode(shared), ms).await,
        }
    }

    /// A wait for `lock` as `wait` says, on the handle that fits.
    fn acquire(&self, lock: usize, shared: bool, wait: Wait) -> async_filelock::Acquire {
        let (category, target) = &self.targets[lock];
        let acquire = match wait {
            Wait::Zero => self
                .timed
                .acquire(*category, target)
                .timeout(Duration::ZERO),
            Wait::Ms(ms) => self
                .timed
                .acquire(*category, target)
                .timeout(Duration::from_millis(ms.into())),
            Wait::Forever => self.forever.acquire(*category, target).wait_forever(),
        };
        if shared { acquire.shared() } else { acquire }
    }

    /// Holds `lock` through a descriptor of its own for `ms`, if it can take
    /// it within about 20 attempts.
    async fn foreign(&self, lock: usize, mode: LockMode, ms: u8) -> Result<(), String> {
        let path = &self.paths[lock];
        let op = match mode {
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
            _ => FlockOperation::NonBlockingLockShared,
        };
        for _ in 0..20 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| format!("foreign open of {}: {e}", path.display()))?;
            match flock(&file, op) {
                Ok(()) => {
                    let linked = file
                        .metadata()
                        .map_err(|e| format!("foreign fstat of {}: {e}", path.display()))?
                        .nlink();
                    if linked == 0 {
                        // A holder removed it on release: the next is new.
                        continue;
                    }
                    self.enter(lock, mode, "a foreign descriptor")?;
                    tokio::time::sleep(Duration::from_millis(ms.into())).await;
                    self.leave(lock, mode);
                    drop(file);
                    return Ok(());
                }
                Err(Errno::WOULDBLOCK) => {
                    drop(file);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(format!("foreign flock of {}: {e}", path.display())),
            }
        }
        Ok(())
    }

    /// After every task: waits for the table and the backend to settle,
    /// then checks that every lock is free and the counts add up.
    async fn at_rest(&self) -> Result<(), String> {
        let model = *self.model();
        if model.iter().any(|h| h.exclusive != 0 || h.shared != 0) {
            return Err(format!("the model still counts holders: {model:?}"));
        }
        self.settle().await?;
        for (lock, (category, target)) in self.targets.iter().enumerate() {
            match self.timed.try_lock(*category, target).await {
                Ok(Some(guard)) => guard
                    .release()
                    .await
                    .map_err(|e| format!("release after the case: {e}"))?,
                Ok(None) => return Err(format!("lock {lock} busy after every task finished")),
                Err(e) => return Err(format!("lock {lock} after every task finished: {e}")),
            }
            match os_busy(&self.paths[lock]) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(format!(
                        "lock {lock} busy for a fresh descriptor after every task finished"
                    ));
                }
                Err(e) => return Err(format!("probing lock {lock} after the case: {e}")),
            }
        }
        self.settle().await
    }

    /// Waits up to [`SETTLE`] for nothing to be held or waited for.
    async fn settle(&self) -> Result<(), String> {
        let end = Instant::now() + SETTLE;
        loop {
            let rest = self.rest();
            if rest.is_rest() {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("not at rest {SETTLE:?} after the case: {rest:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn rest(&self) -> Rest {
        let mut rest = Rest {
            paths_in_use: paths_in_use(),
            timeouts_seen: self.timeouts_seen.load(Ordering::Relaxed),
            ..Rest::default()
        };
        for locks in [&self.timed, &self.forever] {
            let m = locks.metrics();
            for (_, c) in m.iter() {
                rest.acquisitions += c.acquisitions;
                rest.releases += c.releases;
                rest.timeouts += c.timeouts;
            }
            if let Some(os) = m.backend().os() {
                rest.kernel_waits_now = os.kernel_waits_now;
                rest.abandoned_kernel_waits_now = os.abandoned_kernel_waits_now;
                rest.event_waits_now = os.event_waits_now;
            }
        }
        rest
    }
}

/// What should be zero (or equal) once a case is over.
#[derive(Debug, Default)]
struct Rest {
    paths_in_use: usize,
    kernel_waits_now: u64,
    abandoned_kernel_waits_now: u64,
    event_waits_now: u64,
    acquisitions: u64,
    releases: u64,
    timeouts: u64,
    timeouts_seen: u64,
}

impl Rest {
    fn is_rest(&self) -> bool {
        self.paths_in_use == 0
            && self.kernel_waits_now == 0
            && self.abandoned_kernel_waits_now == 0
            && self.event_waits_now == 0
            && self.acquisitions == self.releases
            && self.timeouts == self.timeouts_seen
    }
}

fn mode(shared: bool) -> LockMode {
    if shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    }
}

/// Checks that `err` is the refusal `r` for `lock_path`.
fn check_refusal(err: &LockError, r: Refusal, lock_path: &Path) -> Result<(), String> {
    let named = match (r, err) {
        (Refusal::SameTask, LockError::WouldDeadlock { lock_path, .. })
        | (Refusal::Order, LockError::OrderViolation { lock_path, .. }) => lock_path,
        _ => return Err(format!("expected {r:?}, got: {err}")),
    };
    if named != lock_path {
        return Err(format!("{r:?} names another lock: {err}"));
    }
    Ok(())
}

/// Drives `fut` until `at`, then drops it; its output if it ended first.
async fn cancel<F: Future>(fut: F, at: CancelAt) -> Option<F::Output> {
    match at {
        CancelAt::Unpolled => None,
        CancelAt::Polls(n) => {
            let mut fut = pin!(fut);
            for _ in 0..n {
                if let Poll::Ready(out) = futures::poll!(fut.as_mut()) {
                    return Some(out);
                }
                tokio::task::yield_now().await;
            }
            None
        }
        CancelAt::Ms(ms) => tokio::time::timeout(Duration::from_millis(ms.into()), fut)
            .await
            .ok(),
    }
}

/// Whether a fresh descriptor of `path` fails to take `LOCK_EX` at once
/// (some guard holds the file at `path`). A missing file is free.
fn os_busy(path: &Path) -> io::Result<bool> {
    let file: File = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        // Dropping the file lets go.
        Ok(()) => Ok(false),
        Err(Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// A task: its steps, each within [`LIVENESS`], then it lets go of all.
async fn run_task(world: Arc<World>, me: usize, ops: Vec<Op>) -> Result<(), String> {
    let mut held = Held::new();
    for (i, op) in ops.iter().enumerate() {
        match tokio::time::timeout(LIVENESS, world.step(&mut held, op)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("task {me}, step {i} {op:?}: {e}")),
            Err(_) => {
                return Err(format!(
                    "task {me}, step {i} {op:?}: not over after {LIVENESS:?} (a lost waiter?)"
                ));
            }
        }
    }
    for (i, (lock, guard)) in held.into_iter().enumerate() {
        world.let_go(lock, guard, i % 2 == 0).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Runs the case's tasks on a runtime of `flavor`, then checks the rest.
fn run_on_runtime(case: &Case, flavor: Flavor) -> Result<(), String> {
    let rt = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let world = Arc::new(World::new(dir.path(), case)?);
        let tasks: Vec<_> = case
            .tasks
            .iter()
            .enumerate()
            .map(|(me, ops)| tokio::spawn(run_task(Arc::clone(&world), me, ops.clone())))
            .collect();
        let mut first = None;
        for task in tasks {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Err(format!("a task panicked: {e}")),
            };
            if let Err(e) = outcome {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => world.at_rest().await,
        }
    })
}

/// One case at a time in this process: the table and the backend's gauges
/// are per process.
static ONE_CASE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a case on its own thread, so that a runtime thread blocked for
/// good fails the case (after [`CASE_LIMIT`]) instead of hanging the test.
fn run_case(case: &Case, flavor: Flavor) -> Result<(), String> {
    let _one = ONE_CASE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    async_filelock::set_max_wait_threads(case.wait_threads);
    let (tx, rx) = mpsc::channel();
    let mine = case.clone();
    std::thread::spawn(move || {
        let _ = tx.send(run_on_runtime(&mine, flavor));
    });
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(outcome) => outcome.map_err(|e| format!("{flavor}: {e}")),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "{flavor}: the case did not finish within {CASE_LIMIT:?} (a blocked runtime thread?)"
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(format!("{flavor}: the case panicked (see its output)"))
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Exclusion, typed outcomes, no lost waiter and rest, on a
    /// current-thread runtime.
    #[test]
    fn locks_exclude_wake_and_rest_on_a_current_thread_runtime(case in case()) {
        if let Err(e) = run_case(&case, Flavor::CurrentThread) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// The same on a multi-thread runtime (two workers).
    #[test]
    fn locks_exclude_wake_and_rest_on_a_multi_thread_runtime(case in case()) {
        if let Err(e) = run_case(&case, Flavor::MultiThread) {
            return Err(TestCaseError::fail(e));
        }
    }
}
