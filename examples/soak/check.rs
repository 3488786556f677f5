//! The checker: run after every worker is dead, it reads the soak
//! directory and the ack journals and reports every invariant broken.
//!
//! It first looks without touching anything (are locks held, is every
//! artifact, summary and counter whole and accounted for), then lets the
//! crate clean up as a next user would (take each artifact's lock, open
//! the log, rewrite each state file under its lock), and then looks for
//! anything that cleaning should have removed and did not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_filelock::{
    Artifact, ArtifactWriter, Category, JsonlReader, JsonlSink, Locks, Versioned, write_atomic_with,
};

use crate::model::{
    ARTIFACTS, CounterState, Event, Layout, NAMED_LOCKS, Op, OpId, ROTATE_BYTES, Record, SUMMARIES,
    artifact_content, id_prefix, locks, verify_summary,
};
use crate::runner::RunFacts;

/// The kinds of violation, so a self-test can ask whether each planted
/// fault was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    LockHeld,
    PartialArtifact,
    LeftoverPart,
    TornLine,
    RotationOverrun,
    DuplicateRecord,
    LostRecord,
    AckedOnlyInSideFile,
    ReaderMismatch,
    CounterMismatch,
    TornSummary,
    LeftoverTemp,
    UnexpectedFile,
    WrittenDespiteTimeout,
    WorkerReported,
    WorkerExited,
    Journal,
    CheckFailed,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: Kind,
    pub detail: String,
}

/// What the checker found: violations, and the numbers of the report.
#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<Violation>,
    /// Journal events by kind: operations, timeouts, cancellations.
    pub events: BTreeMap<String, u64>,
    pub incarnations: u64,
    pub torn_ack_lines: u64,
    /// `manifest.jsonl.torn-*` side files: torn tails the sink set aside.
    pub torn_side_files: u64,
    /// Torn tails the checker's own open of the log repaired.
    pub torn_repaired_at_check: u64,
    pub log_files: u64,
    pub records_present: u64,
    pub records_acked: u64,
    pub records_unacked_present: u64,
    /// Of those, records of appends dropped after their commit took them.
    pub records_cancelled_written: u64,
    pub counter_total: u64,
    pub counter_acked: u64,
    pub counter_unacked_committed: u64,
    pub artifacts_present: u64,
    /// `.part` files found before cleanup (left by kills), all removed.
    pub parts_left: u64,
    /// write_atomic/update_json temps found before cleanup, all removed.
    pub temps_left: u64,
}

impl Findings {
    fn violate(&mut self, kind: Kind, detail: impl Into<String>) {
        self.violations.push(Violation {
            kind,
            detail: detail.into(),
        });
    }

    pub fn kinds(&self) -> HashSet<Kind> {
        self.violations.iter().map(|v| v.kind).collect()
    }
}

/// One incarnation's journal: its slot, number and events.
struct Journal {
    slot: u32,
    inc: u32,
    events: Vec<Event>,
}

impl Journal {
    fn id(&self, seq: u64) -> OpId {
        OpId {
            slot: self.slot,
            inc: self.inc,
            seq,
        }
    }
}

/// How an op ended, as its journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Cancelled,
    TimedOut,
}

/// The journaled outcome of every op of some kind, by the ids it took.
struct Outcomes {
    /// Per incarnation: first id of an op, its outcome and how many ids.
    ops: HashMap<(u32, u32), BTreeMap<u64, (Outcome, u64)>>,
}

impl Outcomes {
    /// The outcomes of ops of kind `op`; `acked` says which events
    /// acknowledge one (and how many ids it took).
    fn of(journals: &[Journal], op: Op, acked: impl Fn(&Event) -> Option<(u64, u64)>) -> Self {
        let mut ops: HashMap<(u32, u32), BTreeMap<u64, (Outcome, u64)>> = HashMap::new();
        for j in journals {
            let mine = ops.entry((j.slot, j.inc)).or_default();
            for e in &j.events {
                let found = match e {
                    Event::Timeout { op: o, seq, n } if *o == op => {
                        Some((*seq, (Outcome::TimedOut, *n)))
                    }
                    Event::Cancelled { op: o, seq, n } if *o == op => {
                        Some((*seq, (Outcome::Cancelled, *n)))
                    }
                    other => acked(other).map(|(seq, n)| (seq, (Outcome::Acked, n))),
                };
                if let Some((seq, outcome)) = found {
                    mine.insert(seq, outcome);
                }
            }
        }
        Outcomes { ops }
    }

