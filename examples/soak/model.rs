//! What the workers and the checker agree on: where everything lives in
//! the soak directory, the content every write must have (deterministic
//! from its name or op id, so the checker can tell a whole file from a
//! partial one without having seen it written), the counter's state and
//! the events of the per-worker ack journals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_filelock::{Category, LockError, Locks};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Artifact targets: few, so that workers collide on them.
pub const ARTIFACTS: [&str; 6] = ["a0.bin", "a1.bin", "a2.bin", "a3.bin", "a4.bin", "a5.bin"];

/// Named locks that shared and exclusive holders fight over.
pub const NAMED_LOCKS: [&str; 3] = ["n0", "n1", "n2"];

/// Files replaced whole by `write_atomic`.
pub const SUMMARIES: usize = 2;

/// The category of the named locks: one no writer of the soak uses.
pub const NAMED_CATEGORY: Category = Category::Sqlite;

/// The log rotates at this size: small, so that it rotates every few
/// seconds and rotation races with appends, kills and readers.
pub const ROTATE_BYTES: u64 = 64 * 1024;

/// The paths of one soak directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directories; the soak directory must be empty or new,
    /// since the checker reads every journal it finds.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [
            self.locks_dir(),
            self.artifacts_dir(),
            self.logs_dir(),
            self.state_dir(),
            self.acks_dir(),
            self.named_dir(),
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    pub fn artifact(&self, name: &str) -> PathBuf {
        self.artifacts_dir().join(name)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The current log; rotations are `manifest.NNNN.jsonl` beside it.
    pub fn log(&self) -> PathBuf {
        self.logs_dir().join("manifest.jsonl")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn counter(&self) -> PathBuf {
        self.state_dir().join("counter.json")
    }

    pub fn summary(&self, index: usize) -> PathBuf {
        self.state_dir().join(format!("summary-{index}.json"))
    }

    pub fn acks_dir(&self) -> PathBuf {
        self.root.join("acks")
    }

    /// The ack journal of one incarnation of one worker slot: one file per
    /// incarnation, so that a line torn by a kill can only be a file's last.
    pub fn journal(&self, slot: u32, inc: u32) -> PathBuf {
        self.acks_dir().join(format!("{slot}-{inc}.jsonl"))
    }

    pub fn named_dir(&self) -> PathBuf {
        self.root.join("named")
    }

    /// The target of a named lock (never written: a lock target need not
    /// exist).
    pub fn named_target(&self, name: &str) -> PathBuf {
        self.named_dir().join(name)
    }

    /// A file exclusive holders of a named lock write their id into, and
    /// every holder reads back: it changes under a holder only if the lock
    /// failed to exclude someone.
    pub fn probe(&self, name: &str) -> PathBuf {
        self.named_dir().join(format!("{name}.probe"))
    }

    /// Every (category, target) the soak locks, for the final "nothing
    /// held" check.
    pub fn all_locked_targets(&self) -> Vec<(Category, PathBuf)> {
        let mut all: Vec<(Category, PathBuf)> = ARTIFACTS
            .iter()
            .map(|n| (Category::Artifact, self.artifact(n)))
            .collect();
        all.push((Category::Manifest, self.log()));
        all.push((Category::Summary, self.counter()));
        all.extend((0..SUMMARIES).map(|i| (Category::Summary, self.summary(i))));
        all.extend(
            NAMED_LOCKS
                .iter()
                .map(|n| (NAMED_CATEGORY, self.named_target(n))),
        );
        all
    }
}

/// A `Locks` on the soak's lock dir with the given per-category timeouts
/// (`None`: the crate's defaults).
pub fn locks(layout: &Layout, timeouts: Option<Timeouts>) -> Result<Locks, LockError> {
    let mut builder = Locks::builder().lock_dir(layout.locks_dir());
    if let Some(t) = timeouts {
        builder = builder
            .timeout(Category::Artifact, t.artifact)
            .timeout(Category::Manifest, t.manifest)
            .timeout(Category::Summary, t.summary);
    }
    builder.build()
}

/// Per-category timeouts of one worker incarnation: some are short, so
/// that the writers' timeout paths run too, not only those of plain locks.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub artifact: Duration,
    pub manifest: Duration,
    pub summary: Duration,
}

/// The id of one operation: unique over the whole soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    pub slot: u32,
    pub inc: u32,
    pub seq: u64,
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.slot, self.inc, self.seq)
    }
}

/// SplitMix64: a cheap, well-mixed hash for deriving content from ids.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn id_hash(id: OpId) -> u64 {
    mix(mix(u64::from(id.slot) << 32 | u64::from(id.inc)) ^ id.seq)
}

/// One JSONL record. Its padding is derived from its id, so a record that
/// parses but is not exactly what its writer appended is caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub slot: u32,
    pub inc: u32,
    pub seq: u64,
    pub pad: String,
}

