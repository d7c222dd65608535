//! Differential test: the same seeded random operations go to the server under test and to a
//! real etcd 3.4, and every response must match field by field (cluster_id, member_id and
//! raft_term excepted). `DIFF_SEED=<n>` replays a run, `DIFF_TRACE=1` prints every op.
//! Against `Backend::Etcd` this compares etcd with etcd, which proves the generator and the
//! comparison are deterministic.

mod events;
mod execute;
mod generate;
mod model;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use baton_e2e::{Backend, Cluster, backend_test};
use rand::SeedableRng;
use rand::rngs::StdRng;

use self::execute::{Outcome, execute};
use self::generate::{Generator, History};

/// Replays a run when set (the seed is printed by every run).
const SEED_ENV: &str = "DIFF_SEED";
/// When set, every op and both answers are printed, not only a divergence.
const TRACE_ENV: &str = "DIFF_TRACE";
const SINGLE_MEMBER_OPS: usize = 400;
const THREE_MEMBER_OPS: usize = 120;
/// Share of ops that may fail. The generator provokes errors on purpose (about a quarter of
/// ops on average, and they cluster: leased puts fail until a lease is granted), so a bound of
/// a third was hit by about 1 run of 30 at 120 ops; half still fails a run of mostly errors.
const ERROR_PERCENT_MAX: usize = 50;

async fn differential(backend: Backend, members: usize, ops: usize) -> Result<()> {
    let seed = baton_e2e::seed_from_env(SEED_ENV)?;
    println!(
        "differential seed {seed} ({members} members, {ops} ops); replay with {SEED_ENV}={seed}"
    );
    let (reference, candidate) = tokio::try_join!(
        Cluster::start(Backend::Etcd, members),
        Cluster::start(backend, members)
    )?;
    let mut reference_client = reference.client().await?;
    let mut candidate_client = candidate.client().await?;
    // Live watches over everything, opened before the first operation.
    let (mut ref_live, mut cand_live) = tokio::try_join!(
        events::open(&mut reference_client, 0),
        events::open(&mut candidate_client, 0)
    )?;
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
    // Watches are opened without a read barrier, so the replays need every member current.
    tokio::try_join!(events::settle(&reference), events::settle(&candidate))?;
    compare_events(
        backend,
        seed,
        &mut reference_client,
        &mut candidate_client,
        (&mut ref_live, &mut cand_live),
        &history,
    )
    .await?;
    let error_count: usize = errors.values().sum();
    println!(
        "{ops} ops agreed; final revision {}; errors: {errors:#?}",
        history.current_revision
    );
    // A run that is mostly errors or never writes would prove little.
    assert!(
        error_count * 100 < ops * ERROR_PERCENT_MAX,
        "too many error outcomes: {error_count} of {ops}"
    );
    assert!(
        history.current_revision > (ops / 10) as i64,
        "too few writes"
    );
    Ok(())
}

/// The live watches must have seen identical events, and so must watches replaying history from
/// the oldest revision still kept (and from one already compacted, which both must cancel alike).
async fn compare_events(
    backend: Backend,
    seed: u64,
    reference: &mut etcd_client::Client,
    candidate: &mut etcd_client::Client,
    live: (&mut etcd_client::WatchStream, &mut etcd_client::WatchStream),
    history: &History,
) -> Result<()> {
    let last = history.current_revision;
    if last < 2 {
        return Ok(());
    }
    let (want, got) =
        tokio::try_join!(events::collect(live.0, last), events::collect(live.1, last))?;
    if want != got {
        bail!("live watch events differ (seed {seed})\netcd 3.4: {want:#?}\n{backend}: {got:#?}");
    }
    // Replay from just above the compaction point: what etcd keeps *at* a compacted revision
    // depends on whether its background compaction has finished (two etcd clusters disagree
    // there); the exact-revision case is covered by the watch tests.
    // After a compaction of the head revision nothing lies above it, and a watch from there
    // would wait for events that never come.
    let above_compaction = (history.compacted_revision + 1).max(2);
    let mut starts = Vec::new();
    if above_compaction <= last {
        starts.push(above_compaction);
    }
    if history.compacted_revision > 2 {
        starts.push(history.compacted_revision - 1);
    }
    for start in starts {
        let (mut s1, mut s2) = tokio::try_join!(
            events::open(reference, start),
            events::open(candidate, start)
        )?;
        let (want, got) = tokio::try_join!(
            events::collect(&mut s1, last),
            events::collect(&mut s2, last)
        )?;
        if want != got {
            bail!(
                "replayed watch events from revision {start} differ (seed {seed})\netcd 3.4: {want:#?}\n{backend}: {got:#?}"
            );
        }
    }
    Ok(())
}

async fn differential_single_member(backend: Backend) -> Result<()> {
    differential(backend, 1, SINGLE_MEMBER_OPS).await
}

async fn differential_three_members(backend: Backend) -> Result<()> {
    differential(backend, 3, THREE_MEMBER_OPS).await
}

backend_test!(differential_single_member, differential_three_members);
