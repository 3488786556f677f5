//! The soak's report: what ran, what was done, what was survived, and
//! every violation (there must be none).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::check::{Findings, Kind};
use crate::runner::{Config, RunFacts};

/// Violations listed per kind before "… and N more".
const SHOWN_PER_KIND: usize = 10;

pub struct Report<'a> {
    pub config: &'a Config,
    pub dir: PathBuf,
    pub facts: &'a RunFacts,
    pub findings: &'a Findings,
}

impl Report<'_> {
    fn event(&self, kind: &str) -> u64 {
        self.findings.events.get(kind).copied().unwrap_or(0)
    }

    /// Events whose kind starts with `prefix`, summed, and listed by the
    /// rest of their name.
    fn family(&self, prefix: &str) -> (u64, String) {
        let of: Vec<(String, u64)> = self
            .findings
            .events
            .iter()
            .filter_map(|(k, n)| Some((k.strip_prefix(prefix)?.to_owned(), *n)))
            .collect();
        let total = of.iter().map(|(_, n)| n).sum();
        let list: Vec<String> = of.iter().map(|(k, n)| format!("{k} {n}")).collect();
        (total, list.join(", "))
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, facts, x) = (self.config, self.facts, self.findings);
        writeln!(
            f,
            "soak: {:.1} s, {} workers, seed {}, dir {}",
            facts.duration.as_secs_f64(),
            c.workers,
            c.seed,
            self.dir.display()
        )?;
        writeln!(
            f,
            "kills survived: {} (SIGKILL every 100-500 ms), restarts: {}, incarnations: {}",
            facts.kills, facts.restarts, x.incarnations
        )?;
        writeln!(
            f,
            "operations: appends {} ({} records), counter increments {}, summaries written {}, \
             summary reads {}, artifacts written {}, present {}, busy {}, evicted {}, \
             artifact reads {}, locks shared {}, exclusive {}, tries busy {}",
            self.event("appended"),
            self.event("appended/records"),
            self.event("counter_bumped"),
            self.event("summary_written"),
            self.event("summary_read"),
            self.event("artifact_written"),
            self.event("artifact_present"),
            self.event("artifact_busy"),
            self.event("artifact_evicted"),
            self.event("artifact_read"),
            self.event("locked/shared"),
            self.event("locked/exclusive"),
            self.event("try_busy"),
        )?;
        let (timeouts, by_op) = self.family("timeout/");
        writeln!(f, "timeouts: {timeouts} ({by_op})")?;
        let (cancels, by_op) = self.family("cancelled/");
        writeln!(f, "cancellations: {cancels} ({by_op})")?;
        writeln!(
            f,
            "log: {} files, {} records present, {} acknowledged (each present once), \
             {} unacknowledged present once ({} of dropped appends, the rest in flight at a kill); \
             torn tails set aside: {} side files, {} at check",
            x.log_files,
            x.records_present,
            x.records_acked,
            x.records_unacked_present,
            x.records_cancelled_written,
            x.torn_side_files,
            x.torn_repaired_at_check
        )?;
        writeln!(
            f,
            "counter: {} = {} acknowledged + {} committed unacknowledged (killed in flight or cancelled after the lock)",
            x.counter_total, x.counter_acked, x.counter_unacked_committed
        )?;
        writeln!(
            f,
            "artifacts whole at the end: {}; removed at check: {} leftover .part, {} temps; torn ack lines: {}",
            x.artifacts_present, x.parts_left, x.temps_left, x.torn_ack_lines
        )?;
        write_violations(f, x)
    }
}

fn write_violations(f: &mut fmt::Formatter<'_>, x: &Findings) -> fmt::Result {
    writeln!(f, "violations: {}", x.violations.len())?;
    let mut by_kind: BTreeMap<Kind, Vec<&str>> = BTreeMap::new();
    for v in &x.violations {
        by_kind.entry(v.kind).or_default().push(&v.detail);
    }
    for (kind, details) in by_kind {
        writeln!(f, "  {kind:?}: {}", details.len())?;
        for d in details.iter().take(SHOWN_PER_KIND) {
            writeln!(f, "    {d}")?;
        }
        if details.len() > SHOWN_PER_KIND {
            writeln!(f, "    … and {} more", details.len() - SHOWN_PER_KIND)?;
        }
    }
    Ok(())
}