impl Record {
    pub fn new(id: OpId) -> Self {
        let h = id_hash(id);
        let len = 16 + (h % 1024) as usize;
        let letter = char::from(b'a' + (h >> 20) as u8 % 26);
        Record {
            slot: id.slot,
            inc: id.inc,
            seq: id.seq,
            pad: letter.to_string().repeat(len),
        }
    }

    pub fn id(&self) -> OpId {
        OpId {
            slot: self.slot,
            inc: self.inc,
            seq: self.seq,
        }
    }

    /// Whether this is exactly the record its id stands for.
    pub fn is_genuine(&self) -> bool {
        *self == Record::new(self.id())
    }
}

/// The id at the start of a record's line, even a torn one: records
/// serialise `slot`, `inc`, `seq` first. For torn side files.
pub fn id_prefix(line: &str) -> Option<OpId> {
    let rest = line.strip_prefix("{\"slot\":")?;
    let (slot, rest) = rest.split_once(",\"inc\":")?;
    let (inc, rest) = rest.split_once(",\"seq\":")?;
    let seq: String = rest.chars().take_while(char::is_ascii_digit).collect();
    // A seq cut short would name another record: only a complete one counts.
    if !rest[seq.len()..].starts_with(',') {
        return None;
    }
    Some(OpId {
        slot: slot.parse().ok()?,
        inc: inc.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The content of a summary write: `<sha256 of the body>\n<body>`, the body
/// naming the op and the file and padded to a length derived from the op.
/// Self-checking (a torn file fails its digest) and exact (the checker
/// rebuilds the expected bytes from the id in the body).
pub fn summary_bytes(id: OpId, file: usize) -> Vec<u8> {
    let h = id_hash(id);
    let pad = "s".repeat(64 + (h % 8192) as usize);
    let body = serde_json::json!({
        "slot": id.slot, "inc": id.inc, "seq": id.seq, "file": file, "pad": pad,
    })
    .to_string();
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{digest}\n{body}").into_bytes()
}

/// Checks a summary file's content: `Ok` with the op that wrote it if it
/// is exactly one whole version written for `file`.
pub fn verify_summary(bytes: &[u8], file: usize) -> Result<OpId, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let (digest, body) = text
        .split_once('\n')
        .ok_or_else(|| format!("no digest line in {} bytes", bytes.len()))?;
    if hex::encode(Sha256::digest(body.as_bytes())) != digest {
        return Err(format!("digest mismatch ({} bytes)", bytes.len()));
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let field = |k: &str| v[k].as_u64().ok_or_else(|| format!("no {k} in body"));
    let id = OpId {
        slot: field("slot")? as u32,
        inc: field("inc")? as u32,
        seq: field("seq")?,
    };
    if field("file")? as usize != file {
        return Err(format!("version {id} was written for another file"));
    }
    if summary_bytes(id, file) != bytes {
        return Err(format!("not the exact bytes of version {id}"));
    }
    Ok(id)
}

/// An artifact's expected content and its SHA-256 (hex).
#[derive(Debug)]
pub struct ArtifactContent {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The content of artifact `name`: 32 KiB to 512 KiB of SHA-256 blocks of
/// the name and a counter. Built once per process.
pub fn artifact_content(name: &str) -> &'static ArtifactContent {
    static ALL: OnceLock<Vec<ArtifactContent>> = OnceLock::new();
    let all = ALL.get_or_init(|| ARTIFACTS.iter().map(|n| build_artifact(n)).collect());
    let i = ARTIFACTS
        .iter()
        .position(|n| *n == name)
        .expect("a soak artifact name");
    &all[i]
}

fn build_artifact(name: &str) -> ArtifactContent {
    let seed = Sha256::digest(name.as_bytes());
    let kib = 32 + u64::from(u16::from_le_bytes([seed[0], seed[1]])) % 481;
    let len = (kib * 1024) as usize;
    let mut bytes = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while bytes.len() < len {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(block.to_le_bytes());
        bytes.extend_from_slice(&h.finalize());
        block += 1;
    }
    bytes.truncate(len);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    ArtifactContent { bytes, sha256 }
}

/// The counter's state (inside `update_json`'s `{"revision", "data"}`):
/// the total, and per worker slot how many increments it committed and
/// which op committed the last. Every increment returns its position in
/// its slot's sequence and the op before it, which the worker journals:
/// that is what lets the checker account for every increment exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    pub total: u64,
    pub slots: BTreeMap<u32, SlotCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCount {
    pub count: u64,
    pub last: Option<OpId>,
}

/// What one increment saw: its position in its slot's sequence (1-based)
/// and the slot's previous committed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bump {
    pub pos: u64,
    pub prev: Option<OpId>,
}

impl CounterState {
    pub fn bump(&mut self, id: OpId) -> Bump {
        self.total += 1;
        let slot = self.slots.entry(id.slot).or_default();
        slot.count += 1;
        let prev = slot.last.replace(id);
        Bump {
            pos: slot.count,
            prev,
        }
    }
}

/// The kinds of operation, as journal events name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    SinkOpen,
    Append,
    Counter,
    Summary,
    Artifact,
    Evict,
    Lock,
}

/// One line of an ack journal. A line is written (one `O_APPEND` write)
/// only after the crate returned: an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Event {
    /// The incarnation started (first line of every journal).
    Start { pid: u32 },
    /// Its sink is open; the open repaired this many torn tails.
    SinkOpened { torn_repaired: u64 },
    /// Records `seq..seq + n` were appended (one `append` or `append_batch`).
    Appended { seq: u64, n: u64 },
    /// Op `seq` incremented the counter.
    CounterBumped { seq: u64, bump: Bump },
    /// Op `seq` replaced summary `file`.
    SummaryWritten { seq: u64, file: usize },
    /// A summary read without a lock was whole (or absent).
    SummaryRead,
    /// Artifact `name` was written and committed, `resumed` bytes kept
    /// from a leftover `.part`.
    ArtifactWritten { name: String, resumed: u64 },
    /// An artifact request found it present.
    ArtifactPresent,
    /// An artifact request with `OnBusy::Skip` found it being written.
    ArtifactBusy,
    /// An artifact was removed under its lock.
    ArtifactEvicted,
    /// An artifact read without a lock was whole (or absent).
    ArtifactRead,
    /// A named lock was granted, held and probed.
    Locked { shared: bool },
    /// A try of a named lock found it busy.
    TryBusy,
    /// The op of kind `op` with ids `seq..seq + n` failed with the crate's
    /// `Timeout`: nothing of it may have been written.
    Timeout { op: Op, seq: u64, n: u64 },
    /// The op of kind `op` with ids `seq..seq + n` was dropped before it
    /// finished: it may or may not have been written.
    Cancelled { op: Op, seq: u64, n: u64 },
    /// Something the worker saw that must never happen.
    Violation { what: String },
}

