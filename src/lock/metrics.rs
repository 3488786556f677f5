//! Counters and percentiles per category (law 8), kept per [`crate::Locks`]
//! handle, plus the backend's own counters.
//!
//! Percentiles come from HDR histograms (the `hdrhistogram` crate) at two
//! significant digits in microseconds: constant memory per category however
//! many acquisitions are recorded.
//!
//! * [`display`]: [`Metrics`] as a table a person reads.
//! * `facade` (feature `metrics`): every event also recorded through the
//!   `metrics` crate facade, with category labels.

mod display;
#[cfg(feature = "metrics")]
mod facade;

#[cfg(feature = "metrics")]
pub use facade::describe_metrics;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::backend::BackendMetrics;
use crate::category::Category;
use crate::sys::fork_generation;

/// A snapshot of a [`crate::Locks`] handle's metrics. Its `Display` is a
/// table a person reads (one row per category used, waits and holds in
/// their own units, then the backend's counters); with the `metrics`
/// feature every event is also recorded through the `metrics` crate
/// facade as it happens (see `describe_metrics`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{Category, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let guard = locks.lock(Category::Summary, dir.path().join("summary.json")).await?;
/// guard.release().await?;
/// let m = locks.metrics();
/// assert_eq!(m.category(Category::Summary).acquisitions, 1);
/// assert_eq!(m.category(Category::Summary).releases, 1);
/// assert!(m.backend().os().is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Metrics {
    categories: [CategoryMetrics; 5],
    backend: BackendMetrics,
}

impl Metrics {
    /// The metrics of one category.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// use async_filelock::Category;
    /// locks.lock(Category::Sqlite, dir.path().join("db")).await?.release().await?;
    /// assert_eq!(locks.metrics().category(Category::Sqlite).acquisitions, 1);
    /// # Ok(()) }
    /// ```
    pub fn category(&self, category: Category) -> &CategoryMetrics {
        &self.categories[category.index()]
    }

    /// Every category's metrics, in lock order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let metrics = locks.metrics();
    /// assert_eq!(metrics.iter().filter(|(_, m)| m.acquisitions > 0).count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (Category, &CategoryMetrics)> {
        Category::ALL.into_iter().zip(self.categories.iter())
    }

    /// The counters of the handle's backend (for the OS backend:
    /// process-wide threads waiting in `flock`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
    /// let os = locks.metrics().backend().os().copied().expect("the OS backend");
    /// assert_eq!(os.event_waits_now, 0);
    /// # Ok(()) }
    /// ```
    pub fn backend(&self) -> &BackendMetrics {
        &self.backend
    }
}

/// Counts and percentiles of one category.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// use async_filelock::Category;
/// let g = locks.lock(Category::Summary, dir.path().join("s.json")).await?;
/// g.release().await?;
/// let m = locks.metrics().category(Category::Summary).clone();
/// assert_eq!((m.acquisitions, m.releases, m.timeouts), (1, 1, 0));
/// assert!(m.hold.max >= m.hold.p50);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CategoryMetrics {
    /// Locks granted.
    pub acquisitions: u64,
    /// Acquisitions that gave up at their timeout.
    pub timeouts: u64,
    /// Locks released (by drop or `release`).
    pub releases: u64,
    /// Holds that lasted longer than the category's hold budget.
    pub over_budget: u64,
    /// Acquisitions that came against the lock order (law 7).
    pub order_violations: u64,
    /// Attempts whose file work ran on the blocking pool, not the runtime
    /// thread, because the target or lock dir is on a network filesystem
    /// (where it may hang).
    pub off_runtime: u64,
    /// Time from asking to being granted.
    pub wait: Percentiles,
    /// Time from being granted to releasing.
    pub hold: Percentiles,
}

/// Percentiles of a duration distribution (two significant digits).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let locks = async_filelock::Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// use async_filelock::Category;
/// locks.lock(Category::Summary, dir.path().join("s.json")).await?.release().await?;
/// let wait = locks.metrics().category(Category::Summary).wait;
/// assert!(wait.p50 <= wait.p95 && wait.p95 <= wait.p99 && wait.p99 <= wait.max);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest value recorded.
    pub max: Duration,
}