    /// How the op that took `id` ended; `None`: no journal line (it was in
    /// flight when its worker was killed).
    fn get(&self, id: OpId) -> Option<Outcome> {
        let (first, (outcome, n)) = self
            .ops
            .get(&(id.slot, id.inc))?
            .range(..=id.seq)
            .next_back()?;
        (id.seq < first + n).then_some(*outcome)
    }

    fn acked(&self) -> HashSet<OpId> {
        let mut all = HashSet::new();
        for ((slot, inc), ops) in &self.ops {
            for (first, (outcome, n)) in ops {
                if *outcome == Outcome::Acked {
                    all.extend((*first..first + n).map(|seq| OpId {
                        slot: *slot,
                        inc: *inc,
                        seq,
                    }));
                }
            }
        }
        all
    }
}

/// Checks every invariant of a soak directory whose workers are all dead.
pub async fn check(layout: &Layout, facts: &RunFacts) -> Findings {
    let mut f = Findings::default();
    // Before this process takes any lock of its own.
    no_lock_file_locked(layout, &mut f);
    let locks = match locks(layout, None) {
        Ok(l) => l,
        Err(e) => {
            f.violate(Kind::CheckFailed, format!("make a Locks: {e}"));
            return f;
        }
    };
    every_lock_free(layout, &locks, &mut f).await;
    let journals = read_journals(layout, &mut f);
    count_events(&journals, &mut f);
    reported_by_workers(&journals, facts, &mut f);
    artifacts(layout, &locks, &mut f).await;
    log(layout, &locks, &journals, &mut f).await;
    counter(layout, &locks, &journals, &mut f).await;
    summaries(layout, &locks, &journals, &mut f).await;
    no_stray_files(layout, &mut f);
    f
}

/// No lock file in the lock dir is locked by anyone, per the kernel's own
/// table (`/proc/locks`): an independent witness, not the crate's word.
fn no_lock_file_locked(layout: &Layout, f: &mut Findings) {
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return;
    };
    let mut ours = HashMap::new();
    for entry in std::fs::read_dir(layout.locks_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(meta) = entry.metadata() {
            let key = (
                rustix::fs::major(meta.dev()),
                rustix::fs::minor(meta.dev()),
                meta.ino(),
            );
            ours.insert(key, entry.path());
        }
    }
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            continue;
        }
        let mut id = fields[5].split(':');
        let key = (|| {
            let maj = u32::from_str_radix(id.next()?, 16).ok()?;
            let min = u32::from_str_radix(id.next()?, 16).ok()?;
            Some((maj, min, id.next()?.parse::<u64>().ok()?))
        })();
        if let Some(path) = key.and_then(|k| ours.get(&k)) {
            f.violate(
                Kind::LockHeld,
                format!("{} is locked by pid {}: {line}", path.display(), fields[4]),
            );
        }
    }
}

/// Every lock the soak used can be taken exclusively at once.
async fn every_lock_free(layout: &Layout, locks: &Locks, f: &mut Findings) {
    for (category, target) in layout.all_locked_targets() {
        match locks.try_lock(category, &target).await {
            Ok(Some(guard)) => drop(guard),
            Ok(None) => f.violate(
                Kind::LockHeld,
                format!("{category} lock on {} is held", target.display()),
            ),
            Err(e) => f.violate(Kind::CheckFailed, format!("try {}: {e}", target.display())),
        }
    }
}

