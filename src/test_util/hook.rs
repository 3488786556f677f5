//! The child's side of a [`super::ChildHolder`]: [`child_main`] takes the
//! lock its environment names, says so, holds it until told to release it,
//! and exits.
//!
//! The conversation is lines on the child's stdin and stdout, each of the
//! child's starting with [`SAYS`] so that the test harness's own output on
//! the same stdout is skipped: `held <token>` (or `held -` when no token
//! could be had), `error <message>`, `released`. Any line on stdin, or its
//! end, means "release".

use std::io::Write;

use super::spec::{HOLD_VAR, HoldSpec};
use crate::error::LockError;

/// What starts each line the child says.
pub(super) const SAYS: &str = "async-filelock-test-util:";

/// Runs the lock holder and exits the process if this process was started
/// by [`super::ChildHolder`]; returns at once otherwise. Call it first in
/// `main` of a test program with its own `main` (`harness = false`); under
/// the libtest harness, [`super::child_hook`] calls it for you.
///
/// It runs the holder on a thread of its own with its own tokio runtime,
/// so it may be called from inside a runtime too.
///
/// ```
/// // In `fn main` of a `harness = false` test: a no-op in a normal run.
/// async_filelock::test_util::child_main();
/// ```
pub fn child_main() {
    let Some(spec) = std::env::var_os(HOLD_VAR) else {
        return;
    };
    let code = std::thread::Builder::new()
        .name("async-filelock-test-util-holder".into())
        .spawn(move || match run(&spec.to_string_lossy()) {
            Ok(()) => 0,
            Err(e) => {
                say(&format!("error {}", one_line(&e.to_string())));
                1
            }
        })
        .map_or(1, |thread| thread.join().unwrap_or(1));
    std::process::exit(code);
}

fn run(spec: &str) -> Result<(), LockError> {
    let spec = HoldSpec::from_json(spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| LockError::io("start a runtime to hold", &spec.target, e))?;
    runtime.block_on(hold(spec))
}

async fn hold(spec: HoldSpec) -> Result<(), LockError> {
    let locks = spec.locks()?;
    let acquire = locks.acquire(spec.category()?, &spec.target);
    let acquire = match spec.timeout_ms {
        Some(ms) => acquire.timeout(std::time::Duration::from_millis(ms)),
        None => acquire.wait_forever(),
    };
    let guard = if spec.shared {
        acquire.shared().await?
    } else {
        acquire.await?
    };
    match guard.token() {
        Ok(token) => say(&format!("held {}", token.get())),
        Err(_) => say("held -"),
    }
    // Any line, or the end of stdin (the parent went away), releases.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
    guard.release().await?;
    say("released");
    Ok(())
}

/// Writes one line for the parent, straight to the stdout descriptor (the
/// test harness captures `println!`, not that).
fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{SAYS} {what}");
    let _ = out.flush();
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}
