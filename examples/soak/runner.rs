//! The parent: starts the workers, kills a random one every 100 to 500 ms
//! with SIGKILL and starts it again as a new incarnation, and at the end
//! stops them all and makes sure every one is dead before the check.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::model::{Layout, mix};
use crate::worker::WorkerArgs;

/// How a worker process is started: the example re-executes itself with
/// `worker`; a test binary re-runs itself with a test filter. Either way
/// the command gets the incarnation's [`WorkerArgs`].
pub type Launch<'a> = &'a dyn Fn(&WorkerArgs) -> Command;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub duration: Duration,
    pub workers: u32,
    pub seed: u64,
}

/// What the parent saw: the facts the checker cannot find in the directory.
#[derive(Debug, Default)]
pub struct RunFacts {
    pub duration: Duration,
    /// Workers killed by the chaos task (each was started again).
    pub kills: u64,
    /// Workers started after the first ones.
    pub restarts: u64,
    /// Every worker process ever started.
    pub pids: Vec<u32>,
    /// Workers that exited by themselves: never expected.
    pub unexpected_exits: Vec<String>,
}

/// One running incarnation.
struct Running {
    child: Child,
    inc: u32,
}

/// Runs the workers under chaos for `config.duration`; returns once every
/// worker process is dead.
pub fn run(layout: &Layout, config: &Config, launch: Launch<'_>) -> std::io::Result<RunFacts> {
    let mut facts = RunFacts::default();
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut running = BTreeMap::new();
    for slot in 0..config.workers {
        let child = spawn(layout, config, launch, slot, 0, &mut facts)?;
        running.insert(slot, Running { child, inc: 0 });
    }
    let started = Instant::now();
    while started.elapsed() < config.duration {
        let pause = Duration::from_millis(rng.random_range(100..=500));
        std::thread::sleep(pause.min(config.duration.saturating_sub(started.elapsed())));
        restart_exited(layout, config, launch, &mut running, &mut facts)?;
        if started.elapsed() >= config.duration {
            break;
        }
        let slot = rng.random_range(0..config.workers);
        kill_and_restart(layout, config, launch, &mut running, slot, &mut facts)?;
    }
    facts.duration = started.elapsed();
    restart_exited(layout, config, launch, &mut running, &mut facts)?;
    stop_all(running);
    Ok(facts)
}

fn spawn(
    layout: &Layout,
    config: &Config,
    launch: Launch<'_>,
    slot: u32,
    inc: u32,
    facts: &mut RunFacts,
) -> std::io::Result<Child> {
    let args = WorkerArgs {
        dir: layout.root().to_path_buf(),
        slot,
        inc,
        seed: mix(config.seed ^ mix(u64::from(slot) << 32 | u64::from(inc))),
    };
    // Stdin stays open in the parent: a worker exits when it closes, so
    // none outlives a parent that dies.
    let child = launch(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    facts.pids.push(child.id());
    Ok(child)
}

/// SIGKILL one worker, wait until it is dead (so that its successor never
/// overlaps it), start the next incarnation.
fn kill_and_restart(
    layout: &Layout,
    config: &Config,
    launch: Launch<'_>,
    running: &mut BTreeMap<u32, Running>,
    slot: u32,
    facts: &mut RunFacts,
) -> std::io::Result<()> {
    let Some(mut old) = running.remove(&slot) else {
        return Ok(());
    };
    // Child::kill sends SIGKILL.
    old.child.kill()?;
    old.child.wait()?;
    facts.kills += 1;
    let inc = old.inc + 1;
    let child = spawn(layout, config, launch, slot, inc, facts)?;
    facts.restarts += 1;
    running.insert(slot, Running { child, inc });
    Ok(())
}

/// A worker that exited on its own is a violation (workers run until
/// killed); it is started again so the soak goes on.
fn restart_exited(
    layout: &Layout,
    config: &Config,
    launch: Launch<'_>,
    running: &mut BTreeMap<u32, Running>,
    facts: &mut RunFacts,
) -> std::io::Result<()> {
    let slots: Vec<u32> = running.keys().copied().collect();
    for slot in slots {
        let Some(r) = running.get_mut(&slot) else {
            continue;
        };
        if let Some(status) = r.child.try_wait()? {
            facts.unexpected_exits.push(format!(
                "worker {slot} incarnation {} exited by itself: {status}",
                r.inc
            ));
            let inc = r.inc + 1;
            let child = spawn(layout, config, launch, slot, inc, facts)?;
            facts.restarts += 1;
            running.insert(slot, Running { child, inc });
        }
    }
    Ok(())
}

/// SIGTERM every worker, then SIGKILL any still alive after a grace
/// period, and reap them all: the check must not start while any worker
/// could still write or hold a lock.
fn stop_all(running: BTreeMap<u32, Running>) {
    use rustix::process::{Pid, Signal, kill_process};
    let mut children: Vec<Child> = running.into_values().map(|r| r.child).collect();
    for child in &children {
        let _ = kill_process(Pid::from_child(child), Signal::TERM);
    }
    let grace = Instant::now() + Duration::from_secs(5);
    for child in &mut children {
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
