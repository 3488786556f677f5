//! Law 9 as a table: every public entry point that takes a path is fed every
//! kind of bad path, and every case must
//!
//! * end in a typed [`LockError`] whose `path()` names the path and whose
//!   message shows it (or a recognisable part of it), or, where the input is
//!   legitimately usable, succeed with exactly the documented side effects;
//! * never panic: each case runs in a task of its own, and a panic (a
//!   `JoinError`) is a failing case;
//! * never hang: each case has 30 s, and running out is a failing case;
//! * never touch a file it does not own: each case gets a fresh fixture
//!   (victim files, another user's files, symlinks to victims), snapshotted
//!   before and after (kind, bytes, inode, mtime, owner, mode, link target);
//!   only the case's own target and its lock dirs may differ.
//!
//! Entry points: `Locks::lock`, `try_lock`, `acquire(..).shared()`,
//! `lock_many`, `lock_path`; the five free functions; `ArtifactWriter`'s
//! `builder(..).open()`, `create`, `from_guard`; `JsonlSink`'s
//! `builder(..).open()` and `open`; `JsonlReader::open`; `write_atomic`,
//! `update_json`, `load_json`, `save_if_revision` and their `_with` forms;
//! `Locks::builder().lock_dir(..).build()` then a lock.
//!
//! Bad paths: empty; relative (a control that must work) and relative into
//! a missing directory; a directory; a symlink to a victim; a dangling
//! symlink; a non-UTF-8 name; a name over `NAME_MAX` and a path over
//! `PATH_MAX`; a directory without permission; another user's file and
//! another user's lock dir; `..` escapes (relative, through missing
//! directories, after a symlinked directory).
//!
//! Root ignores permission bits, so as root the permission cases run in a
//! copy of this binary as `nobody` (see `support::run_as_nobody`), and the
//! other-user cases give files to uid 65534; as another user those are
//! skipped with a note (and the expected count says so).
//!
//! Run `cargo test --test bad_input_table -- --nocapture` to see the table.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use async_filelock::{
    Artifact, ArtifactWriter, Category, FsyncPolicy, JsonlReader, JsonlSink, LockError, LockGuard,
    Locks, Versioned,
};
use support::is_root;

const NOBODY: u32 = 65534;
/// A generous bound: no case waits for anything, so only a hang reaches it.
const CASE_LIMIT: Duration = Duration::from_secs(30);
/// Planted victims: no newline and not JSON, so that anything that reads
/// them as a log or a state and "repairs" them shows.
const VICTIM: &[u8] = b"precious bytes, no newline";
/// Another user's file: a state at revision 7, and one JSONL record.
const THEIRS: &[u8] = b"{\"revision\":7,\"data\":41}\n";
const ARTIFACT_BYTES: &[u8] = b"artifact bytes";
const ATOMIC_BYTES: &[u8] = b"{\"atomic\":true}";
const RECORD_LINE: &[u8] = b"{\"case\":\"bad input\"}\n";
/// The name over NAME_MAX (255 bytes on Linux).
const LONG_NAME_LEN: usize = 300;
/// Components of the path over PATH_MAX (4096): 17 of 250 bytes.
const LONG_COMPONENT_LEN: usize = 250;
/// How the nobody child finds where to write its rows.
const CHILD_OUT: &str = "ASYNC_FILELOCK_TEST_TABLE_OUT";

/// Every entry point fed a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ep {
    Lock,
    TryLock,
    AcquireShared,
    LockMany,
    LockPath,
    ArtifactLock,
    ManifestLock,
    TelemetryLock,
    SqliteLock,
    SummaryLock,
    ArtifactOpen,
    ArtifactCreate,
    ArtifactFromGuard,
    JsonlBuilderOpen,
    JsonlOpen,
    JsonlReaderOpen,
    WriteAtomic,
    WriteAtomicWith,
    UpdateJson,
    UpdateJsonWith,
    LoadJson,
    LoadJsonWith,
    SaveIfRevision,
    SaveIfRevisionWith,
    LockDirBuild,
}

/// What an entry point does with the path, for the expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Lock,
    LockPath,
    /// Checks for a present target first.
    ArtifactOpen,
    /// Writes whatever is there.
    ArtifactReplace,
    Jsonl,
    Reader,
    Replace,
    Update,
    Load,
    Save,
    LockDir,
}

impl Ep {
    const ALL: [Ep; 25] = [
        Ep::Lock,
        Ep::TryLock,
        Ep::AcquireShared,
        Ep::LockMany,
        Ep::LockPath,
        Ep::ArtifactLock,
        Ep::ManifestLock,
        Ep::TelemetryLock,
        Ep::SqliteLock,
        Ep::SummaryLock,
        Ep::ArtifactOpen,
        Ep::ArtifactCreate,
        Ep::ArtifactFromGuard,
        Ep::JsonlBuilderOpen,
        Ep::JsonlOpen,
        Ep::JsonlReaderOpen,
        Ep::WriteAtomic,
        Ep::WriteAtomicWith,
        Ep::UpdateJson,
        Ep::UpdateJsonWith,
        Ep::LoadJson,
        Ep::LoadJsonWith,
        Ep::SaveIfRevision,
        Ep::SaveIfRevisionWith,
        Ep::LockDirBuild,
    ];

