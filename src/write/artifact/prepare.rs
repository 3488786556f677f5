//! The blocking work under the artifact lock before any byte is written:
//! is the target there already, what becomes of a leftover `.part`, is there
//! room, and the `.part` itself.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Leftover;
use super::part::PartPaths;
use crate::error::LockError;

/// What the finished artifact must be, checked at commit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expect {
    pub len: Option<u64>,
    pub sha256: Option<[u8; 32]>,
}

/// Blocking, under the lock: whether the target is already there (and,
/// with `verify`, matches the expectations; a mismatch is written anew).
pub(super) fn present(
    target: &Path,
    expect: &Expect,
    verify: bool,
) -> Result<Option<Present>, LockError> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_file() => {
            if !verify {
                return Ok(Some(Present {
                    bytes: meta.len(),
                    verified: false,
                }));
            }
            if matches_expectations(target, meta.len(), expect)? {
                return Ok(Some(Present {
                    bytes: meta.len(),
                    verified: true,
                }));
            }
            tracing::warn!(target = %target.display(), "existing artifact fails verification; writing it anew");
            Ok(None)
        }
        Ok(_) => Err(LockError::invalid_target(
            target,
            "it is not a regular file",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LockError::io("inspect", target, e)),
    }
}

/// The target as found under the lock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Present {
    pub bytes: u64,
    pub verified: bool,
}

/// How to prepare the `.part`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartOptions {
    pub expect: Expect,
    pub leftover: Leftover,
    pub preallocate: bool,
    pub hashing: bool,
}

/// A `.part` open for writing, positioned after any resumed bytes.
#[derive(Debug)]
pub(super) struct PartFile {
    pub file: std::fs::File,
    pub resumed: u64,
    pub hasher: Option<Sha256>,
}

/// Blocking, under the lock: a leftover `.part` (resumed or removed), free
/// space, and the `.part` opened for writing.
pub(super) fn prepare_part(
    target: &Path,
    paths: &PartPaths,
    opts: &PartOptions,
) -> Result<PartFile, LockError> {
    let (expect, leftover, prealloc, hashing) =
        (&opts.expect, opts.leftover, opts.preallocate, opts.hashing);
    let part = &paths.part;
    let mut resumed = 0;
    // Looked at, never followed: a symlink planted at the `.part` would
    // redirect a download's bytes into whatever it points to.
    let found = match std::fs::symlink_metadata(part) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(LockError::io("inspect", part, e)),
    };
    // Only a `.part` this crate marked is a leftover; anything else at that
    // name (a real file called so) is left alone.
    if let Some(meta) = &found
        && !paths
            .is_ours(meta)
            .map_err(|e| LockError::io("inspect", &paths.marker, e))?
    {
        return Err(LockError::invalid_target(
            part,
            "it exists and is not a leftover of this crate (no marker in the lock dir names it), so it is left alone; move it, or write the target under another name (if it is a leftover of a writer whose lock dir was since removed, remove it)",
        ));
    }
    if found.as_ref().is_some_and(|m| m.file_type().is_symlink()) && leftover == Leftover::Resume {
        return Err(LockError::invalid_target(
            part,
            "it is a symbolic link, and a download is never written through one; remove it",
        ));
    }
    if leftover == Leftover::Resume
        && let Some(meta) = &found
        && meta.is_file()
        && expect.len.is_none_or(|len| meta.len() <= len)
    {
        resumed = meta.len();
    }
    if resumed == 0 && found.is_some() {
        paths
            .remove()
            .map_err(|e| LockError::io("remove leftover", part, e))?;
    } else if resumed > 0 {
        tracing::info!(part = %part.display(), bytes = resumed, "resuming a leftover .part");
    }
    if let Some(len) = expect.len {
        let needed = len.saturating_sub(resumed);
        let dir = target.parent().unwrap_or(Path::new("/"));
        let available =
            fs4::available_space(dir).map_err(|e| LockError::io("check free space in", dir, e))?;
        if available < needed {
            return Err(LockError::InsufficientSpace {
                path: target.to_path_buf(),
                needed,
                available,
            });
        }
    }
    // O_NOFOLLOW, and a fresh `.part` is created exclusively (O_EXCL): a
    // symlink or file planted since the removal above is refused, not
    // written through.
    let mut options = std::fs::OpenOptions::new();
    options
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if resumed == 0 {
        options.create_new(true);
        paths
            .mark()
            .map_err(|e| LockError::io("mark .part in", &paths.marker, e))?;
    }
    let opened = options.open(part).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            LockError::invalid_target(target, "its directory does not exist")
        }
        _ => LockError::io("open", part, e),
    });
    let mut file = match opened {
        Ok(file) => file,
        Err(e) => {
            if resumed == 0 {
                paths.unmark();
            }
            return Err(e);
        }
    };
    if resumed == 0 {
        paths.record(&file);
    }
    let hasher = if hashing {
        let mut h = Sha256::new();
        if resumed > 0 {
            io::copy(&mut io::Read::take(&file, resumed), &mut HashWriter(&mut h))
                .map_err(|e| LockError::io("hash resumed bytes of", part, e))?;
        }
        Some(h)
    } else {
        None
    };
    io::Seek::seek(&mut file, io::SeekFrom::Start(resumed))
        .map_err(|e| LockError::io("seek", part, e))?;
    if prealloc && let Some(len) = expect.len {
        crate::sys::reserve(&file, len);
    }
    Ok(PartFile {
        file,
        resumed,
        hasher,
    })
}

fn matches_expectations(target: &Path, len: u64, expect: &Expect) -> Result<bool, LockError> {
    if expect.len.is_some_and(|want| want != len) {
        return Ok(false);
    }
    if let Some(want) = expect.sha256 {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(target).map_err(|e| LockError::io("open", target, e))?;
        io::copy(&mut f, &mut HashWriter(&mut h)).map_err(|e| LockError::io("hash", target, e))?;
        let got: [u8; 32] = h.finalize().into();
        return Ok(got == want);
    }
    Ok(true)
}

/// Feeds `io::copy` into a hasher: digest 0.11 deliberately implements no
/// `io::Write` for its hashers.
struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Removes a `.part` that belongs to nobody (called under the artifact
/// lock, when the target is present and leftovers are discarded): a
/// leftover of a writer killed mid-stream, which its marker tells from a
/// real file of that name. Best effort: a present target is no error
/// because its leftover could not be removed.
pub(super) fn remove_leftover_part(paths: &PartPaths) {
    let part = &paths.part;
    let found = match std::fs::symlink_metadata(part) {
        Ok(meta) => meta,
        // No `.part`: a marker left is stale.
        Err(_) => {
            paths.unmark();
            return;
        }
    };
    match paths.is_ours(&found) {
        Ok(true) if !found.is_dir() => match paths.remove() {
            Ok(()) => {
                tracing::info!(part = %part.display(), "removed a leftover .part of a present artifact")
            }
            Err(e) => {
                tracing::warn!(part = %part.display(), error = %e, "could not remove a leftover .part")
            }
        },
        // Not ours: left alone, and so is the marker (evidence).
        _ => {}
    }
}

pub(super) fn parse_sha256(hex_digest: &str) -> Result<[u8; 32], LockError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).map_err(|e| LockError::Config {
        key: "expected_sha256".into(),
        reason: format!("{hex_digest:?} is not 64 hex digits: {e}"),
    })?;
    Ok(out)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_round_trips_and_rejects_garbage() {
        let digest: [u8; 32] = Sha256::digest(b"abc").into();
        let text = hex(&digest);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256(&text).unwrap(), digest);
        assert!(parse_sha256("xyz").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }
}
