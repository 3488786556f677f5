//! One file, by one worker: the artifact lock (`OnBusy::Skip` or wait), a
//! streamed `.part`, retries that resume with `Range` from what the `.part`
//! holds, and a commit that appends the manifest row and the SQLite row
//! before the artifact lock is released.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_filelock::{
    Artifact, ArtifactWriter, Category, CommitReport, Leftover, LockError, OnBusy,
};
use reqwest::StatusCode;
use reqwest::header::RANGE;

use crate::model::{Entry, ManifestRow, Outcome};
use crate::worker::Ctx;

/// Tries per file before giving up on a source that keeps failing.
pub const MAX_TRIES: u32 = 8;

/// What became of a file: settled, or busy (someone else is on it).
pub enum Fetched {
    Settled(Outcome),
    Busy,
}

pub async fn fetch(ctx: &Arc<Ctx>, entry: &Entry, on_busy: OnBusy) -> Result<Fetched, LockError> {
    let target = ctx.layout.file(&entry.name);
    let counter = ctx.bytes.clone();
    let mut seen = 0;
    let open = ArtifactWriter::builder(&target)
        .locks(ctx.locks.clone())
        .expected_len(entry.len)
        .expected_sha256(&entry.sha256)?
        .on_busy(on_busy)
        .leftover(Leftover::Resume) // a crashed worker's .part is continued
        .progress(move |p| {
            counter.fetch_add(p.bytes.saturating_sub(seen), Ordering::Relaxed);
            seen = p.bytes;
        })
        .open()
        .await?;
    let mut writer = match open {
        Artifact::Busy => return Ok(Fetched::Busy),
        Artifact::AlreadyPresent(present) => {
            let waited_ms = present.waited.as_millis() as u64;
            return Ok(Fetched::Settled(Outcome::Present { waited_ms }));
        }
        Artifact::Write(writer) => writer,
    };
    ctx.set_current(Some(&entry.name));
    let url = format!("{}/files/{}", ctx.base_url, entry.name);
    let (mut tries, mut kept) = (0, 0);
    loop {
        tries += 1;
        kept += writer.written(); // what a Range request does not fetch again
        match attempt(&ctx.client, &url, &mut writer).await {
            Ok(()) => break,
            Err(LockError::Source { .. }) if tries < MAX_TRIES => {
                ctx.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
            }
            Err(e @ LockError::Source { .. }) => {
                writer.abort().await?; // the .part goes, the lock is released
                let why = format!("source failed {tries} times: {}", root_cause(&e));
                return Ok(Fetched::Settled(Outcome::Failed { why, tries }));
            }
            Err(e) => return Err(e),
        }
    }
    let committed = writer
        .commit_then(|report| record(ctx.clone(), entry.clone(), report.clone(), tries))
        .await;
    match committed {
        Ok((report, ())) => Ok(Fetched::Settled(Outcome::Downloaded {
            bytes: report.bytes,
            tries,
            kept_on_retry: kept,
            resumed_bytes: report.resumed_bytes,
            token: report.token.get(),
        })),
        Err(LockError::Verification { what, .. }) => {
            let what = what.split(", got").next().unwrap_or(&what).to_owned();
            let why = format!(
                "refused at commit: {}, got something else",
                short_hex(&what)
            );
            Ok(Fetched::Settled(Outcome::Failed { why, tries }))
        }
        Err(e) => Err(e),
    }
}

/// One request: the whole file, or the rest of it after what the `.part`
/// holds (`Range: bytes=N-`), streamed into the writer.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    writer: &mut ArtifactWriter,
) -> Result<(), LockError> {
    let from = writer.written();
    let source = |e: reqwest::Error| LockError::from_source(writer.target(), e);
    let mut request = client.get(url);
    if from > 0 {
        request = request.header(RANGE, format!("bytes={from}-"));
    }
    let response = request.send().await.map_err(source)?;
    let expected = if from > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if response.status() != expected {
        let why = format!("asked from byte {from}, got {}", response.status());
        return Err(LockError::from_source(
            writer.target(),
            std::io::Error::other(why),
        ));
    }
    writer.write_stream(response.bytes_stream()).await.map(drop)
}

/// Runs after the rename, before the artifact lock is released: the
/// manifest row (the sink stamps the manifest lock's token) and the SQLite
/// row, each under its own lock, in the lock order.
async fn record(
    ctx: Arc<Ctx>,
    entry: Entry,
    report: CommitReport,
    tries: u32,
) -> Result<(), LockError> {
    let row = ManifestRow {
        file: entry.name.clone(),
        bytes: report.bytes,
        sha256: report.sha256.clone().unwrap_or_default(),
        worker: ctx.worker,
        artifact_token: report.token.get(),
        resumed_bytes: report.resumed_bytes,
        tries,
        lock_token: 0,
    };
    ctx.sink.append(&row).await?;
    let guard = ctx.locks.lock(Category::Sqlite, ctx.layout.db()).await?;
    let sqlite_token = guard.token()?.get();
    let db = ctx.db.clone();
    let path = ctx.layout.db();
    tokio::task::spawn_blocking(move || {
        let db = db.lock().unwrap_or_else(|p| p.into_inner());
        db.execute(
            "INSERT INTO downloads (file, worker, bytes, sha256, artifact_token, sqlite_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                row.file,
                row.worker,
                row.bytes as i64,
                row.sha256,
                row.artifact_token as i64,
                sqlite_token as i64
            ],
        )
        .map(drop)
        .map_err(|e| LockError::from_source(&path, e))
    })
    .await
    .map_err(|e| LockError::from_source(ctx.layout.db(), e))??;
    guard.release().await
}

/// The innermost source of an error: what actually went wrong.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Long hex digests cut to their first 12 digits.
fn short_hex(text: &str) -> String {
    let words =
        text.split(' ').map(
            |w| match w.len() > 16 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                true => format!("{}…", &w[..12]),
                false => w.to_owned(),
            },
        );
    words.collect::<Vec<_>>().join(" ")
}
