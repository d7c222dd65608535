//! `baton module deploy|list|describe|rm` and `baton call`: clients of the `baton.v1.Modules`
//! service on any member given by `--endpoints`. `describe`, `baton call MODULE` (no function)
//! and `baton call MODULE [FUNCTION] --help` list what the module declares of its functions
//! (`baton_sdk::functions!`), or only its exports when it declares nothing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, Subcommand};
use tonic::transport::Channel;

use baton_proto::baton::v1 as pb;
use baton_proto::baton::v1::modules_client::ModulesClient;

use super::client::{connect, status};

#[derive(Subcommand, Debug)]
pub(crate) enum ModuleCommand {
    /// Deploy FILE (a WebAssembly component) as the next version of NAME.
    Deploy { name: String, file: PathBuf },
    /// List every module and its latest version.
    List,
    /// Show every version of a module, and the functions its latest version declares.
    Describe { name: String },
    /// Remove a module name (its versions stay callable by hash).
    Rm { name: String },
}

#[derive(Args, Debug)]
// `--help` after a module lists that module's functions, so the flag is ours, not clap's.
#[command(disable_help_flag = true)]
pub(crate) struct CallArgs {
    /// Module name, or a version's hash (64 hex digits).
    module: Option<String>,
    /// Function to call; without it, the module's functions are listed.
    function: Option<String>,
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
    /// Print help; after MODULE, list its functions and their inputs (after FUNCTION, that
    /// function's).
    #[arg(short, long, action = ArgAction::SetTrue)]
    help: bool,
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
            for v in &reply.versions {
                println!(
                    "{} v{} {} {} bytes exports {}{}",
                    reply.name,
                    v.version,
                    v.hash,
                    v.size_bytes,
                    v.exports.join(","),
                    origin(v)
                );
            }
            if let Some(latest) = reply.versions.last() {
                print!("{}", functions_text(&reply.name, latest, None)?);
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

/// `baton call`'s own usage, as clap would print it for `--help`.
fn call_usage() -> String {
    let mut command = CallArgs::augment_args(clap::Command::new("call"))
        .bin_name("baton call")
        .about("Call a function of a module; `baton call MODULE` lists its functions");
    command.render_help().to_string()
}

pub(crate) async fn run_call(endpoints: Vec<String>, args: CallArgs) -> Result<()> {
    let Some(module) = args.module else {
        print!("{}", call_usage());
        if args.help {
            return Ok(());
        }
        bail!("a MODULE is required");
    };
    let mut client = connect(&endpoints).await?;
    let function = match args.function {
        Some(function) if !args.help => function,
        function => {
            let version = described(&mut client, &module).await?;
            print!(
                "{}",
                functions_text(&module, &version, function.as_deref())?
            );
            return Ok(());
        }
    };
    let lease = i64::from_str_radix(&args.lease, 16)
        .with_context(|| format!("lease must be a hex id: {}", args.lease))?;
    let (name, hash) = if is_hash(&module) {
        (String::new(), module.to_lowercase())
    } else {
        (module, String::new())
    };
    let request = pb::InvokeRequest {
        name,
        hash,
        function,
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

/// The version a call of `module` runs (the latest of a name, or the one of a hash), as
/// Describe tells it, functions included. A hash is looked up through the name that holds it.
async fn described(client: &mut ModulesClient<Channel>, module: &str) -> Result<pb::ModuleVersion> {
    let name = if is_hash(module) {
        let hash = module.to_lowercase();
        let listed = client
            .list(pb::ListRequest {})
            .await
            .map_err(status)?
            .into_inner();
        let holder =
            (listed.modules.into_iter()).find(|m| m.versions.iter().any(|v| v.hash == hash));
        match holder {
            Some(m) => m.name,
            None => bail!("no module name holds version {hash}, so its functions are unknown"),
        }
    } else {
        module.to_string()
    };
    let reply = client
        .describe(pb::DescribeRequest { name: name.clone() })
        .await
        .map_err(status)?
        .into_inner();
    let version = if is_hash(module) {
        let hash = module.to_lowercase();
        reply.versions.into_iter().find(|v| v.hash == hash)
    } else {
        reply.versions.into_iter().last()
    };
    version.with_context(|| format!("module {name} has no such version"))
}

/// The functions `v` of `module` declares, each with its input and an example call (only
/// `only`'s when given), or its exports when it declares none.
fn functions_text(module: &str, v: &pb::ModuleVersion, only: Option<&str>) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    if !v.declares_functions {
        writeln!(
            out,
            "{module} v{} declares no functions (built without baton_sdk::functions!); \
             exports: {}",
            v.version,
            v.exports.join(", ")
        )?;
        return Ok(out);
    }
    let shown: Vec<&pb::ModuleFunction> = match only {
        None => v.functions.iter().collect(),
        Some(name) => match v.functions.iter().find(|f| f.name == name) {
            Some(f) => vec![f],
            None => {
                let names: Vec<&str> = v.functions.iter().map(|f| f.name.as_str()).collect();
                bail!(
                    "{module} declares no function {name:?} (it declares: {})",
                    names.join(", ")
                );
            }
        },
    };
    writeln!(out, "functions of {module} v{}:", v.version)?;
    for f in shown {
        let access = match (f.writes, f.waits) {
            (true, false) => "writes",
            (true, true) => "writes, may wait",
            (false, false) => "reads only; --read-only works",
            (false, true) => "reads only, may wait; --read-only works",
        };
        writeln!(out, "  {}  ({access})", f.name)?;
        for (label, text) in [("", &f.summary), ("input:   ", &f.input)] {
            if !text.is_empty() {
                writeln!(out, "      {label}{text}")?;
            }
        }
        if !f.input_example.is_empty() {
            let input = shell_quote(&f.input_example);
            writeln!(out, "      example: baton call {module} {} {input}", f.name)?;
        }
        if !f.output_example.is_empty() {
            writeln!(out, "      returns: {}", f.output_example)?;
        }
    }
    Ok(out)
}

/// `text` as one POSIX shell word, so an example can be pasted as it is printed.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(functions: Vec<pb::ModuleFunction>, declares_functions: bool) -> pb::ModuleVersion {
        pb::ModuleVersion {
            version: 2,
            exports: vec!["baton:module/handler@0.2.0".into()],
            functions,
            declares_functions,
            ..Default::default()
        }
    }

    fn get() -> pb::ModuleFunction {
        pb::ModuleFunction {
            name: "get".into(),
            writes: false,
            waits: true,
            summary: "Reads counters.".into(),
            input: "keys: counter keys".into(),
            input_example: r#"{"keys":["it's"]}"#.into(),
            output_example: r#"{"it's":0}"#.into(),
        }
    }

    #[test]
    fn declared_functions_list_with_a_pastable_example() {
        let put = pb::ModuleFunction {
            name: "put".into(),
            writes: true,
            ..Default::default()
        };
        let text = functions_text("c", &version(vec![get(), put], true), None).expect("text");
        let expected = "functions of c v2:\n  \
            get  (reads only, may wait; --read-only works)\n      \
            Reads counters.\n      \
            input:   keys: counter keys\n      \
            example: baton call c get '{\"keys\":[\"it'\\''s\"]}'\n      \
            returns: {\"it's\":0}\n  \
            put  (writes)\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn one_function_or_a_refusal_naming_the_declared_ones() {
        let v = version(vec![get()], true);
        let text = functions_text("c", &v, Some("get")).expect("text");
        assert!(text.contains("  get  ("), "{text}");
        let refused = functions_text("c", &v, Some("set")).expect_err("undeclared");
        assert!(
            refused.to_string().contains("(it declares: get)"),
            "{refused}"
        );
    }

    #[test]
    fn a_module_declaring_nothing_shows_its_exports() {
        let text = functions_text("old", &version(Vec::new(), false), None).expect("text");
        assert_eq!(
            text,
            "old v2 declares no functions (built without baton_sdk::functions!); exports: \
             baton:module/handler@0.2.0\n"
        );
    }

    #[test]
    fn call_help_is_generated_with_our_help_flag() {
        let usage = call_usage();
        assert!(usage.contains("Usage: baton call"), "{usage}");
        assert!(usage.contains("--help"), "{usage}");
    }
}
