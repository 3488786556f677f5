//! The sink's file, under its lock: is it still the current file (another
//! process may have rotated it), a torn last line left by a crash, the
//! write of a batch, fsync, and rotation by rename.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::{FsyncPolicy, Rotation, SinkStats};
use crate::error::LockError;
use crate::write::commit::sync_dir;

/// Locks a mutex whose data stays consistent however a holder panicked
/// (plain values replaced whole): poisoning is ignored.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State the commit closure (on the blocking pool) needs.
#[derive(Debug)]
pub(super) struct Shared {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    pub rotation: Rotation,
    pub file: Mutex<Option<OpenFile>>,
    pub stats: Mutex<SinkStats>,
    /// Close the file after each commit, and open it afresh for the next:
    /// on a network filesystem (NFS), where a descriptor kept open appends
    /// at the size this client last saw, and reads a tail it cached, while
    /// an open after the previous holder's close sees all its writes.
    pub reopen_each_commit: bool,
    /// What was known of the file closed after the last commit (with
    /// `reopen_each_commit`): a record count carried over, so that the
    /// reopen counts only the lines added since, not the whole log.
    pub closed: Mutex<Option<Seen>>,
    /// The member name (JSON-encoded) that records carry the commit's
    /// fencing token in, if the sink stamps them.
    pub token_field: Option<String>,
}

/// A file's identity, size, record count and last bytes when it was
/// closed. The last bytes tell a file grown since from another that got
/// the same inode number (a rotated file removed, a new one made) or was
/// cut and refilled in place.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    dev: u64,
    ino: u64,
    size: u64,
    records: u64,
    tail: Vec<u8>,
}

/// How many bytes before its end a closed file is recognised by.
const SEEN_TAIL: u64 = 64;