    fn name(self) -> &'static str {
        match self {
            Ep::Lock => "Locks::lock",
            Ep::TryLock => "Locks::try_lock",
            Ep::AcquireShared => "Locks::acquire().shared()",
            Ep::LockMany => "Locks::lock_many",
            Ep::LockPath => "Locks::lock_path",
            Ep::ArtifactLock => "artifact_lock",
            Ep::ManifestLock => "manifest_lock",
            Ep::TelemetryLock => "telemetry_lock",
            Ep::SqliteLock => "sqlite_lock",
            Ep::SummaryLock => "summary_lock",
            Ep::ArtifactOpen => "ArtifactWriter::builder().open()",
            Ep::ArtifactCreate => "ArtifactWriter::create",
            Ep::ArtifactFromGuard => "ArtifactWriter::from_guard",
            Ep::JsonlBuilderOpen => "JsonlSink::builder().open()",
            Ep::JsonlOpen => "JsonlSink::open",
            Ep::JsonlReaderOpen => "JsonlReader::open",
            Ep::WriteAtomic => "write_atomic",
            Ep::WriteAtomicWith => "write_atomic_with",
            Ep::UpdateJson => "update_json",
            Ep::UpdateJsonWith => "update_json_with",
            Ep::LoadJson => "load_json",
            Ep::LoadJsonWith => "load_json_with",
            Ep::SaveIfRevision => "save_if_revision",
            Ep::SaveIfRevisionWith => "save_if_revision_with",
            Ep::LockDirBuild => "Locks::builder().lock_dir()",
        }
    }

    /// Uses the default handle, whose lock files go to `.locks` beside the
    /// target; the others use a handle with a fixed lock dir.
    fn global(self) -> bool {
        matches!(
            self,
            Ep::ArtifactLock
                | Ep::ManifestLock
                | Ep::TelemetryLock
                | Ep::SqliteLock
                | Ep::SummaryLock
                | Ep::ArtifactCreate
                | Ep::JsonlOpen
                | Ep::WriteAtomic
                | Ep::UpdateJson
                | Ep::LoadJson
                | Ep::SaveIfRevision
        )
    }

    fn kind(self) -> Kind {
        match self {
            Ep::Lock
            | Ep::TryLock
            | Ep::AcquireShared
            | Ep::LockMany
            | Ep::ArtifactLock
            | Ep::ManifestLock
            | Ep::TelemetryLock
            | Ep::SqliteLock
            | Ep::SummaryLock => Kind::Lock,
            Ep::LockPath => Kind::LockPath,
            Ep::ArtifactOpen => Kind::ArtifactOpen,
            Ep::ArtifactCreate | Ep::ArtifactFromGuard => Kind::ArtifactReplace,
            Ep::JsonlBuilderOpen | Ep::JsonlOpen => Kind::Jsonl,
            Ep::JsonlReaderOpen => Kind::Reader,
            Ep::WriteAtomic | Ep::WriteAtomicWith => Kind::Replace,
            Ep::UpdateJson | Ep::UpdateJsonWith => Kind::Update,
            Ep::LoadJson | Ep::LoadJsonWith => Kind::Load,
            Ep::SaveIfRevision | Ep::SaveIfRevisionWith => Kind::Save,
            Ep::LockDirBuild => Kind::LockDir,
        }
    }
}

/// Every bad path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum In {
    Empty,
    Relative,
    RelativeMissingDir,
    Directory,
    Symlink,
    DanglingSymlink,
    NonUtf8,
    LongName,
    LongPath,
    PermissionDenied,
    TheirFile,
    TheirLockDir,
    DotDotRelative,
    DotDotMissing,
    DotDotSymlinkedDir,
}

impl In {
    const ALL: [In; 15] = [
        In::Empty,
        In::Relative,
        In::RelativeMissingDir,
        In::Directory,
        In::Symlink,
        In::DanglingSymlink,
        In::NonUtf8,
        In::LongName,
        In::LongPath,
        In::PermissionDenied,
        In::TheirFile,
        In::TheirLockDir,
        In::DotDotRelative,
        In::DotDotMissing,
        In::DotDotSymlinkedDir,
    ];

    fn name(self) -> &'static str {
        match self {
            In::Empty => "empty",
            In::Relative => "relative (control)",
            In::RelativeMissingDir => "relative, missing dir",
            In::Directory => "directory",
            In::Symlink => "symlink to victim",
            In::DanglingSymlink => "dangling symlink",
            In::NonUtf8 => "non-UTF-8 name",
            In::LongName => "name > NAME_MAX",
            In::LongPath => "path > PATH_MAX",
            In::PermissionDenied => "dir mode 000",
            In::TheirFile => "other user's file",
            In::TheirLockDir => "other user's lock dir",
            In::DotDotRelative => "../ escape, relative",
            In::DotDotMissing => "../ via missing dirs",
            In::DotDotSymlinkedDir => "../ after symlinked dir",
        }
    }

    /// Only root can give files to another user.
    fn needs_root(self) -> bool {
        matches!(self, In::TheirFile | In::TheirLockDir)
    }
}

/// A fresh directory tree for one case, with victims planted in it.
///
/// ```text
/// root/victim                 VICTIM (work/link points here)
/// root/their-victim           VICTIM, nobody's (as root)
/// root/their-witness          hard link to work/their.json (as root)
/// root/their-locks/           nobody's, 0700 (as root)
/// root/elsewhere/inner/       (work/linkdir points here)
/// root/work/x.json            VICTIM: where work/linkdir/../x.json would
///                             land if `..` were taken lexically
/// root/work/{subdir,a/b}/
/// root/work/link -> root/victim
/// root/work/dangling -> root/nowhere
/// root/work/linkdir -> root/elsewhere/inner
/// root/work/their.json        THEIRS, nobody's (as root)
/// root/work/team/.locks/      nobody's, 0700 (as root)
/// root/work/locked/victim     VICTIM, in a dir made 000 for the case
/// ```
struct Fixture {
    _dir: tempfile::TempDir,
    /// Canonical, so that normalised paths compare equal.
    root: PathBuf,
    input: In,
    /// What the entry point is given.
    target: PathBuf,
    /// Where the crate must say it is (the guard's target) and write.
    normal: PathBuf,
    /// What `Locks::builder().lock_dir(..)` is given, and where it leads.
    lock_dir_input: PathBuf,
    lock_dir_normal: PathBuf,
    /// The fixed-lock-dir handle the non-default entry points use.
    locks: Locks,
    handle_dir: PathBuf,
    /// Another user's dirs, where nothing may appear.
    their_dirs: Vec<PathBuf>,
    /// The directory made 000 while the case runs.
    locked: Option<PathBuf>,
}

