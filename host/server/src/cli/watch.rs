//! `baton watch PREFIX [-- CMD ARGS…]`: prints every change under PREFIX (type, key, value on
//! three lines, as `etcdctl watch --prefix` does) and, given a command, runs it once per change,
//! one at a time and in revision order, with the event in its environment: the variables
//! `etcdctl watch -- CMD` sets, named `BATON_WATCH_*` instead of `ETCD_WATCH_*`. Unlike
//! etcdctl's, the key and value are passed as they are, not Go-quoted, and the revision is the
//! event's own.
//!
//! A broken watch (a member went away, the start revision was compacted) ends the command with
//! an error naming the revision to resume from with `--rev`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use etcd_client::{Event, EventType, WatchOptions};

use super::child;
use super::client::connect_etcd;

/// `PUT` or `DELETE`.
const EVENT_TYPE_ENV: &str = "BATON_WATCH_EVENT_TYPE";
const KEY_ENV: &str = "BATON_WATCH_KEY";
const VALUE_ENV: &str = "BATON_WATCH_VALUE";
/// The revision of the change.
const REVISION_ENV: &str = "BATON_WATCH_REVISION";

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Watch every key that starts with this.
    prefix: String,
    /// Start from this revision (replaying history); 0 starts from now.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Run this for each change: `baton watch PREFIX -- CMD ARGS…`.
    #[arg(last = true)]
    command: Vec<String>,
}

pub(crate) async fn run(endpoints: Vec<String>, args: WatchArgs) -> Result<ExitCode> {
    let mut etcd = connect_etcd(&endpoints).await?;
    let mut options = WatchOptions::new().with_prefix();
    if args.rev > 0 {
        options = options.with_start_revision(args.rev);
    }
    let mut stream = etcd
        .watch(args.prefix.as_bytes(), Some(options))
        .await
        .with_context(|| format!("watching {}", args.prefix))?;
    let mut resume_at = args.rev;
    loop {
        let reply = match stream.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) => bail!("the watch ended; resume with --rev {resume_at}"),
            Err(e) => bail!("the watch broke ({e}); resume with --rev {resume_at}"),
        };
        if resume_at == 0 {
            // Started from now: the first answer says where "now" was.
            resume_at = reply.header().map_or(0, |h| h.revision().saturating_add(1));
        }
        if reply.canceled() {
            bail!(
                "the watch was canceled ({}); resume with --rev {resume_at}",
                reply.cancel_reason()
            );
        }
        for event in reply.events() {
            let Some(kv) = event.kv() else { continue };
            on_event(event, &args.command).await?;
            resume_at = kv.mod_revision().saturating_add(1);
        }
    }
}

/// Prints one change and runs the command for it, waiting for it to finish; a command that
/// fails is reported and the watch goes on, as etcdctl's does.
async fn on_event(event: &Event, command: &[String]) -> Result<()> {
    let Some(kv) = event.kv() else {
        return Ok(());
    };
    let kind = match event.event_type() {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
    };
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let value = String::from_utf8_lossy(kv.value()).into_owned();
    println!("{kind}");
    println!("{key}");
    println!("{value}");
    if command.is_empty() {
        return Ok(());
    }
    let env = [
        (EVENT_TYPE_ENV, kind.to_owned()),
        (KEY_ENV, key),
        (VALUE_ENV, value),
        (REVISION_ENV, kv.mod_revision().to_string()),
    ];
    let status = child::spawn(command, &env)?.wait().await?;
    if !status.success() {
        eprintln!("baton: {} exited with {status}", command.join(" "));
    }
    Ok(())
}
