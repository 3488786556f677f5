//! One worker process: a few tasks doing a random mix of every kind of
//! write and lock the crate offers against the shared soak directory,
//! until the parent kills it. After the crate acknowledges an operation
//! (returns `Ok`), the worker appends an event to its ack journal; so
//! whatever a kill interrupts, the journal says what the crate promised.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_filelock::{
    Artifact, ArtifactWriter, Category, JsonlSink, Leftover, LockError, Locks, OnBusy,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::AsyncWriteExt;

use crate::model::{
    ARTIFACTS, CounterState, Event, Layout, NAMED_CATEGORY, NAMED_LOCKS, Op, OpId, ROTATE_BYTES,
    Record, SUMMARIES, Timeouts, artifact_content, locks, mix, summary_bytes, verify_summary,
};

/// Tasks per worker: enough that appends group-commit and ops of one
/// process contend with each other, not only with other processes.
const TASKS: usize = 4;

/// What identifies one incarnation of a worker.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub dir: std::path::PathBuf,
    pub slot: u32,
    pub inc: u32,
    pub seed: u64,
}

impl WorkerArgs {
    /// As command-line arguments (after the `worker` subcommand).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--dir".into(),
            self.dir.to_string_lossy().into_owned(),
            "--slot".into(),
            self.slot.to_string(),
            "--inc".into(),
            self.inc.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ]
    }

    /// Parses what [`WorkerArgs::to_args`] made.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .ok_or_else(|| format!("worker: missing {flag}"))
        };
        let number = |flag: &str| -> Result<u64, String> {
            value(flag)?
                .parse()
                .map_err(|e| format!("worker: {flag}: {e}"))
        };
        Ok(WorkerArgs {
            dir: value("--dir")?.into(),
            slot: number("--slot")? as u32,
            inc: number("--inc")? as u32,
            seed: number("--seed")?,
        })
    }
}

/// Runs a worker until it is killed (or its parent goes away); never
/// returns.
pub fn main(args: WorkerArgs) -> ! {
    exit_when_parent_goes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("worker runtime");
    let err = runtime.block_on(run(args));
    eprintln!("soak worker failed to start: {err}");
    std::process::exit(2);
}

/// The parent holds our stdin open: end of file means it is gone, and a
/// worker must not outlive a soak (it would load the machine forever).
fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let mut sink = std::io::sink();
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
        std::process::exit(0);
    });
}

/// Sets up the journal, the handle and the sink, then runs the tasks
/// forever; returns only a setup error.
async fn run(args: WorkerArgs) -> String {
    let ctx = match Ctx::new(&args).await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => return e,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let rng = SmallRng::seed_from_u64(mix(args.seed ^ (t as u64 + 1)));
        tasks.spawn(task(Arc::clone(&ctx), rng));
    }
    // Tasks run forever: one that ends has panicked, which is journaled
    // at once (the others go on).
    while let Some(ended) = tasks.join_next().await {
        ctx.violation(format!("a worker task ended: {ended:?}"));
    }
    "every task ended".into()
}

/// Everything the tasks of one incarnation share.
struct Ctx {
    layout: Layout,
    slot: u32,
    inc: u32,
    locks: Locks,
    sink: JsonlSink,
    journal: Mutex<File>,
    next_seq: AtomicU64,
    /// One counter op at a time per worker, journaled before the next
    /// starts: so a slot's increments commit in the order they began, and
    /// at most one (the one in flight at a kill) ends without a word.
    counter_turn: tokio::sync::Mutex<()>,
}