#[derive(Debug)]
struct CategoryRecorder {
    acquisitions: u64,
    timeouts: u64,
    releases: u64,
    over_budget: u64,
    order_violations: u64,
    off_runtime: u64,
    wait: Histogram<u64>,
    hold: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to a week, two significant digits; longer values saturate at the
    // top. Construction fails only for bounds or digits out of range:
    // constants here, out of reach of input and the OS.
    Histogram::new_with_bounds(1, 7 * 24 * 3600 * 1_000_000, 2).expect("valid histogram bounds")
}

impl CategoryRecorder {
    fn new() -> Self {
        CategoryRecorder {
            acquisitions: 0,
            timeouts: 0,
            releases: 0,
            over_budget: 0,
            order_violations: 0,
            off_runtime: 0,
            wait: histogram(),
            hold: histogram(),
        }
    }
}

/// The recording side, shared by a handle and its guards.
#[derive(Debug)]
pub(crate) struct Recorder {
    categories: [Mutex<CategoryRecorder>; 5],
    /// Per category, acquisitions that took the lock on their first try
    /// (a wait of exactly zero): counted here without the mutex, and added
    /// to the counts and wait percentiles of a snapshot. An uncontended
    /// lock so takes the mutex once per holding (at release), not twice.
    at_once: [AtomicU64; 5],
    /// The fork generation that made it: a child made by `fork()` does not
    /// record into (or read) its parent's recorder, whose mutexes a parent
    /// thread that does not exist in the child may have held at the fork.
    generation: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
    Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: Duration::from_micros(h.max()),
    }
}

