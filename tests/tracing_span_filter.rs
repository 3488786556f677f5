//! A subscriber that records spans only (an OpenTelemetry layer behind a
//! span filter, say) still gets each acquisition's `lock` span: the crate
//! skips making it only where no subscriber's level hint allows DEBUG. A
//! test binary of its own, for a global subscriber (see
//! `tracing_spans.rs`).

mod support;

use std::sync::{Arc, Mutex};

use async_filelock::Category;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Names of the spans made.
struct SpanNames(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for SpanNames {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(attrs.metadata().name().to_owned());
    }
}

#[tokio::test]
async fn a_span_only_subscriber_gets_each_acquisitions_span() {
    let names = Arc::new(Mutex::new(Vec::new()));
    tracing_subscriber::registry()
        .with(SpanNames(Arc::clone(&names)).with_filter(filter_fn(|m| m.is_span())))
        .init();
    let dir = tempfile::tempdir().unwrap();
    let locks = support::locks_in(dir.path());
    let guard = locks
        .lock(Category::Summary, dir.path().join("summary.json"))
        .await
        .unwrap();
    drop(guard);
    let names = names.lock().unwrap().clone();
    assert!(names.iter().any(|n| n == "lock"), "spans made: {names:?}");
}
