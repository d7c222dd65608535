//! `baton elect NAME VALUE [-- CMD ARGS…]` campaigns in the built-in `election` module on a
//! kept-alive session lease; once leader it prints the leader key and fencing token and holds
//! until Ctrl-C, or runs the command while it leads (the environment and stop-on-loss rule of
//! `baton lock`), then resigns. `baton elect --observe NAME` prints the leader's key and value
//! each time the leader or its value changes, as `etcdctl elect -l` does (same layout, so
//! either side can watch the other's elections).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use baton_limits::CLI_CLEANUP_TIMEOUT_MS;

use super::child::{self, Ended, Interrupts};
use super::client::{Call, Recipes, text_field};
use super::lock::{FENCING_TOKEN_ENV, LOCK_KEY_ENV, SessionArgs};
use super::session::Session;

#[derive(Args, Debug)]
pub(crate) struct ElectArgs {
    /// The election's name (candidates' keys are NAME/<lease hex>, as etcd's).
    name: String,
    /// What the leader proclaims; required unless observing.
    #[arg(required_unless_present = "observe")]
    value: Option<String>,
    /// Print the leader (key, then value) each time it changes instead of campaigning.
    #[arg(short = 'l', long, visible_alias = "listen", conflicts_with = "value")]
    observe: bool,
    #[command(flatten)]
    session: SessionArgs,
    /// Run this while leader: `baton elect NAME VALUE -- CMD ARGS…`.
    #[arg(last = true, conflicts_with = "observe")]
    command: Vec<String>,
}

pub(crate) async fn run(endpoints: Vec<String>, args: ElectArgs) -> Result<ExitCode> {
    let mut recipes = Recipes::connect(&endpoints).await?;
    match &args.value {
        Some(value) if !args.observe => campaign(&mut recipes, &args, value).await,
        _ => observe(&mut recipes, &args.name).await,
    }
}

async fn campaign(recipes: &mut Recipes, args: &ElectArgs, value: &str) -> Result<ExitCode> {
    let mut interrupts = Interrupts::catch()?;
    let session = Session::grant(&recipes.etcd, args.session.ttl).await?;
    let call = Call {
        lease: session.id(),
        ..Call::new(
            "election",
            "campaign",
            json!({"name": args.name, "value": value}),
        )
    };
    let elected = tokio::select! {
        reply = recipes.call(call) => reply.map_err(anyhow::Error::from),
        reason = session.lost() => Err(anyhow::anyhow!("{reason} while campaigning")),
        () = interrupts.next() => Err(anyhow::anyhow!("interrupted while campaigning")),
    };
    let (key, token) = match elected.and_then(|reply| {
        let key = text_field(&reply, "key").context("the campaign names no key")?;
        let token = reply["token"]
            .as_i64()
            .context("the campaign has no token")?;
        Ok((key, token))
    }) {
        Ok(leader) => leader,
        Err(e) => {
            // Revoking the lease withdraws the candidacy.
            session.close().await;
            return Err(e.context(format!("campaigning in {}", args.name)));
        }
    };
    if args.command.is_empty() {
        println!("{key}");
        println!("{token}");
    }
    let env = [(FENCING_TOKEN_ENV, token.to_string()), (LOCK_KEY_ENV, key)];
    let grace = Duration::from_secs(args.session.kill_grace);
    let ended = child::run_in_session(&session, &args.command, &env, grace, &mut interrupts).await;
    if !matches!(ended, Ok(Ended::Lost(_))) {
        let resign = Call {
            lease: session.id(),
            timeout: Some(Duration::from_millis(CLI_CLEANUP_TIMEOUT_MS)),
            ..Call::new(
                "election",
                "resign",
                json!({"name": args.name, "token": token}),
            )
        };
        if let Err(e) = recipes.call(resign).await {
            tracing::warn!("resigning from {}: {e:#}", args.name);
        }
    }
    session.close().await;
    match ended? {
        Ended::Exited(status) | Ended::Interrupted(Some(status)) => Ok(child::exit_code(status)),
        Ended::Interrupted(None) => Ok(ExitCode::SUCCESS),
        Ended::Lost(reason) => bail!("leadership of {} lost: {reason}", args.name),
    }
}

/// Prints every leader in turn; each call waits server-side until the leader differs from the
/// one it names. Runs until interrupted (nothing to clean up) or the cluster fails it.
async fn observe(recipes: &mut Recipes, name: &str) -> Result<ExitCode> {
    let mut input = Map::new();
    input.insert("name".to_owned(), json!(name));
    loop {
        let call = Call {
            read_only: true,
            ..Call::new("election", "observe", Value::Object(input.clone()))
        };
        let leader = recipes
            .call(call)
            .await
            .with_context(|| format!("observing {name}"))?;
        let key = text_field(&leader, "key").context("the leader has no key")?;
        let value = text_field(&leader, "value").unwrap_or_default();
        println!("{key}");
        println!("{value}");
        // Name the leader just printed (as text or hex, whichever it came in) for the next wait.
        input.remove("key");
        input.remove("key_hex");
        for field in ["key", "key_hex", "mod_revision"] {
            if let Some(v) = leader.get(field) {
                input.insert(field.to_owned(), v.clone());
            }
        }
    }
}
