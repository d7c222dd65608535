//! `range`: single-key reads, linearizable or serializable, over keys written beforehand.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::ValueEnum;
use etcd_client::{Client, GetOptions, KvClient};

use super::Workload;
use super::put::PutWorkload;
use crate::args::Limits;
use crate::driver;
use crate::keys::{KeySpace, SplitMix64};
use crate::pool::Pool;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    /// Linearizable: the member confirms it is current with the leader before answering.
    #[value(name = "l", alias = "linearizable")]
    Linearizable,
    /// Serializable: the member answers from its local state.
    #[value(name = "s", alias = "serializable")]
    Serializable,
}

pub(crate) struct RangeWorkload {
    keys: KeySpace,
    val_size: usize,
    consistency: Consistency,
    seed: u64,
}

pub(crate) struct RangeRequester {
    kv: KvClient,
    rng: SplitMix64,
}

impl RangeWorkload {
    pub(crate) fn new(
        keys: KeySpace,
        val_size: usize,
        consistency: Consistency,
        seed: u64,
    ) -> Self {
        Self {
            keys,
            val_size,
            consistency,
            seed,
        }
    }

    fn options(&self) -> Option<GetOptions> {
        match self.consistency {
            Consistency::Linearizable => None,
            Consistency::Serializable => Some(GetOptions::new().with_serializable()),
        }
    }
}

impl Workload for RangeWorkload {
    type Requester = RangeRequester;

    fn name(&self) -> &'static str {
        "range"
    }

    fn params(&self) -> BTreeMap<String, String> {
        let consistency = match self.consistency {
            Consistency::Linearizable => "l",
            Consistency::Serializable => "s",
        };
        let order = if self.keys.is_sequential() {
            "sequential"
        } else {
            "random"
        };
        BTreeMap::from([
            ("consistency".to_string(), consistency.to_string()),
            ("keys".to_string(), order.to_string()),
            ("key_space".to_string(), self.keys.size().to_string()),
            ("val_size".to_string(), self.val_size.to_string()),
        ])
    }

    /// Writes every key of the key space once, so each read finds a value.
    async fn prepare(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut sequential = self.keys.clone();
        sequential.set_sequential(true);
        let writer = Arc::new(PutWorkload::new(sequential, self.val_size, self.seed));
        let limits = Limits {
            total: self.keys.size(),
            duration: None,
        };
        tracing::info!(keys = self.keys.size(), "populating key space");
        let outcome = driver::drive(writer, pool, limits).await?;
        if outcome.errors > 0 {
            bail!(
                "populating the key space: {} of {} puts failed: {}",
                outcome.errors,
                limits.total,
                outcome.error_samples.join("; ")
            );
        }
        // A linearizable read through each connection brings its member up to date with the
        // writes above, so serializable reads on followers find every key too.
        let last = self.keys.key(self.keys.size() - 1);
        for conn in &pool.conns {
            let mut kv = conn.kv_client();
            kv.get(last.clone(), None)
                .await
                .context("catch-up read after populating")?;
        }
        Ok(())
    }

    fn requester(&self, conn: Client, index: usize) -> RangeRequester {
        RangeRequester {
            kv: conn.kv_client(),
            rng: SplitMix64::for_requester(self.seed, index),
        }
    }

    fn op(
        &self,
        r: &mut RangeRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let key = self.keys.key(self.keys.pick(seq, &mut r.rng));
        let options = self.options();
        async move {
            let response = r.kv.get(key.clone(), options).await.context("range")?;
            // Every key was written in prepare; an empty answer is a wrong answer.
            if response.kvs().len() != 1 {
                bail!(
                    "range {:?}: expected 1 key, got {}",
                    String::from_utf8_lossy(&key),
                    response.kvs().len()
                );
            }
            Ok(())
        }
    }
}