impl Ctx {
    async fn new(args: &WorkerArgs) -> Result<Ctx, String> {
        let layout = Layout::new(&args.dir);
        let path = layout.journal(args.slot, args.inc);
        let journal = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let mut rng = SmallRng::seed_from_u64(args.seed);
        let locks = locks(&layout, Some(random_timeouts(&mut rng))).map_err(|e| e.to_string())?;
        let ctx_journal = Mutex::new(journal);
        write_event(
            &ctx_journal,
            &Event::Start {
                pid: std::process::id(),
            },
        );
        let sink = open_sink(&layout, &locks, &ctx_journal, &mut rng).await;
        Ok(Ctx {
            layout,
            slot: args.slot,
            inc: args.inc,
            locks,
            sink,
            journal: ctx_journal,
            next_seq: AtomicU64::new(0),
            counter_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// `n` consecutive op ids; the first is returned.
    fn ids(&self, n: u64) -> OpId {
        OpId {
            slot: self.slot,
            inc: self.inc,
            seq: self.next_seq.fetch_add(n, Ordering::Relaxed),
        }
    }

    fn ack(&self, event: Event) {
        write_event(&self.journal, &event);
    }

    fn violation(&self, what: String) {
        self.ack(Event::Violation { what });
    }

    /// Journals a failed op (ids `seq..seq + n`): a timeout is an outcome,
    /// anything else a violation.
    fn failed_n(&self, op: Op, seq: u64, n: u64, e: &LockError) {
        if e.is_timeout() {
            self.ack(Event::Timeout { op, seq, n });
        } else {
            self.violation(format!("{op:?} op {seq}: {e}"));
        }
    }

    fn failed(&self, op: Op, seq: u64, e: &LockError) {
        self.failed_n(op, seq, 1, e);
    }

    /// Journals an op (ids `seq..seq + n`) dropped before it finished.
    fn cancelled_n(&self, op: Op, seq: u64, n: u64) {
        self.ack(Event::Cancelled { op, seq, n });
    }

    fn cancelled(&self, op: Op, seq: u64) {
        self.cancelled_n(op, seq, 1);
    }
}

/// Timeouts of one incarnation, each picked from short (timeouts happen
/// under contention) to the crate's usual.
fn random_timeouts(rng: &mut SmallRng) -> Timeouts {
    let mut pick = || {
        let menu = [20, 100, 500, 5_000];
        Duration::from_millis(menu[rng.random_range(0..menu.len())])
    };
    Timeouts {
        artifact: pick(),
        manifest: pick(),
        summary: pick(),
    }
}

/// One `O_APPEND` write of a whole line per event: a kill leaves at most
/// the last line of a journal torn, and the checker ignores such a line
/// (its op then counts as not acknowledged, which is what it was).
fn write_event(journal: &Mutex<File>, event: &Event) {
    let mut line = serde_json::to_vec(event).expect("events serialise");
    line.push(b'\n');
    let mut file = journal.lock().unwrap_or_else(|p| p.into_inner());
    file.write_all(&line).expect("write the ack journal");
}

/// Opens the sink (which repairs a torn tail a kill left), retrying the
/// timeouts a short manifest timeout brings under contention.
async fn open_sink(
    layout: &Layout,
    locks: &Locks,
    journal: &Mutex<File>,
    rng: &mut SmallRng,
) -> JsonlSink {
    let fsync = match rng.random_range(0..3) {
        0 => async_filelock::FsyncPolicy::Never,
        1 => async_filelock::FsyncPolicy::EveryCommit,
        _ => async_filelock::FsyncPolicy::AtMostEvery(Duration::from_millis(50)),
    };
    loop {
        let opened = JsonlSink::builder(layout.log())
            .locks(locks.clone())
            .rotate_bytes(ROTATE_BYTES)
            .fsync(fsync)
            .open()
            .await;
        match opened {
            Ok(sink) => {
                let torn_repaired = sink.stats().torn_tails_repaired;
                write_event(journal, &Event::SinkOpened { torn_repaired });
                return sink;
            }
            Err(e) if e.is_timeout() => {
                write_event(
                    journal,
                    &Event::Timeout {
                        op: Op::SinkOpen,
                        seq: 0,
                        n: 0,
                    },
                );
            }
            Err(e) => {
                write_event(
                    journal,
                    &Event::Violation {
                        what: format!("open the sink: {e}"),
                    },
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One task: random ops with short random pauses, forever.
async fn task(ctx: Arc<Ctx>, mut rng: SmallRng) {
    loop {
        one_op(&ctx, &mut rng).await;
        let pause = rng.random_range(0..3_000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
}

async fn one_op(ctx: &Ctx, rng: &mut SmallRng) {
    match rng.random_range(0..100) {
        0..30 => append(ctx, rng, 1).await,
        30..35 => {
            let n = rng.random_range(2..8);
            append(ctx, rng, n).await
        }
        35..50 => counter(ctx, rng).await,
        50..58 => summary_write(ctx, rng).await,
        58..62 => summary_read(ctx, rng).await,
        62..76 => artifact_request(ctx, rng).await,
        76..78 => artifact_evict(ctx, rng).await,
        78..82 => artifact_read(ctx, rng).await,
        _ => named_lock(ctx, rng).await,
    }
}

/// `fut`, or `None` if a random short deadline drops it first (one op in
/// ten): cancellation at whatever await point the deadline finds.
async fn maybe_cancel<F: std::future::Future>(rng: &mut SmallRng, fut: F) -> Option<F::Output> {
    if rng.random_bool(0.9) {
        return Some(fut.await);
    }
    let after = Duration::from_micros(rng.random_range(0..20_000));
    tokio::time::timeout(after, fut).await.ok()
}

/// An append of `n` records (one `append`, or one `append_batch`).
async fn append(ctx: &Ctx, rng: &mut SmallRng, n: u64) {
    let first = ctx.ids(n);
    let records: Vec<Record> = (0..n)
        .map(|i| {
            Record::new(OpId {
                seq: first.seq + i,
                ..first
            })
        })
        .collect();
    let done = if n == 1 {
        maybe_cancel(rng, ctx.sink.append(&records[0])).await
    } else {
        maybe_cancel(rng, ctx.sink.append_batch(&records)).await
    };
    match done {
        Some(Ok(())) => ctx.ack(Event::Appended { seq: first.seq, n }),
        Some(Err(e)) => ctx.failed_n(Op::Append, first.seq, n, &e),
        None => ctx.cancelled_n(Op::Append, first.seq, n),
    }
}

/// An `update_json` increment of the counter, journaled with the position
/// and predecessor the increment saw.
async fn counter(ctx: &Ctx, rng: &mut SmallRng) {
    let _turn = ctx.counter_turn.lock().await;
    let id = ctx.ids(1);
    let path = ctx.layout.counter();
    let update =
        async_filelock::update_json_with(&ctx.locks, &path, move |s: &mut CounterState| s.bump(id));
    match maybe_cancel(rng, update).await {
        Some(Ok((bump, _revision))) => ctx.ack(Event::CounterBumped { seq: id.seq, bump }),
        Some(Err(e)) => ctx.failed(Op::Counter, id.seq, &e),
        None => ctx.cancelled(Op::Counter, id.seq),
    }
}

/// A `write_atomic` of a self-checking summary version.
async fn summary_write(ctx: &Ctx, rng: &mut SmallRng) {
    let id = ctx.ids(1);
    let file = rng.random_range(0..SUMMARIES);
    let bytes: Vec<u8> = summary_bytes(id, file);
    let write = async_filelock::write_atomic_with(&ctx.locks, ctx.layout.summary(file), bytes);
    match maybe_cancel(rng, write).await {
        Some(Ok(())) => ctx.ack(Event::SummaryWritten { seq: id.seq, file }),
        Some(Err(e)) => ctx.failed(Op::Summary, id.seq, &e),
        None => ctx.cancelled(Op::Summary, id.seq),
    }
}

/// Reads a summary with no lock, as any reader would: it must be one
/// whole version, whatever writers and kills are doing.
async fn summary_read(ctx: &Ctx, rng: &mut SmallRng) {
    let file = rng.random_range(0..SUMMARIES);
    match tokio::fs::read(ctx.layout.summary(file)).await {
        Ok(bytes) => match verify_summary(&bytes, file) {
            Ok(_) => ctx.ack(Event::SummaryRead),
            Err(e) => ctx.violation(format!("summary-{file} read torn: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ctx.ack(Event::SummaryRead),
        Err(e) => ctx.violation(format!("read summary-{file}: {e}")),
    }
}

/// What an artifact request ended in.
enum Fetched {
    Written { resumed: u64 },
    Present,
    Busy,
}

/// Requests an artifact through the builder: writes it (streaming its
/// deterministic bytes, resuming a leftover `.part` when asked) if absent
/// or if asked to replace it, else takes the present or busy path.
async fn artifact_request(ctx: &Ctx, rng: &mut SmallRng) {
    let seq = ctx.ids(1).seq;
    let name = ARTIFACTS[rng.random_range(0..ARTIFACTS.len())];
    let choices = (
        rng.random_bool(0.3),
        rng.random_bool(0.3),
        rng.random_bool(0.2),
        rng.random_bool(0.05),
        rng.random_range(0..u64::MAX),
    );
    let fetch = fetch_artifact(ctx, name, choices);
    match maybe_cancel(rng, fetch).await {
        Some(Ok(Fetched::Written { resumed })) => ctx.ack(Event::ArtifactWritten {
            name: name.into(),
            resumed,
        }),
        Some(Ok(Fetched::Present)) => ctx.ack(Event::ArtifactPresent),
        Some(Ok(Fetched::Busy)) => ctx.ack(Event::ArtifactBusy),
        Some(Err(e)) => ctx.failed(Op::Artifact, seq, &e),
        None => ctx.cancelled(Op::Artifact, seq),
    }
}

/// The builder options an artifact request picked: skip if busy, resume
/// a leftover, verify an existing target, replace it; and a seed for the
/// pauses while streaming.
type FetchChoices = (bool, bool, bool, bool, u64);

async fn fetch_artifact(
    ctx: &Ctx,
    name: &str,
    (skip, resume, verify, replace, pauses): FetchChoices,
) -> Result<Fetched, LockError> {
    let content = artifact_content(name);
    let mut builder = ArtifactWriter::builder(ctx.layout.artifact(name))
        .locks(ctx.locks.clone())
        .expected_len(content.bytes.len() as u64)
        .expected_sha256(&content.sha256)?;
    if skip {
        builder = builder.on_busy(OnBusy::Skip);
    }
    if resume {
        builder = builder.leftover(Leftover::Resume);
    }
    if verify {
        builder = builder.verify_existing();
    }
    if replace {
        builder = builder.replace_existing();
    }
    let mut writer = match builder.open().await? {
        Artifact::Write(w) => w,
        Artifact::AlreadyPresent(_) => return Ok(Fetched::Present),
        Artifact::Busy => return Ok(Fetched::Busy),
    };
    let resumed = writer.resume_from();
    stream_into(&mut writer, &content.bytes[resumed as usize..], pauses).await?;
    writer.commit().await?;
    Ok(Fetched::Written { resumed })
}

/// Writes `bytes` in 16 KiB chunks with a pause now and then, so that
/// kills and cancellations land mid-stream.
async fn stream_into(w: &mut ArtifactWriter, bytes: &[u8], seed: u64) -> Result<(), LockError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    for chunk in bytes.chunks(16 * 1024) {
        w.write_all(chunk)
            .await
            .map_err(|e| LockError::from_source(w.part_path(), e))?;
        if rng.random_bool(0.2) {
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..2_000))).await;
        }
    }
    Ok(())
}

/// Removes an artifact under its lock, so that it gets written again.
async fn artifact_evict(ctx: &Ctx, rng: &mut SmallRng) {
    let seq = ctx.ids(1).seq;
    let target = ctx
        .layout
        .artifact(ARTIFACTS[rng.random_range(0..ARTIFACTS.len())]);
    let evict = async {
        let guard = ctx.locks.lock(Category::Artifact, &target).await?;
        let removed = match tokio::fs::remove_file(&target).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LockError::from_source(&target, e))
            }
            _ => Ok(()),
        };
        guard.release().await?;
        removed
    };
    match maybe_cancel(rng, evict).await {
        Some(Ok(())) => ctx.ack(Event::ArtifactEvicted),
        Some(Err(e)) => ctx.failed(Op::Evict, seq, &e),
        None => ctx.cancelled(Op::Evict, seq),
    }
}

/// Reads an artifact with no lock: if it is there, it is whole.
async fn artifact_read(ctx: &Ctx, rng: &mut SmallRng) {
    let name = ARTIFACTS[rng.random_range(0..ARTIFACTS.len())];
    match tokio::fs::read(ctx.layout.artifact(name)).await {
        Ok(bytes) if bytes == artifact_content(name).bytes => ctx.ack(Event::ArtifactRead),
        Ok(bytes) => ctx.violation(format!(
            "artifact {name} read partial: {} bytes",
            bytes.len()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ctx.ack(Event::ArtifactRead),
        Err(e) => ctx.violation(format!("read artifact {name}: {e}")),
    }
}

/// Takes a named lock, shared or exclusive, with a short random timeout,
/// sometimes as a try and sometimes raced against a timer in `select!`
/// (cancellation); holds it briefly and checks the probe file.
async fn named_lock(ctx: &Ctx, rng: &mut SmallRng) {
    let seq = ctx.ids(1).seq;
    let name = NAMED_LOCKS[rng.random_range(0..NAMED_LOCKS.len())];
    let target = ctx.layout.named_target(name);
    let shared = rng.random_bool(0.5);
    let acquire = ctx
        .locks
        .acquire(NAMED_CATEGORY, &target)
        .timeout(Duration::from_micros(rng.random_range(0..40_000)));
    let acquire = if shared { acquire.shared() } else { acquire };
    let guard = match rng.random_range(0..10) {
        0..2 => match acquire.try_now().await {
            Ok(Some(g)) => g,
            Ok(None) => return ctx.ack(Event::TryBusy),
            Err(e) => return ctx.failed(Op::Lock, seq, &e),
        },
        2..4 => {
            let timer = Duration::from_micros(rng.random_range(0..20_000));
            tokio::select! {
                got = acquire => match got {
                    Ok(g) => g,
                    Err(e) => return ctx.failed(Op::Lock, seq, &e),
                },
                () = tokio::time::sleep(timer) => {
                    return ctx.cancelled(Op::Lock, seq);
                }
            }
        }
        _ => match acquire.await {
            Ok(g) => g,
            Err(e) => return ctx.failed(Op::Lock, seq, &e),
        },
    };
    let hold = Duration::from_micros(rng.random_range(0..5_000));
    match probe(ctx, name, shared, seq, hold).await {
        Ok(()) => ctx.ack(Event::Locked { shared }),
        Err(what) => ctx.violation(what),
    }
    drop(guard);
}

/// Under a named lock: an exclusive holder writes its id to the probe and
/// must read it back after its hold; a shared holder must read the same
/// probe before and after its hold. Either changes only if a holder that
/// should have been excluded wrote meanwhile.
async fn probe(
    ctx: &Ctx,
    name: &str,
    shared: bool,
    seq: u64,
    hold: Duration,
) -> Result<(), String> {
    let path = ctx.layout.probe(name);
    let read = || std::fs::read(&path).unwrap_or_default();
    let before = if shared {
        read()
    } else {
        let mine = format!("{}/{}/{seq}", ctx.slot, ctx.inc).into_bytes();
        std::fs::write(&path, &mine).map_err(|e| format!("write probe {name}: {e}"))?;
        mine
    };
    tokio::time::sleep(hold).await;
    let after = read();
    if after != before {
        return Err(format!(
            "named lock {name} ({}) did not exclude: probe {:?} became {:?}",
            if shared { "shared" } else { "exclusive" },
            String::from_utf8_lossy(&before),
            String::from_utf8_lossy(&after)
        ));
    }
    Ok(())
}
