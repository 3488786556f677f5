//! The other side of [`super::probe()`]: a process that takes and lets go of
//! locks when told, so that the probe sees what the filesystem does between
//! processes (locks of one process do not exclude each other the same way).
//!
//! It reads one command per line and answers each with one line:
//!
//! | command | does | answers |
//! |---|---|---|
//! | `open PATH` | opens (creating) PATH, closing the file it had | `ok DEV INO` |
//! | `lock ex` / `lock sh` | a non-blocking `flock` of the open file | `ok`, `busy` |
//! | `unlock` | lets go of it, keeping the file open | `ok` |
//! | `unlink PATH` | removes PATH | `ok` |
//! | `nlink` | the open file's link count | `ok N` |
//! | `excl PATH` | creates PATH with `O_EXCL` | `ok`, `exists` |
//! | `soft PATH` | takes a soft lock at PATH (the crate's soft backend) | `ok`, `busy` |
//! | `soft-release` | releases it | `ok` |
//! | `quit` | exits | (nothing) |
//!
//! Any failure answers `err MESSAGE`. Paths are the rest of the line, as
//! bytes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Arc;

use crate::backend::os::scratch;
use crate::backend::soft::{SoftBackend, SoftSettings};
use crate::backend::{Backend as _, HeldLock, LockRequest, NetworkFsPolicy};
use crate::mode::LockMode;

/// Serves the probe's commands from `input`, answering on `output`, until
/// `quit` or the end of `input` (the `lock-doctor` program runs this for
/// its hidden `probe-child` subcommand; see [`super::ProbeCommand`]).
///
/// # Errors
///
/// The I/O error of reading a command or writing an answer (the probe went
/// away).
///
/// ```
/// use async_filelock::doctor::serve_probe_child;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("p.lock");
/// let script = format!("open {}\nlock ex\nnlink\nquit\n", path.display());
/// let mut answers = Vec::new();
/// serve_probe_child(script.as_bytes(), &mut answers)?;
/// let answers = String::from_utf8(answers).unwrap();
/// let lines: Vec<&str> = answers.lines().collect();
/// assert!(lines[0].starts_with("ok "));
/// assert_eq!(lines[1..], ["ok", "ok 1"]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn serve_probe_child(mut input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut state = ChildState::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let command = line.strip_suffix(b"\n").unwrap_or(&line);
        let (verb, arg) = match command.iter().position(|b| *b == b' ') {
            Some(i) => (&command[..i], &command[i + 1..]),
            None => (command, &b""[..]),
        };
        if verb == b"quit" {
            return Ok(());
        }
        let answer = state
            .run(verb, Path::new(OsStr::from_bytes(arg)))
            .unwrap_or_else(|e| format!("err {e}"));
        writeln!(output, "{answer}")?;
        output.flush()?;
    }
}

/// What the child holds.
#[derive(Default)]
struct ChildState {
    file: Option<File>,
    soft: Option<Box<dyn HeldLock>>,
}

impl ChildState {
    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("no file open"))
    }

    fn run(&mut self, verb: &[u8], path: &Path) -> io::Result<String> {
        Ok(match verb {
            b"open" => {
                // Closing the old file first lets go of its locks.
                self.file = None;
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(path)?;
                let meta = file.metadata()?;
                self.file = Some(file);
                format!("ok {} {}", meta.dev(), meta.ino())
            }
            b"lock" => {
                let mode = match path.as_os_str().as_bytes() {
                    b"sh" => LockMode::Shared,
                    _ => LockMode::Exclusive,
                };
                if scratch::try_lock_file(self.file()?, mode)? {
                    "ok".into()
                } else {
                    "busy".into()
                }
            }
            b"unlock" => {
                scratch::unlock_file(self.file()?)?;
                "ok".into()
            }
            b"unlink" => {
                std::fs::remove_file(path)?;
                "ok".into()
            }
            b"nlink" => format!("ok {}", self.file()?.metadata()?.nlink()),
            b"excl" => match File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
            {
                Ok(_) => "ok".into(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => "exists".into(),
                Err(e) => return Err(e),
            },
            b"soft" => {
                let req = LockRequest {
                    lock_path: Arc::from(path),
                    target: Arc::from(path),
                    mode: LockMode::Exclusive,
                    file_mode: 0o600,
                    dir_mode: 0o700,
                    create_dir_parents: false,
                    shared_group: None,
                    network_fs: NetworkFsPolicy::Allow,
                    removed_on_release: false,
                    just_released: false,
                };
                let backend = SoftBackend {
                    settings: SoftSettings::default(),
                };
                match backend.try_lock(&req).map_err(io::Error::other)? {
                    Some(held) => {
                        self.soft = Some(held);
                        "ok".into()
                    }
                    None => "busy".into(),
                }
            }
            b"soft-release" => {
                if let Some(held) = self.soft.take() {
                    held.release(true, None).map_err(io::Error::other)?;
                }
                "ok".into()
            }
            other => {
                return Err(io::Error::other(format!(
                    "unknown command {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        })
    }
}
