//! Feature `metrics`: what `Locks` counts also reaches the `metrics` crate
//! facade, as it happens, labelled by category; and `Metrics` displays as
//! a table a person reads. The recorder is `metrics-util`'s debugging one,
//! installed for this whole test program (so it holds one test).

use std::time::Duration;

use async_filelock::{Category, LockError, Locks};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A metric of the snapshot: its value, by name and category label.
fn find<'a>(
    snapshot: &'a [(metrics_util::CompositeKey, DebugValue)],
    name: &str,
    category: &str,
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, value)| {
        let key = key.key();
        let labelled = key
            .labels()
            .any(|l| l.key() == "category" && l.value() == category);
        (key.name() == name && labelled).then_some(value)
    })
}

#[test]
fn acquisitions_timeouts_releases_and_holds_over_budget_reach_the_facade_with_their_category() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test program");
    async_filelock::describe_metrics();

    let dir = tempfile::tempdir().expect("temp dir");
    let locks = Locks::builder()
        .lock_dir(dir.path().join("locks"))
        .hold_budget(Category::Summary, Duration::from_millis(1))
        .build()
        .expect("locks");
    let (manifest, summary) = (dir.path().join("m.jsonl"), dir.path().join("summary.json"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(async {
            for _ in 0..3 {
                locks
                    .lock(Category::Manifest, &manifest)
                    .await?
                    .release()
                    .await?;
            }
            let held = locks.lock(Category::Summary, &summary).await?;
            let late = locks
                .acquire(Category::Summary, &summary)
                .timeout(Duration::from_millis(20))
                .await;
            assert!(late.is_err_and(|e| e.is_timeout()));
            // Held past its 1 ms budget: the wait above alone is 20 ms.
            held.release().await?;
            Ok::<_, LockError>(())
        })
        .expect("locking");

    let snapshot: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let counter = |name: &str, category: &str| match find(&snapshot, name, category) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {{category={category}}}: {other:?} in {snapshot:?}"),
    };
    let samples = |name: &str, category: &str| match find(&snapshot, name, category) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{name} {{category={category}}}: {other:?}"),
    };
    assert_eq!(counter("async_filelock_acquisitions_total", "manifest"), 3);
    assert_eq!(counter("async_filelock_releases_total", "manifest"), 3);
    assert_eq!(samples("async_filelock_wait_seconds", "manifest"), 3);
    assert_eq!(samples("async_filelock_hold_seconds", "manifest"), 3);
    assert_eq!(counter("async_filelock_acquisitions_total", "summary"), 1);
    assert_eq!(counter("async_filelock_timeouts_total", "summary"), 1);
    assert_eq!(counter("async_filelock_over_budget_total", "summary"), 1);
    assert!(find(&snapshot, "async_filelock_acquisitions_total", "artifact").is_none());

    // The same events, as a person reads them from the handle.
    let table = locks.metrics().to_string();
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
            .split_whitespace()
            .take(5)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("manifest"), ["manifest", "3", "0", "3", "0"], "{table}");
    assert_eq!(row("summary"), ["summary", "1", "1", "1", "1"], "{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header[..5],
        ["category", "taken", "timeouts", "released", "over budget"],
        "{table}"
    );
    println!("{table}");
}
