//! [`probe`]: whether locking really excludes on a filesystem, tried with
//! three processes ([`super::probe_child`]) in a private directory made for
//! it inside the one probed, and removed after.
//!
//! What is checked, and why each matters to this crate:
//!
//! 1. `flock` is granted at all (else: soft locks).
//! 2. An exclusive `flock` held by one process makes another's exclusive
//!    and shared attempts busy; shared holders coexist, and keep an
//!    exclusive attempt out.
//! 3. Removing a lock file while holding it, as a release that removes its
//!    lock file does: a process that has the old file open must see it
//!    unlinked (link count 0), because that is how the OS backend knows the
//!    lock it was then granted is on a removed file, and tries again on the
//!    new one. (An NFS client that renames a removed open file to
//!    `.nfsXXXX` instead leaves it linked.) Whether a new file at the path
//!    is a separate lock is reported too.
//! 4. `O_EXCL` creation excludes another process, and a soft lock (the
//!    crate's soft backend) held by one process is busy for another and
//!    free once released.
//!
//! One host can only probe itself: whether locks exclude across the
//! clients of a network filesystem is not seen from here.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::fs::{self, Filesystem};
use crate::error::LockError;

/// How long a probe child may take to answer one command.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The remedy where `flock` does not work or does not exclude.
const SOFT_REMEDY: &str = "use soft locks here (ASYNC_FILELOCK_BACKEND=soft, or auto to fall back where flock is refused), or a lock dir on a local disk (ASYNC_FILELOCK_DIR); for several hosts sharing the files, a PostgreSQL backend";

/// The remedy where removing a lock file is not seen by a process that has
/// it open.
const KEEP_FILES_REMEDY: &str = "keep lock files: LocksBuilder::remove_on_release(category, false) for every category (artifacts remove theirs by default), or use soft locks (ASYNC_FILELOCK_BACKEND=soft)";

/// The remedy where even `O_EXCL` does not exclude.
const NOTHING_REMEDY: &str = "no file lock works on this filesystem: put the lock dir on a local disk (ASYNC_FILELOCK_DIR), or use a PostgreSQL backend for several hosts";

/// The program that serves a probe's commands in a child process
/// ([`super::serve_probe_child`]): the `lock-doctor` program's hidden
/// `probe-child` subcommand, or any program that calls
/// [`super::serve_probe_child`] on its stdin and stdout.
///
/// ```
/// use async_filelock::doctor::ProbeCommand;
/// let command = ProbeCommand::new("/usr/local/bin/lock-doctor").arg("probe-child");
/// assert_eq!(command.program(), std::path::Path::new("/usr/local/bin/lock-doctor"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl ProbeCommand {
    /// Runs `program` (with no arguments yet).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ProbeCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

/// How one check of a probe came out.
///
/// ```
/// assert_eq!(async_filelock::doctor::Outcome::Fail.to_string(), "FAIL");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// As locking needs it.
    Pass,
    /// Not as locking needs it: see the remedy.
    Fail,
    /// What the filesystem does, for information.
    Note,
    /// Not tried, because an earlier check failed.
    Skipped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Note => "note",
            Outcome::Skipped => "skipped",
        })
    }
}

/// One check of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeCheck {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was seen.
    pub detail: String,
    /// What to do about a failure.
    pub remedy: Option<&'static str>,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The directory probed.
    pub dir: PathBuf,
    /// Its filesystem, or why `statfs` failed.
    pub filesystem: Result<Filesystem, String>,
    /// Each check, in order.
    pub checks: Vec<ProbeCheck>,
}

impl ProbeReport {
    /// Whether no check failed.
    ///
    /// ```no_run
    /// use async_filelock::doctor::{probe, ProbeCommand};
    /// let report = probe(
    ///     std::path::Path::new("/mnt/share"),
    ///     &ProbeCommand::new("lock-doctor").arg("probe-child"),
    /// )?;
    /// std::process::exit(if report.passed() { 0 } else { 1 });
    /// # Ok::<(), async_filelock::LockError>(())
    /// ```
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "probed:     {}", self.dir.display())?;
        match &self.filesystem {
            Ok(fs) => writeln!(f, "filesystem: {fs}")?,
            Err(e) => writeln!(f, "filesystem: unknown (statfs failed: {e})")?,
        }
        for check in &self.checks {
            writeln!(f, "{:<7} {}: {}", check.outcome, check.name, check.detail)?;
            if let Some(remedy) = check.remedy {
                writeln!(f, "        remedy: {remedy}")?;
            }
        }
        let verdict = if self.passed() {
            "locking excludes between processes of this host here"
        } else {
            "locking does NOT work as this crate needs here; see the remedies"
        };
        writeln!(f, "verdict:    {verdict}")
    }
}

