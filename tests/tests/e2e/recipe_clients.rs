//! What the recipe tests share: calls to a built-in recipe module through any member, and
//! etcd's own client-side recipes (`contrib/recipes`: `Barrier`, `DoubleBarrier`, `RWMutex`)
//! written out in Rust over `etcd_client`, step by step as the Go code does them, so a test can
//! run etcd's algorithm on one side and the module on the other against the same keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::Cluster;
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{InvokeRequest, InvokeResponse};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use crate::modules::{Parked, invoke, invoke_when_deployed, modules_client, park};

/// A lease that outlives every test.
pub(crate) const LONG_TTL_S: i64 = 60;
/// The shortest TTL Baton grants with default timing.
pub(crate) const SHORT_TTL_S: i64 = 2;
/// Far above a wake-up's expected time (a lease expiry takes its TTL plus a tick or two).
pub(crate) const WAKE_BOUND: Duration = Duration::from_secs(20);
/// A client deadline that passes while its call waits.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
const POLL_PAUSE: Duration = Duration::from_millis(100);

/// One module's calls, through any member of a cluster.
pub(crate) struct Recipe {
    pub(crate) module: &'static str,
    members: Vec<ModulesClient<Channel>>,
}

impl Recipe {
    /// Connects to every member and waits until `module` is deployed (built-ins arrive
    /// through the log just after bootstrap), probing with `probe` (function, input), which
    /// must fail without a lease or succeed without changing anything.
    pub(crate) async fn ready(
        cluster: &Cluster,
        module: &'static str,
        probe: (&str, &str),
    ) -> Result<Recipe> {
        let mut members = Vec::new();
        for member in 0..cluster.size() {
            members.push(modules_client(cluster.endpoint(member)).await?);
        }
        let request = invoke(module, probe.0, probe.1, 0);
        // A refusal that is not NOT_FOUND means the module is there.
        let _ = invoke_when_deployed(&mut members[0], request).await;
        Ok(Recipe { module, members })
    }

    pub(crate) fn request(&self, function: &str, input: &str, lease: i64) -> InvokeRequest {
        InvokeRequest {
            lease,
            ..invoke(self.module, function, input, 0)
        }
    }

    /// Calls `function` through `member` and returns its output as JSON.
    pub(crate) async fn call(
        &self,
        member: usize,
        function: &str,
        input: &str,
        lease: i64,
    ) -> Result<serde_json::Value> {
        let reply = self
            .call_raw(member, self.request(function, input, lease))
            .await?;
        crate::modules::output_json(&reply.output)
    }

    pub(crate) async fn call_raw(
        &self,
        member: usize,
        request: InvokeRequest,
    ) -> Result<InvokeResponse> {
        let mut client = self.members[member % self.members.len()].clone();
        let reply = client.invoke(request).await;
        Ok(reply
            .with_context(|| format!("{} through member {member}", self.module))?
            .into_inner())
    }

    /// Starts a call through `member` in the background.
    pub(crate) fn park(&self, member: usize, request: InvokeRequest) -> Parked {
        park(&self.members[member % self.members.len()], request)
    }

    /// Makes a call whose client gives up after [`GIVE_UP_AFTER`]; checks that it did.
    pub(crate) async fn give_up(&self, member: usize, request: InvokeRequest) -> Result<()> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(GIVE_UP_AFTER);
        let mut client = self.members[member % self.members.len()].clone();
        let status = client
            .invoke(request)
            .await
            .err()
            .context("the call was not left waiting")?;
        ensure!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
        Ok(())
    }
}

/// The output of a parked call, once it returns within [`WAKE_BOUND`].
pub(crate) async fn returned(parked: Parked) -> Result<serde_json::Value> {
    let reply = tokio::time::timeout(WAKE_BOUND, parked)
        .await
        .context("still waiting")???;
    crate::modules::output_json(&reply.into_inner().output)
}

