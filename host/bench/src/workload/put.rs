//! `put`: writes `--val-size` byte values to keys from the key space.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::Context;
use etcd_client::{Client, KvClient};

use super::Workload;
use crate::keys::{KeySpace, SplitMix64};

pub(crate) struct PutWorkload {
    keys: KeySpace,
    value: Vec<u8>,
    seed: u64,
}

pub(crate) struct PutRequester {
    kv: KvClient,
    rng: SplitMix64,
}

impl PutWorkload {
    pub(crate) fn new(keys: KeySpace, val_size: usize, seed: u64) -> Self {
        // Printable filler, so a person inspecting the store sees what wrote it.
        Self {
            keys,
            value: vec![b'v'; val_size],
            seed,
        }
    }
}

impl Workload for PutWorkload {
    type Requester = PutRequester;

    fn name(&self) -> &'static str {
        "put"
    }

    fn params(&self) -> BTreeMap<String, String> {
        let order = if self.keys.is_sequential() {
            "sequential"
        } else {
            "random"
        };
        BTreeMap::from([
            ("keys".to_string(), order.to_string()),
            ("key_space".to_string(), self.keys.size().to_string()),
            ("val_size".to_string(), self.value.len().to_string()),
        ])
    }

    fn requester(&self, conn: Client, index: usize) -> PutRequester {
        PutRequester {
            kv: conn.kv_client(),
            rng: SplitMix64::for_requester(self.seed, index),
        }
    }

    fn op(
        &self,
        r: &mut PutRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let key = self.keys.key(self.keys.pick(seq, &mut r.rng));
        let value = self.value.clone();
        async move {
            r.kv.put(key, value, None).await.context("put")?;
            Ok(())
        }
    }
}
