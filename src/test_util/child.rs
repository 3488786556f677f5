//! [`ChildHolder`]: a lock held by another process (this same test
//! program, run again), until the test releases it or kills the process.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::hook::SAYS;
use super::spec::{HOLD_VAR, HoldSpec};
use crate::category::Category;
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::lock::Locks;

/// How long a child may take to start and run the hook, beyond the lock's
/// own timeout: a slow machine, not a hang.
const STARTUP: Duration = Duration::from_secs(60);

/// The name of the test [`super::child_hook`] adds: the child runs the
/// test program with it as libtest's filter.
const HOOK_TEST: &str = "async_filelock_test_util_child";

/// A lock held by a child process: the running test program started again,
/// taking the lock through this crate with the settings of the [`Locks`]
/// handle given (lock dir, backend, permissions, the category's timeout).
/// The lock stays held until [`ChildHolder::release`], or
/// [`ChildHolder::kill`] (a holder that crashes); dropping the holder kills
/// the child too.
///
/// The test program must run this crate's hook (see [`super`]):
/// `async_filelock::test_util::child_hook!();` in a libtest test file, or
/// [`super::child_main`] first in a `main` of your own, as here.
///
/// ```rust,standalone_crate
/// use async_filelock::Category;
/// use async_filelock::test_util::{ChildHolder, TempLocks};
///
/// fn main() -> Result<(), async_filelock::LockError> {
///     async_filelock::test_util::child_main(); // the child stops here
///     tokio::runtime::Builder::new_current_thread()
///         .enable_all()
///         .build()
///         .expect("runtime")
///         .block_on(test())
/// }
///
/// async fn test() -> Result<(), async_filelock::LockError> {
///     let locks = TempLocks::new()?;
///     let db = locks.path("state.db");
///     let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await?;
///     assert_ne!(holder.pid(), std::process::id());
///     assert!(locks.try_lock(Category::Sqlite, &db).await?.is_none());
///     let theirs = holder.token().expect("an exclusive holder has a token");
///     holder.release().await?;
///     let mine = locks.lock(Category::Sqlite, &db).await?;
///     assert!(mine.token()? > theirs);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct ChildHolder {
    /// `None` once it has been waited for (or is being waited for on the
    /// blocking pool).
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    /// Lent to the blocking pool while a line is awaited.
    stdout: Option<BufReader<ChildStdout>>,
    target: PathBuf,
    token: Option<FencingToken>,
}

