//! Child roles for descriptors kept open between holdings (hot lock
//! files): a holder that stays alive after it lets go, and a waiter whose
//! wait is served by events.

use std::path::PathBuf;
use std::time::Duration;

use async_filelock::{Category, LockError};

use super::{eventually, hear, locks_in, os_metrics, say};

/// `hold_linger DIR TARGET`: holds the manifest lock of TARGET and says
/// `ready`; lets go (keeping the descriptor open) on a line and says
/// `released`; on the next line takes it again (`again`) or exits. Staying
/// alive matters: an exit closes the descriptor, which would tell waiters
/// too.
pub async fn hold_linger(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let locks = locks_in(&dir);
    loop {
        let guard = locks
            .lock(Category::Manifest, &args[1])
            .wait_forever()
            .await?;
        say("ready");
        let _ = tokio::task::spawn_blocking(hear).await;
        guard.release().await?;
        say("released");
        let next = tokio::task::spawn_blocking(hear).await.ok().flatten();
        if next.as_deref() != Some("again") {
            return Ok(());
        }
    }
}

/// `event_waiter DIR BUSY TARGET`: with one wait thread allowed, waits for
/// the manifest lock of BUSY (held elsewhere for good: the one kernel
/// wait). Then, for each line `wait`, waits for TARGET's (an event wait),
/// says `waiting`, and once granted says `granted_on_events N` (the event
/// waits of this process granted so far on a try a file event caused) and
/// lets go. Any other line ends it.
pub async fn event_waiter(args: &[String]) -> Result<(), LockError> {
    let dir = PathBuf::from(&args[0]);
    let locks = locks_in(&dir);
    async_filelock::set_max_wait_threads(1);
    let kernel = tokio::spawn({
        let (locks, busy) = (locks.clone(), args[1].clone());
        async move { locks.lock(Category::Manifest, busy).wait_forever().await }
    });
    assert!(
        eventually(Duration::from_secs(20), || os_metrics(&locks)
            .kernel_waits_now
            == 1),
        "the first wait never reached its wait thread"
    );
    while tokio::task::spawn_blocking(hear)
        .await
        .ok()
        .flatten()
        .as_deref()
        == Some("wait")
    {
        let event = tokio::spawn({
            let (locks, target) = (locks.clone(), args[2].clone());
            async move {
                locks
                    .lock(Category::Manifest, target)
                    .timeout(Duration::from_secs(60))
                    .await
            }
        });
        assert!(
            eventually(Duration::from_secs(20), || os_metrics(&locks)
                .event_waits_now
                == 1),
            "the second wait was not served by events"
        );
        say("waiting");
        let guard = event.await.expect("event wait task")?;
        say(&format!(
            "granted_on_events {}",
            os_metrics(&locks).granted_on_events
        ));
        guard.release().await?;
    }
    kernel.abort();
    Ok(())
}
