//! A whole soak (run under chaos, then check) and the self-test that
//! proves the checker can fail: it plants one fault of each kind in a
//! soaked directory and asks the checker to find every one.

use std::io::Write;

use crate::check::{Findings, Kind, check};
use crate::model::{
    ARTIFACTS, CounterState, Event, Layout, NAMED_CATEGORY, NAMED_LOCKS, OpId, Record, locks,
};
use crate::report::Report;
use crate::runner::{Config, Launch, RunFacts, run};

/// Runs the workers under chaos, then checks. Prints the report; returns
/// the findings.
pub fn soak(layout: &Layout, config: &Config, launch: Launch<'_>) -> std::io::Result<Findings> {
    layout.create()?;
    let facts = run(layout, config, launch)?;
    let findings = runtime().block_on(check(layout, &facts));
    print_report(layout, config, &facts, &findings);
    Ok(findings)
}

fn print_report(layout: &Layout, config: &Config, facts: &RunFacts, findings: &Findings) {
    let report = Report {
        config,
        dir: layout.root().to_path_buf(),
        facts,
        findings,
    };
    println!("{report}");
}

/// A runtime for the checker, the size of the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("checker runtime")
}

/// Soaks, expects a clean check, plants one fault of each kind the checker
/// knows (and holds a lock during the check), checks again and expects
/// every planted kind to be reported. `Err` says what went wrong.
pub fn self_test(layout: &Layout, config: &Config, launch: Launch<'_>) -> Result<(), String> {
    let clean = soak(layout, config, launch).map_err(|e| e.to_string())?;
    if !clean.violations.is_empty() {
        return Err(format!(
            "the soak itself found {} violations",
            clean.violations.len()
        ));
    }
    let planted = plant(layout).map_err(|e| format!("plant faults: {e}"))?;
    let rt = runtime();
    let found = rt.block_on(async {
        // A lock held by someone during the check: here, this process.
        let locks = locks(layout, None).expect("locks");
        let _held = locks
            .lock(NAMED_CATEGORY, layout.named_target(NAMED_LOCKS[0]))
            .await
            .expect("hold a named lock");
        check(layout, &RunFacts::default()).await
    });
    println!("after planting faults:");
    print_report(layout, config, &RunFacts::default(), &found);
    if found.torn_repaired_at_check != 1 {
        return Err(format!(
            "the checker set aside {} torn tails, not the one planted",
            found.torn_repaired_at_check
        ));
    }
    let kinds = found.kinds();
    let missed: Vec<Kind> = planted
        .iter()
        .chain(&[Kind::LockHeld])
        .filter(|k| !kinds.contains(k))
        .copied()
        .collect();
    if missed.is_empty() {
        println!("self-test: the checker reported every planted fault: {planted:?} and LockHeld");
        Ok(())
    } else {
        Err(format!("the checker missed planted faults: {missed:?}"))
    }
}

/// Plants faults into a checked soak directory; returns their kinds.
fn plant(layout: &Layout) -> std::io::Result<Vec<Kind>> {
    let mut planted = vec![
        plant_partial_artifact(layout)?,
        plant_stray_part(layout)?,
        plant_stray_temp(layout)?,
        plant_worker_violation(layout)?,
    ];
    planted.extend(plant_log_faults(layout)?);
    planted.extend(plant_counter_fault(layout)?);
    planted.extend(plant_torn_summary(layout)?);
    plant_torn_tail(layout)?;
    // A short soak that left too little to plant in (no acknowledged
    // records, no counter or summary yet) would test less: say so.
    if planted.len() < PLANTED_KINDS {
        return Err(std::io::Error::other(format!(
            "only {} of {PLANTED_KINDS} fault kinds could be planted: {planted:?}; run the soak longer",
            planted.len()
        )));
    }
    Ok(planted)
}

/// Fault kinds the self-test plants (besides a lock held during the check).
const PLANTED_KINDS: usize = 11;

/// Half of an artifact's content at its target.
fn plant_partial_artifact(layout: &Layout) -> std::io::Result<Kind> {
    let bytes = &crate::model::artifact_content(ARTIFACTS[0]).bytes;
    std::fs::write(layout.artifact(ARTIFACTS[0]), &bytes[..bytes.len() / 2])?;
    Ok(Kind::PartialArtifact)
}

/// A `.part` no artifact request will ever clean.
fn plant_stray_part(layout: &Layout) -> std::io::Result<Kind> {
    std::fs::write(layout.artifacts_dir().join("stray.bin.part"), b"x")?;
    Ok(Kind::LeftoverPart)
}

/// A temp whose name the crate does not take for its own.
fn plant_stray_temp(layout: &Layout) -> std::io::Result<Kind> {
    std::fs::write(layout.state_dir().join(".summary-0.json.planted.tmp"), b"x")?;
    Ok(Kind::LeftoverTemp)
}

