//! `baton queue push|pop|reserve|ack|nack`: the built-in `queue` module from the shell. Each
//! prints what a script needs next: `push` the item's key, `pop` its value, `reserve` the
//! reservation's token then the value, `ack`/`nack` the item's key. `pop` and `reserve` wait
//! server-side for an item (`--timeout` gives up; a consumer that gave up takes nothing).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Call, CallError, Recipes, text_field};

#[derive(Subcommand, Debug)]
pub(crate) enum QueueCommand {
    /// Append VALUE to queue NAME; prints its key.
    Push {
        name: String,
        value: String,
        /// Deliver no sooner than this many seconds from now.
        #[arg(long, default_value_t = 0)]
        delay: u64,
    },
    /// Take the next item for good (waits for one); prints its value.
    Pop {
        name: String,
        /// Give up after this many seconds; 0 waits forever.
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Take the next item until acked, nacked or its visibility ends (waits for one); prints
    /// the reservation's token, then the value.
    Reserve {
        name: String,
        /// Seconds before an unacknowledged item is delivered again (the module's default, 30,
        /// when not given).
        #[arg(long)]
        visibility: Option<u64>,
        /// Give up after this many seconds; 0 waits forever.
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Finish a reservation: the item is gone for good; prints its key.
    Ack { name: String, token: i64 },
    /// Give a reservation back for redelivery; prints the item's key.
    Nack {
        name: String,
        token: i64,
        /// Keep the item hidden this many seconds before redelivery.
        #[arg(long, default_value_t = 0)]
        delay: u64,
    },
}

pub(crate) async fn run(endpoints: Vec<String>, command: QueueCommand) -> Result<()> {
    let mut recipes = Recipes::connect(&endpoints).await?;
    match command {
        QueueCommand::Push { name, value, delay } => {
            let mut input = json!({"queue": name, "value": value});
            if delay > 0 {
                input["delay_ms"] = json!(delay.saturating_mul(1000));
            }
            let reply = call(&mut recipes, "push", input, 0).await?;
            println!("{}", field(&reply, "key")?);
        }
        QueueCommand::Pop { name, timeout } => {
            let reply = call(&mut recipes, "pop", json!({"queue": name}), timeout).await?;
            println!("{}", field(&reply, "value")?);
        }
        QueueCommand::Reserve {
            name,
            visibility,
            timeout,
        } => {
            let mut input = json!({"queue": name});
            if let Some(seconds) = visibility {
                input["visibility_ms"] = json!(seconds.saturating_mul(1000));
            }
            let reply = call(&mut recipes, "reserve", input, timeout).await?;
            let token = reply["token"]
                .as_i64()
                .context("the reservation has no token")?;
            println!("{token}");
            println!("{}", field(&reply, "value")?);
        }
        QueueCommand::Ack { name, token } => {
            let reply = call(
                &mut recipes,
                "ack",
                json!({"queue": name, "token": token}),
                0,
            )
            .await?;
            println!("{}", field(&reply, "acked")?);
        }
        QueueCommand::Nack { name, token, delay } => {
            let mut input = json!({"queue": name, "token": token});
            if delay > 0 {
                input["delay_ms"] = json!(delay.saturating_mul(1000));
            }
            let reply = call(&mut recipes, "nack", input, 0).await?;
            println!("{}", field(&reply, "nacked")?);
        }
    }
    Ok(())
}

/// One queue call; `timeout_s` 0 waits as long as the module does.
async fn call(
    recipes: &mut Recipes,
    function: &str,
    input: Value,
    timeout_s: u64,
) -> Result<Value> {
    let call = Call {
        timeout: (timeout_s > 0).then(|| Duration::from_secs(timeout_s)),
        ..Call::new("queue", function, input)
    };
    match recipes.call(call).await {
        Ok(reply) => Ok(reply),
        Err(CallError::TimedOut(after)) => bail!("queue {function}: nothing came within {after:?}"),
        Err(CallError::Failed(e) | CallError::Unavailable(e)) => Err(e),
    }
}

fn field(reply: &Value, name: &str) -> Result<String> {
    text_field(reply, name).with_context(|| format!("the answer has no {name}: {reply}"))
}