/// The keys under `prefix`, in key order.
pub(crate) async fn keys(kv: &mut Client, prefix: &str) -> Result<Vec<String>> {
    let found = kv
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(found
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

/// Waits until the keys under `prefix` are exactly `want` (in key order).
pub(crate) async fn until_keys(kv: &mut Client, prefix: &str, want: &[String]) -> Result<()> {
    let deadline = Instant::now() + WAKE_BOUND;
    loop {
        let found = keys(kv, prefix).await?;
        if found == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "keys {found:?} under {prefix}, want {want:?}"
        );
        sleep(POLL_PAUSE).await;
    }
}

// --- etcd's client recipes (contrib/recipes, etcd 3.4), over etcd_client. ---

/// `newUniqueEphemeralKey`: `<prefix>/<unix nanos>` put only if absent, with the session's
/// lease; returns the key and its revision.
async fn unique_ephemeral_key(kv: &mut Client, prefix: &str, lease: i64) -> Result<(String, i64)> {
    loop {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let key = format!("{prefix}/{nanos}");
        let created = put_new(kv, &key, lease).await?;
        if let Some(revision) = created {
            return Ok((key, revision));
        }
    }
}

/// `putNewKV`: puts `key` only if it does not exist; its revision, or `None` if it did.
async fn put_new(kv: &mut Client, key: &str, lease: i64) -> Result<Option<i64>> {
    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    let txn = Txn::new()
        .when([Compare::version(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, "", options)]);
    let done = kv.txn(txn).await?;
    let revision = done.header().context("no header")?.revision();
    Ok(done.succeeded().then_some(revision))
}

/// `WaitEvents`: watches `key` from `revision` until a delete (the only event the recipes
/// here wait for).
async fn wait_delete(kv: &mut Client, key: &str, revision: i64) -> Result<()> {
    let options = WatchOptions::new().with_start_revision(revision);
    let mut stream = kv.watch(key, Some(options)).await?;
    while let Some(message) = stream.message().await? {
        if message
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
    bail!("the watch on {key} ended")
}

/// `WaitEvents` for a put of `key` from `revision`.
async fn wait_put(kv: &mut Client, key: &str, revision: i64) -> Result<()> {
    let options = WatchOptions::new().with_start_revision(revision);
    let mut stream = kv.watch(key, Some(options)).await?;
    while let Some(message) = stream.message().await? {
        if message
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Put)
        {
            return Ok(());
        }
    }
    bail!("the watch on {key} ended")
}

/// `recipe.RWMutex` on one session (lease).
pub(crate) struct EtcdRwMutex {
    kv: Client,
    prefix: String,
    lease: i64,
    my_key: Option<(String, i64)>,
}

impl EtcdRwMutex {
    pub(crate) fn new(kv: Client, name: &str, lease: i64) -> Self {
        EtcdRwMutex {
            kv,
            prefix: format!("{name}/"),
            lease,
            my_key: None,
        }
    }

    pub(crate) async fn rlock(&mut self) -> Result<()> {
        let prefix = format!("{}read", self.prefix);
        self.my_key = Some(unique_ephemeral_key(&mut self.kv, &prefix, self.lease).await?);
        let blockers = format!("{}write", self.prefix);
        while !self.wait_on_last_rev(&blockers).await? {}
        Ok(())
    }

    pub(crate) async fn lock(&mut self) -> Result<()> {
        let prefix = format!("{}write", self.prefix);
        self.my_key = Some(unique_ephemeral_key(&mut self.kv, &prefix, self.lease).await?);
        let blockers = self.prefix.clone();
        while !self.wait_on_last_rev(&blockers).await? {}
        Ok(())
    }

    /// `waitOnLastRev`: true once no key under `prefix` is older than ours; otherwise waits
    /// for the newest older one to be deleted and returns false.
    async fn wait_on_last_rev(&mut self, prefix: &str) -> Result<bool> {
        let (_, my_rev) = self.my_key.clone().context("no key")?;
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1)
            .with_max_mod_revision(my_rev - 1);
        let last = self.kv.get(prefix, Some(options)).await?;
        let Some(blocker) = last.kvs().first() else {
            return Ok(true);
        };
        let key = String::from_utf8_lossy(blocker.key()).into_owned();
        wait_delete(&mut self.kv, &key, my_rev).await?;
        Ok(false)
    }

    /// `RUnlock` and `Unlock`.
    pub(crate) async fn unlock(&mut self) -> Result<()> {
        if let Some((key, _)) = self.my_key.take() {
            self.kv.delete(key, None).await?;
        }
        Ok(())
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.my_key.as_ref().map(|(key, _)| key.as_str())
    }
}

