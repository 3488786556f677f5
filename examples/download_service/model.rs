//! What the server, the workers and the parent share: the catalog, and the
//! events a worker reports on its stdout (one JSON object a line).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the server treats a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Served whole, at full speed (unless the fail rate cuts it).
    Plain,
    /// Served in small chunks with pauses: downloads that overlap.
    Slow,
    /// Every response is cut at half the file: it can never complete.
    Truncated,
    /// Served whole, but its bytes do not match the catalog's digest.
    Corrupt,
}

/// One file of the catalog, as `GET /catalog` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub len: u64,
    /// SHA-256 of what the file should be, in hex.
    pub sha256: String,
    pub kind: Kind,
}

/// What one worker did with one file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Written and committed by this worker.
    Downloaded {
        bytes: u64,
        tries: u32,
        /// Bytes a retry did not fetch again: it asked for the rest with
        /// `Range`, after what the `.part` held.
        kept_on_retry: u64,
        /// Bytes of a crashed worker's `.part` continued (`Leftover::Resume`).
        resumed_bytes: u64,
        /// The artifact lock's fencing token (`CommitReport::token`).
        token: u64,
    },
    /// Found complete when the artifact lock was granted.
    Present { waited_ms: u64 },
    /// Given up, and why.
    Failed { why: String, tries: u32 },
}

/// Waits of one lock category in one worker (from `Locks::metrics()`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Waits {
    pub category: String,
    pub taken: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub max_us: u64,
}

/// A worker's totals, sent once at the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub worker: u32,
    /// Files that were busy on the first pass (`OnBusy::Skip`): someone
    /// else was downloading them.
    pub busy_skipped: u64,
    pub retries: u64,
    pub bytes: u64,
    pub waits: Vec<Waits>,
    /// `Locks::metrics()` as its `Display` prints it.
    pub metrics_table: String,
}

/// A line a worker prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every 100 ms: bytes this worker wrote so far, the file it is on.
    Tick { bytes: u64, current: Option<String> },
    /// A file is done with, one way or another.
    Settled { file: String, outcome: Outcome },
    /// The worker's totals; its last line.
    Done { stats: Stats },
}

/// The run directory's layout.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.downloads().join(name)
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.jsonl")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }
}

/// The run summary the workers keep with `update_json` (one revision per
/// settled file).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub downloaded: u64,
    pub present: u64,
    pub failed: u64,
    pub bytes: u64,
}

/// A manifest row, appended under the artifact lock right after the
/// artifact's rename (`commit_then`); the sink stamps `lock_token` first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestRow {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub worker: u32,
    pub artifact_token: u64,
    pub resumed_bytes: u64,
    pub tries: u32,
    /// The manifest lock's token, stamped by the sink (`record_token`):
    /// read back, never written by us.
    #[serde(default, skip_serializing)]
    pub lock_token: u64,
}