impl ChildHolder {
    /// Starts a child that takes the exclusive lock on `target` in
    /// `category` as `locks` would, and returns once it holds it.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] naming the target when the child cannot be started,
    /// does not get the lock (its error is in the message: a timeout names
    /// the holder), or exits without saying anything: the test program does
    /// not run the hook, and the message says which line to add.
    /// [`LockError::Config`] when called in a holder child itself (the hook
    /// did not run there) or for a target that is not UTF-8.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future kills the child, which lets go of
    /// whatever it took.
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use async_filelock::Category;
    /// # use async_filelock::test_util::{ChildHolder, TempLocks};
    /// # let locks = TempLocks::new().unwrap();
    /// # let db = locks.path("state.db");
    /// let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await.unwrap();
    /// assert!(locks.try_lock(Category::Sqlite, &db).await.unwrap().is_none());
    /// # }) }
    /// ```
    pub async fn hold(
        locks: &Locks,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<ChildHolder, LockError> {
        ChildHolder::start(locks, category, target.as_ref(), false).await
    }

    /// As [`ChildHolder::hold`], for a shared lock (a soft lock is always
    /// exclusive).
    ///
    /// # Errors
    ///
    /// As [`ChildHolder::hold`].
    ///
    /// # Cancel safety
    ///
    /// As [`ChildHolder::hold`].
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use async_filelock::Category;
    /// # use async_filelock::test_util::{ChildHolder, TempLocks};
    /// # let locks = TempLocks::new().unwrap();
    /// # let db = locks.path("state.db");
    /// let holder = ChildHolder::hold_shared(&locks, Category::Sqlite, &db).await.unwrap();
    /// assert!(locks.try_lock_shared(Category::Sqlite, &db).await.unwrap().is_some());
    /// assert!(locks.try_lock(Category::Sqlite, &db).await.unwrap().is_none());
    /// # }) }
    /// ```
    pub async fn hold_shared(
        locks: &Locks,
        category: Category,
        target: impl AsRef<Path>,
    ) -> Result<ChildHolder, LockError> {
        ChildHolder::start(locks, category, target.as_ref(), true).await
    }

    async fn start(
        locks: &Locks,
        category: Category,
        target: &Path,
        shared: bool,
    ) -> Result<ChildHolder, LockError> {
        if std::env::var_os(HOLD_VAR).is_some() {
            return Err(LockError::Config {
                key: HOLD_VAR.to_owned(),
                reason: "this process is a lock holder started by ChildHolder, and did not run \
                         the hook: add `async_filelock::test_util::child_hook!();` to the test \
                         file, or call `async_filelock::test_util::child_main()` first in main"
                    .to_owned(),
            });
        }
        let spec = HoldSpec::new(locks, category, target.to_path_buf(), shared);
        let limit = spec
            .timeout_ms
            .map_or(Duration::MAX, Duration::from_millis)
            .saturating_add(STARTUP);
        let exe = std::env::current_exe()
            .map_err(|e| LockError::io("find the running test program for", target, e))?;
        let mut child = Command::new(&exe)
            // A filter, not `--exact`: the hook may sit in a module
            // (`tests/common/mod.rs`), which prefixes the test's name.
            .args([HOOK_TEST, "--nocapture", "--test-threads=1", "-q"])
            .env(HOLD_VAR, spec.to_json()?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LockError::io("start a lock holder for", target, e))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let mut holder = ChildHolder {
            pid: child.id(),
            child: Some(child),
            stdin,
            stdout: stdout.map(BufReader::new),
            target: target.to_path_buf(),
            token: None,
        };
        let said = match tokio::time::timeout(limit, holder.next_line()).await {
            Ok(said) => said?,
            Err(_) => Some(format!("error nothing said within {limit:?}")),
        };
        match said
            .as_deref()
            .map(|s| s.split_once(' ').unwrap_or((s, "")))
        {
            Some(("held", token)) => {
                holder.token = token.parse().ok().map(FencingToken::new);
                Ok(holder)
            }
            Some(("error", why)) => Err(holder.failed(why)),
            _ => Err(holder.failed(&format!(
                "the child ({}) exited without holding the lock: does this test program run \
                 the hook? Add `async_filelock::test_util::child_hook!();` at the top level of \
                 the test file, or call `async_filelock::test_util::child_main()` first in main",
                exe.display()
            ))),
        }
    }

    /// The child's pid: the holder a timeout names.
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use async_filelock::{Category, LockError};
    /// use async_filelock::test_util::{ChildHolder, TempLocks};
    /// use std::time::Duration;
    /// let locks = TempLocks::new().unwrap();
    /// let db = locks.path("state.db");
    /// let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await.unwrap();
    /// let err = locks.acquire(Category::Sqlite, &db).timeout(Duration::from_millis(50)).await.unwrap_err();
    /// if let LockError::Timeout { holder: Some(who), .. } = &err {
    ///     assert_eq!(who.pid(), Some(holder.pid()), "{err}");
    /// }
    /// # }) }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The fencing token of the child's holding (for a shared lock, the last
    /// exclusive holder's), where one could be had.
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use async_filelock::Category;
    /// # use async_filelock::test_util::{ChildHolder, TempLocks};
    /// # let locks = TempLocks::new().unwrap();
    /// # let db = locks.path("state.db");
    /// let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await.unwrap();
    /// let theirs = holder.token().unwrap();
    /// holder.release().await.unwrap();
    /// assert!(locks.lock(Category::Sqlite, &db).await.unwrap().token().unwrap() > theirs);
    /// # }) }
    /// ```
    pub fn token(&self) -> Option<FencingToken> {
        self.token
    }

    /// Tells the child to release the lock, and returns once it has and
    /// has exited.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] naming the target when the child reports an error
    /// releasing, or exits without having said it released.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future kills the child if it has not
    /// exited, which lets go of the lock all the same.
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use async_filelock::Category;
    /// # use async_filelock::test_util::{ChildHolder, TempLocks};
    /// # let locks = TempLocks::new().unwrap();
    /// # let db = locks.path("state.db");
    /// let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await.unwrap();
    /// holder.release().await.unwrap();
    /// assert!(locks.try_lock(Category::Sqlite, &db).await.unwrap().is_some());
    /// # }) }
    /// ```
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(mut stdin) = self.stdin.take() {
            // A child gone already shows in what it said, below.
            let _ = stdin.write_all(b"release\n").and_then(|()| stdin.flush());
        }
        let said = self.next_line().await?;
        let status = self.wait().await?;
        match said.as_deref() {
            Some("released") if status.is_none_or(|s| s.success()) => Ok(()),
            Some(other) => Err(self.failed(other.strip_prefix("error ").unwrap_or(other))),
            None => Err(self.failed("the holder exited before releasing")),
        }
    }

