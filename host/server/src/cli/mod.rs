//! The `baton` command line: `serve` runs a member; client subcommands talk to any
//! etcd-compatible endpoint given by `--endpoints`, like etcdctl.

mod module;
mod runtime;
mod serve;

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
        Command::Module(_) | Command::Call(_) => None,
    };
    let runtime = match runtime::build(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Bench(args) => baton_bench::run(cli.endpoints, args).await,
            Command::Module(command) => module::run_module(cli.endpoints, command).await,
            Command::Call(args) => module::run_call(cli.endpoints, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e:#}");
            // Blocking work still under way (a module compile, a state commit) would otherwise
            // hold the exit of a member whose state can no longer be trusted.
            runtime.shutdown_timeout(Duration::from_millis(FAILED_EXIT_TASKS_WAIT_MS));
            ExitCode::FAILURE
        }
    }
}