/// A violation a worker would have journaled.
fn plant_worker_violation(layout: &Layout) -> std::io::Result<Kind> {
    journal_event(
        layout,
        (0, 0),
        &Event::Violation {
            what: "planted".into(),
        },
    )?;
    Ok(Kind::WorkerReported)
}

/// Appends an event to the journal of worker 0's first incarnation.
/// Appends `event` to the journal of incarnation `inc` of worker `slot`.
fn journal_event(layout: &Layout, (slot, inc): (u32, u32), event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .append(true)
        .open(layout.journal(slot, inc))?
        .write_all(&line)
}

/// In the log: one acknowledged record removed, one moved to a torn side
/// file, one duplicated, and a torn line in the middle of a file they were
/// in.
fn plant_log_faults(layout: &Layout) -> std::io::Result<Vec<Kind>> {
    let acked = first_acked_records(layout, 4);
    let [lost, sided, doubled, timed_out] = acked[..] else {
        return Ok(Vec::new());
    };
    // The journal says this one's append timed out, yet it is in the log.
    // In the journal of the incarnation whose record it is.
    journal_event(
        layout,
        (timed_out.slot, timed_out.inc),
        &Event::Timeout {
            op: crate::model::Op::Append,
            seq: timed_out.seq,
            n: 1,
        },
    )?;
    let mut planted = vec![Kind::WrittenDespiteTimeout];
    for path in log_paths(layout)? {
        let text = std::fs::read_to_string(&path)?;
        let mut out: Vec<&str> = Vec::new();
        let mut changed = false;
        for line in text.lines() {
            let id = serde_json::from_str::<Record>(line).ok().map(|r| r.id());
            match id {
                Some(id) if id == lost => planted.push(Kind::LostRecord),
                Some(id) if id == sided => {
                    let side = layout.logs_dir().join("manifest.jsonl.torn-999999999");
                    std::fs::write(side, &line[..line.len() / 2])?;
                    planted.push(Kind::AckedOnlyInSideFile);
                }
                Some(id) if id == doubled => {
                    out.extend([line, line]);
                    planted.push(Kind::DuplicateRecord);
                }
                _ => {
                    out.push(line);
                    continue;
                }
            }
            changed = true;
        }
        if changed {
            out.insert(out.len() / 2, "{\"slot\":0,\"inc\":0,\"se");
            planted.push(Kind::TornLine);
            std::fs::write(&path, out.join("\n") + "\n")?;
        }
    }
    planted.sort();
    planted.dedup();
    Ok(planted)
}

/// A torn last line, as a kill inside a write leaves it: not a violation.
/// The checker's own open of the log must set it aside.
fn plant_torn_tail(layout: &Layout) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(layout.log())?
        .write_all(b"{\"slot\":0,\"inc\":0,\"seq\":1")
}

fn log_paths(layout: &Layout) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(layout.logs_dir())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The first `n` acknowledged records of worker 0's first incarnation.
fn first_acked_records(layout: &Layout, n: usize) -> Vec<OpId> {
    // Any incarnation's journal (`<slot>-<inc>.jsonl`): a short soak may
    // have killed a given one before it appended anything.
    let mut journals: Vec<(u32, u32)> = std::fs::read_dir(layout.acks_dir())
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    let (slot, inc) = name.strip_suffix(".jsonl")?.split_once('-')?;
                    Some((slot.parse().ok()?, inc.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    journals.sort_unstable();
    let mut ids = Vec::new();
    for (slot, inc) in journals {
        let text = std::fs::read_to_string(layout.journal(slot, inc)).unwrap_or_default();
        for line in text.lines() {
            if let Ok(Event::Appended { seq, n: count }) = serde_json::from_str(line) {
                ids.extend((seq..seq + count).map(|seq| OpId { slot, inc, seq }));
            }
        }
        if ids.len() >= n {
            break;
        }
    }
    ids.truncate(n);
    ids
}

/// One increment more in the total than in the slots.
fn plant_counter_fault(layout: &Layout) -> std::io::Result<Option<Kind>> {
    let path = layout.counter();
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let mut state: async_filelock::Versioned<CounterState> = serde_json::from_slice(&bytes)?;
    state.data.total += 1;
    state.revision += 1;
    std::fs::write(&path, serde_json::to_vec(&state)?)?;
    Ok(Some(Kind::CounterMismatch))
}

/// A summary cut short, as a non-atomic write killed midway would leave it.
fn plant_torn_summary(layout: &Layout) -> std::io::Result<Option<Kind>> {
    let path = layout.summary(0);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    std::fs::write(&path, &bytes[..bytes.len() - 10])?;
    Ok(Some(Kind::TornSummary))
}