    /// Kills the child with `SIGKILL`, as a crash would, and waits for it.
    /// An OS lock is free at once; a soft lock stays until a waiter finds
    /// its owner gone and breaks it.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] if the child cannot be killed or waited for.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed before the first await.
    ///
    /// ```rust,standalone_crate
    /// # fn main() { async_filelock::test_util::child_main(); tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use async_filelock::Category;
    /// # use async_filelock::test_util::{ChildHolder, TempLocks};
    /// # let locks = TempLocks::new().unwrap();
    /// # let db = locks.path("state.db");
    /// let holder = ChildHolder::hold(&locks, Category::Sqlite, &db).await.unwrap();
    /// holder.kill().await.unwrap(); // as a crash: the kernel lets go of an OS lock
    /// assert!(locks.try_lock(Category::Sqlite, &db).await.unwrap().is_some());
    /// # }) }
    /// ```
    pub async fn kill(mut self) -> Result<(), LockError> {
        if let Some(child) = self.child.as_mut()
            && let Err(e) = child.kill()
        {
            return Err(LockError::io("kill the lock holder for", &self.target, e));
        }
        self.wait().await.map(drop)
    }

    /// The next line the child says, without its prefix; `None` once its
    /// stdout ends. Read on the blocking pool.
    async fn next_line(&mut self) -> Result<Option<String>, LockError> {
        let Some(mut stdout) = self.stdout.take() else {
            return Ok(None);
        };
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let line = read_said(&mut stdout);
            (stdout, line)
        })
        .await
        .map_err(|e| LockError::io("read the lock holder of", &self.target, io::Error::other(e)))?;
        self.stdout = Some(stdout);
        line.map_err(|e| LockError::io("read the lock holder of", &self.target, e))
    }

    /// Waits for the child to exit, on the blocking pool; `None` if it was
    /// waited for already.
    async fn wait(&mut self) -> Result<Option<ExitStatus>, LockError> {
        self.stdin = None;
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(io::Error::other)
            .and_then(|waited| waited)
            .map(Some)
            .map_err(|e| LockError::io("wait for the lock holder of", &self.target, e))
    }

    fn failed(&self, why: &str) -> LockError {
        LockError::io(
            "hold in a child process",
            &self.target,
            io::Error::other(why.to_owned()),
        )
    }
}

/// Lines until one the child said (skipping the harness's own output).
fn read_said(stdout: &mut BufReader<ChildStdout>) -> io::Result<Option<String>> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(said) = line.trim_end().strip_prefix(SAYS) {
            return Ok(Some(said.trim_start().to_owned()));
        }
    }
}

impl Drop for ChildHolder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killed, the child exits at once; reaping it is quick.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
