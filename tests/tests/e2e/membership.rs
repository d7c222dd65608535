//! Runtime membership changes (etcd's Cluster service), against etcd 3.4 and Baton: a learner is
//! added, started with `--initial-cluster-state existing`, catches up, is promoted; the leader is
//! removed (its process stops) and the rest carries on; a voter is added, joins and is removed;
//! refusals carry etcd's codes and messages; etcdctl prints the same lines for both.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test, grpc_status, start_single};
use etcd_client::{Client, GetOptions, MemberAddOptions, MemberAddResponse};
use tokio::time::{Instant, sleep};
use tonic::Code;

/// How long a started learner may take to catch up, and a promotion to be accepted.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to commit writes again after its leader was removed.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";

backend_test!(
    learner_joins_is_promoted_and_leader_is_removed,
    membership_refusals_match_etcd,
    etcdctl_member_commands_print_like_etcd,
);

type Listing = Vec<(u64, String, bool)>;

/// Polls `member list` until `wanted` holds for its (id, name, is_learner) entries: a member
/// answers from its own applied membership, which may trail the leader's briefly.
async fn wait_listing(
    client: &mut Client,
    what: &str,
    wanted: impl Fn(&Listing) -> bool,
) -> Result<Listing> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let list = client.member_list().await?;
        let listing: Listing = list
            .members()
            .iter()
            .map(|m| (m.id(), m.name().to_string(), m.is_learner()))
            .collect();
        if wanted(&listing) {
            return Ok(listing);
        }
        ensure!(
            Instant::now() < deadline,
            "member list never showed {what}: {listing:?}"
        );
        sleep(POLL).await;
    }
}

/// Polls a serializable read on `member` until it returns `value` for `key`.
pub(crate) async fn wait_readable(
    cluster: &Cluster,
    member: usize,
    key: &str,
    value: &str,
) -> Result<()> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let mut client = cluster.member_client(member).await?;
    loop {
        let got = client
            .get(key, Some(GetOptions::new().with_serializable()))
            .await;
        if let Ok(resp) = &got
            && resp.kvs().first().map(|kv| kv.value()) == Some(value.as_bytes())
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{key} not readable on {} after {CATCH_UP_TIMEOUT:?}: {got:?}",
            cluster.name(member)
        );
        sleep(POLL).await;
    }
}

/// Runs a membership change until the leader accepts it, retrying only while it says it is not
/// ready: etcd refuses changes until its leader has been connected to every voter for 5 s
/// (`unhealthy cluster`), and promotions until the learner is in sync.
/// Adds a learner at `peer_url`, retrying while the cluster is not ready for it.
pub(crate) async fn add_learner(client: &Client, peer_url: String) -> Result<MemberAddResponse> {
    when_ready("adding a learner", || {
        let mut client = client.clone();
        let url = peer_url.clone();
        async move {
            let options = MemberAddOptions::new().with_is_learner();
            client.member_add([url], Some(options)).await
        }
    })
    .await
}

pub(crate) async fn when_ready<T, F, Fut>(what: &str, mut change: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        match change().await {
            Ok(value) => return Ok(value),
            Err(e)
                if grpc_status(&e).is_some_and(|s| {
                    s.message() == UNHEALTHY || s.message() == LEARNER_NOT_READY
                }) && Instant::now() < deadline =>
            {
                sleep(POLL).await;
            }
            Err(e) => return Err(e).context(what.to_string()),
        }
    }
}

/// Puts until one succeeds: right after the leader leaves, writes fail until a new one leads.
async fn put_when_led(client: &mut Client, key: &str, value: &str) -> Result<()> {
    let deadline = Instant::now() + RECOVER_TIMEOUT;
    loop {
        match client.put(key, value, None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key} failed, retrying: {e}");
                sleep(POLL).await;
            }
            Err(e) => return Err(e).context(format!("no write after {RECOVER_TIMEOUT:?}")),
        }
    }
}