impl Fixture {
    fn new(input: In) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let work = root.join("work");
        for d in ["work/subdir", "work/a/b", "elsewhere/inner"] {
            std::fs::create_dir_all(root.join(d)).expect("fixture dir");
        }
        std::fs::write(root.join("victim"), VICTIM).expect("victim");
        std::fs::write(work.join("x.json"), VICTIM).expect("lexical victim");
        symlink(root.join("victim"), work.join("link")).expect("symlink");
        symlink(root.join("nowhere"), work.join("dangling")).expect("dangling symlink");
        symlink(root.join("elsewhere/inner"), work.join("linkdir")).expect("dir symlink");
        let mut their_dirs = Vec::new();
        if is_root() {
            std::fs::write(root.join("their-victim"), VICTIM).expect("their victim");
            chown(root.join("their-victim"), Some(NOBODY), Some(NOBODY)).expect("chown");
            std::fs::write(work.join("their.json"), THEIRS).expect("their file");
            chown(work.join("their.json"), Some(NOBODY), Some(NOBODY)).expect("chown");
            std::fs::hard_link(work.join("their.json"), root.join("their-witness"))
                .expect("witness");
            for d in [root.join("their-locks"), work.join("team/.locks")] {
                std::fs::create_dir_all(&d).expect("their lock dir");
                chmod(&d, 0o700);
                chown(&d, Some(NOBODY), Some(NOBODY)).expect("chown");
                their_dirs.push(d);
            }
        }
        let mut locked = None;
        let (target, normal) = match input {
            In::Empty => (PathBuf::new(), PathBuf::new()),
            In::Relative => {
                let normal = work.join("rel.json");
                (relative(&normal), normal)
            }
            In::RelativeMissingDir => {
                let normal = work.join("nodir/x.json");
                (relative(&normal), normal)
            }
            In::Directory => same(work.join("subdir")),
            In::Symlink => same(work.join("link")),
            In::DanglingSymlink => same(work.join("dangling")),
            In::NonUtf8 => same(work.join(OsStr::from_bytes(b"\xff\xfe.bin"))),
            In::LongName => same(work.join(long_name())),
            In::LongPath => {
                let mut p = work.clone();
                for _ in 0..17 {
                    p.push(long_component());
                }
                p.push("x.json");
                assert!(p.as_os_str().len() > 4096);
                same(p)
            }
            In::PermissionDenied => {
                let d = work.join("locked");
                std::fs::create_dir(&d).expect("locked dir");
                chmod(&d, 0o700);
                std::fs::write(d.join("victim"), VICTIM).expect("locked victim");
                locked = Some(d.clone());
                same(d.join("x.json"))
            }
            In::TheirFile => same(work.join("their.json")),
            In::TheirLockDir => same(work.join("team/x.json")),
            In::DotDotRelative => {
                let spelled = relative(&root).join("work/a/b/../../../escaped.json");
                (spelled, root.join("escaped.json"))
            }
            In::DotDotMissing => (
                work.join("nope1/nope2/../../../escaped.json"),
                root.join("escaped.json"),
            ),
            In::DotDotSymlinkedDir => (
                work.join("linkdir/../x.json"),
                root.join("elsewhere/x.json"),
            ),
        };
        let (lock_dir_input, lock_dir_normal) = match input {
            In::TheirLockDir => same(root.join("their-locks")),
            _ => (target.clone(), normal.clone()),
        };
        let handle_dir = match input {
            In::TheirLockDir => root.join("their-locks"),
            _ => root.join("locks"),
        };
        let locks = Locks::builder()
            .lock_dir(&handle_dir)
            .build()
            .expect("fixture handle");
        Fixture {
            _dir: dir,
            root,
            input,
            target,
            normal,
            lock_dir_input,
            lock_dir_normal,
            locks,
            handle_dir,
            their_dirs,
            locked,
        }
    }

    /// Takes the permission away for the case.
    fn arm(&self) {
        if let Some(d) = &self.locked {
            chmod(d, 0o000);
        }
    }

    /// Gives it back, to look inside.
    fn disarm(&self) {
        if let Some(d) = &self.locked {
            chmod(d, 0o700);
        }
    }

    /// Whether changes at `p` are the crate's own business: inside our lock
    /// dirs (a `.locks` that is not another user's, the handle's lock dir,
    /// the lock dir a `lock_dir` case asked for).
    fn volatile(&self, p: &Path, before: &Snapshot, extra: &[PathBuf]) -> bool {
        let ours = |d: &Path| !self.their_dirs.iter().any(|t| t == d);
        if p.ancestors()
            .any(|a| a.file_name() == Some(OsStr::new(".locks")) && ours(a))
        {
            return true;
        }
        std::iter::once(&self.handle_dir)
            .chain(extra)
            .filter(|d| ours(d))
            .any(|d| {
                // An existing dir keeps its own entry; one made for the
                // case is the crate's whole.
                p.starts_with(d) && (p != d.as_path() || !before.contains_key(d))
            })
    }

    /// `p` shown relative to the fixture.
    fn show(&self, text: &str) -> String {
        let mut s = text.replace(&relative(&self.root).display().to_string(), "<rel tmp>");
        s = s.replace(&self.root.display().to_string(), "<tmp>");
        s = s.replace(&long_name(), &format!("n{{{LONG_NAME_LEN}}}"));
        s = s.replace(&long_component(), &format!("d{{{LONG_COMPONENT_LEN}}}"));
        s
    }
}

