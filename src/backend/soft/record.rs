//! The owner record of a soft lock file, who this process is, and whether
//! a record's owner still holds its lock.
//!
//! A record is one JSON object, written once when the lock file is created
//! (`O_CREAT|O_EXCL`); renewing the lease only moves the file's mtime, so a
//! record is never rewritten under a reader. A reader may still meet a file
//! whose record is not written yet, or was cut short by a crash or a full
//! disk: such a file is judged by its age against the lease, never forever.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::per_process::PerProcess;
use crate::sys::{self, ProcessState};

/// The format version, in the record's `async_filelock_soft` field.
pub(crate) const FORMAT: u32 = 1;

/// The most of a lock file read for its record: far more than a record
/// with its target cut to [`MAX_TARGET_CHARS`] (each escaped as up to six
/// bytes) can take.
pub(crate) const MAX_RECORD: usize = 64 * 1024;

/// The most of the target's path a record keeps (for people and tools; the
/// lock's name is the hash of the whole path).
pub(crate) const MAX_TARGET_CHARS: usize = 1024;

/// Who holds a soft lock, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnerRecord {
    /// [`FORMAT`]: marks the file as a soft lock of this crate.
    pub async_filelock_soft: u32,
    pub pid: u32,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: pids mean something in one boot.
    pub boot_id: Option<String>,
    /// The pid namespace: containers on one host and boot share pids.
    pub pid_ns: Option<u64>,
    /// Clock ticks after boot when the process started: with the pid, one
    /// process (a reused pid is another process).
    pub start_time: Option<u64>,
    pub command: Option<String>,
    /// Wall clock when the lock was taken, in ms since the Unix epoch.
    pub acquired_at_ms: u64,
    /// How long the lock stays the owner's without a renewal (which moves
    /// the file's mtime).
    pub lease_ms: u64,
    /// The fencing token issued with the lock.
    pub token: u64,
    /// Tells this holding from every other of the same lock file.
    pub nonce: String,
    /// The file the lock guards, for people and tools.
    pub target: String,
}

impl OwnerRecord {
    /// A record for this process taking a lock now.
    pub(crate) fn mine(target: &Path, lease: Duration, token: u64, nonce: String) -> Self {
        let me = me();
        OwnerRecord {
            async_filelock_soft: FORMAT,
            pid: std::process::id(),
            host: me.host.clone(),
            boot_id: me.boot_id.clone(),
            pid_ns: me.pid_ns,
            start_time: me.start_time,
            command: me.command.clone(),
            acquired_at_ms: unix_ms(SystemTime::now()),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            token,
            nonce,
            target: target
                .to_string_lossy()
                .chars()
                .take(MAX_TARGET_CHARS)
                .collect(),
        }
    }

    /// The record in `bytes`, if they hold a whole one of this format.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let record: OwnerRecord = serde_json::from_slice(bytes.trim_ascii()).ok()?;
        (record.async_filelock_soft == FORMAT).then_some(record)
    }

    /// The bytes written to the lock file: one line.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Whether the owner runs on this host (and boot, and pid namespace):
    /// only then does its pid say whether it lives.
    pub(crate) fn is_local(&self) -> bool {
        let me = me();
        self.host == me.host
            && self.boot_id.is_some()
            && self.boot_id == me.boot_id
            && self.pid_ns.is_some()
            && self.pid_ns == me.pid_ns
    }

    /// How long ago it was taken, by the wall clock (zero if in the future).
    pub(crate) fn held_for(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.acquired_at_ms))
    }
}

/// What a waiter concludes about a lock file it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its owner may still hold it: wait.
    Live,
    /// Nobody holds it any more: it may be broken. Says why, for the log.
    Stale(String),
}