/// The `len` bytes of `file` that end at `end`.
fn bytes_before(file: &File, end: u64, len: u64) -> io::Result<Vec<u8>> {
    let start = end.saturating_sub(len);
    let mut buf = vec![0; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// The open current file and what this process knows of it.
#[derive(Debug)]
pub(super) struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    /// Size and record count as of our last look.
    size: u64,
    records: u64,
    last_sync: Instant,
    /// Written since the last fsync (`close` syncs it).
    unsynced: bool,
}

impl Shared {
    /// Under the lock: makes sure `file` is the current file (another
    /// process may have rotated it), repairs a torn tail, and returns it.
    pub(super) fn prepare(&self) -> Result<MutexGuard<'_, Option<OpenFile>>, LockError> {
        let path = &self.path;
        let mut slot = lock(&self.file);
        // Looked at, never followed: a symlink here is refused when opened.
        let at_path = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(LockError::invalid_target(path, "it is a directory"));
            }
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LockError::io("inspect", path, e)),
        };
        // The file at the path is ours: its size is in hand. Otherwise it
        // was rotated (or removed) since: open the current one.
        let (size, fresh) = match (&*slot, &at_path) {
            (Some(f), Some(meta)) if f.dev == meta.dev() && f.ino == meta.ino() => {
                (meta.len(), false)
            }
            _ => {
                let seen = lock(&self.closed).take();
                let (opened, created) =
                    open_current(path, self.rotation.max_records.is_some(), seen)?;
                lock(&self.stats).opens += 1;
                if created {
                    sync_dir(path.parent().unwrap_or(Path::new("/")))?;
                    lock(&self.stats).dir_fsyncs += 1;
                }
                let size = opened.size;
                *slot = Some(opened);
                (size, true)
            }
        };
        let Some(open) = slot.as_mut() else {
            return Err(LockError::io("open", path, io::Error::other("no file")));
        };
        // Only a file someone else wrote since our last look can end torn:
        // our own writes end with a newline or fail (and leave the size
        // differing from the one we keep).
        let unseen = fresh || size != open.size;
        if size != open.size {
            // Others appended (whole lines, under the lock) since we looked.
            // Their lines are counted only if a record limit needs the count:
            // reading them back would cost every commit as much as writing.
            if self.rotation.max_records.is_some() {
                let from = if size < open.size { 0 } else { open.size };
                let seen = if size < open.size { 0 } else { open.records };
                open.records = seen
                    + count_lines(&open.file, from, size)
                        .map_err(|e| LockError::io("read", path, e))?;
            }
            open.size = size;
        }
        let repaired = if unseen {
            repair_torn_tail(&open.file, path, open.size)
                .map_err(|e| LockError::io("repair the last line of", path, e))?
        } else {
            None
        };
        match repaired {
            None => {}
            Some(Repair::Completed { offset }) => {
                tracing::info!(path = %path.display(), offset, "gave a whole last record its missing newline");
                open.size += 1;
                open.records += 1;
                lock(&self.stats).last_records_completed += 1;
            }
            Some(Repair::Cut {
                offset,
                bytes,
                side,
            }) => {
                tracing::warn!(path = %path.display(), offset, bytes, side = %side.display(), "moved a torn last line left by a crash to a side file");
                open.size = offset;
                let mut stats = lock(&self.stats);
                stats.torn_tails_repaired += 1;
                stats.torn_bytes_cut += bytes;
                stats.last_torn_offset = Some(offset);
                stats.last_torn_file = Some(side);
            }
        }
        Ok(slot)
    }

    /// Under the lock, after a commit: closes the file if each commit opens
    /// it afresh. What `AtMostEvery` left unsynced is flushed to the server
    /// by the close (NFS writes back on close).
    pub(super) fn done_with_commit(&self) {
        if self.reopen_each_commit
            && let Some(open) = lock(&self.file).take()
            && self.rotation.max_records.is_some()
        {
            // Unreadable: no hint, and the reopen counts from the start.
            *lock(&self.closed) = bytes_before(&open.file, open.size, SEEN_TAIL)
                .ok()
                .map(|tail| Seen {
                    dev: open.dev,
                    ino: open.ino,
                    size: open.size,
                    records: open.records,
                    tail,
                });
        }
    }

    /// Under the lock: writes the chunks (each whole lines), rotating where
    /// a limit would be crossed. Stops at the first failure, with the file
    /// cut back to where it was before the failed write: an error means
    /// "not written", so a retry never writes a record twice.
    pub(super) fn write_batch(&self, chunks: &[(Vec<u8>, u64)]) -> BatchOutcome {
        let mut slot = match self.prepare() {
            Ok(slot) => slot,
            Err(e) => return BatchOutcome::failed(0, e),
        };
        let mut done = 0;
        while done < chunks.len() {
            let Some(open) = slot.as_mut() else {
                let e = LockError::io("open", &self.path, io::Error::other("no file"));
                return BatchOutcome::failed(done, e);
            };
            let fit = self.fitting(open, &chunks[done..]);
            if fit == 0 {
                // Not even one more record fits in a non-empty file.
                if let Err(e) = self.rotate(&mut slot) {
                    return BatchOutcome::failed(done, e);
                }
                continue;
            }
            let group = &chunks[done..done + fit];
            if let Err(e) = self.write_group(open, group) {
                return BatchOutcome::failed(done, e);
            }
            done += fit;
        }
        BatchOutcome {
            written: done,
            error: None,
        }
    }

    /// One `write` of whole lines (and the fsync the policy asks for), or
    /// nothing: a failure cuts the file back to its size before.
    fn write_group(&self, open: &mut OpenFile, group: &[(Vec<u8>, u64)]) -> Result<(), LockError> {
        let path = &self.path;
        let mut bytes = Vec::with_capacity(group.iter().map(|(b, _)| b.len()).sum());
        for (chunk, _) in group {
            bytes.extend_from_slice(chunk);
        }
        let records: u64 = group.iter().map(|(_, r)| r).sum();
        let before = open.size;
        let written = (&open.file)
            .write_all(&bytes)
            .map_err(|e| LockError::io("append to", path, e))
            .and_then(|()| self.maybe_sync(open));
        let fsynced = match written {
            Ok(fsynced) => fsynced,
            Err(e) => {
                // Part of it may be in the file (a short write on a full
                // disk, or an fsync that failed after the write): cut it.
                if let Err(cut) = open.file.set_len(before) {
                    // The next commit sees a size it did not write, and
                    // repairs a torn tail; whole lines of this group stay.
                    open.size = u64::MAX;
                    tracing::error!(path = %path.display(), error = %cut, "could not cut back a failed write; its whole lines may stay in the file");
                    return Err(LockError::io(
                        "cut back a failed write (its records may be in the file) in",
                        path,
                        cut,
                    ));
                }
                return Err(e);
            }
        };
        open.size += bytes.len() as u64;
        open.records += records;
        let mut stats = lock(&self.stats);
        stats.records += records;
        stats.bytes += bytes.len() as u64;
        stats.commits += 1;
        stats.fsyncs += u64::from(fsynced);
        Ok(())
    }

    /// How many of `chunks` go into the current file before a limit; at
    /// least one if the file is empty.
    fn fitting(&self, open: &OpenFile, chunks: &[(Vec<u8>, u64)]) -> usize {
        let (mut size, mut records) = (open.size, open.records);
        let mut n = 0;
        for (bytes, count) in chunks {
            let over_bytes = self
                .rotation
                .max_bytes
                .is_some_and(|m| size + bytes.len() as u64 > m);
            let over_records = self
                .rotation
                .max_records
                .is_some_and(|m| records + count > m);
            if (over_bytes || over_records) && (size > 0 || n > 0) {
                break;
            }
            size += bytes.len() as u64;
            records += count;
            n += 1;
        }
        n
    }

    fn maybe_sync(&self, open: &mut OpenFile) -> Result<bool, LockError> {
        // On a network filesystem every commit is flushed before it is
        // answered, whatever the policy: the close that close-to-open
        // consistency needs flushes it anyway, and only a flush (or that
        // close, whose error std drops) hears a server's ENOSPC or EIO.
        let due = self.reopen_each_commit
            || match self.fsync {
                FsyncPolicy::Never => false,
                FsyncPolicy::EveryCommit => true,
                FsyncPolicy::AtMostEvery(d) => open.last_sync.elapsed() >= d,
            };
        if due {
            open.file
                .sync_data()
                .map_err(|e| LockError::io("fsync", &self.path, e))?;
            open.last_sync = Instant::now();
        }
        open.unsynced = !due;
        Ok(due)
    }

    /// Syncs what commits left unsynced (`FsyncPolicy::AtMostEvery`,
    /// `Never` excepted): for `close`. Needs no lock: an fsync of our own
    /// descriptor adds no bytes.
    pub(super) fn sync_rest(&self) -> Result<(), LockError> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let mut slot = lock(&self.file);
        if let Some(open) = slot.as_mut()
            && open.unsynced
        {
            open.file
                .sync_data()
                .map_err(|e| LockError::io("fsync", &self.path, e))?;
            open.unsynced = false;
            open.last_sync = Instant::now();
            lock(&self.stats).fsyncs += 1;
        }
        Ok(())
    }

    /// `name.jsonl` → `name.NNNN.jsonl` (next free number), then a fresh file.
    fn rotate(&self, slot: &mut MutexGuard<'_, Option<OpenFile>>) -> Result<(), LockError> {
        let path = &self.path;
        if let Some(open) = slot.as_ref() {
            open.file
                .sync_data()
                .map_err(|e| LockError::io("fsync before rotating", path, e))?;
        }
        // Never over an existing numbered file (another program may have
        // made one since the listing): take the next number instead.
        let mut number = next_rotation_number(path)?;
        let to = loop {
            let to = rotated_path(path, number);
            match crate::sys::rename_noreplace(path, &to) {
                Ok(()) => break to,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && number < u64::MAX => {
                    number += 1;
                }
                Err(e) => return Err(LockError::io("rotate (rename)", path, e)),
            }
        };
        **slot = Some(open_current(path, self.rotation.max_records.is_some(), None)?.0);
        lock(&self.stats).opens += 1;
        sync_dir(path.parent().unwrap_or(Path::new("/")))?;
        lock(&self.stats).dir_fsyncs += 1;
        lock(&self.stats).rotations += 1;
        tracing::info!(path = %path.display(), to = %to.display(), "rotated");
        Ok(())
    }
}

