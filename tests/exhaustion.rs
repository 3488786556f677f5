//! Resources running out: a full disk, a file-size limit, few descriptors,
//! a blocking pool of one thread. Each runs where the limit cannot touch the
//! rest of the suite (a child process, or a tmpfs of its own).

mod support;

use support::{path_arg, spawn};

#[test]
fn child_entry() {
    support::child_entry();
}

/// Item: a full disk must not block new lock files. The target record in a
/// lock file is for people and tools; a process that may not grow a file
/// (`RLIMIT_FSIZE` 0 fails the write with `EFBIG`, as a full disk fails it
/// with `ENOSPC`) still locks.
#[test]
fn a_lock_is_taken_when_its_target_record_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("weights.bin");
    let mut child = spawn(
        "lock_without_room",
        &[path_arg(dir.path()), path_arg(&target)],
    );
    let said = child.read();
    child.finish();
    assert_eq!(said, "locked");
}