async fn learner_joins_is_promoted_and_leader_is_removed(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let mut client = cluster.client().await?;
    client.put("before-join", "v1", None).await?;

    let addrs = cluster.next_member_addrs()?;
    let added = add_learner(&client, addrs.peer_url()).await?;
    let new = added.member().context("member add names the new member")?;
    let new_id = new.id();
    ensure!(new.is_learner() && new.name().is_empty() && new.client_urls().is_empty());
    ensure!(new.peer_urls() == [addrs.peer_url()]);
    ensure!(added.member_list().len() == 4, "{:?}", added.member_list());
    let founders: BTreeSet<u64> = (0..3).map(|i| cluster.member_id(i)).collect();
    ensure!(!founders.contains(&new_id), "a new member gets a new id");
    wait_listing(&mut client, "the unstarted learner", |l| {
        l.len() == 4 && l.contains(&(new_id, String::new(), true))
    })
    .await?;

    let joined = cluster.start_added(addrs, &[])?;
    cluster.wait_ready().await?;
    ensure!(
        cluster.member_id(joined) == new_id,
        "the joiner took the id it was given"
    );
    wait_readable(&cluster, joined, "before-join", "v1").await?;
    wait_listing(&mut client, "n4's published name", |l| {
        l.contains(&(new_id, "n4".into(), true))
    })
    .await?;

    when_ready("promoting the learner", || {
        let mut client = client.clone();
        async move { client.member_promote(new_id).await }
    })
    .await?;
    wait_listing(&mut client, "4 voters", |l| {
        l.len() == 4 && l.iter().all(|m| !m.2)
    })
    .await?;
    client.put("after-promote", "v2", None).await?;
    wait_readable(&cluster, joined, "after-promote", "v2").await?;
    // A restarted joiner keeps its id without asking anyone (its data dir remembers it).
    cluster.kill(joined)?;
    cluster.restart(joined)?;
    cluster.wait_ready().await?;
    ensure!(cluster.member_id(joined) == new_id);
    wait_readable(&cluster, joined, "after-promote", "v2").await?;

    // Remove the leader through another member; leadership moves to one of the other three.
    let leader = cluster.leader().await?;
    let leader_id = cluster.member_id(leader);
    let other = (0..cluster.size())
        .find(|&i| i != leader)
        .context("a non-leader")?;
    let via_other = cluster.member_client(other).await?;
    let removed = when_ready("removing the leader", || {
        let mut client = via_other.clone();
        async move { client.member_remove(leader_id).await }
    })
    .await?;
    ensure!(removed.members().len() == 3);
    ensure!(removed.members().iter().all(|m| m.id() != leader_id));
    // Like etcd's, the removed member's process stops by itself once it sees its removal.
    wait_exited(&mut cluster, leader).await?;
    cluster.forget(leader)?;
    let mut rest = cluster.client().await?;
    put_when_led(&mut rest, "after-remove", "v3").await?;
    let expected: BTreeSet<u64> = (0..cluster.size())
        .filter(|&i| i != leader)
        .map(|i| cluster.member_id(i))
        .collect();
    wait_listing(&mut rest, "the three remaining members", |l| {
        l.iter().map(|m| m.0).collect::<BTreeSet<_>>() == expected
    })
    .await?;
    for member in (0..cluster.size()).filter(|&i| i != leader) {
        wait_readable(&cluster, member, "after-remove", "v3").await?;
    }
    let new_leader = cluster.leader().await?;
    ensure!(new_leader != leader);
    add_voter_and_join(&mut cluster, &mut rest).await
}

/// etcd's default `member add` (a voter, through joint consensus) into a running cluster; the
/// new member then starts, catches up and publishes its name.
async fn add_voter_and_join(cluster: &mut Cluster, client: &mut Client) -> Result<()> {
    let addrs = cluster.next_member_addrs()?;
    let name = addrs.name.clone();
    let added = when_ready("adding a voter", || {
        let mut client = client.clone();
        let url = addrs.peer_url();
        async move { client.member_add([url], None).await }
    })
    .await?;
    let id = added.member().context("added member")?.id();
    ensure!(added.member_list().iter().all(|m| !m.is_learner()));
    let joined = cluster.start_added(addrs, &[])?;
    cluster.wait_ready().await?;
    wait_readable(cluster, joined, "after-remove", "v3").await?;
    wait_listing(client, "the new voter by name", |l| {
        l.len() == 4 && l.contains(&(id, name.clone(), false))
    })
    .await?;
    client.put("after-voter-add", "v4", None).await?;
    wait_readable(cluster, joined, "after-voter-add", "v4").await?;

    // Removing it again: a removed follower stops by itself too.
    when_ready("removing the new voter", || {
        let mut client = client.clone();
        async move { client.member_remove(id).await }
    })
    .await?;
    wait_exited(cluster, joined).await?;
    cluster.forget(joined)?;
    put_when_led(client, "after-second-remove", "v5").await?;
    wait_listing(client, "three members", |l| {
        l.len() == 3 && l.iter().all(|m| m.0 != id)
    })
    .await?;
    Ok(())
}