fn same(p: PathBuf) -> (PathBuf, PathBuf) {
    (p.clone(), p)
}

fn long_name() -> String {
    "n".repeat(LONG_NAME_LEN)
}

fn long_component() -> String {
    "d".repeat(LONG_COMPONENT_LEN)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `abs` spelled relative to the current directory: `../` up to `/`, then
/// down again (`..` from the physical current directory, as the kernel
/// takes it).
fn relative(abs: &Path) -> PathBuf {
    let cwd = std::env::current_dir().expect("current dir");
    let ups = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut rel = PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    rel.push(abs.strip_prefix("/").expect("absolute"));
    rel
}

// ---------------------------------------------------------------------------
// Running an entry point.

/// What a case did, when it succeeded.
#[derive(Debug)]
enum Done {
    Locked { target: PathBuf, lock_path: PathBuf },
    LockPath(PathBuf),
    Busy,
    Committed(PathBuf),
    Present(PathBuf),
    Appended(PathBuf),
    Read(u64),
    Replaced,
    Updated(u64),
    Loaded(u64),
    Saved(u64),
    LockDirUsed(PathBuf),
}

async fn locked(guard: LockGuard) -> Result<Done, LockError> {
    let done = Done::Locked {
        target: guard.target().to_path_buf(),
        lock_path: guard.lock_path().to_path_buf(),
    };
    guard.release().await?;
    Ok(done)
}

async fn write_and_commit(mut w: ArtifactWriter) -> Result<Done, LockError> {
    w.copy_from(&mut &ARTIFACT_BYTES[..]).await?;
    Ok(Done::Committed(w.commit().await?.path))
}

async fn append_and_close(sink: JsonlSink) -> Result<Done, LockError> {
    sink.append(&serde_json::json!({"case": "bad input"}))
        .await?;
    sink.close().await?;
    Ok(Done::Appended(sink.path().to_path_buf()))
}

/// Feeds `t` to `ep`; `locks` is the fixture's fixed-lock-dir handle.
async fn run_ep(
    ep: Ep,
    t: PathBuf,
    locks: Locks,
    lock_dir: PathBuf,
    good: PathBuf,
) -> Result<Done, LockError> {
    use async_filelock as af;
    match ep {
        Ep::Lock => locked(locks.lock(Category::Manifest, &t).await?).await,
        Ep::TryLock => match locks.try_lock(Category::Manifest, &t).await? {
            Some(guard) => locked(guard).await,
            None => Ok(Done::Busy),
        },
        Ep::AcquireShared => {
            let guard = locks
                .acquire(Category::Sqlite, &t)
                .shared()
                .timeout(Duration::from_secs(5))
                .await?;
            locked(guard).await
        }
        Ep::LockMany => {
            let set = locks
                .lock_many([(Category::Summary, &t), (Category::Artifact, &t)])
                .await?;
            let first = &set.guards()[0];
            let done = Done::Locked {
                target: first.target().to_path_buf(),
                lock_path: first.lock_path().to_path_buf(),
            };
            set.release().await?;
            Ok(done)
        }
        Ep::LockPath => Ok(Done::LockPath(locks.lock_path(Category::Telemetry, &t)?)),
        Ep::ArtifactLock => locked(af::artifact_lock(&t).await?).await,
        Ep::ManifestLock => locked(af::manifest_lock(&t).await?).await,
        Ep::TelemetryLock => locked(af::telemetry_lock(&t).await?).await,
        Ep::SqliteLock => locked(af::sqlite_lock(&t).await?).await,
        Ep::SummaryLock => locked(af::summary_lock(&t).await?).await,
        Ep::ArtifactOpen => match ArtifactWriter::builder(&t).locks(locks).open().await? {
            Artifact::Write(w) => write_and_commit(w).await,
            Artifact::AlreadyPresent(p) => Ok(Done::Present(p.path)),
            Artifact::Busy => Ok(Done::Busy),
        },
        Ep::ArtifactCreate => write_and_commit(ArtifactWriter::create(&t).await?).await,
        Ep::ArtifactFromGuard => {
            let guard = locks.lock(Category::Artifact, &t).await?;
            write_and_commit(ArtifactWriter::from_guard(guard).await?).await
        }
        Ep::JsonlBuilderOpen => {
            let sink = JsonlSink::builder(&t)
                .locks(locks)
                .fsync(FsyncPolicy::Never)
                .open()
                .await?;
            append_and_close(sink).await
        }
        Ep::JsonlOpen => append_and_close(JsonlSink::open(&t).await?).await,
        Ep::JsonlReaderOpen => {
            let mut reader = JsonlReader::<serde_json::Value>::open(&t).await?;
            let mut n = 0;
            while let Some(record) = reader.next().await {
                record?;
                n += 1;
            }
            Ok(Done::Read(n))
        }
        Ep::WriteAtomic => {
            af::write_atomic(&t, ATOMIC_BYTES).await?;
            Ok(Done::Replaced)
        }
        Ep::WriteAtomicWith => {
            af::write_atomic_with(&locks, &t, ATOMIC_BYTES).await?;
            Ok(Done::Replaced)
        }
        Ep::UpdateJson => {
            let ((), revision) = af::update_json(&t, |n: &mut u64| *n += 1).await?;
            Ok(Done::Updated(revision))
        }
        Ep::UpdateJsonWith => {
            let ((), revision) = af::update_json_with(&locks, &t, |n: &mut u64| *n += 1).await?;
            Ok(Done::Updated(revision))
        }
        Ep::LoadJson => Ok(Done::Loaded(af::load_json::<u64>(&t).await?.revision)),
        Ep::LoadJsonWith => Ok(Done::Loaded(
            af::load_json_with::<u64>(&locks, &t).await?.revision,
        )),
        Ep::SaveIfRevision => Ok(Done::Saved(af::save_if_revision(&t, 0, "saved").await?)),
        Ep::SaveIfRevisionWith => Ok(Done::Saved(
            af::save_if_revision_with(&locks, &t, 0, "saved").await?,
        )),
        Ep::LockDirBuild => {
            let handle = Locks::builder().lock_dir(&lock_dir).build()?;
            let guard = handle.lock(Category::Manifest, &good).await?;
            let done = Done::LockDirUsed(guard.lock_path().to_path_buf());
            guard.release().await?;
            Ok(done)
        }
    }
}

// ---------------------------------------------------------------------------
// Expectations, from the docs (see each arm).

/// What a case must end in.
#[derive(Debug)]
enum Expect {
    Err {
        /// The `LockError` variant.
        variant: &'static str,
        /// Something of the path that the message and `path()` must show.
        names: String,
    },
    Ok(Want),
}

/// A success and its side effects.
#[derive(Debug)]
enum Want {
    /// The guard names `target` (normalised), its lock file is in `lock_dir`.
    Locked {
        target: PathBuf,
        lock_dir: PathBuf,
    },
    LockPathIn(PathBuf),
    /// A regular file with the artifact's bytes at `0`.
    Committed(PathBuf),
    /// Reported present, nothing written.
    Present(PathBuf),
    /// `before` plus our line, in the same file.
    Appended {
        landing: PathBuf,
        before: Vec<u8>,
    },
    Read(u64),
    Replaced(PathBuf),
    Updated {
        landing: PathBuf,
        revision: u64,
        data: u64,
    },
    Loaded(u64),
    Saved(PathBuf),
    /// The lock file is in this directory.
    LockDirUsed(PathBuf),
}

impl Want {
    /// The paths outside lock dirs this success may change.
    fn changes(&self, fx: &Fixture) -> Vec<PathBuf> {
        match self {
            Want::Committed(p) | Want::Replaced(p) | Want::Saved(p) => vec![p.clone()],
            Want::Updated { landing, .. } => vec![landing.clone()],
            // Appending to another user's file appends to its other name too.
            Want::Appended { landing, .. } if fx.input == In::TheirFile => {
                vec![landing.clone(), fx.root.join("their-witness")]
            }
            Want::Appended { landing, .. } => vec![landing.clone()],
            _ => Vec::new(),
        }
    }
}

fn err(variant: &'static str, names: impl Into<String>) -> Expect {
    Expect::Err {
        variant,
        names: names.into(),
    }
}

/// What `ep` must do with the fixture's input.
fn expect(ep: Ep, fx: &Fixture) -> Expect {
    let kind = ep.kind();
    let global = ep.global();
    match fx.input {
        // `Locks::lock`: "InvalidTarget … for bad paths"; an empty lock dir
        // is a configuration value (`path()`: "None only for configuration
        // errors").
        In::Empty => match kind {
            Kind::LockDir => err("Config", "empty"),
            _ => err("InvalidTarget", "empty"),
        },
        // A directory cannot be locked (law 9); the reader opens it and
        // fails to read it; as a lock dir it is what a lock dir is.
        In::Directory => match kind {
            Kind::Reader => err("Io", "work/subdir"),
            Kind::LockDir => usable(kind, global, fx),
            _ => err("InvalidTarget", "work/subdir"),
        },
        // The OS refuses the name: an I/O error naming it.
        In::LongName => err("Io", long_name()),
        In::LongPath => err("Io", long_component()),
        In::PermissionDenied => err("Io", "work/locked"),
        // A target in a directory that does not exist: a fixed lock dir
        // locks it (the target need not exist); a `.locks` beside it cannot
        // be made ("its directory does not exist; create it first"), nor
        // can a file be written there; reading a missing file is reading
        // nothing, but listing a missing dir fails.
        In::RelativeMissingDir => match kind {
            Kind::Lock | Kind::Load if global => err("InvalidTarget", "nodir/x.json"),
            Kind::Lock | Kind::LockPath | Kind::Load | Kind::LockDir => usable(kind, global, fx),
            Kind::Reader => err("Io", "nodir"),
            Kind::Jsonl if !global => err("Io", "nodir/x.json"),
            _ => err("InvalidTarget", "nodir/x.json"),
        },
        // Crate docs ("Lock files, not data files"): a symlink is locked as
        // the link; writers that rename may read through it but replace the
        // link itself, never writing the victim (so an artifact found
        // present is only reported, and the victim read as a state is not
        // JSON state); a JSONL sink refuses one. As a lock dir it resolves
        // to the victim, a file.
        In::Symlink => match kind {
            Kind::ArtifactOpen => Expect::Ok(Want::Present(fx.normal.clone())),
            Kind::Jsonl => err("InvalidTarget", "work/link"),
            Kind::Update | Kind::Load | Kind::Save => err("Json", "work/link"),
            Kind::LockDir => err("LockDir", "work/link"),
            _ => usable(kind, global, fx),
        },
        // As a symlink; there is nothing to read through it, and a lock dir
        // cannot be made where it points.
        In::DanglingSymlink => match kind {
            Kind::Jsonl => err("InvalidTarget", "work/dangling"),
            Kind::LockDir => err("LockDir", "work/dangling"),
            _ => usable(kind, global, fx),
        },
        // Another user's file in a directory we own: its lock is ours to
        // take; writers do what they are asked (replace it by rename, which
        // leaves their inode untouched; append to it where the OS lets
        // us); a save expecting a new file finds revision 7.
        In::TheirFile => match kind {
            Kind::ArtifactOpen => Expect::Ok(Want::Present(fx.normal.clone())),
            Kind::Save => err("Conflict", "work/their.json"),
            Kind::LockDir => err("LockDir", "work/their.json"),
            _ => usable(kind, global, fx),
        },
        // Law 10: another user's lock dir is refused, whoever asks; the
        // lock path is only computed, and the reader takes no lock.
        In::TheirLockDir => match kind {
            Kind::LockPath | Kind::Reader => usable(kind, global, fx),
            Kind::LockDir => err("Untrusted", "their-locks"),
            _ if global => err("Untrusted", "work/team/.locks"),
            _ => err("Untrusted", "their-locks"),
        },
        // The lock layer normalises `..` (lexically below the longest
        // existing prefix); the reader opens the path as the kernel does,
        // and the kernel cannot walk through missing dirs.
        In::DotDotMissing => match kind {
            Kind::Reader => err("Io", "nope1"),
            _ => usable(kind, global, fx),
        },
        In::Relative | In::NonUtf8 | In::DotDotRelative | In::DotDotSymlinkedDir => {
            usable(kind, global, fx)
        }
    }
}

/// The success of `kind` on a usable input: it lands at the normalised
/// path, its lock file where the handle puts it.
fn usable(kind: Kind, global: bool, fx: &Fixture) -> Expect {
    let normal = fx.normal.clone();
    let lock_dir = if global {
        normal.parent().expect("parent").join(".locks")
    } else {
        fx.handle_dir.clone()
    };
    let theirs = fx.input == In::TheirFile;
    let (revision, data) = if theirs { (7, 41) } else { (0, 0) };
    Expect::Ok(match kind {
        Kind::Lock => Want::Locked {
            target: normal,
            lock_dir,
        },
        Kind::LockPath => Want::LockPathIn(fx.handle_dir.clone()),
        Kind::ArtifactOpen | Kind::ArtifactReplace => Want::Committed(normal),
        Kind::Jsonl => Want::Appended {
            landing: normal,
            before: if theirs { THEIRS.to_vec() } else { Vec::new() },
        },
        Kind::Reader => Want::Read(u64::from(theirs)),
        Kind::Replace => Want::Replaced(normal),
        Kind::Update => Want::Updated {
            landing: normal,
            revision: revision + 1,
            data: data + 1,
        },
        Kind::Load => Want::Loaded(revision),
        Kind::Save => Want::Saved(normal),
        Kind::LockDir => Want::LockDirUsed(fx.lock_dir_normal.clone()),
    })
}

// ---------------------------------------------------------------------------
// Checking.

fn variant(e: &LockError) -> &'static str {
    match e {
        LockError::Timeout { .. } => "Timeout",
        LockError::Io { .. } => "Io",
        LockError::InvalidTarget { .. } => "InvalidTarget",
        LockError::LockDir { .. } => "LockDir",
        LockError::UnsafeLockFile { .. } => "UnsafeLockFile",
        LockError::Untrusted { .. } => "Untrusted",
        LockError::WouldDeadlock { .. } => "WouldDeadlock",
        LockError::OrderViolation { .. } => "OrderViolation",
        LockError::Conflict { .. } => "Conflict",
        LockError::Json { .. } => "Json",
        LockError::BadRecord { .. } => "BadRecord",
        LockError::Verification { .. } => "Verification",
        LockError::InsufficientSpace { .. } => "InsufficientSpace",
        LockError::Source { .. } => "Source",
        LockError::Config { .. } => "Config",
        _ => "another variant",
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks the outcome against the expectation (not the side effects).
fn check_outcome(
    expected: &Expect,
    got: &Result<Done, LockError>,
    fx: &Fixture,
) -> Result<(), String> {
    match (expected, got) {
        (
            Expect::Err {
                variant: want,
                names,
            },
            Err(e),
        ) => {
            let text = e.to_string();
            if variant(e) != *want {
                return Err(format!("expected {want}, got {}", variant(e)));
            }
            if !text.contains(names.as_str()) {
                return Err(format!("the message does not show {names:?}"));
            }
            match (e.path(), fx.input) {
                (None, _) if *want == "Config" => Ok(()),
                (Some(p), In::Empty) if p.as_os_str().is_empty() => Ok(()),
                (Some(p), _) if contains(p.as_os_str().as_bytes(), names.as_bytes()) => Ok(()),
                (p, _) => Err(format!("path() is {p:?}, which does not name {names:?}")),
            }
        }
        (Expect::Err { variant, .. }, Ok(done)) => {
            Err(format!("expected {variant}, but it succeeded: {done:?}"))
        }
        (Expect::Ok(want), Err(e)) => Err(format!("expected {want:?}, got {}: {e}", variant(e))),
        (Expect::Ok(want), Ok(done)) => check_success(want, done),
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display())),
        Ok(m) => Err(format!(
            "{} is not a regular file ({:?})",
            p.display(),
            m.file_type()
        )),
        Err(e) => Err(format!("{} is missing: {e}", p.display())),
    }
}

