//! `baton barrier hold|release|wait NAME`: the built-in `barrier` module (etcd's
//! `recipe.Barrier` layout: the barrier is the key NAME). `hold` takes no lease, so the
//! barrier stays after `baton` exits, until `release` (or `etcdctl del NAME`). `wait` returns
//! once the barrier is open, waiting server-side without log entries.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;

use super::client::{Call, CallError, Recipes};

#[derive(Subcommand, Debug)]
pub(crate) enum BarrierCommand {
    /// Close barrier NAME (nothing changes if it is already closed).
    Hold { name: String },
    /// Open barrier NAME, letting every waiter through.
    Release { name: String },
    /// Return once barrier NAME is open.
    Wait {
        name: String,
        /// Give up after this many seconds (exit status 1); 0 waits forever.
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
}

pub(crate) async fn run(endpoints: Vec<String>, command: BarrierCommand) -> Result<()> {
    let mut recipes = Recipes::connect(&endpoints).await?;
    let call = match &command {
        BarrierCommand::Hold { name } => Call::new("barrier", "hold", json!({"name": name})),
        BarrierCommand::Release { name } => Call::new("barrier", "release", json!({"name": name})),
        BarrierCommand::Wait { name, timeout } => Call {
            read_only: true,
            timeout: (*timeout > 0).then(|| Duration::from_secs(*timeout)),
            ..Call::new("barrier", "wait", json!({"name": name}))
        },
    };
    match recipes.call(call).await {
        Ok(_) => Ok(()),
        Err(CallError::TimedOut(after)) => bail!("barrier still closed after {after:?}"),
        Err(CallError::Failed(e) | CallError::Unavailable(e)) => Err(e),
    }
}