/// Waits until a removed member's process has stopped on its own.
pub(crate) async fn wait_exited(cluster: &mut Cluster, member: usize) -> Result<()> {
    let deadline = Instant::now() + RECOVER_TIMEOUT;
    while !cluster.has_exited(member) {
        ensure!(
            Instant::now() < deadline,
            "removed member {} still runs",
            cluster.name(member)
        );
        sleep(POLL).await;
    }
    Ok(())
}

async fn membership_refusals_match_etcd(backend: Backend) -> Result<()> {
    let (cluster, mut client) = start_single(backend).await?;
    let own_id = cluster.member_id(0);
    let unused_id = own_id ^ 0x5a5a;

    assert_grpc_error(
        client.member_remove(unused_id).await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    assert_grpc_error(
        client.member_promote(unused_id).await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    assert_grpc_error(
        client
            .member_update(unused_id, ["http://127.0.0.1:1".to_string()])
            .await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    assert_grpc_error(
        client.member_promote(own_id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    assert_grpc_error(
        client.member_add([cluster.peer_url(0)], None).await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    assert_grpc_error(
        client.member_add(["not-a-url".to_string()], None).await,
        Code::InvalidArgument,
        "etcdserver: given member URLs are invalid",
    );

    // A learner that never starts is never in sync, and etcd 3.4 allows only one.
    let learner_url = cluster.next_member_addrs()?.peer_url();
    let learner = client
        .member_add(
            [learner_url.clone()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await?
        .member()
        .context("added member")?
        .id();
    assert_grpc_error(
        client.member_promote(learner).await,
        Code::FailedPrecondition,
        LEARNER_NOT_READY,
    );
    let second_url = cluster.next_member_addrs()?.peer_url();
    assert_grpc_error(
        client
            .member_add(
                [second_url],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await,
        Code::FailedPrecondition,
        "etcdserver: too many learner members in cluster",
    );
    assert_grpc_error(
        client.member_update(learner, [cluster.peer_url(0)]).await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );

    let moved_url = cluster.next_member_addrs()?.peer_url();
    let updated = client.member_update(learner, [moved_url.clone()]).await?;
    let entry = updated
        .members()
        .iter()
        .find(|m| m.id() == learner)
        .context("updated member listed")?;
    ensure!(entry.peer_urls() == [moved_url.clone()], "{entry:?}");
    // etcd 3.4 drops the learner flag of an updated member (its update carries only the peer
    // URLs); Baton keeps the member a learner, as raft still treats it.
    ensure!(backend == Backend::Etcd || entry.is_learner(), "{entry:?}");

    let removed = client.member_remove(learner).await?;
    ensure!(removed.members().len() == 1 && removed.members()[0].id() == own_id);
    assert_grpc_error(
        client.member_remove(learner).await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    client.put("still-writable", "yes", None).await?;
    Ok(())
}

fn stdout_of(output: &std::process::Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "etcdctl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout.clone())?)
}

async fn etcdctl_member_commands_print_like_etcd(backend: Backend) -> Result<()> {
    let (cluster, _client) = start_single(backend).await?;
    let status = cluster.status(0).await?;
    let cluster_id = status.header().context("header")?.cluster_id();
    let addrs = cluster.next_member_addrs()?;
    let peer = addrs.peer_url();

    let out = stdout_of(
        &cluster
            .etcdctl(&[
                "member",
                "add",
                "n2",
                &format!("--peer-urls={peer}"),
                "--learner",
            ])
            .await?,
    )?;
    let lines: Vec<&str> = out.lines().collect();
    let first = lines.first().context("output")?;
    // etcdctl pads both ids to 16 columns with spaces here (`%16x`).
    let id_hex = first
        .strip_prefix("Member ")
        .and_then(|rest| rest.strip_suffix(&format!(" added to cluster {cluster_id:16x}")))
        .with_context(|| format!("first line {first:?}"))?;
    ensure!(id_hex.len() == 16, "{first:?}");
    let id = u64::from_str_radix(id_hex.trim_start(), 16).context("member id in hex")?;
    let expected = [
        String::new(),
        "ETCD_NAME=\"n2\"".to_string(),
        format!(
            "ETCD_INITIAL_CLUSTER=\"{}={},n2={peer}\"",
            cluster.name(0),
            cluster.peer_url(0)
        ),
        format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\""),
        "ETCD_INITIAL_CLUSTER_STATE=\"existing\"".to_string(),
    ];
    // etcd lists members by id; the founder may sort either side of the new member.
    let swapped = format!(
        "ETCD_INITIAL_CLUSTER=\"n2={peer},{}={}\"",
        cluster.name(0),
        cluster.peer_url(0)
    );
    ensure!(lines.len() == 1 + expected.len(), "{out}");
    for (line, want) in lines[1..].iter().zip(&expected) {
        ensure!(
            *line == want || (want.starts_with("ETCD_INITIAL_CLUSTER=") && *line == swapped),
            "{line:?} != {want:?} in\n{out}"
        );
    }

    let list = stdout_of(&cluster.etcdctl(&["member", "list"]).await?)?;
    let learner_line = format!("{id:x}, unstarted, , {peer}, , true");
    ensure!(list.lines().any(|l| l == learner_line), "{list}");
    let founder_line = format!(
        "{:x}, started, {}, {}, {}, false",
        cluster.member_id(0),
        cluster.name(0),
        cluster.peer_url(0),
        cluster.endpoint(0)
    );
    ensure!(list.lines().any(|l| l == founder_line), "{list}");

    let out = stdout_of(
        &cluster
            .etcdctl(&["member", "remove", &format!("{id:x}")])
            .await?,
    )?;
    ensure!(
        out.trim_end() == format!("Member {id:16x} removed from cluster {cluster_id:16x}"),
        "{out}"
    );
    let list = stdout_of(&cluster.etcdctl(&["member", "list"]).await?)?;
    ensure!(
        list.lines().count() == 1 && list.contains(&founder_line),
        "{list}"
    );
    Ok(())
}

/// A member added and started but removed before the leader ever reached it (its advertised
/// peer URL leads nowhere, so it never receives a log) finds out from the members it was told
/// about and stops, as a removed member that had its log does. Before, it waited for its log
/// forever. Baton only: etcd refuses to start a member whose advertised peer URL differs from
/// its `--initial-cluster` entry, which is how this test keeps the leader away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_before_it_received_its_log_stops() {
    baton_e2e::run_test(Backend::Baton, async {
        let mut cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut client = cluster.client().await?;
        let addrs = cluster.next_member_addrs()?;
        let nowhere = format!("http://127.0.0.1:{}", baton_e2e::free_port()?);
        let added = when_ready("adding a learner nobody can reach", || {
            let mut client = client.clone();
            let url = nowhere.clone();
            let options = MemberAddOptions::new().with_is_learner();
            async move { client.member_add([url], Some(options)).await }
        })
        .await?;
        let id = added.member().context("added member")?.id();
        let joined = cluster.start_added(addrs, &["--initial-advertise-peer-urls", &nowhere])?;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while !cluster.log_contains(joined, "joining an existing cluster") {
            ensure!(
                !cluster.has_exited(joined),
                "the added member stopped before it was removed"
            );
            ensure!(
                Instant::now() < deadline,
                "the added member never learned its id"
            );
            sleep(POLL).await;
        }
        // Still a member, though unreachable: it waits.
        sleep(Duration::from_secs(2)).await;
        ensure!(
            !cluster.has_exited(joined),
            "the added member stopped before it was removed"
        );

        when_ready("removing the unreached learner", || {
            let mut client = client.clone();
            async move { client.member_remove(id).await }
        })
        .await?;
        wait_exited(&mut cluster, joined).await?;
        ensure!(
            cluster.log_contains(joined, "never received its log"),
            "the member stopped for another reason:\n{}",
            cluster.log_tails()
        );
        cluster.forget(joined)?;
        client.put("after-unreached-remove", "v", None).await?;
        Ok(())
    })
    .await;
}
