//! Built-in modules reach a cluster founded by an older release (Baton only: etcd has no
//! modules). The cluster is founded with the test-only `BATON_TEST_BUILTIN_SET=1:counter,queue`,
//! standing in for an older release: it ships `counter` and `queue` as set 1, with other
//! bytes, and neither `lock` nor `compare-and-move`. A user then deploys their own
//! `compare-and-move` and deletes the built-in `queue`. Once every member runs the real
//! release and one of them leads: `counter` has a second version (the real bytes, marked
//! built-in), `lock` arrives as a new name, and the user's `compare-and-move` and the deleted
//! `queue` are left as the user made them — also after the next leader takes over.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, baton_bin, run_test};
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeleteRequest, DeployRequest, DescribeRequest, ModuleInfo};
use baton_wasm::builtin::BUILTIN_MODULES;
use baton_wasm::{hash_hex, module_hash};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use crate::modules::modules_client;

const OLD_SET_ENV: (&str, &str) = ("BATON_TEST_BUILTIN_SET", "1:counter,queue");
/// How long the built-ins may take to arrive once a member of the new release leads.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn real(name: &str) -> Result<&'static [u8]> {
    BUILTIN_MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .with_context(|| format!("no built-in {name}"))
}

async fn describe(client: &mut ModulesClient<Channel>, name: &str) -> Result<Option<ModuleInfo>> {
    let request = DescribeRequest {
        name: name.to_string(),
    };
    match client.describe(request).await {
        Ok(reply) => Ok(Some(reply.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s).with_context(|| format!("describe {name}")),
    }
}

/// (version, hash, built-in, set) of each version of `name`; empty when absent.
async fn versions(
    client: &mut ModulesClient<Channel>,
    name: &str,
) -> Result<Vec<(u64, String, bool, u32)>> {
    let info = describe(client, name).await?.unwrap_or_default();
    Ok(info
        .versions
        .into_iter()
        .map(|v| (v.version, v.hash, v.builtin, v.builtin_set))
        .collect())
}

/// Polls `check` (errors count as "not yet": the cluster may be electing) until it holds.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "condition false".into(),
            Err(e) => last = format!("{e:#}"),
        }
        sleep(POLL).await;
    }
    anyhow::bail!("{what}: not after {ARRIVAL_TIMEOUT:?} ({last})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_ins_reach_an_older_cluster_without_replacing_users_modules() {
    run_test(Backend::Baton, async {
        let mut cluster = Cluster::start_with_env(Backend::Baton, 3, &[], &[OLD_SET_ENV]).await?;
        let mut client = modules_client(cluster.endpoint(0)).await?;

        // The older release's built-ins: set 1, other bytes than this release's.
        eventually("the old set deployed", || {
            let mut client = client.clone();
            async move {
                let counter = versions(&mut client, "counter").await?;
                let queue = versions(&mut client, "queue").await?;
                Ok(counter.len() == 1 && queue.len() == 1)
            }
        })
        .await?;
        let old_counter = versions(&mut client, "counter").await?;
        ensure!(
            old_counter[0].2 && old_counter[0].3 == 1,
            "old counter {old_counter:?}"
        );
        ensure!(old_counter[0].1 != hash_hex(&module_hash(real("counter")?)));
        ensure!(versions(&mut client, "lock").await?.is_empty());

        // The user's own module under a name the older release did not ship, and a deleted
        // built-in.
        let mine = DeployRequest {
            name: "compare-and-move".into(),
            component: real("counter")?.to_vec(),
        };
        let mine = client.deploy(mine).await?.into_inner();
        let delete = DeleteRequest {
            name: "queue".into(),
        };
        client.delete(delete).await?;

        // Upgrade: every member restarted without the switch, one at a time.
        for member in 0..cluster.size() {
            cluster.kill(member)?;
            cluster.set_env(member, &[]);
            cluster.restart(member)?;
            cluster.wait_ready().await?;
        }

        let expected_counter = hash_hex(&module_hash(real("counter")?));
        let expected_lock = hash_hex(&module_hash(real("lock")?));
        eventually("the new built-ins arrived", || {
            let mut client = client.clone();
            let (counter, lock) = (expected_counter.clone(), expected_lock.clone());
            async move {
                let new_counter = versions(&mut client, "counter").await?;
                let new_lock = versions(&mut client, "lock").await?;
                Ok(new_counter.len() == 2
                    && new_counter[1].1 == counter
                    && new_lock.len() == 1
                    && new_lock[0].1 == lock)
            }
        })
        .await?;

        // The same on every member, and what the user made is untouched.
        let leader = cluster.leader().await?;
        for member in 0..cluster.size() {
            let mut client = modules_client(cluster.endpoint(member)).await?;
            // A member answers from its own applied state, which may trail the one read above.
            eventually(
                &format!("member {member} applied the new built-ins"),
                || {
                    let mut client = client.clone();
                    async move {
                        let counter = versions(&mut client, "counter").await?;
                        let lock = versions(&mut client, "lock").await?;
                        Ok(counter.len() == 2 && lock.len() == 1)
                    }
                },
            )
            .await?;
            let counter = versions(&mut client, "counter").await?;
            ensure!(counter[0] == old_counter[0], "member {member}: {counter:?}");
            ensure!(
                counter[1].2 && counter[1].3 > 1,
                "member {member}: new counter not marked a newer built-in: {counter:?}"
            );
            let lock = versions(&mut client, "lock").await?;
            ensure!(lock[0].2 && lock[0].3 == counter[1].3, "lock {lock:?}");
            let users = versions(&mut client, "compare-and-move").await?;
            ensure!(
                users == [(1, mine.hash.clone(), false, 0)],
                "member {member}: the user's compare-and-move changed: {users:?}"
            );
            let queue = versions(&mut client, "queue").await?;
            ensure!(
                queue.is_empty(),
                "member {member}: queue came back: {queue:?}"
            );
        }

        // The CLI shows which versions are built-ins.
        let out = tokio::process::Command::new(baton_bin()?)
            .args(["--endpoints", &cluster.endpoints().join(",")])
            .args(["module", "describe", "counter"])
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // One line per version; the latest version's functions follow.
        let lines: Vec<&str> = (stdout.lines())
            .filter(|l| l.starts_with("counter v"))
            .collect();
        ensure!(
            lines.len() == 2 && lines.iter().all(|l| l.contains(" built-in set ")),
            "baton module describe counter printed {stdout:?}"
        );

        // The next leader finds nothing differing and changes nothing.
        cluster.kill(leader)?;
        let next = cluster.leader().await?;
        ensure!(next != leader);
        cluster.restart(leader)?;
        cluster.wait_ready().await?;
        let mut client = modules_client(cluster.endpoint(next)).await?;
        // Give the new leader's deployer time to act, were it (wrongly) to.
        sleep(Duration::from_secs(2)).await;
        ensure!(versions(&mut client, "counter").await?.len() == 2);
        ensure!(versions(&mut client, "lock").await?.len() == 1);
        ensure!(versions(&mut client, "queue").await?.is_empty());
        ensure!(versions(&mut client, "compare-and-move").await?.len() == 1);
        Ok(())
    })
    .await;
}
