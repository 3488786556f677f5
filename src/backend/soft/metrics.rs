//! The process-wide counters of soft locks ([`crate::backend::SoftMetrics`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::backend::SoftMetrics;

static HELD: AtomicI64 = AtomicI64::new(0);
static BROKEN: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static RENEWALS: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);
static WOKEN: AtomicU64 = AtomicU64::new(0);

pub(crate) fn held(delta: i64) {
    HELD.fetch_add(delta, Ordering::Relaxed);
}
pub(crate) fn broke() {
    BROKEN.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn lost() {
    LOST.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn renewed() {
    RENEWALS.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn woken() {
    WOKEN.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn fell_back() {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn snapshot() -> SoftMetrics {
    SoftMetrics {
        held_now: u64::try_from(HELD.load(Ordering::Relaxed)).unwrap_or(0),
        stale_broken: BROKEN.load(Ordering::Relaxed),
        lost: LOST.load(Ordering::Relaxed),
        renewals: RENEWALS.load(Ordering::Relaxed),
        fallbacks: FALLBACKS.load(Ordering::Relaxed),
        woken_by_events: WOKEN.load(Ordering::Relaxed),
    }
}
