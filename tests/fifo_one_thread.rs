//! Law 5: a thousand tasks waiting for one lock queue FIFO and cost at most
//! one blocking thread. Its own test binary, because it reads the
//! process-wide peak of blocking waits.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_filelock::Category;
use support::{locks_in, spawn_holder, threads_in_flock_wait};

#[test]
fn child_entry() {
    support::child_entry();
}

#[test]
fn law5_thousand_tasks_get_the_lock_in_fifo_order_on_one_blocking_thread() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("manifest.jsonl");
    let mut holder = spawn_holder(dir.path(), "exclusive", "manifest", &[&target]);
    holder.wait_ready();
    let locks = locks_in(dir.path());
    let order = Arc::new(Mutex::new(Vec::new()));
    // current_thread: tasks are first polled in spawn order, so they join the
    // queue in index order.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let (locks, target, order) = (locks.clone(), target.clone(), order.clone());
                tokio::spawn(async move {
                    let g = locks
                        .lock(Category::Manifest, &target)
                        .wait_forever()
                        .await?;
                    order.lock().unwrap().push(i);
                    g.release().await
                })
            })
            .collect();
        // Everyone is queued behind the other process.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting_now = tokio::task::spawn_blocking(threads_in_flock_wait)
            .await
            .unwrap();
        assert_eq!(
            waiting_now, 1,
            "exactly one thread in flock for 1000 waiters"
        );
        assert_eq!(support::os_metrics(&locks).kernel_waits_now, 1);
        holder.tell("release");
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let order = order.lock().unwrap().clone();
    assert_eq!(order, (0..1000).collect::<Vec<_>>(), "FIFO");
    let m = locks.metrics();
    assert_eq!(
        support::os_metrics(&locks).kernel_waits_peak,
        1,
        "never more than one blocking wait"
    );
    assert_eq!(m.category(Category::Manifest).acquisitions, 1000);
    holder.finish();
}

#[test]
fn many_tasks_on_a_multi_thread_runtime_all_get_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("telemetry.jsonl");
    let locks = locks_in(dir.path());
    let rt = support::runtime();
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rt.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (locks, target, inside) = (locks.clone(), target.clone(), inside.clone());
                tokio::spawn(async move {
                    let g = locks
                        .lock(Category::Telemetry, &target)
                        .wait_forever()
                        .await?;
                    let before = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(before, 0, "two holders at once");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    g.release().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    assert_eq!(
        locks.metrics().category(Category::Telemetry).acquisitions,
        1000
    );
}
