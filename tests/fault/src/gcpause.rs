//! The GC-pause schedule: a lock holder, a child process (`baton-fault holder`), takes a lock
//! with a short lease and is SIGSTOPped past the lease; another client is granted the lock with
//! a higher fencing token and writes the protected key; the holder is resumed and tries its
//! fenced write, which must be refused. Run once with Baton's lock module (`fenced-put` with the
//! token) and once with etcd's Lock service, where the fence is a Txn comparing the lock key's
//! create revision (the key still exists with the holder's revision).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};
use rustix::process::{Pid, Signal, kill_process};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::cluster::{connect, connect_with_timeout};

/// The holder's lease: short, so the pause outlasts it quickly.
const HOLDER_TTL_S: i64 = 3;
/// The second client's lease outlives the scenario.
const TAKER_TTL_S: i64 = 60;
/// Each step (acquire, write, the holder's answer) must finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(45);
/// The built-in modules deploy shortly after a member starts.
const MODULE_RETRY: Duration = Duration::from_millis(300);
const LOCK_NAME: &str = "fault/gc-pause-lock";
/// How the holder reports a refused write, followed by the server's reason.
const REFUSED_PREFIX: &str = "WRITE REFUSED: ";
/// The key only the lock's holder may write.
pub const PROTECTED_KEY: &str = "fault/gc-pause-protected";

/// Which lock implementation the scenario exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LockKind {
    /// Baton's built-in `lock` module: acquire returns a token, `fenced-put` checks it.
    Module,
    /// etcd's Lock service; the token is the lock key's create revision, checked by a Txn.
    Etcd,
}

/// A lock held: the token fencing its writes and, for etcd's Lock, the lock key.
struct Held {
    token: i64,
    lock_key: Vec<u8>,
}

async fn acquire(endpoint: &str, kind: LockKind, lease: i64) -> Result<Held> {
    match kind {
        LockKind::Module => {
            let input = format!(r#"{{"name":"{LOCK_NAME}"}}"#);
            let output = invoke(endpoint, "acquire", input, lease).await?;
            let reply: serde_json::Value = serde_json::from_slice(&output)?;
            let token = reply["token"]
                .as_i64()
                .context("no token in acquire's reply")?;
            Ok(Held {
                token,
                lock_key: Vec::new(),
            })
        }
        LockKind::Etcd => {
            let mut client = connect_with_timeout(endpoint, STEP_TIMEOUT).await?;
            let options = LockOptions::new().with_lease(lease);
            let reply = client.lock(LOCK_NAME, Some(options)).await?;
            let lock_key = reply.key().to_vec();
            let got = client.get(lock_key.clone(), None).await?;
            let kv = got.kvs().first().context("the lock key vanished at once")?;
            Ok(Held {
                token: kv.create_revision(),
                lock_key,
            })
        }
    }
}

/// Writes the protected key only if `held` is still the lock's holder; `Ok(Err(why))` when the
/// server refused it as fenced.
async fn fenced_write(
    endpoint: &str,
    kind: LockKind,
    held: &Held,
    lease: i64,
) -> Result<Result<(), String>> {
    let value = held.token.to_string();
    match kind {
        LockKind::Module => {
            let input = format!(
                r#"{{"name":"{LOCK_NAME}","token":{},"key":"{PROTECTED_KEY}","value":"{value}"}}"#,
                held.token
            );
            match invoke(endpoint, "fenced-put", input, lease).await {
                Ok(_) => Ok(Ok(())),
                Err(e) => match e.downcast_ref::<tonic::Status>() {
                    Some(s) if s.code() == tonic::Code::FailedPrecondition => {
                        Ok(Err(s.message().to_owned()))
                    }
                    _ => Err(e),
                },
            }
        }
        LockKind::Etcd => {
            let mut client = connect(endpoint).await?;
            let fence =
                Compare::create_revision(held.lock_key.clone(), CompareOp::Equal, held.token);
            let txn = Txn::new()
                .when([fence])
                .and_then([TxnOp::put(PROTECTED_KEY, value, None)]);
            let written = client.txn(txn).await?.succeeded();
            Ok(if written {
                Ok(())
            } else {
                Err("the lock key's create revision no longer matches".to_owned())
            })
        }
    }
}

/// Calls the lock module, waiting for it to be deployed (NOT_FOUND) if needed.
async fn invoke(endpoint: &str, function: &str, input: String, lease: i64) -> Result<Vec<u8>> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())?
        .connect()
        .await?;
    let mut modules = ModulesClient::new(channel);
    let request = InvokeRequest {
        name: "lock".into(),
        function: function.into(),
        input: input.into_bytes(),
        lease,
        ..Default::default()
    };
    loop {
        match modules.invoke(request.clone()).await {
            Ok(reply) => return Ok(reply.into_inner().output),
            Err(s) if s.code() == tonic::Code::NotFound => tokio::time::sleep(MODULE_RETRY).await,
            Err(s) => return Err(s.into()),
        }
    }
}