/// Judges a lock file whose record is `record` (`None`: unreadable or not
/// written yet) and whose mtime (the last renewal) is `age` old.
/// `default_lease` judges a file without a record.
///
/// Stale when the lease ran out without renewal, or when the owner runs on
/// this host, boot and pid namespace and its process (pid with start time)
/// is gone. A record from another host is stale only by lease: its pid
/// means nothing here.
pub(crate) fn judge(
    record: Option<&OwnerRecord>,
    age: Duration,
    default_lease: Duration,
) -> Verdict {
    let Some(record) = record else {
        return if age > default_lease {
            Verdict::Stale(format!(
                "its owner record is unreadable and the file was not renewed for {:.1} s (lease {:.1} s)",
                age.as_secs_f64(),
                default_lease.as_secs_f64()
            ))
        } else {
            Verdict::Live
        };
    };
    let lease = Duration::from_millis(record.lease_ms);
    if age > lease {
        return Verdict::Stale(format!(
            "pid {} on {} did not renew its lease for {:.1} s (lease {:.1} s)",
            record.pid,
            record.host,
            age.as_secs_f64(),
            lease.as_secs_f64()
        ));
    }
    if record.is_local()
        && let Some(start_time) = record.start_time
        && sys::process_state(record.pid, start_time) == ProcessState::Gone
    {
        return Verdict::Stale(format!(
            "its owner, pid {}{}, is gone",
            record.pid,
            record
                .command
                .as_ref()
                .map_or(String::new(), |c| format!(" ({c})"))
        ));
    }
    Verdict::Live
}

/// This process, as records name it.
#[derive(Debug)]
pub(crate) struct Me {
    pub host: String,
    pub boot_id: Option<String>,
    pub pid_ns: Option<u64>,
    pub start_time: Option<u64>,
    pub command: Option<String>,
}

/// This process (a `fork()`ed child is another one).
pub(crate) fn me() -> &'static Me {
    static ME: PerProcess<Me> = PerProcess::new();
    ME.get(|| {
        let pid = std::process::id();
        Me {
            host: sys::host_name().unwrap_or_else(|| "unknown-host".to_owned()),
            boot_id: sys::boot_id(),
            pid_ns: sys::pid_namespace(),
            start_time: sys::process_start_time(pid),
            command: sys::command_name(pid),
        }
    })
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, start_time: Option<u64>) -> OwnerRecord {
        let mut r = OwnerRecord::mine(Path::new("/t"), Duration::from_secs(30), 7, "n".into());
        r.pid = pid;
        r.start_time = start_time;
        r
    }

    #[test]
    fn a_record_survives_its_line_and_a_cut_one_is_unreadable() {
        let r = record(1, Some(2));
        let line = r.to_line();
        assert_eq!(OwnerRecord::parse(&line), Some(r));
        assert_eq!(OwnerRecord::parse(&line[..line.len() / 2]), None);
        assert_eq!(OwnerRecord::parse(b"/some/target\n"), None);
    }

    #[test]
    fn a_record_of_any_target_fits_in_what_readers_read() {
        let target: String = "/x/"
            .chars()
            .chain(std::iter::repeat_n('\u{1}', 10_000))
            .collect();
        let r = OwnerRecord::mine(Path::new(&target), Duration::from_secs(30), 7, "n".into());
        let line = r.to_line();
        assert!(line.len() < MAX_RECORD, "{}", line.len());
        assert!(OwnerRecord::parse(&line).is_some());
    }

    #[test]
    fn live_owner_is_live_gone_owner_and_lapsed_lease_are_stale() {
        let me = std::process::id();
        let started = sys::process_start_time(me);
        let fresh = Duration::from_millis(10);
        assert_eq!(
            judge(Some(&record(me, started)), fresh, Duration::ZERO),
            Verdict::Live
        );
        if let Some(started) = started {
            // Same pid, another start time: a reused pid, so the owner is gone.
            let reused = record(me, Some(started + 1));
            assert!(matches!(
                judge(Some(&reused), fresh, Duration::ZERO),
                Verdict::Stale(_)
            ));
        }
        let lapsed = Duration::from_secs(31);
        assert!(matches!(
            judge(Some(&record(me, started)), lapsed, Duration::ZERO),
            Verdict::Stale(_)
        ));
    }

    #[test]
    fn another_hosts_record_is_stale_only_by_lease() {
        let mut r = record(u32::MAX - 1, Some(1));
        r.host = "elsewhere".into();
        assert_eq!(
            judge(Some(&r), Duration::from_secs(1), Duration::ZERO),
            Verdict::Live
        );
        assert!(matches!(
            judge(Some(&r), Duration::from_secs(60), Duration::ZERO),
            Verdict::Stale(_)
        ));
    }

    #[test]
    fn an_unreadable_record_is_judged_by_age() {
        let lease = Duration::from_secs(5);
        assert_eq!(judge(None, Duration::from_secs(1), lease), Verdict::Live);
        assert!(matches!(
            judge(None, Duration::from_secs(6), lease),
            Verdict::Stale(_)
        ));
    }
}
