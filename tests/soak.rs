//! The soak runner of `examples/soak` as a test, so that a change that
//! breaks an invariant under kills fails `cargo test`: a twenty-second
//! soak of eight workers under chaos must find no violation, and the
//! checker must report every fault planted in a soaked directory.
//!
//! The modules are the example's own files; the workers are this test
//! binary run again with a filter that selects [`soak_worker_entry`]
//! (an example's binary has no `CARGO_BIN_EXE_` path a test could run).

#[path = "../examples/soak/check.rs"]
mod check;
#[path = "../examples/soak/model.rs"]
mod model;
#[path = "../examples/soak/report.rs"]
mod report;
#[path = "../examples/soak/runner.rs"]
mod runner;
#[path = "../examples/soak/session.rs"]
mod session;
#[path = "../examples/soak/worker.rs"]
mod worker;

use std::process::Command;
use std::time::Duration;

use model::Layout;
use runner::Config;
use worker::WorkerArgs;

/// Carries a worker's arguments to the re-run test binary.
const WORKER_ARGS: &str = "ASYNC_FILELOCK_SOAK_WORKER";

/// A worker process when [`WORKER_ARGS`] is set (it runs until killed);
/// otherwise an empty test.
#[test]
fn soak_worker_entry() {
    if let Ok(raw) = std::env::var(WORKER_ARGS) {
        let args: Vec<String> = raw.split('\u{1f}').map(str::to_owned).collect();
        worker::main(WorkerArgs::from_args(&args).expect("worker arguments"));
    }
}

fn launch(args: &WorkerArgs) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args([
        "soak_worker_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(WORKER_ARGS, args.to_args().join("\u{1f}"));
    cmd
}

/// A fresh seed per run (printed in the report, which the harness shows
/// on failure), so that runs cover different schedules.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    model::mix(nanos)
}

#[test]
fn twenty_seconds_of_eight_workers_killed_at_random_break_no_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let config = Config {
        duration: Duration::from_secs(20),
        workers: 8,
        seed: seed(),
    };
    let findings = session::soak(&layout, &config, &launch).expect("run the soak");
    if !findings.violations.is_empty() {
        panic!(
            "{} violations (see the report above); directory kept at {}",
            findings.violations.len(),
            dir.keep().display()
        );
    }
    assert!(
        findings.incarnations > u64::from(config.workers),
        "workers were killed and restarted"
    );
}

#[test]
fn the_checker_reports_every_fault_planted_in_a_soaked_directory() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let config = Config {
        duration: Duration::from_secs(4),
        workers: 4,
        seed: seed(),
    };
    if let Err(e) = session::self_test(&layout, &config, &launch) {
        panic!("{e}; directory kept at {}", dir.keep().display());
    }
}
