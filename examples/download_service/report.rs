//! The tables printed at the end (comfy-table): what each worker did, what
//! failed and why, lock waits per category, and the checks.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use crate::checks::Check;
use crate::model::Outcome;
use crate::progress::WorkerRun;

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        // Wrap long cells at a width that reads in a terminal or a CI log.
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(110)
        .set_header(header.to_vec());
    table
}

fn right(value: impl ToString) -> Cell {
    Cell::new(value.to_string()).set_alignment(CellAlignment::Right)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn micros(us: u64) -> String {
    let d = Duration::from_micros(us);
    if us < 1_000 {
        format!("{us} µs")
    } else if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Per worker: downloaded once, already present, skipped as busy, failed,
/// retries, bytes.
pub fn workers(runs: &[WorkerRun]) -> Table {
    let mut t = table(&[
        "worker",
        "downloaded",
        "already present",
        "busy, left for later",
        "failed",
        "retries",
        "bytes written",
        "kept on retry (Range)",
    ]);
    let mut sums = [0u64; 7];
    for run in runs {
        let (mut down, mut present, mut failed, mut resumed) = (0, 0, 0, 0);
        for (_, outcome) in &run.settled {
            match outcome {
                Outcome::Downloaded {
                    kept_on_retry,
                    resumed_bytes,
                    ..
                } => {
                    down += 1;
                    resumed += kept_on_retry + resumed_bytes;
                }
                Outcome::Present { .. } => present += 1,
                Outcome::Failed { .. } => failed += 1,
            }
        }
        let stats = run.stats.clone().unwrap_or_default();
        let row = [
            down,
            present,
            stats.busy_skipped,
            failed,
            stats.retries,
            stats.bytes,
            resumed,
        ];
        for (sum, v) in sums.iter_mut().zip(row) {
            *sum += v;
        }
        t.add_row(row_cells(&format!("{}", run.worker), row));
    }
    t.add_row(row_cells("all", sums));
    t
}

fn row_cells(name: &str, row: [u64; 7]) -> Vec<Cell> {
    let mut cells = vec![Cell::new(name)];
    cells.extend(row[..5].iter().map(right));
    cells.push(right(mib(row[5])));
    cells.push(right(mib(row[6])));
    cells
}

/// Files that failed, why, and in how many workers.
pub fn failures(runs: &[WorkerRun]) -> Option<Table> {
    let mut why: BTreeMap<&str, (String, u32, u32)> = BTreeMap::new();
    for (file, outcome) in runs.iter().flat_map(|r| &r.settled) {
        if let Outcome::Failed { why: reason, tries } = outcome {
            let e = why.entry(file).or_insert_with(|| (reason.clone(), 0, 0));
            e.1 += 1;
            e.2 += tries;
        }
    }
    if why.is_empty() {
        return None;
    }
    let mut t = table(&[
        "failed file",
        "workers",
        "tries",
        "why (first worker's words)",
    ]);
    for (file, (reason, workers, tries)) in why {
        t.add_row(vec![
            Cell::new(file),
            right(workers),
            right(tries),
            Cell::new(reason),
        ]);
    }
    Some(t)
}

/// Lock waits per category across workers, from each worker's
/// `Locks::metrics()`: percentiles do not add up across processes, so the
/// worst worker's p50 and p95 are shown, and the largest wait of all.
pub fn waits(runs: &[WorkerRun]) -> Table {
    let mut t = table(&[
        "lock category",
        "taken",
        "timeouts",
        "wait p50 (worst worker)",
        "wait p95 (worst worker)",
        "wait max",
    ]);
    let mut by: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    let mut order = Vec::new();
    for w in runs
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .flat_map(|s| &s.waits)
    {
        if !by.contains_key(&w.category) {
            order.push(w.category.clone());
        }
        let e = by.entry(w.category.clone()).or_default();
        e[0] += w.taken;
        e[1] += w.timeouts;
        e[2] = e[2].max(w.p50_us);
        e[3] = e[3].max(w.p95_us);
        e[4] = e[4].max(w.max_us);
    }
    for category in order {
        let v = by[&category];
        if v[0] + v[1] == 0 {
            continue;
        }
        t.add_row(vec![
            Cell::new(&category),
            right(v[0]),
            right(v[1]),
            right(micros(v[2])),
            right(micros(v[3])),
            right(micros(v[4])),
        ]);
    }
    t
}

pub fn checks(checks: &[Check]) -> Table {
    let mut t = table(&["check", "", "what was seen"]);
    for c in checks {
        t.add_row(vec![
            Cell::new(c.name),
            Cell::new(if c.ok { "ok" } else { "FAILED" }),
            Cell::new(&c.detail),
        ]);
    }
    t
}
