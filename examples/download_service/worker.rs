//! A worker process (this program, run with `worker`): downloads the whole
//! catalog into the shared run directory, alongside the other workers.
//!
//! First pass with `OnBusy::Skip` (a file someone else is downloading is
//! left for later), second pass waiting for the rest (by then they are
//! usually present). Every settled file updates the run summary with
//! `update_json`; the worker reports on stdout (`model::Event`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_filelock::{Category, JsonlSink, LockError, Locks, OnBusy, update_json_with};
use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use crate::fetch::{Fetched, fetch};
use crate::model::{Entry, Event, Layout, Outcome, Stats, Summary, Waits};

/// Downloads at once per worker.
const CONCURRENCY: usize = 3;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The server, `http://127.0.0.1:PORT`.
    #[arg(long)]
    pub url: String,
    /// The run directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// This worker's number.
    #[arg(long)]
    pub id: u32,
}

/// What a worker's tasks share.
pub struct Ctx {
    pub worker: u32,
    pub base_url: String,
    pub client: reqwest::Client,
    pub layout: Layout,
    pub locks: Locks,
    pub sink: JsonlSink,
    pub db: Arc<Mutex<rusqlite::Connection>>,
    pub bytes: Arc<AtomicU64>,
    pub retries: AtomicU64,
    current: Mutex<Option<String>>,
}

impl Ctx {
    pub fn set_current(&self, file: Option<&str>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = file.map(str::to_owned);
    }
}

pub async fn run(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let layout = Layout::new(&args.dir);
    // From the environment first, so `ASYNC_FILELOCK_BACKEND=soft` runs the
    // service on soft locks; one lock dir for the whole run.
    let locks = Locks::builder().env()?.lock_dir(layout.locks()).build()?;
    // Never through a proxy: the server is on 127.0.0.1, and a proxy from
    // the environment would make every download fail.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
    let catalog = client.get(format!("{}/catalog", args.url)).send().await?;
    let catalog: Vec<Entry> = serde_json::from_slice(&catalog.bytes().await?)?;
    let sink = JsonlSink::builder(layout.manifest())
        .locks(locks.clone())
        .record_token("lock_token") // each row carries its commit's token
        .open()
        .await?;
    let db = open_db(&locks, &layout).await?;
    let ctx = Arc::new(Ctx {
        worker: args.id,
        base_url: args.url,
        client,
        layout,
        locks,
        sink,
        db,
        bytes: Arc::new(AtomicU64::new(0)),
        retries: AtomicU64::new(0),
        current: Mutex::new(None),
    });
    let ticker = tokio::spawn(tick(ctx.clone()));

    // Each worker goes through the list in its own order.
    let mut order = catalog;
    order.shuffle(&mut SmallRng::seed_from_u64(u64::from(args.id)));
    let busy = pass(&ctx, order, OnBusy::Skip).await?;
    let busy_skipped = busy.len() as u64;
    let still_busy = pass(&ctx, busy, OnBusy::Wait).await?;
    assert!(still_busy.is_empty(), "a wait never answers busy");

    ticker.abort();
    ctx.sink.close().await?;
    let metrics = ctx.locks.metrics();
    let waits = Category::ALL
        .into_iter()
        .map(|c| {
            let m = metrics.category(c);
            Waits {
                category: c.name().to_owned(),
                taken: m.acquisitions,
                timeouts: m.timeouts,
                p50_us: m.wait.p50.as_micros() as u64,
                p95_us: m.wait.p95.as_micros() as u64,
                max_us: m.wait.max.as_micros() as u64,
            }
        })
        .collect();
    say(&Event::Tick {
        bytes: ctx.bytes.load(Ordering::Relaxed),
        current: None,
    });
    say(&Event::Done {
        stats: Stats {
            worker: ctx.worker,
            busy_skipped,
            retries: ctx.retries.load(Ordering::Relaxed),
            bytes: ctx.bytes.load(Ordering::Relaxed),
            waits,
            metrics_table: metrics.to_string(),
        },
    });
    Ok(())
}

/// Fetches `files` a few at a time; returns those that were busy.
async fn pass(ctx: &Arc<Ctx>, files: Vec<Entry>, on_busy: OnBusy) -> Result<Vec<Entry>, LockError> {
    let mut results = futures::stream::iter(files)
        .map(|entry| {
            let ctx = ctx.clone();
            async move {
                let fetched = fetch(&ctx, &entry, on_busy).await;
                (entry, fetched)
            }
        })
        .buffer_unordered(CONCURRENCY);
    let mut busy = Vec::new();
    while let Some((entry, fetched)) = results.next().await {
        match fetched? {
            Fetched::Busy => busy.push(entry),
            Fetched::Settled(outcome) => {
                settle(ctx, &outcome).await?;
                say(&Event::Settled {
                    file: entry.name,
                    outcome,
                });
            }
        }
    }
    Ok(busy)
}

/// The run summary, one revision per settled file: read, changed and
/// replaced atomically in one hold of its lock.
async fn settle(ctx: &Ctx, outcome: &Outcome) -> Result<(), LockError> {
    let outcome = outcome.clone();
    update_json_with(
        &ctx.locks,
        ctx.layout.summary(),
        move |s: &mut Summary| match outcome {
            Outcome::Downloaded { bytes, .. } => {
                s.downloaded += 1;
                s.bytes += bytes;
            }
            Outcome::Present { .. } => s.present += 1,
            Outcome::Failed { .. } => s.failed += 1,
        },
    )
    .await
    .map(drop)
}

/// The SQLite state: WAL, SQLite's own busy timeout off (the lock does the
/// waiting), the table made under the SQLite lock.
async fn open_db(
    locks: &Locks,
    layout: &Layout,
) -> Result<Arc<Mutex<rusqlite::Connection>>, Box<dyn std::error::Error + Send + Sync>> {
    let guard = locks.lock(Category::Sqlite, layout.db()).await?;
    let path = layout.db();
    let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<_> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS downloads (
                 file TEXT PRIMARY KEY, worker INTEGER, bytes INTEGER, sha256 TEXT,
                 artifact_token INTEGER, sqlite_token INTEGER)",
        )?;
        Ok(conn)
    })
    .await??;
    guard.release().await?;
    Ok(Arc::new(Mutex::new(conn)))
}

/// Every 100 ms, what this worker has written so far.
async fn tick(ctx: Arc<Ctx>) {
    loop {
        let current = ctx
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        say(&Event::Tick {
            bytes: ctx.bytes.load(Ordering::Relaxed),
            current,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One event, one line on stdout.
fn say(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