impl Event {
    /// The event's name, for counting operations by kind: its `k` tag,
    /// refined by op or mode where the report splits them.
    pub fn kind(&self) -> String {
        let name = match self {
            Event::Timeout { op, .. } => return format!("timeout/{}", op.name()),
            Event::Cancelled { op, .. } => return format!("cancelled/{}", op.name()),
            Event::Locked { shared: true } => "locked/shared",
            Event::Locked { shared: false } => "locked/exclusive",
            Event::Start { .. } => "start",
            Event::SinkOpened { .. } => "sink_opened",
            Event::Appended { .. } => "appended",
            Event::CounterBumped { .. } => "counter_bumped",
            Event::SummaryWritten { .. } => "summary_written",
            Event::SummaryRead => "summary_read",
            Event::ArtifactWritten { .. } => "artifact_written",
            Event::ArtifactPresent => "artifact_present",
            Event::ArtifactBusy => "artifact_busy",
            Event::ArtifactEvicted => "artifact_evicted",
            Event::ArtifactRead => "artifact_read",
            Event::TryBusy => "try_busy",
            Event::Violation { .. } => "violation",
        };
        name.to_owned()
    }
}

impl Op {
    /// As journal events spell it.
    pub fn name(self) -> &'static str {
        match self {
            Op::SinkOpen => "sink_open",
            Op::Append => "append",
            Op::Counter => "counter",
            Op::Summary => "summary",
            Op::Artifact => "artifact",
            Op::Evict => "evict",
            Op::Lock => "lock",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_its_torn_prefix_names_it() {
        let id = OpId {
            slot: 3,
            inc: 17,
            seq: 12345,
        };
        let line = serde_json::to_string(&Record::new(id)).unwrap();
        let back: Record = serde_json::from_str(&line).unwrap();
        assert!(back.is_genuine());
        assert_eq!(id_prefix(&line[..40]), Some(id));
        assert_eq!(id_prefix("{\"slot\":3,\"inc\":17,\"seq\":123"), None);
    }

    #[test]
    fn an_event_kind_is_its_journal_tag() {
        let events = [
            Event::Appended { seq: 1, n: 2 },
            Event::SummaryRead,
            Event::Timeout {
                op: Op::SinkOpen,
                seq: 0,
                n: 0,
            },
        ];
        for e in events {
            let v = serde_json::to_value(&e).unwrap();
            let tag = v["k"].as_str().unwrap();
            let op = v["op"]
                .as_str()
                .map(|o| format!("/{o}"))
                .unwrap_or_default();
            assert_eq!(e.kind(), format!("{tag}{op}"));
        }
    }

    #[test]
    fn a_summary_verifies_whole_and_fails_torn() {
        let id = OpId {
            slot: 1,
            inc: 2,
            seq: 3,
        };
        let bytes = summary_bytes(id, 1);
        assert_eq!(verify_summary(&bytes, 1), Ok(id));
        assert!(verify_summary(&bytes[..bytes.len() - 1], 1).is_err());
        assert!(verify_summary(&bytes, 0).is_err());
    }
}