fn check_success(want: &Want, done: &Done) -> Result<(), String> {
    let wrong = || Err(format!("expected {want:?}, got {done:?}"));
    match (want, done) {
        (
            Want::Locked { target, lock_dir },
            Done::Locked {
                target: t,
                lock_path,
            },
        ) => {
            if t != target || lock_path.parent() != Some(lock_dir.as_path()) {
                return wrong();
            }
        }
        (Want::LockPathIn(dir), Done::LockPath(p))
        | (Want::LockDirUsed(dir), Done::LockDirUsed(p)) => {
            if p.parent() != Some(dir.as_path()) {
                return wrong();
            }
        }
        (Want::Committed(landing), Done::Committed(p)) => {
            if p != landing || read(landing)? != ARTIFACT_BYTES {
                return wrong();
            }
        }
        (Want::Present(landing), Done::Present(p)) => {
            if p != landing {
                return wrong();
            }
        }
        (Want::Appended { landing, before }, Done::Appended(p)) => {
            if p != landing || read(landing)? != [before.as_slice(), RECORD_LINE].concat() {
                return wrong();
            }
        }
        (Want::Read(n), Done::Read(m)) => {
            if n != m {
                return wrong();
            }
        }
        (Want::Replaced(landing), Done::Replaced) => {
            if read(landing)? != ATOMIC_BYTES {
                return wrong();
            }
        }
        (
            Want::Updated {
                landing,
                revision,
                data,
            },
            Done::Updated(r),
        ) => {
            let state: Versioned<u64> = serde_json::from_slice(&read(landing)?)
                .map_err(|e| format!("state after update: {e}"))?;
            if r != revision || state.revision != *revision || state.data != *data {
                return wrong();
            }
        }
        (Want::Loaded(n), Done::Loaded(m)) => {
            if n != m {
                return wrong();
            }
        }
        (Want::Saved(landing), Done::Saved(r)) => {
            let state: Versioned<String> = serde_json::from_slice(&read(landing)?)
                .map_err(|e| format!("state after save: {e}"))?;
            if *r != 1 || state.revision != 1 || state.data != "saved" {
                return wrong();
            }
        }
        _ => return wrong(),
    }
    Ok(())
}

