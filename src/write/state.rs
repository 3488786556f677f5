//! Read-modify-write of a JSON state file under one lock hold, with a
//! revision counter that turns lost updates into a [`LockError::Conflict`].
//!
//! The file holds `{"revision": N, "data": …}`. [`update_json`] reads,
//! changes and writes back atomically in one hold of the summary lock, so
//! concurrent updaters in any number of processes serialise. A caller that
//! read a copy earlier ([`load_json`]) and saves it later
//! ([`save_if_revision`]) is refused if someone saved in between.

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::atomic::replace_file;
use super::commit::with_guard;
use crate::category::Category;
use crate::error::LockError;
use crate::lock::{LockGuard, Locks};

/// A state and the revision it was read at (0: the file does not exist yet).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use async_filelock::{update_json, load_json, Versioned};
/// let state = dir.path().join("state.json");
/// update_json(&state, |v: &mut Vec<u32>| v.push(1)).await?;
/// let Versioned { revision, data } = load_json::<Vec<u32>>(&state).await?;
/// assert_eq!((revision, data), (1, vec![1]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Incremented by every save.
    pub revision: u64,
    /// The caller's state.
    pub data: T,
}

/// Changes the JSON state in `path` with `change`, under the summary lock of
/// the default [`Locks`]. A missing file starts from `T::default()`. Returns
/// what `change` returned and the new revision.
///
/// `change` runs on the blocking pool while the lock is held: keep it short.
///
/// # Errors
///
/// [`LockError::Json`] if the file is not such a state (the file is left
/// untouched), lock and I/O errors as [`crate::write_atomic`].
///
/// # Cancel safety
///
/// Cancel safe: once the lock is granted the update completes (or fails)
/// under the lock even if the future is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let dir = tempfile::tempdir().unwrap();
/// let state = dir.path().join("state.json");
/// let (_, rev) = async_filelock::update_json(&state, |n: &mut u64| *n += 1).await?;
/// let (seen, rev2) = async_filelock::update_json(&state, |n: &mut u64| { *n += 1; *n }).await?;
/// assert_eq!((rev, seen, rev2), (1, 2, 2));
/// # Ok(()) }
/// ```
pub async fn update_json<T, R, F>(path: impl AsRef<Path>, change: F) -> Result<(R, u64), LockError>
where
    T: Serialize + DeserializeOwned + Default + Send + 'static,
    R: Send + 'static,
    F: FnOnce(&mut T) -> R + Send + 'static,
{
    update_json_with(&Locks::global()?, path, change).await
}

/// Reads the JSON state in `path` and its revision, under a shared summary
/// lock of the default [`Locks`]. A missing file gives `T::default()` at
/// revision 0.
///
/// # Errors
///
/// As [`update_json`].
///
/// # Cancel safety
///
/// Cancel safe: nothing is written; a dropped read releases its shared lock.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let state = dir.path().join("state.json");
/// let fresh = async_filelock::load_json::<u64>(&state).await?;
/// assert_eq!((fresh.revision, fresh.data), (0, 0), "missing: the default at revision 0");
/// # Ok(()) }
/// ```
pub async fn load_json<T>(path: impl AsRef<Path>) -> Result<Versioned<T>, LockError>
where
    T: DeserializeOwned + Default + Send + 'static,
{
    load_json_with(&Locks::global()?, path).await
}

/// Saves `data` to `path` if the file is still at revision `expected`, under
/// the summary lock of the default [`Locks`]; returns the new revision.
///
/// # Errors
///
/// [`LockError::Conflict`] with both revisions if someone saved since, and
/// nothing is written; otherwise as [`update_json`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{load_json, save_if_revision, LockError};
/// let dir = tempfile::tempdir().unwrap();
/// let state = dir.path().join("state.json");
/// let mine = load_json::<Vec<String>>(&state).await?;
/// let theirs = load_json::<Vec<String>>(&state).await?;
/// save_if_revision(&state, theirs.revision, &vec!["theirs".to_string()]).await?;
/// let err = save_if_revision(&state, mine.revision, &vec!["mine".to_string()]).await.unwrap_err();
/// assert!(matches!(err, LockError::Conflict { expected: 0, found: 1, .. }));
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Cancel safe: once the lock is granted the check and the write complete (or fail) under it even if the future is dropped.
pub async fn save_if_revision<T>(
    path: impl AsRef<Path>,
    expected: u64,
    data: &T,
) -> Result<u64, LockError>
where
    T: Serialize + ?Sized,
{
    save_if_revision_with(&Locks::global()?, path, expected, data).await
}