/// How far a batch got: its first `written` chunks are in the file; none
/// of the rest is, and `error` says why.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    pub written: usize,
    pub error: Option<LockError>,
}

impl BatchOutcome {
    pub(super) fn failed(written: usize, error: LockError) -> Self {
        BatchOutcome {
            written,
            error: Some(error),
        }
    }
}

/// Opens (creating) the current file; says whether it created it, whose
/// directory entry the caller then makes durable.
///
/// Never through a symlink (`O_NOFOLLOW`): the lock guards the path as
/// spelled, the link itself (law 2), so appending where it leads would
/// write, and repair a torn tail of, a file that lock does not guard, and
/// that may not be a log at all.
/// `seen`: what was known of the file when it was last closed; its count
/// is kept if it is still the same file, grown.
fn open_current(
    path: &Path,
    count_records: bool,
    seen: Option<Seen>,
) -> Result<(OpenFile, bool), LockError> {
    let open = |create_new: bool| {
        let mut options = OpenOptions::new();
        options
            .append(true)
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if create_new {
            options.create_new(true);
        }
        options.open(path)
    };
    let (file, created) = match open(true) {
        Ok(file) => (Ok(file), true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (open(false), false),
        Err(e) => (Err(e), false),
    };
    let file = file.map_err(|e| match e.raw_os_error() {
        Some(libc::EISDIR) => LockError::invalid_target(path, "it is a directory"),
        Some(libc::ELOOP) => LockError::invalid_target(
            path,
            "it is a symbolic link, and a JSONL sink never appends through one (its lock guards the link, not the file it leads to); give the real path",
        ),
        _ => LockError::io("open for appending", path, e),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| LockError::io("inspect", path, e))?;
    let records = match seen {
        _ if !count_records => 0,
        Some(seen)
            if seen.dev == meta.dev()
                && seen.ino == meta.ino()
                && meta.len() >= seen.size
                && bytes_before(&file, seen.size, SEEN_TAIL).is_ok_and(|t| t == seen.tail) =>
        {
            seen.records
                + count_lines(&file, seen.size, meta.len())
                    .map_err(|e| LockError::io("read", path, e))?
        }
        _ => count_lines(&file, 0, meta.len()).map_err(|e| LockError::io("read", path, e))?,
    };
    Ok((
        OpenFile {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            records,
            last_sync: Instant::now(),
            unsynced: false,
        },
        created,
    ))
}

/// Newlines in `file[from..to]`.
fn count_lines(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, mut n) = (from, 0u64);
    while at < to {
        let want = ((to - at) as usize).min(buf.len());
        let got = file.read_at(&mut buf[..want], at)?;
        if got == 0 {
            break;
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        at += got as u64;
    }
    Ok(n)
}

/// What [`repair_torn_tail`] did to a file whose last line lacked its
/// newline.
#[derive(Debug)]
enum Repair {
    /// The last line is one whole JSON value (written without its newline,
    /// as `printf '%s'` or `f.write(json.dumps(x))` leave it): it got its
    /// newline and stays.
    Completed { offset: u64 },
    /// The last line is not a JSON value (a write cut short by a crash): it
    /// was moved to `side`, beside the log, and cut off.
    Cut {
        offset: u64,
        bytes: u64,
        side: PathBuf,
    },
}

/// If the file does not end with a newline, completes a last line that is a
/// whole record, or moves a torn one to a side file and cuts it off. Under
/// the lock.
fn repair_torn_tail(file: &File, path: &Path, size: u64) -> io::Result<Option<Repair>> {
    if size == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    let len = usize::try_from(size - keep)
        .map_err(|_| io::Error::other("the last line is larger than memory"))?;
    let mut tail = vec![0u8; len];
    file.read_exact_at(&mut tail, keep)?;
    if is_whole_record(&tail) {
        // The file is open for appending: this lands at its end.
        (&*file).write_all(b"\n")?;
        file.sync_data()?;
        return Ok(Some(Repair::Completed { offset: keep }));
    }
    let side = keep_torn_line(path, keep, &tail)?;
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(Some(Repair::Cut {
        offset: keep,
        bytes: size - keep,
        side,
    }))
}

/// Whether a last line without its newline is one whole record: it parses
/// as one JSON value, and that value cannot be the prefix of a longer one.
/// A number can (`12` of `123`, `1` of `1.5`), so a line ending in a digit
/// is never taken for whole: objects, arrays, strings and `true`, `false`,
/// `null` end in a character a cut could not leave at their end.
fn is_whole_record(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii();
    let closed = matches!(trimmed.last(), Some(b'}' | b']' | b'"'))
        || matches!(trimmed, b"true" | b"false" | b"null");
    closed && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok()
}

/// Writes a torn line to a new side file `<log>.torn-<offset>` beside the
/// log (`-2`, `-3` … if that name is taken), durably, before the log is
/// cut: what a repair removes is never just dropped.
fn keep_torn_line(path: &Path, offset: u64, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".torn-{offset}"));
    let first = path.with_file_name(&name);
    for n in 1..=1000u32 {
        let side = if n == 1 {
            first.clone()
        } else {
            let mut numbered = name.clone();
            numbered.push(format!("-{n}"));
            path.with_file_name(numbered)
        };
        // Private: it holds bytes of a log whose readers we do not know.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&side)
        {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                if let Some(dir) = path.parent() {
                    File::open(dir)?.sync_all()?;
                }
                return Ok(side);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} and a thousand numbered side files exist",
            first.display()
        ),
    ))
}

/// `dir/name.0007.jsonl` for `dir/name.jsonl` and 7.
pub(crate) fn rotated_path(path: &Path, n: u64) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n:04}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n:04}"),
    };
    path.with_file_name(name)
}

/// The rotation numbers present for `path`, sorted.
pub(crate) fn rotation_numbers(path: &Path) -> Result<Vec<u64>, LockError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut numbers = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LockError::io("list directory", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(stem.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if middle.len() >= 4
            && middle.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = middle.parse::<u64>()
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn next_rotation_number(path: &Path) -> Result<u64, LockError> {
    Ok(rotation_numbers(path)?.last().map_or(1, |n| n + 1))
}