/// What is at a path, as far as "touched" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: SeenKind,
    uid: u32,
    gid: u32,
    mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SeenKind {
    File {
        bytes: Vec<u8>,
        ino: u64,
        mtime: (i64, i64),
    },
    /// A directory's own mtime moves whenever an entry comes or goes
    /// (lock dirs, temp files): its entries are compared instead.
    Dir,
    Link(PathBuf),
    Other,
}

type Snapshot = BTreeMap<PathBuf, Seen>;

/// Everything under `root`, never following a symlink.
fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            SeenKind::Dir
        } else if ft.is_symlink() {
            SeenKind::Link(std::fs::read_link(&p).unwrap_or_default())
        } else if ft.is_file() {
            SeenKind::File {
                bytes: std::fs::read(&p).unwrap_or_default(),
                ino: meta.ino(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            }
        } else {
            SeenKind::Other
        };
        out.insert(
            p,
            Seen {
                kind,
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.mode(),
            },
        );
    }
    out
}

fn summary(seen: Option<&Seen>) -> String {
    match seen {
        None => "absent".into(),
        Some(s) => match &s.kind {
            SeenKind::File { bytes, ino, .. } => format!(
                "file ino {ino} uid {} {:?}",
                s.uid,
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            ),
            SeenKind::Dir => format!("dir uid {} mode {:o}", s.uid, s.mode),
            SeenKind::Link(to) => format!("symlink to {}", to.display()),
            SeenKind::Other => "special file".into(),
        },
    }
}

