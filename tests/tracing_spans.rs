//! Law 8 through a real subscriber: an acquisition's events, taken at once
//! or by waiting, are inside its `lock` span. A test binary of its own, so
//! that the subscriber is the process's global one: a thread's own default
//! shares tracing's per-callsite interest cache with other tests' threads.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_filelock::Category;

/// What the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_acquisitions_events_are_inside_its_lock_span() {
    let out = Captured::default();
    let writer = out.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let locks = support::locks_in(dir.path());
    let target = dir.path().join("traced.jsonl");
    let first = locks.lock(Category::Manifest, &target).await.unwrap();
    let second = tokio::spawn(locks.lock(Category::Manifest, &target));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(first);
    drop(second.await.unwrap().unwrap());
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let acquired: Vec<&str> = text.lines().filter(|l| l.contains("acquired")).collect();
    assert_eq!(acquired.len(), 2, "at once and by waiting: {text}");
    for line in acquired {
        assert!(
            line.contains("lock{category=\"manifest\"") && line.contains("lock_path="),
            "the event is in its lock's span: {line}"
        );
    }
}