/// Probes `dir` (see the module docs) with child processes started by
/// `child`, in a new private directory `dir/.lock-doctor-probe.<pid>`
/// that is removed after.
///
/// # Errors
///
/// [`LockError::Io`] naming the path when the probe directory cannot be
/// made, or naming the program when a child cannot be started or stops
/// answering (within 10 s per command). Checks that fail are not errors:
/// they are in the report ([`ProbeReport::passed`]).
///
/// ```standalone_crate
/// // A program that serves as its own probe child.
/// use async_filelock::doctor::{probe, serve_probe_child, ProbeCommand};
/// fn main() -> Result<(), async_filelock::LockError> {
///     if std::env::args().nth(1).as_deref() == Some("probe-child") {
///         serve_probe_child(std::io::stdin().lock(), std::io::stdout()).unwrap();
///         return Ok(());
///     }
///     let dir = tempfile::tempdir().unwrap();
///     let me = std::env::current_exe().unwrap();
///     let report = probe(dir.path(), &ProbeCommand::new(me).arg("probe-child"))?;
///     assert!(report.passed(), "{report}");
///     assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
///     Ok(())
/// }
/// ```
pub fn probe(dir: &Path, child: &ProbeCommand) -> Result<ProbeReport, LockError> {
    let probe_dir = make_probe_dir(dir)?;
    let result = run_checks(&probe_dir, child);
    let removed = std::fs::remove_dir_all(&probe_dir);
    let mut checks = result?;
    if let Err(e) = removed {
        checks.push(ProbeCheck {
            name: "clean up",
            outcome: Outcome::Note,
            detail: format!("could not remove {}: {e}", probe_dir.display()),
            remedy: None,
        });
    }
    checks.push(ProbeCheck {
        name: "other hosts",
        outcome: Outcome::Note,
        detail: "this probe runs on one host; whether locks exclude between the clients of a network filesystem cannot be seen from here".into(),
        remedy: None,
    });
    Ok(ProbeReport {
        dir: dir.to_path_buf(),
        filesystem: fs::filesystem_of(dir).map_err(|e| e.to_string()),
        checks,
    })
}

/// Makes the probe's own directory inside `dir`: private (0700), so that
/// the soft backend trusts it as a lock dir.
fn make_probe_dir(dir: &Path) -> Result<PathBuf, LockError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let mut last = None;
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            ".lock-doctor-probe.{}.{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(LockError::io("create probe dir", path, e)),
        }
    }
    Err(LockError::io(
        "create probe dir in",
        dir,
        last.unwrap_or_else(|| std::io::Error::other("every name was taken")),
    ))
}

/// A probe child with its pipes.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    program: PathBuf,
}

impl Helper {
    fn start(command: &ProbeCommand) -> Result<Helper, LockError> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LockError::io("start probe child", &command.program, e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, answers) = mpsc::channel();
        // A thread reads the answers, so that a child that stops answering
        // (a hung mount) is given up on after a while instead of forever.
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Helper {
            child,
            stdin,
            answers,
            program: command.program.clone(),
        })
    }

    /// Sends `verb` with `path` (if any) and waits for the answer.
    fn ask(&mut self, verb: &str, path: Option<&Path>) -> Result<String, LockError> {
        let mut line = verb.as_bytes().to_vec();
        if let Some(path) = path {
            line.push(b' ');
            line.extend_from_slice(path.as_os_str().as_bytes());
        }
        line.push(b'\n');
        let gone = |e: std::io::Error| LockError::io("talk to probe child", &self.program, e);
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| gone(std::io::Error::other("its stdin is closed")))?;
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(gone)?;
        self.answers.recv_timeout(ANSWER_WITHIN).map_err(|e| {
            LockError::io(
                "wait for probe child",
                &self.program,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer to {verb:?} within {ANSWER_WITHIN:?} ({e})"),
                ),
            )
        })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"quit\n");
        }
        // Given a moment to quit (and release), then made to.
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(
    name: &'static str,
    outcome: Outcome,
    detail: impl Into<String>,
    remedy: Option<&'static str>,
) -> ProbeCheck {
    ProbeCheck {
        name,
        outcome,
        detail: detail.into(),
        remedy,
    }
}

/// Passes when the answer is `expected`, fails otherwise.
fn expect(name: &'static str, answer: &str, expected: &str, remedy: &'static str) -> ProbeCheck {
    if answer == expected {
        check(name, Outcome::Pass, format!("answered {answer}"), None)
    } else {
        check(
            name,
            Outcome::Fail,
            format!("answered {answer}, not {expected}"),
            Some(remedy),
        )
    }
}

fn run_checks(dir: &Path, command: &ProbeCommand) -> Result<Vec<ProbeCheck>, LockError> {
    let mut checks = Vec::new();
    let mut a = Helper::start(command)?;
    let mut b = Helper::start(command)?;
    let mut c = Helper::start(command)?;
    flock_checks(dir, [&mut a, &mut b, &mut c], &mut checks)?;
    soft_checks(dir, [&mut a, &mut b], &mut checks)?;
    Ok(checks)
}