/// Everything outside the crate's lock dirs and `allowed` is as it was.
fn untouched(
    fx: &Fixture,
    before: &Snapshot,
    after: &Snapshot,
    allowed: &[PathBuf],
    volatile: &[PathBuf],
) -> Result<(), String> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let touched: Vec<String> = paths
        .into_iter()
        .filter(|p| !allowed.contains(p) && !fx.volatile(p, before, volatile))
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| {
            format!(
                "touched {}: {} -> {}",
                p.display(),
                summary(before.get(p)),
                summary(after.get(p))
            )
        })
        .collect();
    if touched.is_empty() {
        Ok(())
    } else {
        Err(touched.join("; "))
    }
}

/// For a `lock_dir` case that may succeed: the highest directory it may
/// create (or the lock dir itself, if it exists).
fn lock_dir_scope(dir: &Path) -> PathBuf {
    let mut scope = dir.to_path_buf();
    while let Some(parent) = scope.parent() {
        if parent.exists() {
            break;
        }
        scope = parent.to_path_buf();
    }
    scope
}

// ---------------------------------------------------------------------------
// The table.

/// One case's line.
struct Row {
    ep: Ep,
    input: In,
    outcome: String,
    failure: Option<String>,
}

fn describe(got: &Result<Done, LockError>) -> String {
    match got {
        Ok(done) => format!("Ok {done:?}"),
        Err(e) => format!("Err({}) {e}", variant(e)),
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into())
}

