//! The invariants, checked on what the run left on disk against what the
//! workers reported. Any failed check makes the program exit non-zero.

use std::collections::{BTreeMap, BTreeSet};

use async_filelock::{Category, JsonlReader, Locks, load_json_with};
use sha2::{Digest, Sha256};

use crate::model::{Entry, Kind, Layout, ManifestRow, Outcome, Summary};
use crate::progress::WorkerRun;

/// One invariant: its name, whether it held, and what was seen.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, problems: Vec<String>, fine: String) -> Check {
    Check {
        name,
        ok: problems.is_empty(),
        detail: match problems.len() {
            0 => fine,
            1..=3 => problems.join("; "),
            n => format!("{}; and {} more", problems[..3].join("; "), n - 3),
        },
    }
}

pub async fn run(
    catalog: &[Entry],
    layout: &Layout,
    runs: &[WorkerRun],
    locks: &Locks,
) -> Vec<Check> {
    let by_name: BTreeMap<&str, &Entry> = catalog.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut checks = Vec::new();

    let mut problems: Vec<String> = runs
        .iter()
        .filter(|r| !r.exit.is_some_and(|s| s.success()) || r.stats.is_none())
        .map(|r| {
            format!(
                "worker {} exited ({}) without its totals",
                r.worker,
                r.exit.map_or("?".into(), |s| s.to_string())
            )
        })
        .collect();
    for r in runs {
        if r.settled.len() != catalog.len() {
            problems.push(format!(
                "worker {} settled {} of {} files",
                r.worker,
                r.settled.len(),
                catalog.len()
            ));
        }
    }
    checks.push(check(
        "every worker settled every file",
        problems,
        format!("{} workers × {} files", runs.len(), catalog.len()),
    ));

    // Downloads per file, across workers.
    let mut downloads: BTreeMap<&str, u32> = BTreeMap::new();
    let mut failed: BTreeSet<&str> = BTreeSet::new();
    for (file, outcome) in runs.iter().flat_map(|r| &r.settled) {
        match outcome {
            Outcome::Downloaded { .. } => *downloads.entry(file).or_default() += 1,
            Outcome::Failed { .. } => {
                failed.insert(file);
            }
            Outcome::Present { .. } => {}
        }
    }
    let twice: Vec<String> = downloads
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(f, n)| format!("{f} downloaded {n} times"))
        .collect();
    checks.push(check(
        "no file downloaded twice",
        twice,
        format!("{} files downloaded, each once", downloads.len()),
    ));

    // On disk: every file whole and matching its digest; no .part, no temp.
    let mut on_disk = BTreeSet::new();
    let mut problems = Vec::new();
    let mut leftovers = Vec::new();
    match std::fs::read_dir(layout.downloads()) {
        Ok(dir) => {
            for entry in dir.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") || name.ends_with(".tmp") {
                    leftovers.push(name);
                    continue;
                }
                if name == ".locks" {
                    continue;
                }
                match (by_name.get(name.as_str()), std::fs::read(entry.path())) {
                    (Some(e), Ok(bytes)) => {
                        let sha = hex::encode(Sha256::digest(&bytes));
                        if sha != e.sha256 || bytes.len() as u64 != e.len {
                            problems.push(format!("{name}: {} bytes, sha256 {sha}", bytes.len()));
                        }
                        on_disk.insert(e.name.clone());
                    }
                    (None, _) => problems.push(format!("{name}: not in the catalog")),
                    (_, Err(e)) => problems.push(format!("{name}: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("{}: {e}", layout.downloads().display())),
    }
    checks.push(check(
        "every file on disk matches its digest",
        problems,
        format!("{} files, sha256 and length checked", on_disk.len()),
    ));
    checks.push(check(
        "no .part or temp file left",
        leftovers,
        "none".into(),
    ));

    let mut problems = Vec::new();
    for e in catalog {
        let present = on_disk.contains(&e.name);
        match e.kind {
            Kind::Truncated | Kind::Corrupt if present => {
                problems.push(format!("{} is on disk", e.name))
            }
            Kind::Truncated | Kind::Corrupt if !failed.contains(e.name.as_str()) => {
                problems.push(format!("{} was not reported failed", e.name))
            }
            // A good file is downloaded by someone: every worker failing
            // it eight times in a row is beyond any fail rate this runs
            // at, and a run where nothing arrives must not pass.
            Kind::Plain | Kind::Slow if !present => problems.push(format!(
                "{} is missing{}",
                e.name,
                if failed.contains(e.name.as_str()) {
                    " (every worker gave up on it)"
                } else {
                    " and no worker said why"
                }
            )),
            Kind::Plain | Kind::Slow if present != downloads.contains_key(e.name.as_str()) => {
                problems.push(format!(
                    "{} on disk: {present}, downloaded by a worker: {}",
                    e.name,
                    downloads.contains_key(e.name.as_str())
                ))
            }
            _ => {}
        }
    }
    checks.push(check(
        "downloaded files are there, bad ones never landed",
        problems,
        "the truncated and the corrupt file failed, the rest is there".into(),
    ));

    // The manifest: one row per file on disk, tokens in order.
    let mut rows: Vec<ManifestRow> = Vec::new();
    let mut problems = Vec::new();
    match JsonlReader::<ManifestRow>::open(layout.manifest()).await {
        Ok(mut reader) => {
            while let Some(row) = reader.next().await {
                match row {
                    Ok(row) => rows.push(row),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    let in_manifest: BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    if rows.len() != on_disk.len() || in_manifest != on_disk {
        problems.push(format!(
            "{} rows for {} distinct files, {} files on disk",
            rows.len(),
            in_manifest.len(),
            on_disk.len()
        ));
    }
    if rows.windows(2).any(|w| w[1].lock_token < w[0].lock_token) {
        problems.push("manifest lock tokens go backwards".into());
    }
    if let Some(row) = rows
        .iter()
        .find(|r| r.lock_token == 0 || r.artifact_token == 0)
    {
        problems.push(format!("{}: a row without its fencing tokens", row.file));
    }
    checks.push(check(
        "manifest: exactly one row per file",
        problems,
        format!("{} rows; lock tokens never go backwards", rows.len()),
    ));

    // SQLite agrees with the manifest, artifact token for artifact token.
    let sqlite = sqlite_rows(layout);
    let mut problems = Vec::new();
    match &sqlite {
        Ok(db) => {
            for row in &rows {
                if db.get(&row.file) != Some(&row.artifact_token) {
                    problems.push(format!(
                        "{}: manifest token {}, SQLite {:?}",
                        row.file,
                        row.artifact_token,
                        db.get(&row.file)
                    ));
                }
            }
            if db.len() != rows.len() {
                problems.push(format!(
                    "{} SQLite rows, {} manifest rows",
                    db.len(),
                    rows.len()
                ));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    checks.push(check(
        "SQLite: the same files, the same fencing tokens",
        problems,
        format!("{} rows", rows.len()),
    ));

    // The summary: one revision per settled file, totals that agree.
    let mut problems = Vec::new();
    let settled: usize = runs.iter().map(|r| r.settled.len()).sum();
    match load_json_with::<Summary>(locks, layout.summary()).await {
        Ok(s) => {
            if s.revision != settled as u64 {
                problems.push(format!("revision {} after {settled} updates", s.revision));
            }
            if s.data.downloaded != on_disk.len() as u64 {
                problems.push(format!(
                    "{} downloaded, {} on disk",
                    s.data.downloaded,
                    on_disk.len()
                ));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    checks.push(check(
        "summary.json: one revision per update, totals agree",
        problems,
        format!("revision {settled}"),
    ));

    // Nothing left locked.
    let mut problems = Vec::new();
    let mut targets: Vec<(Category, std::path::PathBuf)> = catalog
        .iter()
        .map(|e| (Category::Artifact, layout.file(&e.name)))
        .collect();
    targets.extend([
        (Category::Manifest, layout.manifest()),
        (Category::Sqlite, layout.db()),
        (Category::Summary, layout.summary()),
    ]);
    // A soft lock left by a worker that died holding it would be broken by
    // the try below and pass: it is looked for first.
    let broken_before = locks
        .metrics()
        .backend()
        .soft()
        .map_or(0, |s| s.stale_broken);
    for (category, target) in targets {
        match locks.try_lock(category, &target).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "{category} lock on {} still held",
                target.display()
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let broken = locks
        .metrics()
        .backend()
        .soft()
        .map_or(0, |s| s.stale_broken)
        .saturating_sub(broken_before);
    if broken > 0 {
        problems.push(format!(
            "{broken} soft lock(s) left by a worker that died holding them"
        ));
    }
    checks.push(check(
        "no lock left held",
        problems,
        format!("{} locks tried", catalog.len() + 3),
    ));
    checks
}

/// `file -> artifact_token` from the SQLite state.
fn sqlite_rows(layout: &Layout) -> rusqlite::Result<BTreeMap<String, u64>> {
    let conn = rusqlite::Connection::open(layout.db())?;
    let mut statement = conn.prepare("SELECT file, artifact_token FROM downloads")?;
    let rows = statement.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    rows.collect()
}
