//! The built-in priority queue interoperates with etcd's own client recipe (Baton only: the
//! module side needs Baton). One side is etcd's `recipe.PriorityQueue`
//! (`client/v3/experimental/recipes/priority_queue.go`), written out below step by step over
//! `etcd_client`; the other is the module, called through other members of the same 3-member
//! cluster. Both serve one queue: lowest priority first, FIFO within a priority, each item to
//! one consumer; a dequeue on either side waits for an enqueue from the other; and the
//! bookkeeping key makes a Go enqueue that raced the module's retry instead of overwriting.

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::modules_client::ModulesClient;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, invoke_when_deployed, modules_client, output_json, park,
};

const QUEUE: &str = "pq";

/// etcd's `recipe.PriorityQueue`, translated: `NewPriorityQueue(client, key)`.
struct GoPriorityQueue {
    client: Client,
    /// `key + "/"`.
    key: String,
}

impl GoPriorityQueue {
    fn new(client: Client, key: &str) -> Self {
        Self {
            client,
            key: format!("{key}/"),
        }
    }

    /// `Enqueue(val, pr)`: `newSequentialKV(client, "<key>/%05d", val)`.
    async fn enqueue(&mut self, val: &str, pr: u16) -> Result<String> {
        let prefix = format!("{}{pr:05}", self.key);
        loop {
            let (rev, new_key) = self.next_sequential_key(&prefix).await?;
            if self.put_sequential(&prefix, rev, &new_key, val).await? {
                return Ok(new_key);
            }
        }
    }

    /// `newSequentialKV`'s read: `Get(prefix, WithLastKey()...)` and one past its number.
    async fn next_sequential_key(&mut self, prefix: &str) -> Result<(i64, String)> {
        let last = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1);
        let resp = self.client.get(prefix, Some(last)).await?;
        let mut seq = 0u64;
        if let Some(kv) = resp.kvs().first() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let field = key.rsplit('/').next().unwrap_or_default();
            seq = field.parse::<u64>().context("Sscanf %d")? + 1;
        }
        let rev = resp.header().context("header")?.revision();
        Ok((rev, format!("{prefix}/{seq:016}")))
    }

    /// `newSequentialKV`'s write: if `mod_revision("__" + prefix) < rev + 1`, put the base key
    /// and the new key; false when the compare failed (the caller retries from the read).
    async fn put_sequential(
        &mut self,
        prefix: &str,
        rev: i64,
        key: &str,
        val: &str,
    ) -> Result<bool> {
        let base = format!("__{prefix}");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                base.as_str(),
                CompareOp::Less,
                rev + 1,
            )])
            .and_then([
                TxnOp::put(base.as_str(), "", None),
                TxnOp::put(key, val, None),
            ]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// `Dequeue()`: claim the first key, or wait for a put under the prefix and claim that.
    async fn dequeue(&mut self) -> Result<String> {
        loop {
            let first = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Ascend)
                .with_limit(1);
            let resp = self.client.get(self.key.as_str(), Some(first)).await?;
            // claimFirstKey
            for kv in resp.kvs() {
                if self.delete_rev_key(kv.key(), kv.mod_revision()).await? {
                    return Ok(String::from_utf8_lossy(kv.value()).into_owned());
                }
            }
            if resp.more() {
                continue;
            }
            let rev = resp.header().context("header")?.revision();
            let (key, value, mod_rev) = self.wait_prefix_put(rev).await?;
            if self.delete_rev_key(&key, mod_rev).await? {
                return Ok(value);
            }
        }
    }

    /// `deleteRevKey`: delete `key` only if it is still at `rev`.
    async fn delete_rev_key(&mut self, key: &[u8], rev: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// `WaitPrefixEvents(client, key, rev, [PUT])`: the first put under the prefix from `rev`.
    async fn wait_prefix_put(&mut self, rev: i64) -> Result<(Vec<u8>, String, i64)> {
        let options = WatchOptions::new().with_prefix().with_start_revision(rev);
        let mut stream = self.client.watch(self.key.as_str(), Some(options)).await?;
        while let Some(response) = stream.message().await? {
            for event in response.events() {
                if event.event_type() == EventType::Put
                    && let Some(kv) = event.kv()
                {
                    let value = String::from_utf8_lossy(kv.value()).into_owned();
                    return Ok((kv.key().to_vec(), value, kv.mod_revision()));
                }
            }
        }
        bail!("the watch ended")
    }
}