/// [`update_json`] with the summary lock of `locks`.
///
/// # Errors
///
/// As [`update_json`].
///
/// # Cancel safety
///
/// As [`update_json`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{update_json_with, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let (n, revision) = update_json_with(&locks, dir.path().join("n.json"), |n: &mut u32| { *n += 1; *n }).await?;
/// assert_eq!((n, revision), (1, 1));
/// # Ok(()) }
/// ```
pub async fn update_json_with<T, R, F>(
    locks: &Locks,
    path: impl AsRef<Path>,
    change: F,
) -> Result<(R, u64), LockError>
where
    T: Serialize + DeserializeOwned + Default + Send + 'static,
    R: Send + 'static,
    F: FnOnce(&mut T) -> R + Send + 'static,
{
    let guard = locks.lock(Category::Summary, path).await?;
    with_guard(guard, move |guard| {
        let target = guard.target();
        let mut state: Versioned<T> = read_state(target)?;
        let out = change(&mut state.data);
        state.revision += 1;
        write_state(guard, &state)?;
        Ok((out, state.revision))
    })
    .await
}

/// [`load_json`] with the summary lock of `locks`.
///
/// # Errors
///
/// As [`load_json`].
///
/// # Cancel safety
///
/// As [`load_json`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{load_json_with, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let state = load_json_with::<Vec<String>>(&locks, dir.path().join("s.json")).await?;
/// assert_eq!((state.revision, state.data.len()), (0, 0));
/// # Ok(()) }
/// ```
pub async fn load_json_with<T>(
    locks: &Locks,
    path: impl AsRef<Path>,
) -> Result<Versioned<T>, LockError>
where
    T: DeserializeOwned + Default + Send + 'static,
{
    let guard = locks.lock_shared(Category::Summary, path).await?;
    with_guard(guard, |guard| read_state(guard.target())).await
}

/// [`save_if_revision`] with the summary lock of `locks`.
///
/// # Errors
///
/// As [`save_if_revision`].
///
/// # Cancel safety
///
/// As [`save_if_revision`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{save_if_revision_with, Locks};
/// let dir = tempfile::tempdir().unwrap();
/// let locks = Locks::builder().lock_dir(dir.path().join("locks")).build()?;
/// let revision = save_if_revision_with(&locks, dir.path().join("s.json"), 0, &[1, 2]).await?;
/// assert_eq!(revision, 1);
/// # Ok(()) }
/// ```
pub async fn save_if_revision_with<T>(
    locks: &Locks,
    path: impl AsRef<Path>,
    expected: u64,
    data: &T,
) -> Result<u64, LockError>
where
    T: Serialize + ?Sized,
{
    let path = path.as_ref();
    let data = serde_json::to_value(data)
        .map_err(|source| LockError::json("serialize state for", path.to_path_buf(), source))?;
    let guard = locks.lock(Category::Summary, path).await?;
    with_guard(guard, move |guard| {
        let target = guard.target();
        let found = read_state::<serde_json::Value>(target)?.revision;
        if found != expected {
            return Err(LockError::Conflict {
                path: target.to_path_buf(),
                expected,
                found,
            });
        }
        let state = Versioned {
            revision: found + 1,
            data,
        };
        write_state(guard, &state)?;
        Ok(state.revision)
    })
    .await
}

fn read_state<T: DeserializeOwned + Default>(target: &Path) -> Result<Versioned<T>, LockError> {
    let bytes = match std::fs::read(target) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Versioned {
                revision: 0,
                data: T::default(),
            });
        }
        Err(e) => return Err(LockError::io("read state file", target, e)),
    };
    serde_json::from_slice(&bytes).map_err(|source| {
        LockError::json(
            "parse state file (expected {\"revision\": N, \"data\": ...})",
            target,
            source,
        )
    })
}

fn write_state<T: Serialize>(guard: &LockGuard, state: &Versioned<T>) -> Result<(), LockError> {
    let mut bytes = serde_json::to_vec_pretty(state)
        .map_err(|source| LockError::json("serialize state for", guard.target(), source))?;
    bytes.push(b'\n');
    replace_file(guard, &bytes)
}