/// Reads every ack journal. Only a journal's last line may be torn (the
/// kill landed in its write); it is skipped, so its op counts as not
/// acknowledged, which is what it was.
fn read_journals(layout: &Layout, f: &mut Findings) -> Vec<Journal> {
    let mut journals = Vec::new();
    let entries = std::fs::read_dir(layout.acks_dir())
        .into_iter()
        .flatten()
        .flatten();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parsed = name
            .strip_suffix(".jsonl")
            .and_then(|s| s.split_once('-'))
            .and_then(|(s, i)| Some((s.parse().ok()?, i.parse().ok()?)));
        let Some((slot, inc)) = parsed else {
            f.violate(Kind::UnexpectedFile, format!("acks/{name}"));
            continue;
        };
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if lines.pop().is_some_and(|last| !last.is_empty()) {
            f.torn_ack_lines += 1;
        }
        let mut events = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => events.push(e),
                Err(e) => f.violate(Kind::Journal, format!("acks/{name} line {}: {e}", n + 1)),
            }
        }
        journals.push(Journal { slot, inc, events });
    }
    journals.sort_by_key(|j| (j.slot, j.inc));
    f.incarnations = journals.len() as u64;
    journals
}

fn count_events(journals: &[Journal], f: &mut Findings) {
    for e in journals.iter().flat_map(|j| &j.events) {
        *f.events.entry(e.kind()).or_default() += 1;
        if let Event::Appended { n, .. } = e {
            *f.events.entry("appended/records".into()).or_default() += n;
        }
    }
}

/// What workers saw go wrong while running, and workers that exited by
/// themselves.
fn reported_by_workers(journals: &[Journal], facts: &RunFacts, f: &mut Findings) {
    for j in journals {
        for e in &j.events {
            if let Event::Violation { what } = e {
                f.violate(
                    Kind::WorkerReported,
                    format!("worker {}/{}: {what}", j.slot, j.inc),
                );
            }
        }
    }
    for exit in &facts.unexpected_exits {
        f.violate(Kind::WorkerExited, exit.clone());
    }
}

/// Every artifact present is exactly its expected content; then each is
/// requested once more through the builder (its lock taken, a leftover
/// `.part` removed: written anew and aborted if absent).
async fn artifacts(layout: &Layout, locks: &Locks, f: &mut Findings) {
    for name in ARTIFACTS {
        let target = layout.artifact(name);
        match std::fs::read(&target) {
            Ok(bytes) if bytes == artifact_content(name).bytes => f.artifacts_present += 1,
            Ok(bytes) => f.violate(
                Kind::PartialArtifact,
                format!("{name}: {} bytes that are not its content", bytes.len()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => f.violate(Kind::CheckFailed, format!("read {name}: {e}")),
        }
        if part_of(&target).exists() {
            f.parts_left += 1;
        }
        if let Err(e) = request_once_more(&target, name, locks).await {
            f.violate(Kind::CheckFailed, format!("request {name} at the end: {e}"));
        }
    }
}

fn part_of(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

async fn request_once_more(
    target: &Path,
    name: &str,
    locks: &Locks,
) -> Result<(), async_filelock::LockError> {
    let content = artifact_content(name);
    let opened = ArtifactWriter::builder(target)
        .locks(locks.clone())
        .expected_len(content.bytes.len() as u64)
        .expected_sha256(&content.sha256)?
        .open()
        .await?;
    match opened {
        Artifact::Write(w) => w.abort().await,
        _ => Ok(()),
    }
}

/// The files of the log directory, by role.
#[derive(Default)]
struct LogFiles {
    /// The current log and its rotations.
    logs: Vec<PathBuf>,
    /// `manifest.jsonl.torn-*`: torn tails set aside.
    sides: Vec<PathBuf>,
}

fn log_files(layout: &Layout, f: &mut Findings) -> LogFiles {
    let mut files = LogFiles::default();
    for entry in std::fs::read_dir(layout.logs_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rotated = name
            .strip_prefix("manifest.")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .is_some_and(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()));
        if name == "manifest.jsonl" || rotated {
            files.logs.push(entry.path());
        } else if name.starts_with("manifest.jsonl.torn-") {
            files.sides.push(entry.path());
        } else {
            f.violate(Kind::UnexpectedFile, format!("logs/{name}"));
        }
    }
    files
}

/// JSONL: every acknowledged record is in the log exactly once, no record
/// is there twice, every line of every file (rotations included) is a
/// whole, genuine record, and the crate's reader reads the same records
/// as a raw scan. A torn tail is legitimate after a kill: the checker's
/// own open of the log sets it aside like any next user's would, and the
/// side files are counted; an acknowledged record must never be found only
/// in one.
async fn log(layout: &Layout, locks: &Locks, journals: &[Journal], f: &mut Findings) {
    repair_tail(layout, locks, f).await;
    let files = log_files(layout, f);
    f.log_files = files.logs.len() as u64;
    let raw = raw_scan(&files.logs, f);
    let read = reader_scan(layout, f).await;
    if read != raw {
        let differ = raw
            .keys()
            .chain(read.keys())
            .filter(|id| raw.get(id) != read.get(id))
            .count();
        f.violate(
            Kind::ReaderMismatch,
            format!("JsonlReader and a raw scan disagree on {differ} records"),
        );
    }
    let sides = side_file_ids(&files.sides);
    f.torn_side_files = files.sides.len() as u64;
    let appends = Outcomes::of(journals, Op::Append, |e| match e {
        Event::Appended { seq, n } => Some((*seq, *n)),
        _ => None,
    });
    f.records_present = raw.len() as u64;
    compare_records(&raw, &appends, &sides, journals, f);
}

/// Opens the log as a next user would, which completes or sets aside a
/// torn last line the last kill left.
async fn repair_tail(layout: &Layout, locks: &Locks, f: &mut Findings) {
    match JsonlSink::builder(layout.log())
        .locks(locks.clone())
        .open()
        .await
    {
        Ok(sink) => {
            f.torn_repaired_at_check = sink.stats().torn_tails_repaired;
            if let Err(e) = sink.close().await {
                f.violate(Kind::CheckFailed, format!("close the log: {e}"));
            }
        }
        Err(e) => f.violate(Kind::CheckFailed, format!("open the log: {e}")),
    }
}

/// Counts every record id in every log file, byte by byte: each file ends
/// with a newline and each line is a genuine record; and no file is over
/// the rotation size (every append of the soak is far smaller than it, so
/// the sink must rotate before crossing it).
fn raw_scan(logs: &[PathBuf], f: &mut Findings) -> HashMap<OpId, u32> {
    let mut counts: HashMap<OpId, u32> = HashMap::new();
    for path in logs {
        let bytes = std::fs::read(path).unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            f.violate(
                Kind::TornLine,
                format!("{name} does not end with a newline"),
            );
        }
        if bytes.len() as u64 > ROTATE_BYTES {
            f.violate(
                Kind::RotationOverrun,
                format!("{name} has {} bytes, over the rotation size", bytes.len()),
            );
        }
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) if r.is_genuine() => *counts.entry(r.id()).or_default() += 1,
                _ => f.violate(
                    Kind::TornLine,
                    format!(
                        "{name} line {}: {:?}",
                        n + 1,
                        String::from_utf8_lossy(&line[..line.len().min(60)])
                    ),
                ),
            }
        }
    }
    counts
}

