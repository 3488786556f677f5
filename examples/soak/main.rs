//! Soak runner: eight worker processes hammer one directory with every
//! writer and lock of the crate while a chaos task SIGKILLs one of them
//! every 100 to 500 ms and starts it again; at the end a checker proves
//! that nothing the crate acknowledged was lost, nothing was written
//! twice or in part, and nothing is left locked or lying around.
//!
//! ```text
//! cargo run --release --example soak -- --secs 600
//!     [--workers N] [--dir PATH] [--seed N]   a soak (default 60 s, 8 workers)
//! cargo run --release --example soak -- --self-test [--secs N]
//!     a short soak, then faults planted: the checker must report each
//! cargo run --release --example soak -- check --dir PATH
//!     only the check, of a soak directory whose workers are gone
//! ```
//!
//! Exits 0 when there is no violation, 1 when there is any, 2 on bad
//! usage. The default directory is a temporary one, kept (and named in the
//! report) when there are violations. The workers are this same program,
//! run with `worker` (`std::env::current_exe()`).
//!
//! The invariants, and why each is exact (`check.rs` has the details):
//! acknowledged JSONL records present exactly once and nothing present
//! twice; every line of every log file a whole record; the counter equal
//! to acknowledged plus committed-but-unacknowledged increments, the
//! latter found by position and matched to ops of unknown outcome;
//! artifacts and summaries exactly one whole version; no lock held (per
//! `/proc/locks` and a try of each lock); no `.part` or temp file left
//! once the crate had the chance to clean up.

mod check;
mod model;
mod report;
mod runner;
mod session;
mod worker;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use model::Layout;
use runner::Config;
use worker::WorkerArgs;

/// What the command line asks for.
enum Mode {
    Soak(Options),
    SelfTest(Options),
    Check(PathBuf),
    Worker(WorkerArgs),
}

struct Options {
    secs: Option<u64>,
    workers: u32,
    dir: Option<PathBuf>,
    seed: Option<u64>,
}

const USAGE: &str = "usage: soak [--secs N] [--workers N] [--dir PATH] [--seed N] [--self-test]
       soak check --dir PATH";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse(&args) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Worker(args) => worker::main(args),
        Mode::Check(dir) => check_only(&dir),
        Mode::Soak(opts) => soak(opts, 60, false),
        Mode::SelfTest(opts) => soak(opts, 5, true),
    }
}

/// Hand-rolled: `clap` is not a dependency of this crate, and four flags
/// and two subcommands do not justify adding one (the issue asks for no
/// heavy dependencies).
fn parse(args: &[String]) -> Result<Mode, String> {
    match args.first().map(String::as_str) {
        Some("worker") => return WorkerArgs::from_args(&args[1..]).map(Mode::Worker),
        Some("check") => {
            let opts = parse_options(&args[1..], &mut false)?;
            return opts.dir.map(Mode::Check).ok_or("check needs --dir".into());
        }
        _ => {}
    }
    let mut self_test = false;
    let opts = parse_options(args, &mut self_test)?;
    Ok(if self_test {
        Mode::SelfTest(opts)
    } else {
        Mode::Soak(opts)
    })
}

fn parse_options(args: &[String], self_test: &mut bool) -> Result<Options, String> {
    let mut opts = Options {
        secs: None,
        workers: 8,
        dir: None,
        seed: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: &String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--secs" => opts.secs = Some(number(value()?)?),
            "--workers" => opts.workers = number(value()?)?.clamp(1, 64) as u32,
            "--dir" => opts.dir = Some(PathBuf::from(value()?)),
            "--seed" => opts.seed = Some(number(value()?)?),
            "--self-test" => *self_test = true,
            "-h" | "--help" => return Err("soak runner".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// Runs a soak (or the self-test) and reports; the exit code says whether
/// anything was violated.
fn soak(opts: Options, default_secs: u64, self_test: bool) -> ExitCode {
    let (layout, temp) = match soak_dir(opts.dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        duration: Duration::from_secs(opts.secs.unwrap_or(default_secs)),
        workers: opts.workers,
        seed: opts.seed.unwrap_or_else(random_seed),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program to start workers: {e}");
            return ExitCode::from(2);
        }
    };
    let launch = move |args: &WorkerArgs| {
        let mut cmd = Command::new(&exe);
        cmd.arg("worker").args(args.to_args());
        cmd
    };
    let passed = if self_test {
        session::self_test(&layout, &config, &launch)
    } else {
        match session::soak(&layout, &config, &launch) {
            Ok(findings) if findings.violations.is_empty() => Ok(()),
            Ok(findings) => Err(format!("{} violations", findings.violations.len())),
            Err(e) => Err(format!("the soak could not run: {e}")),
        }
    };
    if let Err(e) = &passed {
        eprintln!("soak failed: {e}");
    }
    finish(passed.is_ok(), temp)
}

/// Keeps a temporary directory when something failed, so it can be looked at.
fn finish(passed: bool, temp: Option<tempfile::TempDir>) -> ExitCode {
    if passed {
        return ExitCode::SUCCESS;
    }
    if let Some(temp) = temp {
        eprintln!("kept the soak directory {}", temp.keep().display());
    }
    ExitCode::from(1)
}

/// The directory to soak in: `--dir` (absent or empty, and kept), or a
/// new temporary one.
fn soak_dir(dir: Option<PathBuf>) -> Result<(Layout, Option<tempfile::TempDir>), String> {
    match dir {
        Some(dir) if usable_dir(&dir) => Ok((Layout::new(dir), None)),
        Some(dir) => Err(format!("{} is not empty", dir.display())),
        None => {
            let temp = tempfile::tempdir().map_err(|e| format!("make a temp dir: {e}"))?;
            Ok((Layout::new(temp.path()), Some(temp)))
        }
    }
}

/// Whether `dir` may hold a soak: absent or empty (the checker reads
/// every journal it finds there).
fn usable_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    model::mix(nanos ^ u64::from(std::process::id()))
}

/// Checks a soak directory left by an earlier run (its workers gone).
fn check_only(dir: &std::path::Path) -> ExitCode {
    let layout = Layout::new(dir);
    let facts = runner::RunFacts::default();
    let findings = session::runtime().block_on(check::check(&layout, &facts));
    let config = Config {
        duration: Duration::ZERO,
        workers: 0,
        seed: 0,
    };
    println!(
        "{}",
        report::Report {
            config: &config,
            dir: dir.to_path_buf(),
            facts: &facts,
            findings: &findings,
        }
    );
    if findings.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
