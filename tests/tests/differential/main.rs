//! Differential test: the same seeded random operations go to the server under test and to a
//! real etcd 3.4, and every response must match field by field (cluster_id, member_id and
//! raft_term excepted). `DIFF_SEED=<n>` replays a run, `DIFF_TRACE=1` prints every op.
//! Against `Backend::Etcd` this compares etcd with etcd, which proves the generator and the
//! comparison are deterministic.

mod execute;
mod generate;
mod model;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use baton_e2e::{Backend, Cluster, backend_test};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::execute::{Outcome, execute};
use crate::generate::{Generator, History};

/// Replays a run when set (the seed is printed by every run).
const SEED_ENV: &str = "DIFF_SEED";
/// When set, every op and both answers are printed, not only a divergence.
const TRACE_ENV: &str = "DIFF_TRACE";
const SINGLE_MEMBER_OPS: usize = 400;
const THREE_MEMBER_OPS: usize = 120;

fn seed() -> Result<u64> {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{SEED_ENV}={text:?} is not a u64")),
        Err(_) => Ok(rand::random()),
    }
}

async fn differential(backend: Backend, members: usize, ops: usize) -> Result<()> {
    let seed = seed()?;
    println!(
        "differential seed {seed} ({members} members, {ops} ops); replay with {SEED_ENV}={seed}"
    );
    let (reference, candidate) = tokio::try_join!(
        Cluster::start(Backend::Etcd, members),
        Cluster::start(backend, members)
    )?;
    let mut reference_client = reference.client().await?;
    let mut candidate_client = candidate.client().await?;
    let mut generator = Generator::new(StdRng::seed_from_u64(seed), members == 1);
    let mut history = History {
        current_revision: 1,
        compacted_revision: 0,
    };
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let trace = std::env::var_os(TRACE_ENV).is_some();
    for index in 0..ops {
        let op = generator.op(&history);
        let (want, got) = tokio::try_join!(
            execute(&mut reference_client, &op),
            execute(&mut candidate_client, &op)
        )
        .with_context(|| format!("op #{index} {op:#?} (seed {seed})"))?;
        if trace {
            println!("#{index} {op:?}\n   => {want:?}\n   => {got:?}");
        }
        if want != got {
            bail!(
                "divergence at op #{index} (seed {seed}, replay with {SEED_ENV}={seed})\n\
                 op: {op:#?}\netcd 3.4 answered: {want:#?}\n{backend} answered: {got:#?}"
            );
        }
        if let Some(revision) = want.revision() {
            history.current_revision = revision;
        }
        match (&op, &want) {
            (model::Op::Compact { revision, .. }, Outcome::Compact { .. }) => {
                history.compacted_revision = *revision;
            }
            (_, Outcome::Error { code, message }) => {
                *errors.entry(format!("{code:?} {message}")).or_default() += 1;
            }
            _ => {}
        }
    }
    let error_count: usize = errors.values().sum();
    println!(
        "{ops} ops agreed; final revision {}; errors: {errors:#?}",
        history.current_revision
    );
    // A run that is mostly errors or never writes would prove little.
    assert!(
        error_count * 3 < ops,
        "too many error outcomes: {error_count} of {ops}"
    );
    assert!(
        history.current_revision > (ops / 10) as i64,
        "too few writes"
    );
    Ok(())
}

async fn differential_single_member(backend: Backend) -> Result<()> {
    differential(backend, 1, SINGLE_MEMBER_OPS).await
}

async fn differential_three_members(backend: Backend) -> Result<()> {
    differential(backend, 3, THREE_MEMBER_OPS).await
}

backend_test!(differential_single_member, differential_three_members);