/// The same count through the crate's `JsonlReader` (rotations first).
async fn reader_scan(layout: &Layout, f: &mut Findings) -> HashMap<OpId, u32> {
    let mut counts: HashMap<OpId, u32> = HashMap::new();
    let mut reader = match JsonlReader::<Record>::open(layout.log()).await {
        Ok(r) => r,
        Err(e) => {
            f.violate(Kind::CheckFailed, format!("open a reader: {e}"));
            return counts;
        }
    };
    while let Some(record) = reader.next().await {
        match record {
            Ok(r) if r.is_genuine() => *counts.entry(r.id()).or_default() += 1,
            Ok(r) => f.violate(
                Kind::TornLine,
                format!("reader: record {} is not genuine", r.id()),
            ),
            Err(e) => f.violate(Kind::TornLine, format!("reader: {e}")),
        }
    }
    counts
}

/// Ids at the start of torn side files (only complete ids count).
fn side_file_ids(sides: &[PathBuf]) -> HashSet<OpId> {
    let mut ids = HashSet::new();
    for path in sides {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        ids.extend(text.lines().filter_map(id_prefix));
    }
    ids
}

/// Acknowledged records present exactly once (never only in a side
/// file); nothing present twice; a record present but not acknowledged
/// only from an append that was dropped or in flight at a kill, never
/// from one that timed out (an error means "not written").
fn compare_records(
    present: &HashMap<OpId, u32>,
    appends: &Outcomes,
    sides: &HashSet<OpId>,
    journals: &[Journal],
    f: &mut Findings,
) {
    let acked = appends.acked();
    f.records_acked = acked.len() as u64;
    for id in &acked {
        match present.get(id) {
            Some(_) => {}
            None if sides.contains(id) => f.violate(
                Kind::AckedOnlyInSideFile,
                format!("acknowledged record {id} is only in a torn side file"),
            ),
            None => f.violate(
                Kind::LostRecord,
                format!("acknowledged record {id} is missing"),
            ),
        }
    }
    let known: HashSet<(u32, u32)> = journals.iter().map(|j| (j.slot, j.inc)).collect();
    for (id, n) in present {
        if *n > 1 {
            f.violate(
                Kind::DuplicateRecord,
                format!("record {id} is present {n} times"),
            );
        }
        match appends.get(*id) {
            Some(Outcome::Acked) => {}
            Some(Outcome::Cancelled) => {
                f.records_unacked_present += 1;
                f.records_cancelled_written += 1;
            }
            Some(Outcome::TimedOut) => f.violate(
                Kind::WrittenDespiteTimeout,
                format!("record {id} is present, but its append timed out"),
            ),
            None => f.records_unacked_present += 1,
        }
        if !known.contains(&(id.slot, id.inc)) {
            f.violate(
                Kind::TornLine,
                format!("record {id} of an incarnation that never ran"),
            );
        }
    }
}

