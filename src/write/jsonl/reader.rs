//! [`JsonlReader`]: reads back what a [`crate::JsonlSink`] wrote, rotated
//! files first (in number order), then the current file.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

use super::file::{rotated_path, rotation_numbers};
use crate::error::LockError;

/// Reads the records of a JSONL file and its rotations, in order, typed
/// through serde. A line that does not parse is reported as
/// [`LockError::BadRecord`] (file, line number, byte offset) and reading
/// goes on with the next line. A last line without its newline (a write in
/// progress, or a crash not yet repaired) is not a record and is skipped.
///
/// Reading takes no lock: lines are appended whole, so a reader sees each
/// complete line or none of it. A rotation while it reads is followed: at
/// the end of the file it was reading, now a numbered one, it goes on with
/// the numbered files after it and the new current file.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// use async_filelock::{JsonlReader, JsonlSink};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("events.jsonl");
/// let sink = JsonlSink::builder(&path).rotate_records(2).open().await?;
/// for i in 0..5u32 {
///     sink.append(&i).await?;
/// }
/// let mut reader = JsonlReader::<u32>::open(&path).await?;
/// let mut all = Vec::new();
/// while let Some(record) = reader.next().await {
///     all.push(record?);
/// }
/// assert_eq!(all, [0, 1, 2, 3, 4]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JsonlReader<T> {
    files: VecDeque<PathBuf>,
    current: Option<OpenFile>,
    /// The live path, and the file it named when the files were listed (a
    /// rotation before the reader gets to it moves that file to a number).
    live: PathBuf,
    live_identity: Option<(u64, u64)>,
    _records: PhantomData<fn() -> T>,
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    reader: BufReader<tokio::fs::File>,
    line: u64,
    offset: u64,
    /// Device and inode, for the live file: at its end, whether the path
    /// still names it or it was rotated away meanwhile.
    identity: (u64, u64),
    /// Known to be rotated away: read to its final end, then move on.
    rotated: bool,
}

impl<T: DeserializeOwned> JsonlReader<T> {
    /// Lists `path`'s rotated files and `path` itself.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTarget`] if the path is empty or names no file
    /// (ends in `..`); [`LockError::Io`] if the directory cannot be listed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only lists files.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{JsonlReader, JsonlSink};
    /// let log = dir.path().join("log.jsonl");
    /// JsonlSink::open(&log).await?.append(&1).await?;
    /// let mut reader = JsonlReader::<u32>::open(&log).await?;
    /// assert_eq!(reader.next().await.transpose()?, Some(1));
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LockError> {
        let path = path.as_ref().to_path_buf();
        if path.file_name().is_none() {
            return Err(LockError::invalid_target(
                &path,
                "the path is empty or names no file; pass the path of the JSONL file",
            ));
        }
        let listed = path.clone();
        let numbers = crate::blocking::run("list rotations of", &path, move || {
            rotation_numbers(&listed)
        })
        .await?;
        // Listed before the live file is looked at: a rotation between the
        // two shows as a live file that is not the one looked at, followed
        // below.
        let mut files: VecDeque<PathBuf> = numbers
            .into_iter()
            .map(|n| rotated_path(&path, n))
            .collect();
        let live_identity = tokio::fs::metadata(&path)
            .await
            .ok()
            .map(|m| (m.dev(), m.ino()));
        files.push_back(path.clone());
        Ok(JsonlReader {
            files,
            current: None,
            live: path,
            live_identity,
            _records: PhantomData,
        })
    }

    /// The files still to read, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{JsonlReader, JsonlSink};
    /// let log = dir.path().join("log.jsonl");
    /// let sink = JsonlSink::builder(&log).rotate_records(1).open().await?;
    /// sink.append(&1).await?;
    /// sink.append(&2).await?; // rotates first: log.0001.jsonl holds 1
    /// let reader = JsonlReader::<u32>::open(&log).await?;
    /// assert_eq!(reader.remaining_files().count(), 2);
    /// # Ok(()) }
    /// ```
    pub fn remaining_files(&self) -> impl Iterator<Item = &Path> {
        self.current
            .as_ref()
            .map(|c| c.path.as_path())
            .into_iter()
            .chain(self.files.iter().map(PathBuf::as_path))
    }

