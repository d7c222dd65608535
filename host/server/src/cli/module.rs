//! `baton module deploy|list|describe|rm` and `baton call`: clients of the `baton.v1.Modules`
//! service on any member given by `--endpoints`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use baton_proto::baton::v1 as pb;

use super::client::{connect, status};

#[derive(Subcommand, Debug)]
pub(crate) enum ModuleCommand {
    /// Deploy FILE (a WebAssembly component) as the next version of NAME.
    Deploy { name: String, file: PathBuf },
    /// List every module and its latest version.
    List,
    /// Show every version of a module.
    Describe { name: String },
    /// Remove a module name (its versions stay callable by hash).
    Rm { name: String },
}

#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    /// Module name, or a version's hash (64 hex digits).
    module: String,
    function: String,
    /// Input bytes, passed as given (JSON for the built-in modules).
    #[arg(default_value = "")]
    input: String,
    /// Fuel budget; 0 for the server's default.
    #[arg(long, default_value_t = 0)]
    fuel: u64,
    /// Lease the call may attach keys to (hex id, as etcdctl prints it); 0 for none.
    #[arg(long, default_value = "0")]
    lease: String,
    /// Give up after this many seconds (a call may wait server-side, e.g. a pop on an empty
    /// queue); 0 waits as long as the module does.
    #[arg(long, default_value_t = 0)]
    timeout_s: u64,
    /// Run on the member contacted, after a linearizable read and without a log entry; the
    /// module may only read (a write fails the call).
    #[arg(long)]
    read_only: bool,
}

pub(crate) async fn run_module(endpoints: Vec<String>, command: ModuleCommand) -> Result<()> {
    let mut client = connect(&endpoints).await?;
    match command {
        ModuleCommand::Deploy { name, file } => {
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let request = pb::DeployRequest {
                name: name.clone(),
                component,
            };
            let reply = client.deploy(request).await.map_err(status)?.into_inner();
            println!("{name} version {} hash {}", reply.version, reply.hash);
        }
        ModuleCommand::List => {
            let reply = client
                .list(pb::ListRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for module in reply.modules {
                if let Some(latest) = module.versions.last() {
                    println!(
                        "{} v{} {} {} bytes{}",
                        module.name,
                        latest.version,
                        latest.hash,
                        latest.size_bytes,
                        origin(latest)
                    );
                }
            }
        }
        ModuleCommand::Describe { name } => {
            let reply = client
                .describe(pb::DescribeRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            for v in reply.versions {
                println!(
                    "{} v{} {} {} bytes exports {}{}",
                    reply.name,
                    v.version,
                    v.hash,
                    v.size_bytes,
                    v.exports.join(","),
                    origin(&v)
                );
            }
        }
        ModuleCommand::Rm { name } => {
            let reply = client
                .delete(pb::DeleteRequest { name: name.clone() })
                .await
                .map_err(status)?
                .into_inner();
            println!("removed {name} ({} versions)", reply.versions);
        }
    }
    Ok(())
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) async fn run_call(endpoints: Vec<String>, args: CallArgs) -> Result<()> {
    let lease = i64::from_str_radix(&args.lease, 16)
        .with_context(|| format!("lease must be a hex id: {}", args.lease))?;
    let (name, hash) = if is_hash(&args.module) {
        (String::new(), args.module.to_lowercase())
    } else {
        (args.module, String::new())
    };
    let mut client = connect(&endpoints).await?;
    let request = pb::InvokeRequest {
        name,
        hash,
        function: args.function,
        input: args.input.into_bytes(),
        lease,
        fuel: args.fuel,
        read_only: args.read_only,
    };
    let mut request = tonic::Request::new(request);
    if args.timeout_s > 0 {
        request.set_timeout(std::time::Duration::from_secs(args.timeout_s));
    }
    let reply = client.invoke(request).await.map_err(status)?.into_inner();
    // The output as the module produced it, plus a newline for the terminal.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reply.output)?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// What `list` and `describe` append to a version deployed by Baton itself; nothing for a
/// user's.
fn origin(v: &pb::ModuleVersion) -> String {
    if v.builtin {
        format!(" built-in set {}", v.builtin_set)
    } else {
        String::new()
    }
}