/// The counter, exactly. See [`account_slot`]; also the total is the sum
/// of the slots' counts and equals the file's revision (only increments
/// ever write it). Then the file is rewritten unchanged under its lock,
/// which removes temps left by kills.
async fn counter(layout: &Layout, locks: &Locks, journals: &[Journal], f: &mut Findings) {
    let path = layout.counter();
    let bytes = std::fs::read(&path).ok();
    let state: Versioned<CounterState> = match &bytes {
        None => Versioned {
            revision: 0,
            data: CounterState::default(),
        },
        Some(b) => match serde_json::from_slice(b) {
            Ok(s) => s,
            Err(e) => {
                f.violate(
                    Kind::CounterMismatch,
                    format!("counter.json does not parse: {e}"),
                );
                return;
            }
        },
    };
    let sum: u64 = state.data.slots.values().map(|s| s.count).sum();
    f.counter_total = state.data.total;
    if sum != state.data.total || state.revision != state.data.total {
        f.violate(
            Kind::CounterMismatch,
            format!(
                "total {} but slots sum to {sum} and revision is {}",
                state.data.total, state.revision
            ),
        );
    }
    let bumps = Outcomes::of(journals, Op::Counter, |e| match e {
        Event::CounterBumped { seq, .. } => Some((*seq, 1)),
        _ => None,
    });
    let mut slots: HashSet<u32> = journals.iter().map(|j| j.slot).collect();
    slots.extend(state.data.slots.keys());
    for slot in slots {
        let mine: Vec<&Journal> = journals.iter().filter(|j| j.slot == slot).collect();
        let found = state.data.slots.get(&slot).cloned().unwrap_or_default();
        account_slot(slot, &mine, &found, &bumps, f);
    }
    rewrite_unchanged(locks, &path, bytes, f).await;
}

