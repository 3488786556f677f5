//! [`Metrics`] as a person reads them: a small aligned table, one row per
//! category that was used, then the backend's counters.
//!
//! Written by hand with `format!` widths rather than with a table crate:
//! eleven fixed columns of short numbers do not need one, and a library
//! should not make every user build one for its `Display`.

use std::fmt::{self, Write};
use std::time::Duration;

use super::{CategoryMetrics, Metrics, Percentiles};

/// The columns: header, and the cell of a category's row.
type Column = (&'static str, fn(&CategoryMetrics) -> String);

const COLUMNS: [Column; 10] = [
    ("taken", |m| m.acquisitions.to_string()),
    ("timeouts", |m| m.timeouts.to_string()),
    ("released", |m| m.releases.to_string()),
    ("over budget", |m| m.over_budget.to_string()),
    ("wait p50", |m| human(m.wait.p50)),
    ("wait p95", |m| human(m.wait.p95)),
    ("wait max", |m| human(m.wait.max)),
    ("hold p50", |m| human(m.hold.p50)),
    ("hold p95", |m| human(m.hold.p95)),
    ("hold max", |m| human(m.hold.max)),
];

/// A duration in the unit that keeps it short: `840 µs`, `12.5 ms`,
/// `3.20 s`.
pub(super) fn human(d: Duration) -> String {
    if d.is_zero() {
        "0".to_owned()
    } else if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{Category, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// locks.lock(Category::Manifest, dir.path().join("m.jsonl")).await?.release().await?;
/// let table = locks.metrics().to_string();
/// assert!(table.starts_with("category"), "{table}");
/// assert!(table.lines().any(|row| row.starts_with("manifest")), "{table}");
/// assert!(!table.contains("artifact"), "only the categories used: {table}");
/// # Ok(()) }
/// ```
impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used: Vec<_> = self
            .iter()
            .filter(|(_, m)| m.acquisitions + m.timeouts + m.releases > 0)
            .collect();
        if used.is_empty() {
            f.write_str("no locks taken\n")?;
        } else {
            let rows: Vec<(String, Vec<String>)> = used
                .iter()
                .map(|(c, m)| {
                    (
                        c.name().to_owned(),
                        COLUMNS.iter().map(|(_, cell)| cell(m)).collect(),
                    )
                })
                .collect();
            let first = rows
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0)
                .max("category".len());
            let widths: Vec<usize> = COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (header, _))| {
                    rows.iter()
                        .map(|(_, cells)| cells[i].chars().count())
                        .chain([header.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let mut line = format!("{:<first$}", "category");
            for ((header, _), w) in COLUMNS.iter().zip(&widths) {
                write!(line, "  {header:>w$}")?;
            }
            writeln!(f, "{}", line.trim_end())?;
            for (name, cells) in &rows {
                let mut line = format!("{name:<first$}");
                for (cell, w) in cells.iter().zip(&widths) {
                    write!(line, "  {cell:>w$}")?;
                }
                writeln!(f, "{line}")?;
            }
            for (c, m) in &used {
                if m.order_violations + m.off_runtime > 0 {
                    writeln!(
                        f,
                        "{c}: {} against the lock order, {} attempts off the runtime (network filesystem)",
                        m.order_violations, m.off_runtime
                    )?;
                }
            }
        }
        if let Some(os) = self.backend().os() {
            writeln!(
                f,
                "os backend: {} kernel waits now (peak {}, {} abandoned), {} event waits now ({} granted on events), {} stood aside",
                os.kernel_waits_now,
                os.kernel_waits_peak,
                os.abandoned_kernel_waits_now,
                os.event_waits_now,
                os.granted_on_events,
                os.waits_stood_aside
            )?;
        }
        #[cfg(feature = "postgres")]
        if let crate::backend::BackendMetrics::Postgres(pg) = self.backend() {
            writeln!(
                f,
                "postgres backend: {} sessions open, {} opened, {} lost, {} locks held now",
                pg.connections_now, pg.connects, pg.sessions_lost, pg.held_now
            )?;
        }
        if let Some(soft) = self.backend().soft() {
            writeln!(
                f,
                "soft locks: {} held now, {} stale broken, {} lost, {} renewals, {} fallbacks",
                soft.held_now, soft.stale_broken, soft.lost, soft.renewals, soft.fallbacks
            )?;
        }
        Ok(())
    }
}

/// `p50 1.2 ms, p95 4.0 ms, p99 9.1 ms, max 12.0 ms`.
///
/// ```
/// use async_filelock::Percentiles;
/// assert_eq!(Percentiles::default().to_string(), "p50 0, p95 0, p99 0, max 0");
/// ```
impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}, p95 {}, p99 {}, max {}",
            human(self.p50),
            human(self.p95),
            human(self.p99),
            human(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_in_their_own_unit() {
        assert_eq!(human(Duration::ZERO), "0");
        assert_eq!(human(Duration::from_micros(840)), "840 µs");
        assert_eq!(human(Duration::from_micros(12_500)), "12.5 ms");
        assert_eq!(human(Duration::from_millis(3_200)), "3.20 s");
    }
}