/// The percentiles of `h` with `zeros` more values of zero (acquisitions
/// counted at once, see `Recorder::at_once`), as `h` would give them with
/// the zeros recorded, without copying it: the rank of a quantile is
/// counted as the histogram counts it, the zeros come first, and past them
/// the value is found in `h` by what is left of the rank.
fn percentiles_with_zeros(h: &Histogram<u64>, zeros: u64) -> Percentiles {
    let total = h.len().saturating_add(zeros);
    let at = |q: f64| {
        // As `Histogram::value_at_quantile` ranks (counts stay far below
        // 2^53, exact as floats).
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let Some(mut left) = rank.checked_sub(zeros).filter(|left| *left > 0) else {
            return Duration::ZERO;
        };
        for v in h.iter_recorded() {
            if v.count_at_value() >= left {
                return Duration::from_micros(h.highest_equivalent(v.value_iterated_to()));
            }
            left -= v.count_at_value();
        }
        Duration::from_micros(h.max())
    };
    Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: Duration::from_micros(h.max()),
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            categories: std::array::from_fn(|_| Mutex::new(CategoryRecorder::new())),
            at_once: std::array::from_fn(|_| AtomicU64::new(0)),
            generation: fork_generation(),
        }
    }

    /// Whether this process made it (see `generation`).
    fn is_ours(&self) -> bool {
        fork_generation() == self.generation
    }

    /// `f` on the category's recorder; `None` in a forked child (see
    /// `generation`), whose metrics of handles made before the fork stay
    /// empty.
    fn with<R>(&self, category: Category, f: impl FnOnce(&mut CategoryRecorder) -> R) -> Option<R> {
        if !self.is_ours() {
            return None;
        }
        // Counters stay meaningful after a panic elsewhere: ignore poisoning.
        let mut rec = self.categories[category.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(f(&mut rec))
    }

    pub fn acquired(&self, category: Category, waited: Duration) {
        let recorded = if !waited.is_zero() {
            self.with(category, |r| {
                r.acquisitions += 1;
                r.wait.saturating_record(micros(waited));
            })
        } else if self.is_ours() {
            self.at_once[category.index()].fetch_add(1, Ordering::Relaxed);
            Some(())
        } else {
            None
        };
        #[cfg(feature = "metrics")]
        if recorded.is_some() {
            facade::count(facade::ACQUISITIONS, category);
            facade::time(facade::WAIT_SECONDS, category, waited);
        }
        let _ = recorded;
    }

    pub fn timed_out(&self, category: Category) {
        let recorded = self.with(category, |r| r.timeouts += 1);
        #[cfg(feature = "metrics")]
        if recorded.is_some() {
            facade::count(facade::TIMEOUTS, category);
        }
        let _ = recorded;
    }

    pub fn order_violation(&self, category: Category) {
        let recorded = self.with(category, |r| r.order_violations += 1);
        #[cfg(feature = "metrics")]
        if recorded.is_some() {
            facade::count(facade::ORDER_VIOLATIONS, category);
        }
        let _ = recorded;
    }

    pub fn off_runtime(&self, category: Category) {
        let recorded = self.with(category, |r| r.off_runtime += 1);
        #[cfg(feature = "metrics")]
        if recorded.is_some() {
            facade::count(facade::OFF_RUNTIME, category);
        }
        let _ = recorded;
    }

    pub fn released(&self, category: Category, held: Duration, over_budget: bool) {
        let recorded = self.with(category, |r| {
            r.releases += 1;
            r.over_budget += u64::from(over_budget);
            r.hold.saturating_record(micros(held));
        });
        #[cfg(feature = "metrics")]
        if recorded.is_some() {
            facade::count(facade::RELEASES, category);
            if over_budget {
                facade::count(facade::OVER_BUDGET, category);
            }
            facade::time(facade::HOLD_SECONDS, category, held);
        }
        let _ = recorded;
    }

    pub fn snapshot(&self, backend: BackendMetrics) -> Metrics {
        Metrics {
            categories: std::array::from_fn(|i| {
                self.with(Category::ALL[i], |r| {
                    // Read under the mutex: an acquisition counted at once
                    // is never released (and so counted) before it.
                    let at_once = self.at_once[i].load(Ordering::Relaxed);
                    CategoryMetrics {
                        acquisitions: r.acquisitions.saturating_add(at_once),
                        timeouts: r.timeouts,
                        releases: r.releases,
                        over_budget: r.over_budget,
                        order_violations: r.order_violations,
                        off_runtime: r.off_runtime,
                        wait: percentiles_with_zeros(&r.wait, at_once),
                        hold: percentiles(&r.hold),
                    }
                })
                .unwrap_or_default()
            }),
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendMetrics, SoftMetrics};

    /// Acquisitions taken at once are counted apart from the mutex (see
    /// `Recorder::at_once`): a snapshot still counts them and their zero
    /// waits, with the waited ones, exactly as if each had been recorded.
    #[test]
    fn acquisitions_taken_at_once_count_as_zero_waits() {
        let recorder = Recorder::new();
        for _ in 0..3 {
            recorder.acquired(Category::Manifest, Duration::ZERO);
        }
        recorder.acquired(Category::Manifest, Duration::from_millis(5));
        recorder.released(Category::Manifest, Duration::from_millis(1), false);
        let snapshot = recorder.snapshot(BackendMetrics::Soft(SoftMetrics::default()));
        let m = snapshot.category(Category::Manifest);
        assert_eq!((m.acquisitions, m.releases), (4, 1));
        assert_eq!(m.wait.p50, Duration::ZERO, "three of four waited nothing");
        let max = m.wait.max.as_micros();
        assert!((4_900..=5_100).contains(&max), "the one wait: {max} µs");
        assert_eq!(snapshot.category(Category::Sqlite).acquisitions, 0);
    }

    proptest::proptest! {
        /// The zeros counted apart give the percentiles the histogram
        /// gives with them recorded.
        #[test]
        fn percentiles_with_zeros_are_those_of_the_zeros_recorded(
            waits in proptest::collection::vec(0u64..5_000_000, 0..300),
            zeros in 0u64..400,
        ) {
            let mut h = histogram();
            for w in &waits {
                h.saturating_record(*w);
            }
            let mut all = h.clone();
            all.saturating_record_n(0, zeros);
            let got = percentiles_with_zeros(&h, zeros);
            let want = percentiles(&all);
            proptest::prop_assert_eq!(got, want);
        }
    }
}