/// One slot's increments, exactly: each acknowledged increment journaled
/// its position in the slot's sequence (1, 2, …) and its predecessor.
/// Walking the slot's ops in the order they began (incarnations never
/// overlap; within one, counter ops run one at a time), positions must
/// rise; each position skipped is an increment committed but not
/// acknowledged, and must be matched by an op whose outcome is unknown: one
/// cancelled (a dropped `update_json` still commits once its lock was
/// granted) or the one in flight when the incarnation was killed. A
/// timed-out op must not have committed (an error means "not written").
/// The slot's final count and last op close the account the same way.
fn account_slot(
    slot: u32,
    journals: &[&Journal],
    found: &crate::model::SlotCount,
    bumps: &Outcomes,
    f: &mut Findings,
) {
    let mut walk = Walk {
        bumps,
        pos: 0,
        last: None,
        unknown: 0,
        acked_count: 0,
        unacked_committed: 0,
    };
    for j in journals {
        let mut ops: Vec<(u64, &Event)> = j
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CounterBumped { seq, .. } => Some((*seq, e)),
                Event::Cancelled {
                    op: Op::Counter,
                    seq,
                    ..
                } => Some((*seq, e)),
                _ => None,
            })
            .collect();
        ops.sort_by_key(|(seq, _)| *seq);
        for (seq, e) in ops {
            match e {
                Event::CounterBumped { bump, .. } => walk.acked(j.id(seq), bump.pos, bump.prev, f),
                _ => walk.unknown += 1,
            }
        }
        // The op in flight when this incarnation was killed, if any.
        walk.unknown += 1;
    }
    let committed = walk.account(found.count, f, || format!("slot {slot} at the end"));
    if committed > 0 {
        let later = found.last.is_some_and(|last| {
            last.slot == slot && Some(last) > walk.last && walk.outcome_unknown(last)
        });
        if !later {
            f.violate(
                Kind::CounterMismatch,
                format!(
                    "slot {slot}: last op {:?} is not an unacknowledged later op",
                    found.last
                ),
            );
        }
    } else if found.last != walk.last {
        f.violate(
            Kind::CounterMismatch,
            format!(
                "slot {slot}: last op {:?}, last acknowledged {:?}",
                found.last, walk.last
            ),
        );
    }
    f.counter_acked += walk.acked_count;
    f.counter_unacked_committed += walk.unacked_committed;
}

/// The state of [`account_slot`]'s walk.
struct Walk<'a> {
    bumps: &'a Outcomes,
    /// Position of the last acknowledged increment.
    pos: u64,
    last: Option<OpId>,
    /// Ops since then whose outcome is unknown.
    unknown: u64,
    acked_count: u64,
    unacked_committed: u64,
}

impl Walk<'_> {
    /// Whether op `id` may have committed without an acknowledgement:
    /// dropped, or in flight at a kill; not acknowledged, not timed out.
    fn outcome_unknown(&self, id: OpId) -> bool {
        matches!(self.bumps.get(id), None | Some(Outcome::Cancelled))
    }

    fn acked(&mut self, id: OpId, pos: u64, prev: Option<OpId>, f: &mut Findings) {
        if pos == 0 {
            f.violate(
                Kind::CounterMismatch,
                format!("increment {id} at position 0"),
            );
            return;
        }
        let committed = self.account(pos - 1, f, || format!("increment {id}"));
        let prev_ok = if committed == 0 {
            prev == self.last
        } else {
            prev.is_some_and(|p| {
                p.slot == id.slot && Some(p) > self.last && p < id && self.outcome_unknown(p)
            })
        };
        if !prev_ok {
            f.violate(
                Kind::CounterMismatch,
                format!(
                    "increment {id}: predecessor {prev:?}, expected after {:?}",
                    self.last
                ),
            );
        }
        self.pos = pos;
        self.last = Some(id);
        self.acked_count += 1;
    }

    /// Positions up to `upto` not yet accounted for: committed without an
    /// acknowledgement, at most as many as the ops of unknown outcome.
    fn account(&mut self, upto: u64, f: &mut Findings, at: impl Fn() -> String) -> u64 {
        if upto < self.pos {
            f.violate(
                Kind::CounterMismatch,
                format!(
                    "{}: position {} after {} (an increment was lost)",
                    at(),
                    upto + 1,
                    self.pos
                ),
            );
            return 0;
        }
        let committed = upto - self.pos;
        if committed > self.unknown {
            f.violate(
                Kind::CounterMismatch,
                format!(
                    "{}: {committed} increments committed unacknowledged, but only {} ops of unknown outcome",
                    at(),
                    self.unknown
                ),
            );
        }
        self.unacked_committed += committed;
        self.unknown = 0;
        committed
    }
}

