//! A member tells the truth about being alive. gRPC health says SERVING while it serves clients;
//! a member whose Raft stops on a fatal storage error says NOT_SERVING and exits with a failure
//! status within about a second (the old behaviour: it kept serving frozen state forever, a
//! "zombie"), while the other members go on serving; a member asked to stop (SIGTERM) exits
//! with success.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, backend_test, connect, run_test};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The names a Baton member reports health for besides the whole server (`""`).
const BATON_HEALTH_SERVICES: [&str; 2] = ["etcdserverpb.KV", "etcdserverpb.Watch"];
/// Values written to push the victim's raft log past one segment (16 MiB), each under the
/// request limit (1.5 MiB).
const VALUE_BYTES: usize = 1024 * 1024;
const PUTS: usize = 24;
/// Segments made impossible to create after the victim's last one (one would do; the second
/// covers a rotation that happens while the test looks).
const SEGMENTS_BLOCKED: u64 = 2;
/// Bound on a member's exit once its fate is sealed (the last put, or SIGTERM).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a failed member may go on after saying NOT_SERVING: it means to exit within a
/// second; the rest is room for a machine busy with other tests.
const NOT_SERVING_TO_EXIT_MAX: Duration = Duration::from_secs(5);
const SIGTERM: i32 = 15;
/// Bound on one health call.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Baton's bound on draining its tasks at a clean stop (`SHUTDOWN_DRAIN_MS`). A member that
/// takes this long after SIGTERM waited it out for a stream that never ended.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Bound on a stream's next message in these tests.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

