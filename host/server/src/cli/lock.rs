//! `baton lock NAME [-- CMD ARGS…]`: holds the built-in `lock` module's lock (or, with `-n N`,
//! one of the `semaphore` module's N permits) on a kept-alive session lease, like `etcdctl lock`
//! and `consul lock -n`. With a command, runs it while holding, with the fencing token and key
//! in its environment, and exits with its status; without one, prints the key and token and
//! holds until Ctrl-C. Releases and revokes the lease on the way out. If the lease is lost the
//! lock may already be someone else's, so the command is stopped and baton exits non-zero.
//!
//! The lock shares etcd's layout (`NAME/<lease hex>`), so `baton lock` and `etcdctl lock`
//! exclude each other on the same name.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use baton_limits::{CLI_KILL_GRACE_S, CLI_SESSION_TTL_S, SEMAPHORE_PERMITS_MAX};

use super::child::{self, Ended, Interrupts};
use super::client::{Call, CallError, Recipes, text_field};
use super::session::Session;

/// The fencing token of the grant, for the command to pass to fenced writes.
pub(crate) const FENCING_TOKEN_ENV: &str = "BATON_FENCING_TOKEN";
/// The key that holds the lock (or the permit) while the command runs.
pub(crate) const LOCK_KEY_ENV: &str = "BATON_LOCK_KEY";

#[derive(Args, Debug)]
pub(crate) struct LockArgs {
    /// The lock's name (its keys are NAME/<lease hex>, as etcd's).
    name: String,
    /// Hold one of N permits of a semaphore instead (the `semaphore` module); every holder
    /// of NAME must give the same N.
    #[arg(short = 'n', long = "permits", value_parser = clap::value_parser!(u32).range(1..=i64::from(SEMAPHORE_PERMITS_MAX)))]
    permits: Option<u32>,
    #[command(flatten)]
    session: SessionArgs,
    /// Give up waiting for the lock after this many seconds (exit status 1); 0 waits forever.
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Run this while holding the lock: `baton lock NAME -- CMD ARGS…`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// What `lock` and `elect` share: the session lease and how a command is stopped.
#[derive(Args, Debug)]
pub(crate) struct SessionArgs {
    /// Session lease TTL in seconds: a `baton` that dies frees what it holds after this long.
    #[arg(long, default_value_t = CLI_SESSION_TTL_S, value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) ttl: i64,
    /// Seconds a command being stopped (lease lost, baton interrupted) has between SIGTERM and
    /// SIGKILL.
    #[arg(long, default_value_t = CLI_KILL_GRACE_S)]
    pub(crate) kill_grace: u64,
}

pub(crate) async fn run(endpoints: Vec<String>, args: LockArgs) -> Result<ExitCode> {
    let mut interrupts = Interrupts::catch()?;
    let mut recipes = Recipes::connect(&endpoints).await?;
    let session = Session::grant(&recipes.etcd, args.session.ttl).await?;
    let held = tokio::select! {
        held = acquire(&mut recipes, &args, session.id()) => held,
        reason = session.lost() => Err(anyhow::anyhow!("{reason} while waiting for the lock")),
        () = interrupts.next() => Err(anyhow::anyhow!("interrupted while waiting for the lock")),
    };
    let (key, token) = match held {
        Ok(held) => held,
        Err(e) => {
            // Revoking the lease takes the waiter's key out of the queue.
            session.close().await;
            return Err(e);
        }
    };
    if args.command.is_empty() {
        println!("{key}");
        println!("{token}");
    }
    let env = [
        (FENCING_TOKEN_ENV, token.to_string()),
        (LOCK_KEY_ENV, key.clone()),
    ];
    let grace = Duration::from_secs(args.session.kill_grace);
    let ended = child::run_in_session(&session, &args.command, &env, grace, &mut interrupts).await;
    if !matches!(ended, Ok(Ended::Lost(_))) {
        release(&mut recipes, &args, session.id()).await;
    }
    session.close().await;
    match ended? {
        Ended::Exited(status) | Ended::Interrupted(Some(status)) => Ok(child::exit_code(status)),
        Ended::Interrupted(None) => Ok(ExitCode::SUCCESS),
        Ended::Lost(reason) => bail!("lock {} lost: {reason}", args.name),
    }
}

/// The module and its input for one function of the lock or the semaphore.
fn call<'a>(args: &LockArgs, function: &'a str, lease: i64) -> Call<'a> {
    let (module, input) = match args.permits {
        // Only `acquire` names the count; every holder must agree on it.
        Some(permits) if function == "acquire" => {
            ("semaphore", json!({"name": args.name, "permits": permits}))
        }
        Some(_) => ("semaphore", json!({"name": args.name})),
        None => ("lock", json!({"name": args.name})),
    };
    Call {
        lease,
        ..Call::new(module, function, input)
    }
}

/// Waits for the grant; returns its key and fencing token.
async fn acquire(recipes: &mut Recipes, args: &LockArgs, lease: i64) -> Result<(String, i64)> {
    let mut acquire = call(args, "acquire", lease);
    acquire.timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let reply = match recipes.call(acquire).await {
        Ok(reply) => reply,
        Err(CallError::TimedOut(after)) => {
            bail!("timed out after {after:?} waiting for lock {}", args.name)
        }
        Err(CallError::Failed(e) | CallError::Unavailable(e)) => {
            return Err(e.context(format!("acquiring {}", args.name)));
        }
    };
    let key = text_field(&reply, "key").context("the grant names no key")?;
    let token = reply["token"].as_i64().context("the grant has no token")?;
    Ok((key, token))
}

/// Releases the grant; a failure only leaves it to the lease revoke that follows.
async fn release(recipes: &mut Recipes, args: &LockArgs, lease: i64) {
    let mut release = call(args, "release", lease);
    release.timeout = Some(Duration::from_millis(baton_limits::CLI_CLEANUP_TIMEOUT_MS));
    if let Err(e) = recipes.call(release).await {
        tracing::warn!("releasing {}: {e:#}", args.name);
    }
}