/// Every summary present is exactly one version a known op wrote; a file
/// missing after an acknowledged write is a violation. Then each is
/// rewritten unchanged under its lock, removing temps left by kills.
async fn summaries(layout: &Layout, locks: &Locks, journals: &[Journal], f: &mut Findings) {
    let known: HashSet<(u32, u32)> = journals.iter().map(|j| (j.slot, j.inc)).collect();
    let writes = Outcomes::of(journals, Op::Summary, |e| match e {
        Event::SummaryWritten { seq, .. } => Some((*seq, 1)),
        _ => None,
    });
    for file in 0..SUMMARIES {
        let path = layout.summary(file);
        let bytes = std::fs::read(&path).ok();
        match &bytes {
            Some(b) => match verify_summary(b, file) {
                Ok(id) if writes.get(id) == Some(Outcome::TimedOut) => f.violate(
                    Kind::WrittenDespiteTimeout,
                    format!("summary-{file} is version {id}, whose write timed out"),
                ),
                Ok(id) if known.contains(&(id.slot, id.inc)) => {}
                Ok(id) => f.violate(
                    Kind::TornSummary,
                    format!("summary-{file}: version {id} of no known op"),
                ),
                Err(e) => f.violate(Kind::TornSummary, format!("summary-{file}: {e}")),
            },
            None if acked_summary(journals, file) => f.violate(
                Kind::TornSummary,
                format!("summary-{file} missing after an acknowledged write"),
            ),
            None => {}
        }
        rewrite_unchanged(locks, &path, bytes, f).await;
    }
}

fn acked_summary(journals: &[Journal], file: usize) -> bool {
    journals
        .iter()
        .flat_map(|j| &j.events)
        .any(|e| matches!(e, Event::SummaryWritten { file: written, .. } if *written == file))
}

/// Counts this file's write_atomic temps, then rewrites the file with the
/// bytes it has (under its summary lock, as any next writer would), which
/// removes them. A file that does not exist but has temps is written and
/// removed again under its lock, so it stays absent.
async fn rewrite_unchanged(locks: &Locks, path: &Path, bytes: Option<Vec<u8>>, f: &mut Findings) {
    let temps = temps_of(path);
    f.temps_left += temps.len() as u64;
    let absent = bytes.is_none();
    if absent && temps.is_empty() {
        return;
    }
    let rewrite = async {
        write_atomic_with(locks, path, bytes.unwrap_or_default()).await?;
        if absent {
            let guard = locks.lock(Category::Summary, path).await?;
            let _ = std::fs::remove_file(path);
            guard.release().await?;
        }
        Ok::<(), async_filelock::LockError>(())
    };
    if let Err(e) = rewrite.await {
        f.violate(
            Kind::CheckFailed,
            format!("rewrite {}: {e}", path.display()),
        );
    }
}

/// `.{name}.XXXXXXXXXXXX.tmp` beside `path`: the temps of `write_atomic`
/// (and `update_json`), per `src/write/atomic.rs`.
fn temps_of(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".tmp")
        })
        .map(|e| e.path())
        .collect()
}

/// After cleanup: no `.part`, no temp, nothing unexpected anywhere.
fn no_stray_files(layout: &Layout, f: &mut Findings) {
    let artifacts: HashSet<String> = ARTIFACTS.iter().map(|s| s.to_string()).collect();
    for name in names_in(&layout.artifacts_dir()) {
        if artifacts.contains(&name) {
            continue;
        }
        let kind = if name.ends_with(".part") {
            Kind::LeftoverPart
        } else {
            Kind::UnexpectedFile
        };
        f.violate(kind, format!("artifacts/{name}"));
    }
    let mut state: HashSet<String> = (0..SUMMARIES)
        .map(|i| format!("summary-{i}.json"))
        .collect();
    state.insert("counter.json".into());
    for name in names_in(&layout.state_dir()) {
        if state.contains(&name) {
            continue;
        }
        let kind = if name.ends_with(".tmp") {
            Kind::LeftoverTemp
        } else {
            Kind::UnexpectedFile
        };
        f.violate(kind, format!("state/{name}"));
    }
    for name in names_in(&layout.locks_dir()) {
        if !name.ends_with(".lock") {
            f.violate(Kind::UnexpectedFile, format!("locks/{name}"));
        }
    }
    let probes: HashSet<String> = NAMED_LOCKS.iter().map(|n| format!("{n}.probe")).collect();
    for name in names_in(&layout.named_dir()) {
        if !probes.contains(&name) {
            f.violate(Kind::UnexpectedFile, format!("named/{name}"));
        }
    }
    let dirs = ["locks", "artifacts", "logs", "state", "acks", "named"];
    for name in names_in(layout.root()) {
        if !dirs.contains(&name.as_str()) {
            f.violate(Kind::UnexpectedFile, name);
        }
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