fn run_case(rt: &tokio::runtime::Runtime, ep: Ep, input: In) -> Row {
    let fx = Fixture::new(input);
    let expected = expect(ep, &fx);
    let volatile = match (&expected, ep.kind()) {
        (Expect::Ok(_), Kind::LockDir) => vec![lock_dir_scope(&fx.lock_dir_normal)],
        _ => Vec::new(),
    };
    let before = snapshot(&fx.root);
    fx.arm();
    let case = run_ep(
        ep,
        fx.target.clone(),
        fx.locks.clone(),
        fx.lock_dir_input.clone(),
        fx.root.join("good.json"),
    );
    let mut task = rt.spawn(case);
    let ran = rt.block_on(async { tokio::time::timeout(CASE_LIMIT, &mut task).await });
    fx.disarm();
    let (outcome, mut failure) = match ran {
        Err(_) => {
            task.abort();
            (
                "hung".to_owned(),
                Some(format!("no answer in {CASE_LIMIT:?}")),
            )
        }
        Ok(Err(join)) if join.is_panic() => {
            let text = panic_text(join.into_panic());
            (format!("panic: {text}"), Some(format!("panicked: {text}")))
        }
        Ok(Err(join)) => (format!("{join}"), Some(format!("task failed: {join}"))),
        Ok(Ok(got)) => (describe(&got), check_outcome(&expected, &got, &fx).err()),
    };
    // A hung case may still be writing: its snapshot would say little.
    if outcome != "hung" {
        let after = snapshot(&fx.root);
        let allowed = match &expected {
            Expect::Ok(want) => want.changes(&fx),
            Expect::Err { .. } => Vec::new(),
        };
        if let Err(touched) = untouched(&fx, &before, &after, &allowed, &volatile) {
            failure = Some(match failure {
                Some(f) => format!("{f}; {touched}"),
                None => touched,
            });
        }
    }
    Row {
        ep,
        input,
        outcome: fx.show(&outcome),
        failure: failure.map(|f| fx.show(&f)),
    }
}

fn run_rows(inputs: &[In]) -> Vec<Row> {
    let rt = support::runtime();
    let mut rows = Vec::new();
    for &input in inputs {
        for ep in Ep::ALL {
            rows.push(run_case(&rt, ep, input));
        }
    }
    rows
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

/// The permission cases as `nobody` (root ignores permission bits), their
/// rows read back from the file the child wrote.
fn rows_as_nobody() -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("rows.tsv");
    support::run_as_nobody(dir.path(), "permission_rows_child", &[(CHILD_OUT, &out)]);
    let text = std::fs::read_to_string(&out).expect("the child's rows");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 4, "a row of the child: {line:?}");
            Row {
                ep: Ep::ALL[f[0].parse::<usize>().expect("ep index")],
                input: In::ALL[f[1].parse::<usize>().expect("input index")],
                outcome: f[2].to_owned(),
                failure: (!f[3].is_empty()).then(|| f[3].to_owned()),
            }
        })
        .collect()
}

/// Runs the permission rows when started by [`rows_as_nobody`] as `nobody`;
/// a no-op otherwise.
#[test]
fn permission_rows_child() {
    let Some(out) = std::env::var_os(CHILD_OUT) else {
        return;
    };
    assert!(!is_root(), "the permission rows need a user without root");
    let mut text = String::new();
    for row in run_rows(&[In::PermissionDenied]) {
        let ep = Ep::ALL.iter().position(|e| *e == row.ep).expect("ep");
        let input = In::ALL.iter().position(|i| *i == row.input).expect("input");
        writeln!(
            text,
            "{ep}\t{input}\t{}\t{}",
            one_line(&row.outcome),
            one_line(row.failure.as_deref().unwrap_or(""))
        )
        .expect("format");
    }
    std::fs::write(out, text).expect("write rows");
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[test]
fn law9_every_entry_point_meets_every_bad_path_with_a_typed_error() {
    assert!(
        std::env::var_os(async_filelock::ENV_DIR).is_none(),
        "unset {}: the expectations put the default handle's lock files beside each target",
        async_filelock::ENV_DIR
    );
    let started = Instant::now();
    let mut notes = Vec::new();
    let mut here: Vec<In> = In::ALL.to_vec();
    if !is_root() {
        here.retain(|i| !i.needs_root());
        notes.push("other-user cases skipped: only root can give files to another user");
    }
    let nobody = is_root();
    if nobody {
        here.retain(|i| *i != In::PermissionDenied);
        notes.push("permission cases ran as nobody: root ignores permission bits");
    }
    let mut rows = run_rows(&here);
    if nobody {
        rows.extend(rows_as_nobody());
    }
    rows.sort_by_key(|r| (r.input, r.ep));

    let failing: Vec<&Row> = rows.iter().filter(|r| r.failure.is_some()).collect();
    println!(
        "{} bad-input cases ({} entry points x {} inputs), {} failing, in {:.1?}:",
        rows.len(),
        Ep::ALL.len(),
        rows.len() / Ep::ALL.len(),
        failing.len(),
        started.elapsed()
    );
    for r in &rows {
        let verdict = match &r.failure {
            Some(f) => format!("  FAIL: {f}"),
            None => String::new(),
        };
        println!(
            "{:<34} {:<24} {}{}",
            r.ep.name(),
            r.input.name(),
            clip(&r.outcome, 160),
            verdict
        );
    }
    for note in &notes {
        println!("note: {note}");
    }

    // The table may not shrink silently: 25 entry points x 15 inputs, less
    // the 2 other-user inputs without root.
    let expected_cases = if is_root() { 375 } else { 325 };
    assert_eq!(rows.len(), expected_cases, "cases run");
    assert!(
        failing.is_empty(),
        "{} failing cases:\n{}",
        failing.len(),
        failing
            .iter()
            .map(|r| format!(
                "{} / {}: {}",
                r.ep.name(),
                r.input.name(),
                r.failure.as_deref().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
