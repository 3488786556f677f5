//! Where a lock's fencing tokens are kept between holders: a trailer
//! `\0token <n>\n` in a small file read and rewritten while the lock is
//! held (the OS backend's lock file, after its target record; a soft
//! lock's `.token` file beside it, which outlives each holding). The NUL
//! cannot occur in a path, so a target record can never pass for a token.
//!
//! Writes are best effort and not fsynced: the next token is also at least
//! the wall clock in microseconds ([`FencingToken::after`]), which covers
//! a store lost with a removed lock file or a host crash. ARCHITECTURE.md,
//! "Fencing tokens", says what that guarantees.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::fencing::FencingToken;

/// The most of a token file read.
const MAX_READ: usize = 64 * 1024;

/// The token stored in `bytes`, after their last NUL (0 if none).
pub(crate) fn stored(bytes: &[u8]) -> u64 {
    let Some(nul) = bytes.iter().rposition(|b| *b == 0) else {
        return 0;
    };
    bytes[nul + 1..]
        .strip_prefix(b"token ")
        .and_then(|n| std::str::from_utf8(n).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The error of a lock whose token store says every token was given out
/// (written by hand: no clock reaches it).
pub(crate) fn exhausted(path: &Path) -> crate::error::LockError {
    crate::error::LockError::io(
        "issue a fencing token for",
        path,
        std::io::Error::other(
            "its token store holds the largest token there is; remove the lock's token store (the lock file, or its .token file) to start again",
        ),
    )
}

/// Reads `file` (its first [`MAX_READ`] bytes; a read error reads as
/// nothing, as a token store is best effort).
fn contents(file: &File) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while len < MAX_READ {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(len);
    buf
}

/// The token last issued through `file`, without issuing one (for shared
/// holders: no exclusive holder can issue one while they hold).
pub(crate) fn last(file: &File) -> FencingToken {
    FencingToken::new(stored(&contents(file)))
}

/// Issues the next token through `file`, which the caller holds the lock
/// of: reads the last, stores `head` followed by the new token's trailer,
/// and returns it; `None` if the store holds the largest token there is.
/// A failed store is logged: the token is still greater than every one
/// issued before it (see the module docs).
pub(crate) fn issue(file: &File, head: &[u8], path: &Path) -> Option<FencingToken> {
    let token = FencingToken::after(stored(&contents(file)))?;
    let mut bytes = Vec::with_capacity(head.len() + 32);
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(format!("\0token {token}\n").as_bytes());
    let written = file
        .write_all_at(&bytes, 0)
        .and_then(|()| file.set_len(bytes.len() as u64));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, %token, "could not store the fencing token; the next is kept larger by the clock alone");
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_trailer_counts_and_a_target_cannot_pass_for_a_token() {
        assert_eq!(stored(b"/x/target\n\0token 12\n"), 12);
        assert_eq!(stored(b"/x/a\ntoken 18446744073709551614\n\0token 9\n"), 9);
        assert_eq!(stored(b"/x/a\ntoken 18446744073709551614\n"), 0);
        assert_eq!(stored(b"/x/target\n"), 0);
        assert_eq!(stored(b"\0token nine\n"), 0);
    }

    #[test]
    fn issue_grows_and_keeps_the_head() {
        let file = tempfile::tempfile().unwrap();
        let a = issue(&file, b"/t\n", Path::new("x")).unwrap();
        let b = issue(&file, b"/t\n", Path::new("x")).unwrap();
        assert!(b > a);
        assert_eq!(last(&file), b);
        let text = contents(&file);
        assert!(text.starts_with(b"/t\n\0token "));
        file.write_all_at(b"/t\n\0token 18446744073709551615\n", 0)
            .unwrap();
        assert_eq!(
            issue(&file, b"/t\n", Path::new("x")),
            None,
            "never repeats the largest"
        );
    }
}