backend_test!(terminated_member_exits_with_success);
backend_test!(terminated_member_with_open_streams_exits_promptly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_fatal_storage_error_exits_loudly() {
    run_test(Backend::Baton, fatal_storage_error(Backend::Baton)).await;
}

/// A follower whose raft log can no longer grow (its next segment cannot be created, as on a
/// full or failing disk) stops Raft; it must then not linger as a zombie.
async fn fatal_storage_error(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let victim = (0..cluster.size())
        .find(|&m| m != leader)
        .context("no follower")?;
    for service in BATON_HEALTH_SERVICES {
        ensure!(
            health(&cluster.endpoint(victim), service).await? == ServingStatus::Serving,
            "{service} is not SERVING on a healthy member"
        );
    }
    let heard = follow_health(cluster.endpoint(victim)).await?;
    block_next_segments(&cluster.data_dir(victim).join("raft-log"))?;

    let mut client = cluster.member_client(leader).await?;
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..PUTS {
        client
            .put(format!("big/{i}"), value.clone(), None)
            .await
            .with_context(|| format!("put {i} through the leader"))?;
    }
    let status = cluster.wait_exit(victim, EXIT_TIMEOUT).await?;
    let exited_at = Instant::now();
    ensure!(
        status.code() == Some(1),
        "a member whose Raft failed must exit with status 1, got {status}"
    );
    for why in ["raft stopped on a fatal error", "raft log write failed"] {
        ensure!(
            cluster.log_contains(victim, why),
            "the failed member's log does not say {why:?}"
        );
    }
    let heard = heard.await.context("health follower panicked")??;
    let Some((ServingStatus::NotServing, at)) = heard.last() else {
        bail!("the failed member's health never said NOT_SERVING: {heard:?}");
    };
    ensure!(
        exited_at.duration_since(*at) <= NOT_SERVING_TO_EXIT_MAX,
        "the failed member ran {:?} after saying NOT_SERVING",
        exited_at.duration_since(*at)
    );

    let survivors: Vec<String> = cluster.running_endpoints();
    let mut client = connect(&survivors).await?;
    client.put("after-fatal", "still-served", None).await?;
    for endpoint in survivors {
        let mut member = connect(std::slice::from_ref(&endpoint)).await?;
        let reply = member.get("after-fatal", None).await?;
        ensure!(
            reply.kvs().first().map(|kv| kv.value()) == Some(b"still-served".as_slice()),
            "{endpoint} does not serve the write made after the failure"
        );
    }
    Ok(())
}

/// Both servers exit with success on SIGTERM, and the others go on serving. Baton also says
/// NOT_SERVING to its health watchers as it starts to stop.
async fn terminated_member_exits_with_success(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let victim = (0..cluster.size())
        .find(|&m| m != leader)
        .context("no follower")?;
    let heard = follow_health(cluster.endpoint(victim)).await?;
    cluster.signal(victim, "TERM")?;
    let status = cluster.wait_exit(victim, EXIT_TIMEOUT).await?;
    // etcd re-raises the signal once it has cleaned up (`osutil.HandleInterrupts`); Baton
    // returns from main.
    let clean = match backend {
        Backend::Baton => status.success(),
        Backend::Etcd => status.signal() == Some(SIGTERM),
    };
    ensure!(clean, "SIGTERM must end a member cleanly, got {status}");
    let heard = heard.await.context("health follower panicked")??;
    if backend == Backend::Baton {
        ensure!(
            matches!(heard.last(), Some((ServingStatus::NotServing, _))),
            "a stopping member's health did not say NOT_SERVING: {heard:?}"
        );
    }

    let mut client = connect(&cluster.running_endpoints()).await?;
    client.put("after-term", "v", None).await?;
    cluster.restart(victim)?;
    cluster.wait_ready().await?;
    let mut member = cluster.member_client(victim).await?;
    let reply = member.get("after-term", None).await?;
    ensure!(reply.count() == 1, "the restarted member lost a write");
    Ok(())
}

/// SIGTERM ends a follower promptly though streams stay open on it: a client's lease
/// keep-alive and watch, and the leader's replication. Each stream ends with the member rather
/// than holding up its graceful stop. Before, Baton's follower waited out its whole drain.
async fn terminated_member_with_open_streams_exits_promptly(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let victim = (0..cluster.size())
        .find(|&m| m != leader)
        .context("no follower")?;
    let mut client = cluster.member_client(victim).await?;
    let lease = client.lease_grant(60, None).await?.id();
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    let renewal = tokio::time::timeout(STREAM_TIMEOUT, renewals.message())
        .await
        .context("no keep-alive response")??
        .context("the keep-alive stream ended before the stop")?;
    ensure!(renewal.ttl() > 0, "the lease was not renewed: {renewal:?}");
    let mut events = client.watch_client().watch("streamed", None).await?;
    client.put("streamed", "v", None).await?;
    // The event comes once the leader replicated the put to the victim, over its stream.
    let mut heard_put = false;
    while !heard_put {
        let response = tokio::time::timeout(STREAM_TIMEOUT, events.message())
            .await
            .context("no watch response")??
            .context("the watch stream ended before the stop")?;
        heard_put = !response.events().is_empty();
    }

    let asked = Instant::now();
    cluster.signal(victim, "TERM")?;
    let status = cluster.wait_exit(victim, EXIT_TIMEOUT).await?;
    let took = asked.elapsed();
    let clean = match backend {
        Backend::Baton => status.success(),
        Backend::Etcd => status.signal() == Some(SIGTERM),
    };
    ensure!(clean, "SIGTERM must end a member cleanly, got {status}");
    ensure!(
        took < SHUTDOWN_DRAIN,
        "the member took {took:?} to stop with streams open (drain {SHUTDOWN_DRAIN:?})"
    );
    Ok(())
}

async fn health_client(endpoint: &str) -> Result<HealthClient<Channel>> {
    let channel = Channel::from_shared(endpoint.to_string())?
        .connect_timeout(HEALTH_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(HealthClient::new(channel))
}

/// One health check of `service`.
async fn health(endpoint: &str, service: &str) -> Result<ServingStatus> {
    let mut client = health_client(endpoint).await?;
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let reply = tokio::time::timeout(HEALTH_TIMEOUT, client.check(request))
        .await
        .context("health check timed out")??;
    Ok(reply.into_inner().status())
}

/// Watches the whole server's health (`""`) from SERVING on: returns once SERVING was heard,
/// with a task that collects every later status, and when it came, until the stream ends.
async fn follow_health(
    endpoint: String,
) -> Result<JoinHandle<Result<Vec<(ServingStatus, Instant)>>>> {
    let mut client = health_client(&endpoint).await?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = client.watch(request).await?.into_inner();
    let first = tokio::time::timeout(HEALTH_TIMEOUT, stream.message())
        .await
        .context("no health status")??
        .context("health stream ended at once")?;
    ensure!(
        first.status() == ServingStatus::Serving,
        "a serving member's health is {:?}",
        first.status()
    );
    Ok(tokio::spawn(async move {
        let mut heard = Vec::new();
        // The stream ends with the process, normally or as a broken connection.
        while let Ok(Some(reply)) = stream.message().await {
            heard.push((reply.status(), Instant::now()));
        }
        Ok(heard)
    }))
}

/// Puts a non-empty directory where each of the next raft-log segments of a Baton member would
/// be renamed into place (`<seq as 16 hex digits>.wal`), so its next rotation fails like a
/// write to a full or broken disk. A real fault, not a hook: the tests run as root, so
/// permissions would not stop the member.
fn block_next_segments(raft_log: &Path) -> Result<()> {
    let mut last = None;
    for entry in std::fs::read_dir(raft_log).context("reading the raft-log dir")? {
        let name = entry?.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        last = last.max(seq);
    }
    let last = last.context("the raft-log dir has no segment")?;
    for seq in last + 1..=last + SEGMENTS_BLOCKED {
        let blocker = raft_log.join(format!("{seq:016x}.wal"));
        std::fs::create_dir(&blocker)?;
        std::fs::write(blocker.join("not-a-segment"), b"")?;
    }
    Ok(())
}
