//! `baton-fault`: the fault harness as a CLI. `run` drives a seeded run and exits non-zero on
//! any violation (or when namespaces cannot be made); `check` re-checks a saved history.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use baton_fault::checker::{self, CHECK_STEPS_PER_KEY_MAX};
use baton_fault::cluster::Backend;
use baton_fault::gcpause::{self, LockKind};
use baton_fault::history::Entry;
use baton_fault::lockmodel::{self, LockOp, Stored};
use baton_fault::nemesis::Schedule;
use baton_fault::run::{self, RunConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Fault harness with a linearizability checker for Baton (and etcd 3.4)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One seeded run: a 3-member cluster in network namespaces under faults (needs root).
    Run {
        /// Replays a run's schedule and operations (default: random, printed).
        #[arg(long, env = "BATON_FAULT_SEED")]
        seed: Option<u64>,
        /// How long the run lasts, faults and quiet period included (`90s`, `2m`, `1h`).
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        duration: Duration,
        /// The server binary (default: `$BATON_BIN`, or /usr/bin/etcd with `--backend etcd`).
        #[arg(long = "bin")]
        program: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "baton")]
        backend: Backend,
        #[arg(long, value_enum, default_value = "mixed")]
        schedule: Schedule,
        /// Concurrent clients, spread over the members.
        #[arg(long, default_value_t = 3)]
        clients: u32,
        /// Lock clients: etcd's Lock service and (Baton only) the `lock` module, alternately,
        /// contending for the same locks and doing fenced writes.
        #[arg(long, default_value_t = 4)]
        lock_clients: u32,
        /// Clients of the `counter` module (Baton only; none against etcd).
        #[arg(long, default_value_t = 2)]
        counter_clients: u32,
        /// Negative control: lock holders write the protected keys with plain puts (no fence),
        /// so a run where a holder's lease ends under a fault is expected to FAIL the lock model.
        #[arg(long)]
        unfenced_locks: bool,
        /// Negative control: the workload's gets read a member's local state (serializable, may
        /// be stale), so a run with partitions or pauses is expected to FAIL the checker.
        #[arg(long)]
        serializable_reads: bool,
        /// Keep the run directory (member logs, data, history.json) even when the run passes.
        #[arg(long)]
        keep: bool,
    },
    /// The lock holder of the GC-pause schedule (started by `run`, not by hand).
    Holder {
        #[arg(long)]
        endpoint: String,
        #[arg(long, value_enum)]
        kind: LockKind,
    },
    /// Re-checks a saved history.json (and the locks.json beside it, if any).
    Check { history: PathBuf },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {text:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "baton_fault=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton-fault: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            seed,
            duration,
            program,
            backend,
            schedule,
            clients,
            lock_clients,
            counter_clients,
            unfenced_locks,
            serializable_reads,
            keep,
        } => {
            let seed = seed.unwrap_or_else(rand::random);
            eprintln!(
                "baton-fault: seed {seed} (replay with --seed {seed} or BATON_FAULT_SEED={seed})"
            );
            let program = match (program, backend) {
                (Some(path), _) => path,
                (None, Backend::Baton) => std::env::var_os("BATON_BIN")
                    .map(PathBuf::from)
                    .context("no server binary: pass --bin or set BATON_BIN")?,
                (None, Backend::Etcd) => PathBuf::from("/usr/bin/etcd"),
            };
            let program = std::path::absolute(program)?;
            anyhow::ensure!(program.is_file(), "{} is not a file", program.display());
            let config = RunConfig {
                seed,
                duration,
                backend,
                program,
                schedule,
                clients,
                lock_clients,
                counter_clients,
                unfenced_locks,
                serializable_reads,
                keep,
            };
            let report = run::run(&config).with_context(|| format!("run with seed {seed}"))?;
            let t = report.tally;
            println!(
                "baton-fault: seed {seed}: {} ok, {} failed, {} unknown operations; HashKV {:?}",
                t.ok, t.failed, t.unknown, report.hashkv
            );
            if !report.undecided_keys.is_empty() {
                println!(
                    "baton-fault: checker budget ran out on keys {:?}",
                    report.undecided_keys
                );
            }
            match run::verdict(&report) {
                Ok(()) => {
                    println!("baton-fault: PASS (seed {seed})");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!(
                        "baton-fault: FAIL (seed {seed}; run dir {})\n{e}",
                        report.dir.display()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Holder { endpoint, kind } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(gcpause::holder(&endpoint, kind))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { history } => {
            let bytes = std::fs::read(&history)
                .with_context(|| format!("reading {}", history.display()))?;
            let entries: Vec<Entry> = serde_json::from_slice(&bytes)?;
            let report = checker::check_history(&entries, CHECK_STEPS_PER_KEY_MAX);
            for (key, verdict) in &report.keys {
                println!("{key}: {verdict:?}");
            }
            let locks = history.with_file_name("locks.json");
            let mut lock_problems = Vec::new();
            if locks.is_file() {
                let bytes = std::fs::read(&locks)
                    .with_context(|| format!("reading {}", locks.display()))?;
                let (ops, stored): (Vec<LockOp>, Vec<Stored>) = serde_json::from_slice(&bytes)?;
                lock_problems = lockmodel::check(&ops, &stored);
                println!("locks: {} problems", lock_problems.len());
                for problem in &lock_problems {
                    println!("  {problem}");
                }
            }
            Ok(if report.is_linearizable() && lock_problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
