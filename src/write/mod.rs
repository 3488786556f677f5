//! The writers: files that are only ever committed while their lock is
//! held, so readers and other processes see whole files and whole lines.
//!
//! Layer 3 of ARCHITECTURE.md. A writer uses the lock layer (a [`Locks`]
//! handle, guards, and the acquisition core for locking from the blocking
//! pool), `blocking`, `sys` and the vocabulary; it never uses a backend
//! directly, so it works unchanged whatever backend holds its guard.
//!
//! * [`artifact`]: streamed downloads to `<target>.part`, verified, renamed.
//! * [`jsonl`]: append-only JSONL with group commit and rotation.
//! * [`atomic`]: whole-file replace.
//! * [`state`]: read-modify-write JSON state with revisions.
//! * [`commit`]: what they share: work under a guard, durable renames.
//!
//! [`Locks`]: crate::Locks

pub(crate) mod artifact;
pub(crate) mod atomic;
pub(crate) mod commit;
pub(crate) mod jsonl;
pub(crate) mod state;

pub use artifact::{
    Artifact, ArtifactWriter, ArtifactWriterBuilder, CommitReport, Leftover, OnBusy, PresentReport,
    Progress,
};
pub use atomic::{write_atomic, write_atomic_with};
pub use jsonl::{FsyncPolicy, JsonlReader, JsonlSink, JsonlSinkBuilder, Rotation, SinkStats};
pub use state::{
    Versioned, load_json, load_json_with, save_if_revision, save_if_revision_with, update_json,
    update_json_with,
};