fn module(function: &str, input: Value) -> baton_proto::baton::v1::InvokeRequest {
    invoke("priority-queue", function, &input.to_string(), 0)
}

async fn enqueue(m: &mut ModulesClient<Channel>, value: &str, priority: u16) -> Result<Value> {
    let input = json!({"queue": QUEUE, "value": value, "priority": priority});
    output_json(
        &m.invoke(module("enqueue", input))
            .await?
            .into_inner()
            .output,
    )
}

async fn dequeue(m: &mut ModulesClient<Channel>) -> Result<String> {
    let reply = m.invoke(module("dequeue", json!({"queue": QUEUE}))).await?;
    let item = output_json(&reply.into_inner().output)?;
    Ok(item["value"].as_str().context("a value")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_priority_queue_recipe_and_the_module_serve_one_queue() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut go = GoPriorityQueue::new(cluster.member_client(0).await?, QUEUE);
        let mut m1 = modules_client(cluster.endpoint(1)).await?;
        let mut m2 = modules_client(cluster.endpoint(2)).await?;
        let probe = module("dequeue", json!({"queue": ""}));
        ensure!(
            invoke_when_deployed(&mut m1, probe).await.is_err(),
            "an unnamed queue must be refused"
        );

        // Both sides enqueue; the module continues Go's sequence within a priority.
        go.enqueue("go-3", 3).await?;
        let go_1a = go.enqueue("go-1a", 1).await?;
        ensure!(go_1a == "pq/00001/0000000000000000", "{go_1a}");
        let ours = enqueue(&mut m1, "mod-1", 1).await?;
        ensure!(ours["key"] == "pq/00001/0000000000000001", "{ours}");
        let go_1b = go.enqueue("go-1b", 1).await?;
        ensure!(go_1b == "pq/00001/0000000000000002", "{go_1b}");
        enqueue(&mut m2, "mod-0", 0).await?;

        // Both sides dequeue, alternating: one global order.
        let mut order = Vec::new();
        for turn in 0..5 {
            order.push(match turn % 2 {
                0 => dequeue(&mut m1).await?,
                _ => go.dequeue().await?,
            });
        }
        ensure!(
            order == ["mod-0", "go-1a", "mod-1", "go-1b", "go-3"],
            "{order:?}"
        );

        // A Go enqueue that read the last key before the module's enqueue retries instead of
        // overwriting the module's item.
        let prefix = format!("{QUEUE}/00007");
        let (rev, raced_key) = go.next_sequential_key(&prefix).await?;
        let ours = enqueue(&mut m2, "mod-7", 7).await?;
        ensure!(ours["key"] == raced_key.as_str(), "{ours} vs {raced_key}");
        ensure!(
            !go.put_sequential(&prefix, rev, &raced_key, "go-7").await?,
            "the stale Go enqueue must fail its compare"
        );
        let go_7 = go.enqueue("go-7", 7).await?;
        ensure!(go_7 != raced_key, "retried under a new key");
        ensure!(dequeue(&mut m1).await? == "mod-7");
        ensure!(go.dequeue().await? == "go-7");

        // Each side's waiting dequeue gets the other side's enqueue.
        let parked = park(&m2, module("dequeue", json!({"queue": QUEUE})));
        sleep(PARKED_PROOF).await;
        ensure!(!parked.is_finished(), "dequeue on an empty queue returned");
        go.enqueue("from-go", 2).await?;
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("dequeue")?
            .into_inner();
        ensure!(output_json(&reply.output)?["value"] == "from-go");

        let mut go_waiter = GoPriorityQueue::new(cluster.member_client(2).await?, QUEUE);
        let waiting = tokio::spawn(async move { go_waiter.dequeue().await });
        sleep(PARKED_PROOF).await;
        ensure!(
            !waiting.is_finished(),
            "Go's dequeue on an empty queue returned"
        );
        enqueue(&mut m1, "from-module", 4).await?;
        let got = timeout(WAKE_BOUND, waiting).await???;
        ensure!(got == "from-module", "{got}");
        let left = go
            .client
            .get(format!("{QUEUE}/"), Some(GetOptions::new().with_prefix()))
            .await?;
        ensure!(left.kvs().is_empty(), "left behind: {:?}", left.kvs());
        Ok(())
    })
    .await;
}
