//! The `baton` command line: `serve` runs a member; client subcommands talk to any
//! etcd-compatible endpoint given by `--endpoints`, like etcdctl.

mod barrier;
mod child;
mod client;
mod elect;
mod lock;
mod module;
mod queue;
mod runtime;
mod serve;
mod session;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use baton_limits::FAILED_EXIT_TASKS_WAIT_MS;

#[derive(Parser, Debug)]
#[command(
    name = "baton",
    version,
    about = "Baton: a Raft-replicated, etcd v3-compatible coordination service"
)]
struct Cli {
    /// Client endpoints, comma-separated (client subcommands only).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    endpoints: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a Baton member.
    Serve(serve::ServeArgs),
    /// Drive any etcd-compatible endpoint with load and report throughput and latency.
    Bench(baton_bench::BenchArgs),
    /// Deploy, list, describe or remove Wasm modules.
    #[command(subcommand)]
    Module(module::ModuleCommand),
    /// Call a function of a module: `baton call counter add '{"keys":["c1"],"by":1}'`.
    Call(module::CallArgs),
    /// Run a command while holding a lock (or one of N permits): `baton lock NAME -- CMD`.
    Lock(lock::LockArgs),
    /// Campaign for leadership (optionally running a command while leader), or observe it.
    Elect(elect::ElectArgs),
    /// Push, pop, reserve, ack or nack items of a queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Hold, release or wait for a barrier.
    #[command(subcommand)]
    Barrier(barrier::BarrierCommand),
    /// Print every change under a prefix, optionally running a command for each.
    Watch(watch::WatchArgs),
}

/// Parses arguments, sets up logging and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let workers = match &cli.command {
        Command::Serve(args) => args.worker_threads,
        Command::Bench(_) => Some(runtime::bench_workers()),
        Command::Module(_)
        | Command::Call(_)
        | Command::Lock(_)
        | Command::Elect(_)
        | Command::Queue(_)
        | Command::Barrier(_)
        | Command::Watch(_) => None,
    };
    let runtime = match runtime::build(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let endpoints = cli.endpoints;
        let done = |()| ExitCode::SUCCESS;
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(done),
            Command::Bench(args) => baton_bench::run(endpoints, args).await.map(done),
            Command::Module(command) => module::run_module(endpoints, command).await.map(done),
            Command::Call(args) => module::run_call(endpoints, args).await.map(done),
            Command::Lock(args) => lock::run(endpoints, args).await,
            Command::Elect(args) => elect::run(endpoints, args).await,
            Command::Queue(command) => queue::run(endpoints, command).await.map(done),
            Command::Barrier(command) => barrier::run(endpoints, command).await.map(done),
            Command::Watch(args) => watch::run(endpoints, args).await,
        }
    });
    match result {
        // A command's own status, passed through by `lock`, `elect` and `watch`.
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton: {e:#}");
            // Blocking work still under way (a module compile, a state commit) would otherwise
            // hold the exit of a member whose state can no longer be trusted.
            runtime.shutdown_timeout(Duration::from_millis(FAILED_EXIT_TASKS_WAIT_MS));
            ExitCode::FAILURE
        }
    }
}
