//! `lock-doctor`: look at, clean, configure and probe the lock dirs of
//! async-filelock. The logic is the library's `async_filelock::doctor`
//! module; this program parses arguments, prints, and picks the exit code:
//! 0 healthy, 1 problems found (stale locks, a failed probe, an error), 2
//! usage errors (clap's own code for them).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_filelock::BackendChoice;
use async_filelock::doctor::{self, CleanOptions, Column, Layout, ProbeCommand};
use clap::{Parser, Subcommand, ValueEnum};

/// Look at, clean, configure and probe async-filelock's lock dirs.
#[derive(Debug, Parser)]
#[command(name = "lock-doctor", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One row per lock file: who holds it, how, since when, who waits
    /// (exit 1 if a soft lock is stale).
    List(ListArgs),
    /// Remove stale soft locks, free old lock files, orphaned .part files
    /// and atomic-write temps, each only while holding its lock.
    Clean(CleanArgs),
    /// The effective configuration from the environment, the lock dir's
    /// filesystem, and whether flock works there.
    Policy,
    /// Test with child processes whether locking excludes in DIR (exit 1 if
    /// a check fails).
    Probe {
        /// The directory to probe (default: the current one).
        dir: Option<PathBuf>,
    },
    /// Serves a probe's commands on stdin and stdout (run by `probe`).
    #[command(hide = true)]
    ProbeChild,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// The lock dir (default: ASYNC_FILELOCK_DIR, else ./.locks).
    lock_dir: Option<PathBuf>,
    /// Print JSON: {"locks":[{...}]}, null for unknown values.
    #[arg(long)]
    json: bool,
    /// Columns to print, comma-separated (CATEGORY, TARGET, MODE, PID,
    /// COMMAND, HELD, WAITERS, BACKEND, LOCK_FILE); +LIST adds to the
    /// defaults.
    #[arg(short = 'o', long, value_name = "LIST", value_parser = parse_columns)]
    output: Option<Columns>,
    /// No alignment: values separated by one space, blanks escaped.
    #[arg(short = 'r', long)]
    raw: bool,
    /// Print no heading line.
    #[arg(short = 'n', long)]
    noheadings: bool,
    /// Which locks to list: the lock dir's files (`os`, default) or the
    /// advisory locks of a PostgreSQL namespace (`postgres`; needs the
    /// `postgres` feature, and the server from --url or
    /// ASYNC_FILELOCK_PG_URL).
    #[arg(long, value_enum, default_value = "os")]
    backend: ListBackend,
    /// The PostgreSQL server (default: ASYNC_FILELOCK_PG_URL).
    #[arg(long)]
    url: Option<String>,
    /// The advisory-lock namespace (default: ASYNC_FILELOCK_PG_NAMESPACE,
    /// else 0x6166 = 24934).
    #[arg(long)]
    namespace: Option<i32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListBackend {
    Os,
    Postgres,
}

#[derive(Debug, clap::Args)]
struct CleanArgs {
    /// The lock dir (default: ASYNC_FILELOCK_DIR, else ./.locks).
    lock_dir: Option<PathBuf>,
    /// Remove free OS lock files last written at least this many seconds
    /// ago.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    older_than: u64,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// The backend to lock with where no lock file tells (default:
    /// ASYNC_FILELOCK_BACKEND).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Os,
    Soft,
    Auto,
}

/// The columns of `-o`, one value for clap (a `Vec` field would be taken
/// for a repeated option).
#[derive(Debug, Clone)]
struct Columns(Vec<Column>);

fn parse_columns(spec: &str) -> Result<Columns, String> {
    doctor::parse_columns(spec)
        .map(Columns)
        .map_err(|e| e.to_string())
}

/// `list --backend postgres`.
#[cfg(feature = "postgres")]
fn list_postgres(args: ListArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = match args
        .url
        .or_else(|| std::env::var("ASYNC_FILELOCK_PG_URL").ok())
    {
        Some(url) => url,
        None => {
            eprintln!("lock-doctor: list --backend postgres needs --url or ASYNC_FILELOCK_PG_URL");
            return Ok(ExitCode::from(2));
        }
    };
    let namespace = match args.namespace {
        Some(ns) => ns,
        None => std::env::var("ASYNC_FILELOCK_PG_NAMESPACE")
            .ok()
            .map(|v| v.trim().parse::<i32>())
            .transpose()?
            .unwrap_or(0x6166),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let locks = runtime.block_on(doctor::list_postgres(&url, namespace))?;
    if args.json {
        println!("{}", doctor::postgres_json(&locks));
    } else {
        print!("{}", doctor::postgres_table(&locks, !args.noheadings));
    }
    Ok(ExitCode::SUCCESS)
}

/// Without the `postgres` feature: a usage error that says so.
#[cfg(not(feature = "postgres"))]
fn list_postgres(_args: ListArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    eprintln!("lock-doctor: built without the `postgres` feature");
    Ok(ExitCode::from(2))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lock-doctor: {e}");
            ExitCode::from(1)
        }
    }
}

/// Healthy (0) or not (1).
fn healthy(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::List(args) if matches!(args.backend, ListBackend::Postgres) => list_postgres(args),
        Command::List(args) => {
            let dir = match args.lock_dir {
                Some(dir) => dir,
                None => doctor::default_lock_dir()?,
            };
            let rows = doctor::list(&dir)?;
            let columns = args.output.map_or_else(|| Column::ALL.to_vec(), |c| c.0);
            if args.json {
                println!("{}", doctor::json(&rows, &columns));
            } else {
                let layout = if args.raw {
                    Layout::Raw
                } else {
                    Layout::Aligned
                };
                print!(
                    "{}",
                    doctor::table(&rows, &columns, layout, !args.noheadings)
                );
            }
            Ok(healthy(!rows.iter().any(|r| r.is_problem())))
        }
        Command::Clean(args) => {
            let dir = match args.lock_dir {
                Some(dir) => dir,
                None => doctor::default_lock_dir()?,
            };
            let mut options = CleanOptions::default();
            options.older_than = Duration::from_secs(args.older_than);
            options.dry_run = args.dry_run;
            options.backend = args.backend.map(|b| match b {
                BackendArg::Os => BackendChoice::Os,
                BackendArg::Soft => BackendChoice::Soft,
                BackendArg::Auto => BackendChoice::Auto,
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(doctor::clean(&dir, &options))?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy => {
            print!("{}", doctor::policy()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let me = std::env::current_exe()?;
            let report = doctor::probe(&dir, &ProbeCommand::new(me).arg("probe-child"))?;
            print!("{report}");
            Ok(healthy(report.passed()))
        }
        Command::ProbeChild => {
            doctor::serve_probe_child(std::io::stdin().lock(), std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
