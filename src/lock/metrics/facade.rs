//! The same events as the [`super::Recorder`] counts, recorded through the
//! `metrics` crate facade (feature `metrics`), for the exporter the program
//! installed (Prometheus, StatsD, …); with none installed, each call is a
//! no-op.
//!
//! Recorded as they happen, not from snapshots, so that an exporter's
//! histograms see every wait and hold. Names and labels:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `async_filelock_acquisitions_total` | counter | `category` |
//! | `async_filelock_timeouts_total` | counter | `category` |
//! | `async_filelock_releases_total` | counter | `category` |
//! | `async_filelock_over_budget_total` | counter | `category` |
//! | `async_filelock_order_violations_total` | counter | `category` |
//! | `async_filelock_off_runtime_total` | counter | `category` |
//! | `async_filelock_wait_seconds` | histogram | `category` |
//! | `async_filelock_hold_seconds` | histogram | `category` |

use std::time::Duration;

use crate::category::Category;

pub(super) const ACQUISITIONS: &str = "async_filelock_acquisitions_total";
pub(super) const TIMEOUTS: &str = "async_filelock_timeouts_total";
pub(super) const RELEASES: &str = "async_filelock_releases_total";
pub(super) const OVER_BUDGET: &str = "async_filelock_over_budget_total";
pub(super) const ORDER_VIOLATIONS: &str = "async_filelock_order_violations_total";
pub(super) const OFF_RUNTIME: &str = "async_filelock_off_runtime_total";
pub(super) const WAIT_SECONDS: &str = "async_filelock_wait_seconds";
pub(super) const HOLD_SECONDS: &str = "async_filelock_hold_seconds";

pub(super) fn count(name: &'static str, category: Category) {
    metrics::counter!(name, "category" => category.name()).increment(1);
}

pub(super) fn time(name: &'static str, category: Category, d: Duration) {
    metrics::histogram!(name, "category" => category.name()).record(d.as_secs_f64());
}

/// Registers the descriptions and units of every metric this crate records
/// through the `metrics` facade with the installed recorder, for exporters
/// that show them (Prometheus' `# HELP`). Call it once after installing
/// the recorder; recording works without it.
///
/// ```
/// async_filelock::describe_metrics(); // no recorder installed: a no-op
/// ```
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(ACQUISITIONS, Unit::Count, "Locks granted, by category");
    describe_counter!(
        TIMEOUTS,
        Unit::Count,
        "Acquisitions that gave up at their timeout"
    );
    describe_counter!(RELEASES, Unit::Count, "Locks released");
    describe_counter!(
        OVER_BUDGET,
        Unit::Count,
        "Holds longer than the category's hold budget"
    );
    describe_counter!(
        ORDER_VIOLATIONS,
        Unit::Count,
        "Acquisitions against the lock order"
    );
    describe_counter!(
        OFF_RUNTIME,
        Unit::Count,
        "Attempts whose file work ran on the blocking pool (network filesystem)"
    );
    describe_histogram!(
        WAIT_SECONDS,
        Unit::Seconds,
        "Time from asking for a lock to being granted it"
    );
    describe_histogram!(
        HOLD_SECONDS,
        Unit::Seconds,
        "Time from being granted a lock to releasing it"
    );
}