/// `baton-fault holder`: takes the lock with a short lease kept alive in the background, prints
/// `ACQUIRED <token>`, waits for a line on stdin, tries its fenced write and prints `WRITE OK` or
/// `WRITE REFUSED`.
pub async fn holder(endpoint: &str, kind: LockKind) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let lease = client.lease_grant(HOLDER_TTL_S, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    tokio::spawn(async move {
        let period = Duration::from_millis(u64::try_from(HOLDER_TTL_S * 1000 / 3).unwrap_or(1000));
        while keeper.keep_alive().await.is_ok() {
            let _ = responses.message().await;
            tokio::time::sleep(period).await;
        }
    });
    let held = acquire(endpoint, kind, lease).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("ACQUIRED {}\n", held.token).as_bytes())
        .await?;
    out.flush().await?;
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    // Paused and resumed in between: the holder does not know its lease ended.
    let verdict = match fenced_write(endpoint, kind, &held, lease).await {
        Ok(Ok(())) => "WRITE OK".to_owned(),
        Ok(Err(why)) => format!("{REFUSED_PREFIX}{why}"),
        Err(e) => format!("WRITE ERROR {e:#}"),
    };
    out.write_all(format!("{verdict}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// Runs the scenario against `endpoint` with `program` as the holder's executable (this binary).
pub async fn scenario(program: &Path, endpoint: &str, kind: LockKind) -> Result<String> {
    let mut child = Command::new(program)
        .args(["holder", "--endpoint", endpoint, "--kind"])
        .arg(match kind {
            LockKind::Module => "module",
            LockKind::Etcd => "etcd",
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the lock holder")?;
    let mut stdin = child.stdin.take().context("holder stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("holder stdout")?).lines();
    let first = tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
        .await
        .context("the holder did not acquire the lock in time")??
        .context("the holder exited before acquiring")?;
    let holder_token: i64 = first
        .strip_prefix("ACQUIRED ")
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("unexpected holder output {first:?}"))?;
    let pid = child
        .id()
        .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?));
    let pid = pid.context("the holder has no pid")?;
    kill_process(pid, Signal::STOP)?;

    // While the holder is frozen its lease runs out, and the lock passes on.
    let mut client: Client = connect(endpoint).await?;
    let lease = client.lease_grant(TAKER_TTL_S, None).await?.id();
    let taken = tokio::time::timeout(STEP_TIMEOUT, acquire(endpoint, kind, lease))
        .await
        .context("the lock was not handed on after the holder's lease ran out")??;
    ensure!(
        taken.token > holder_token,
        "fencing tokens must grow: holder {holder_token}, next {}",
        taken.token
    );
    if let Err(why) = fenced_write(endpoint, kind, &taken, lease).await? {
        bail!("the new holder's fenced write was refused: {why}");
    }

    kill_process(pid, Signal::CONT)?;
    stdin.write_all(b"WRITE\n").await?;
    stdin.flush().await?;
    let answer = tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
        .await
        .context("the resumed holder did not answer")??
        .context("the resumed holder exited without answering")?;
    let Some(why) = answer.strip_prefix(REFUSED_PREFIX) else {
        bail!(
            "{kind:?} lock: the paused ex-holder (token {holder_token}) got `{answer}` after token {} was granted",
            taken.token
        );
    };
    let stored = client.get(PROTECTED_KEY, None).await?;
    let value = stored.kvs().first().map(|kv| kv.value().to_vec());
    ensure!(
        value.as_deref() == Some(taken.token.to_string().as_bytes()),
        "the protected key holds {value:?}, not the new holder's token {}",
        taken.token
    );
    let _ = child.wait().await;
    let _ = client.lease_revoke(lease).await;
    Ok(format!(
        "{kind:?} lock: holder token {holder_token} paused past its lease, next token {}, \
         the resumed holder's write refused ({why})",
        taken.token
    ))
}