/// Checks 1 to 3 of the module docs.
fn flock_checks(
    dir: &Path,
    [a, b, c]: [&mut Helper; 3],
    checks: &mut Vec<ProbeCheck>,
) -> Result<(), LockError> {
    let path = dir.join("flock.lock");
    a.ask("open", Some(&path))?;
    b.ask("open", Some(&path))?;
    c.ask("open", Some(&path))?;
    let first = a.ask("lock", Some(Path::new("ex")))?;
    if first != "ok" {
        checks.push(check(
            "flock is granted",
            Outcome::Fail,
            format!("an exclusive flock on a new file answered {first}"),
            Some(SOFT_REMEDY),
        ));
        for name in [
            "exclusive excludes exclusive",
            "exclusive excludes shared",
            "shared holders coexist",
            "shared excludes exclusive",
            "removal is seen by a process with the file open",
        ] {
            checks.push(check(name, Outcome::Skipped, "flock does not work", None));
        }
        return Ok(());
    }
    checks.push(check(
        "flock is granted",
        Outcome::Pass,
        "an exclusive flock on a new file was granted",
        None,
    ));
    let answer = b.ask("lock", Some(Path::new("ex")))?;
    checks.push(expect(
        "exclusive excludes exclusive",
        &answer,
        "busy",
        SOFT_REMEDY,
    ));
    let answer = b.ask("lock", Some(Path::new("sh")))?;
    checks.push(expect(
        "exclusive excludes shared",
        &answer,
        "busy",
        SOFT_REMEDY,
    ));
    a.ask("unlock", None)?;
    b.ask("unlock", None)?;
    a.ask("lock", Some(Path::new("sh")))?;
    let answer = b.ask("lock", Some(Path::new("sh")))?;
    checks.push(expect("shared holders coexist", &answer, "ok", SOFT_REMEDY));
    let answer = c.ask("lock", Some(Path::new("ex")))?;
    checks.push(expect(
        "shared excludes exclusive",
        &answer,
        "busy",
        SOFT_REMEDY,
    ));
    for helper in [&mut *a, &mut *b, &mut *c] {
        helper.ask("unlock", None)?;
    }
    // Removal while held, as a release that removes its lock file does.
    // `b` keeps the old file open, as a waiter would.
    a.ask("lock", Some(Path::new("ex")))?;
    let unlinked = a.ask("unlink", Some(&path))?;
    let nlink = b.ask("nlink", None)?;
    checks.push(match nlink.as_str() {
        "ok 0" => check(
            "removal is seen by a process with the file open",
            Outcome::Pass,
            "the removed lock file's link count is 0 to another process, so a lock granted on it is known to be on a removed file",
            None,
        ),
        _ => check(
            "removal is seen by a process with the file open",
            Outcome::Fail,
            format!("after the holder removed it ({unlinked}), another process that has it open sees link count {nlink:?}, not 0: a lock granted on the removed file would be taken for the live one"),
            Some(KEEP_FILES_REMEDY),
        ),
    });
    // A new file at the path: a separate lock on local disks.
    c.ask("open", Some(&path))?;
    let answer = c.ask("lock", Some(Path::new("ex")))?;
    checks.push(match answer.as_str() {
        "ok" => check(
            "a new file at a removed lock's path",
            Outcome::Note,
            "is a separate lock, granted while the removed file is still locked (as on local disks): the crate checks a lock file's identity after locking, so holders meet on one file",
            None,
        ),
        "busy" => check(
            "a new file at a removed lock's path",
            Outcome::Note,
            "is busy while the removed file is locked: this filesystem locks by path",
            None,
        ),
        other => check(
            "a new file at a removed lock's path",
            Outcome::Note,
            format!("answered {other}"),
            None,
        ),
    });
    for helper in [a, b, c] {
        helper.ask("unlock", None)?;
    }
    Ok(())
}

/// Check 4 of the module docs.
fn soft_checks(
    dir: &Path,
    [a, b]: [&mut Helper; 2],
    checks: &mut Vec<ProbeCheck>,
) -> Result<(), LockError> {
    let excl = dir.join("excl.lock");
    let first = a.ask("excl", Some(&excl))?;
    if first != "ok" {
        checks.push(check(
            "O_EXCL creation excludes",
            Outcome::Fail,
            format!("creating a new file with O_EXCL answered {first}"),
            Some(NOTHING_REMEDY),
        ));
    } else {
        let answer = b.ask("excl", Some(&excl))?;
        checks.push(expect(
            "O_EXCL creation excludes",
            &answer,
            "exists",
            NOTHING_REMEDY,
        ));
    }
    let soft = dir.join("soft.lock");
    let first = a.ask("soft", Some(&soft))?;
    if first != "ok" {
        checks.push(check(
            "soft locks exclude",
            Outcome::Fail,
            format!("taking a soft lock answered {first}"),
            Some(NOTHING_REMEDY),
        ));
        return Ok(());
    }
    let answer = b.ask("soft", Some(&soft))?;
    checks.push(expect(
        "soft locks exclude",
        &answer,
        "busy",
        NOTHING_REMEDY,
    ));
    a.ask("soft-release", None)?;
    let answer = b.ask("soft", Some(&soft))?;
    checks.push(expect(
        "a released soft lock is free",
        &answer,
        "ok",
        NOTHING_REMEDY,
    ));
    b.ask("soft-release", None)?;
    Ok(())
}
