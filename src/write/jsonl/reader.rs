//! [`JsonlReader`]: reads back what a [`crate::JsonlSink`] wrote, rotated
//! files first (in number order), then the current file.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, BufReader};

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
}

impl<T: DeserializeOwned> JsonlReader<T> {
    /// Lists `path`'s rotated files and `path` itself.
    ///
    /// # Errors
    ///
    /// [`LockError::Io`] if the directory cannot be listed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only lists files.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LockError> {
        let path = path.as_ref().to_path_buf();
        let listed = path.clone();
        let numbers = crate::blocking::run("list rotations of", &path, move || {
            rotation_numbers(&listed)
        })
        .await?;
        let mut files: VecDeque<PathBuf> = numbers
            .into_iter()
            .map(|n| rotated_path(&path, n))
            .collect();
        files.push_back(path);
        Ok(JsonlReader {
            files,
            current: None,
            _records: PhantomData,
        })
    }

    /// The files still to read, in order.
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
                        self.current = Some(OpenFile {
                            path,
                            reader: BufReader::new(file),
                            line: 0,
                            offset: 0,
                            identity,
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
                let done = self.current.take()?;
                if self.files.is_empty()
                    && let Err(e) = self.follow_rotation(&done).await
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

    /// At the end of the live file: if the path names another file now (a
    /// rotation happened after the listing), queue the numbered files that
    /// came after the one just read, and the new live file.
    async fn follow_rotation(&mut self, done: &OpenFile) -> Result<(), LockError> {
        let path = done.path.clone();
        let now = match tokio::fs::metadata(&path).await {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LockError::io("inspect", &path, e)),
        };
        if now == done.identity {
            return Ok(());
        }
        let listed = path.clone();
        let numbers = crate::blocking::run("list rotations of", &path, move || {
            rotation_numbers(&listed)
        })
        .await?;
        // The file just read is now one of the numbered files: go on after it.
        let mut after = None;
        for n in &numbers {
            if let Ok(meta) = tokio::fs::metadata(rotated_path(&path, *n)).await
                && (meta.dev(), meta.ino()) == done.identity
            {
                after = Some(*n);
            }
        }
        let Some(after) = after else {
            // Rotated and then removed: nothing tells where it stood.
            self.files.push_back(path);
            return Ok(());
        };
        self.files.extend(
            numbers
                .into_iter()
                .filter(|n| *n > after)
                .map(|n| rotated_path(&path, n)),
        );
        self.files.push_back(path);
        Ok(())
    }

    /// The records as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<T, LockError>> {
        futures::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
    }
}
