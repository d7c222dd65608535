//! The built-in registry on a 3-member cluster, each step through a different member (Baton
//! only: etcd has no modules). Instances are etcd naming keys (`<service>/<addr>`, value
//! `{"Op":0,"Addr":…,"Metadata":…}`) on their process's lease, readable by any etcd client; a
//! `changes` call parked on one member returns when an instance registers through another, and
//! when an instance's lease ends, reporting it gone exactly once.

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, invoke_when_deployed, modules_client, output_json, park,
};

const LONG_TTL_S: i64 = 60;
/// The shortest TTL Baton grants with default timing.
const SHORT_TTL_S: i64 = 2;

fn call(function: &str, input: Value, lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke("registry", function, &input.to_string(), 0)
    }
}

fn register(instance: &str, lease: i64) -> InvokeRequest {
    let input = json!({"service": "web", "instance": instance, "meta": {"zone": "a"}});
    call("register", input, lease)
}

fn changes(since: i64) -> InvokeRequest {
    call(
        "changes",
        json!({"service": "web", "since_revision": since}),
        0,
    )
}

async fn run(client: &mut ModulesClient<Channel>, request: InvokeRequest) -> Result<Value> {
    output_json(&client.invoke(request).await?.into_inner().output)
}

fn revision(reply: &Value) -> Result<i64> {
    reply["revision"].as_i64().context("no revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_parked_on_one_member_see_arrivals_and_lease_ends_from_others() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut c = Vec::new();
        for member in 0..cluster.size() {
            c.push(modules_client(cluster.endpoint(member)).await?);
        }
        let mut kv = cluster.client().await?;
        let dying = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        let living = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let list = InvokeRequest {
            read_only: true,
            ..call("list", json!({"service": "web"}), 0)
        };
        let empty = invoke_when_deployed(&mut c[2], list.clone()).await?;
        let since = revision(&output_json(&empty.output)?)?;

        // An arrival through member 0 wakes a `changes` parked on member 1.
        let parked = park(&c[1], changes(since));
        sleep(PARKED_PROOF).await;
        ensure!(!parked.is_finished(), "changes returned with nothing new");
        run(&mut c[0], register("10.0.0.1:80", living)).await?;
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("changes")?
            .into_inner();
        let got = output_json(&reply.output)?;
        ensure!(got["came"][0]["instance"] == "10.0.0.1:80", "{got}");
        ensure!(got["went"] == json!([]), "{got}");
        let since = revision(&got)?;

        // The key is etcd's naming layout, on the instance's lease.
        let stored = kv.get("web/10.0.0.1:80", None).await?;
        let stored = stored.kvs().first().context("the instance key")?;
        ensure!(stored.lease() == living);
        let value: Value = serde_json::from_slice(stored.value())?;
        ensure!(
            value == json!({"Op": 0, "Addr": "10.0.0.1:80", "Metadata": {"zone": "a"}}),
            "{value}"
        );

        // An instance whose process dies (its lease is never renewed) is reported gone.
        run(&mut c[2], register("10.0.0.2:80", dying)).await?;
        let got = run(&mut c[1], changes(since)).await?;
        ensure!(got["came"][0]["instance"] == "10.0.0.2:80", "{got}");
        let since = revision(&got)?;
        let parked = park(&c[0], changes(since));
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("changes")?
            .into_inner();
        let got = output_json(&reply.output)?;
        ensure!(got["went"] == json!(["10.0.0.2:80"]), "{got}");
        ensure!(got["came"] == json!([]), "{got}");

        // Reported once: the next `changes` waits; the list holds only the living instance.
        let parked = park(&c[2], changes(revision(&got)?));
        sleep(PARKED_PROOF).await;
        ensure!(!parked.is_finished(), "a departure was reported twice");
        parked.abort();
        let listed = run(&mut c[1], list).await?;
        let names: Vec<&Value> = listed["instances"]
            .as_array()
            .context("instances")?
            .iter()
            .map(|i| &i["instance"])
            .collect();
        ensure!(names == [&json!("10.0.0.1:80")], "{listed}");
        Ok(())
    })
    .await;
}