/// `recipe.Barrier`.
pub(crate) struct EtcdBarrier {
    kv: Client,
    key: String,
}

impl EtcdBarrier {
    pub(crate) fn new(kv: Client, key: &str) -> Self {
        EtcdBarrier {
            kv,
            key: key.to_string(),
        }
    }

    /// `Hold`: `ErrKeyExists` if the barrier is already held.
    pub(crate) async fn hold(&mut self) -> Result<()> {
        match put_new(&mut self.kv, &self.key, 0).await? {
            Some(_) => Ok(()),
            None => bail!("key already exists"),
        }
    }

    pub(crate) async fn release(&mut self) -> Result<()> {
        self.kv.delete(self.key.clone(), None).await?;
        Ok(())
    }

    pub(crate) async fn wait(&mut self) -> Result<()> {
        let found = self.kv.get(self.key.clone(), None).await?;
        if found.kvs().is_empty() {
            return Ok(());
        }
        let revision = found.header().context("no header")?.revision();
        wait_delete(&mut self.kv, &self.key, revision + 1).await
    }
}

/// `recipe.DoubleBarrier` on one session (lease).
pub(crate) struct EtcdDoubleBarrier {
    kv: Client,
    key: String,
    count: usize,
    lease: i64,
    my_key: Option<(String, i64)>,
}

impl EtcdDoubleBarrier {
    pub(crate) fn new(kv: Client, key: &str, count: usize, lease: i64) -> Self {
        EtcdDoubleBarrier {
            kv,
            key: key.to_string(),
            count,
            lease,
            my_key: None,
        }
    }

    async fn entered(&mut self) -> Result<Vec<etcd_client::KeyValue>> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let found = self
            .kv
            .get(format!("{}/waiters", self.key), Some(options))
            .await?;
        Ok(found.kvs().to_vec())
    }

    pub(crate) async fn enter(&mut self) -> Result<()> {
        if self.entered().await?.len() >= self.count {
            bail!("too many clients");
        }
        let prefix = format!("{}/waiters", self.key);
        let (key, rev) = unique_ephemeral_key(&mut self.kv, &prefix, self.lease).await?;
        self.my_key = Some((key.clone(), rev));
        let entered = self.entered().await?;
        if entered.len() >= self.count {
            let last = &entered[self.count - 1];
            if rev > last.create_revision() {
                self.kv.delete(key, None).await?;
                bail!("too many clients");
            }
            if rev == last.create_revision() {
                self.kv.put(format!("{}/ready", self.key), "", None).await?;
                return Ok(());
            }
        }
        wait_put(&mut self.kv, &format!("{}/ready", self.key), rev).await
    }

    pub(crate) async fn leave(&mut self) -> Result<()> {
        loop {
            let options = GetOptions::new().with_prefix();
            let found = self
                .kv
                .get(format!("{}/waiters", self.key), Some(options))
                .await?;
            let waiters = found.kvs();
            let (Some(lowest), Some(highest)) = (
                waiters.iter().min_by_key(|kv| kv.mod_revision()),
                waiters.iter().max_by_key(|kv| kv.mod_revision()),
            ) else {
                return Ok(());
            };
            let mine = self.my_key.as_ref().map(|(key, _)| key.as_bytes());
            let is_lowest = Some(lowest.key()) == mine;
            if waiters.len() == 1 && is_lowest {
                self.kv.delete(format!("{}/ready", self.key), None).await?;
                if let Some((key, _)) = self.my_key.take() {
                    self.kv.delete(key, None).await?;
                }
                return Ok(());
            }
            if is_lowest {
                let key = String::from_utf8_lossy(highest.key()).into_owned();
                wait_delete(&mut self.kv, &key, highest.mod_revision()).await?;
                continue;
            }
            if let Some((key, _)) = self.my_key.take() {
                self.kv.delete(key, None).await?;
            }
            let key = String::from_utf8_lossy(lowest.key()).into_owned();
            wait_delete(&mut self.kv, &key, lowest.mod_revision()).await?;
        }
    }
}