    /// The next record, `None` at the end.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may lose the line it was reading.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{JsonlReader, JsonlSink};
    /// let log = dir.path().join("log.jsonl");
    /// JsonlSink::open(&log).await?.append_batch(&[1, 2]).await?;
    /// let mut reader = JsonlReader::<u32>::open(&log).await?;
    /// let mut sum = 0;
    /// while let Some(n) = reader.next().await {
    ///     sum += n?;
    /// }
    /// assert_eq!(sum, 3);
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Result<T, LockError>> {
        let mut buf = Vec::new();
        loop {
            if self.current.is_none() {
                let path = self.files.pop_front()?;
                match tokio::fs::File::open(&path).await {
                    Ok(file) => {
                        let identity = match file.metadata().await {
                            Ok(meta) => (meta.dev(), meta.ino()),
                            Err(e) => return Some(Err(LockError::io("inspect", path, e))),
                        };
                        // The live file was rotated after the listing and
                        // before this open: read the file listed (now a
                        // numbered one) and what came after it first.
                        if self.files.is_empty()
                            && path == self.live
                            && let Some(listed) = self.live_identity.take()
                            && listed != identity
                        {
                            match self.queue_after_rotation(listed, true).await {
                                Ok(()) => continue,
                                Err(e) => return Some(Err(e)),
                            }
                        }
                        self.current = Some(OpenFile {
                            path,
                            reader: BufReader::new(file),
                            line: 0,
                            offset: 0,
                            identity,
                            rotated: false,
                        })
                    }
                    // The current file may not exist yet; a rotated one may
                    // have been removed by an operator.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Some(Err(LockError::io("open for reading", path, e))),
                }
            }
            let file = self.current.as_mut()?;
            buf.clear();
            let n = match file.reader.read_until(b'\n', &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let path = file.path.clone();
                    self.current = None;
                    return Some(Err(LockError::io("read", path, e)));
                }
            };
            if n == 0 || buf.last() != Some(&b'\n') {
                let rotated = if self.files.is_empty() && file.path == self.live && !file.rotated {
                    match self.rotated_away().await {
                        Ok(rotated) => rotated,
                        Err(e) => return Some(Err(e)),
                    }
                } else {
                    false
                };
                let file = self.current.as_mut()?;
                if rotated {
                    // Rotated away: nobody writes to it any more. Read it to
                    // its final end (lines appended between our end and the
                    // rotation, a partial line completed), then go on.
                    file.rotated = true;
                    if n > 0 {
                        // A partial line: read it again from its start.
                        let at = file.offset;
                        if let Err(e) = file.reader.seek(std::io::SeekFrom::Start(at)).await {
                            let path = file.path.clone();
                            return Some(Err(LockError::io("read", path, e)));
                        }
                    }
                    continue;
                }
                let done = self.current.take()?;
                if done.rotated
                    && let Err(e) = self.queue_after_rotation(done.identity, false).await
                {
                    return Some(Err(e));
                }
                continue;
            }
            file.line += 1;
            let offset = file.offset;
            file.offset += n as u64;
            return Some(serde_json::from_slice(&buf[..n - 1]).map_err(|source| {
                LockError::BadRecord {
                    path: file.path.clone(),
                    line: file.line,
                    offset,
                    source: std::sync::Arc::new(source),
                }
            }));
        }
    }

    /// Whether the live path names another file than the one being read.
    async fn rotated_away(&self) -> Result<bool, LockError> {
        let Some(current) = self.current.as_ref() else {
            return Ok(false);
        };
        match tokio::fs::metadata(&self.live).await {
            Ok(meta) => Ok((meta.dev(), meta.ino()) != current.identity),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(LockError::io("inspect", &self.live, e)),
        }
    }

    /// Queues the numbered files from the one that is the file `identity`
    /// (with it when `including`, else after it), then the live file.
    async fn queue_after_rotation(
        &mut self,
        identity: (u64, u64),
        including: bool,
    ) -> Result<(), LockError> {
        let path = self.live.clone();
        let listed = path.clone();
        let numbers = crate::blocking::run("list rotations of", &path, move || {
            rotation_numbers(&listed)
        })
        .await?;
        let mut from = None;
        for n in &numbers {
            if let Ok(meta) = tokio::fs::metadata(rotated_path(&path, *n)).await
                && (meta.dev(), meta.ino()) == identity
            {
                from = Some(*n);
            }
        }
        if let Some(from) = from {
            self.files.extend(
                numbers
                    .into_iter()
                    .filter(|n| if including { *n >= from } else { *n > from })
                    .map(|n| rotated_path(&path, n)),
            );
        }
        // Rotated and removed since: nothing tells where it stood.
        self.files.push_back(path);
        Ok(())
    }

    /// The records as a `Stream`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use async_filelock::{JsonlReader, JsonlSink};
    /// use futures::TryStreamExt;
    /// let log = dir.path().join("log.jsonl");
    /// JsonlSink::open(&log).await?.append_batch(&[1, 2, 3]).await?;
    /// let all: Vec<u32> = JsonlReader::<u32>::open(&log).await?.into_stream().try_collect().await?;
    /// assert_eq!(all, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<T, LockError>> {
        futures::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
    }
}
