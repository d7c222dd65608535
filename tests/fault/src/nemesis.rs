//! The nemesis: a schedule of faults drawn from the seed (pure: `schedule`), and its execution
//! against the cluster and the network (`Nemesis::run`). One fault at a time, each held for a few
//! election timeouts and then healed, with a gap before the next. Targets such as "the leader"
//! are part of the schedule; which member that is gets resolved when the fault starts, so the
//! schedule replays exactly while the members it hits may differ between runs.

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

use crate::cluster::{Cluster, ELECTION_TIMEOUT_MS};
use crate::netns::Network;

/// A fault is held this many election timeouts (inclusive range)...
const HOLD_ELECTION_TIMEOUTS: (u64, u64) = (3, 6);
/// ...and followed by a healthy gap of this many.
const GAP_ELECTION_TIMEOUTS: (u64, u64) = (1, 3);
/// How long to look for a leader to aim a fault at before skipping the fault.
const LEADER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which member a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    Leader,
    /// One of the followers, chosen by the number (modulo the followers' count).
    Follower(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// `kill -9`, restarted on the same data dir when the fault ends.
    Kill(Target),
    /// SIGSTOP, SIGCONT when the fault ends (a GC pause, a stalled VM).
    Pause(Target),
    /// The target alone on one side of the partition, the other members on the other. With
    /// `Leader` the leader is in the minority; with `Follower` the leader keeps a majority.
    Isolate(Target),
    /// The link between the leader and one follower is cut; the third member still sees both,
    /// so each member sees a majority but not the same one (Jepsen's "majorities ring").
    Bridge(Target),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One scheduled fault: applied at `start_ms` after the run starts, healed `hold_ms` later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub start_ms: u64,
    pub hold_ms: u64,
    pub fault: Fault,
}

/// Named schedules: `mixed` draws from every fault kind, the others from one each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    Mixed,
    Kill,
    Pause,
    Partition,
    /// No faults: the workload alone, a baseline for the checker.
    None,
}

fn target(rng: &mut StdRng) -> Target {
    if rng.random_bool(0.5) {
        Target::Leader
    } else {
        Target::Follower(rng.random_range(0..=u8::MAX))
    }
}

fn fault(rng: &mut StdRng, schedule: Schedule) -> Option<Fault> {
    let t = target(rng);
    let kinds: &[fn(Target) -> Fault] = match schedule {
        Schedule::Mixed => &[Fault::Kill, Fault::Pause, Fault::Isolate, Fault::Bridge],
        Schedule::Kill => &[Fault::Kill],
        Schedule::Pause => &[Fault::Pause],
        Schedule::Partition => &[Fault::Isolate, Fault::Bridge],
        Schedule::None => return None,
    };
    Some(kinds[rng.random_range(0..kinds.len())](t))
}

/// The faults of a run whose faulty phase lasts `active_ms`; every fault ends by then.
pub fn schedule(rng: &mut StdRng, kind: Schedule, active_ms: u64) -> Vec<Step> {
    let between = |rng: &mut StdRng, (lo, hi): (u64, u64)| {
        rng.random_range(lo * ELECTION_TIMEOUT_MS..=hi * ELECTION_TIMEOUT_MS)
    };
    let mut steps = Vec::new();
    let mut at_ms = between(rng, GAP_ELECTION_TIMEOUTS);
    loop {
        let hold_ms = between(rng, HOLD_ELECTION_TIMEOUTS);
        let Some(fault) = fault(rng, kind) else {
            break;
        };
        if at_ms + hold_ms > active_ms {
            break;
        }
        steps.push(Step {
            start_ms: at_ms,
            hold_ms,
            fault,
        });
        at_ms += hold_ms + between(rng, GAP_ELECTION_TIMEOUTS);
    }
    steps
}

/// What the nemesis did, for the report and the saved history.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub what: String,
}

/// Applies a schedule to a cluster and its network.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub net: &'a mut Network,
    pub start: Instant,
    pub events: Vec<Event>,
}

impl Nemesis<'_> {
    fn note(&mut self, what: String) {
        let at_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(at_ms, "nemesis: {what}");
        self.events.push(Event { at_ms, what });
    }

    /// Runs every step at its time; returns with all faults healed.
    pub async fn run(&mut self, steps: &[Step]) -> Result<()> {
        for step in steps {
            sleep_until(self.start + Duration::from_millis(step.start_ms)).await;
            let Some((leader, victim)) = self.resolve(step.fault).await else {
                self.note(format!("{}: skipped, no leader found", step.fault));
                continue;
            };
            self.note(format!(
                "{} -> member {victim} (leader {leader})",
                step.fault
            ));
            self.apply(step.fault, leader, victim)?;
            sleep_until(self.start + Duration::from_millis(step.start_ms + step.hold_ms)).await;
            let views = self.cluster.leader_views().await;
            self.note(format!(
                "leaders as each member sees them before healing: {views:?}"
            ));
            self.heal()?;
            self.note(format!("healed {}", step.fault));
        }
        Ok(())
    }

    /// The current leader and the member the fault hits.
    async fn resolve(&mut self, fault: Fault) -> Option<(usize, usize)> {
        let deadline = Instant::now() + LEADER_LOOKUP_TIMEOUT;
        let leader = loop {
            match self.cluster.leader().await {
                Ok(leader) => break leader,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => return None,
            }
        };
        let (Fault::Kill(t) | Fault::Pause(t) | Fault::Isolate(t) | Fault::Bridge(t)) = fault;
        let victim = match t {
            Target::Leader => leader,
            Target::Follower(n) => {
                let followers: Vec<usize> =
                    (0..self.cluster.len()).filter(|&i| i != leader).collect();
                followers[usize::from(n) % followers.len()]
            }
        };
        Some((leader, victim))
    }

    fn apply(&mut self, fault: Fault, leader: usize, victim: usize) -> Result<()> {
        let others: Vec<usize> = (0..self.cluster.len()).filter(|&i| i != victim).collect();
        match fault {
            Fault::Kill(_) => self.cluster.kill(victim),
            Fault::Pause(_) => self.cluster.pause(victim),
            Fault::Isolate(_) => self.net.partition(&[vec![victim], others]),
            Fault::Bridge(Target::Leader) => {
                // The leader loses one follower; the other follower bridges.
                self.net.cut_link(leader, others[0])
            }
            Fault::Bridge(Target::Follower(_)) => self.net.cut_link(leader, victim),
        }
    }

    /// Ends every fault: links restored, paused members resumed, killed members restarted.
    pub fn heal(&mut self) -> Result<()> {
        self.net.heal()?;
        self.cluster.revive_all()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn schedules_replay_from_the_seed_and_fit_the_run() {
        let draw = |seed| schedule(&mut StdRng::seed_from_u64(seed), Schedule::Mixed, 100_000);
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let steps = draw(7);
        assert!(steps.len() >= 10, "{steps:?}");
        for pair in steps.windows(2) {
            assert!(
                pair[0].start_ms + pair[0].hold_ms < pair[1].start_ms,
                "{pair:?}"
            );
        }
        let last = steps.last().map_or(0, |s| s.start_ms + s.hold_ms);
        assert!(last <= 100_000);
        assert!(schedule(&mut StdRng::seed_from_u64(1), Schedule::None, 100_000).is_empty());
    }
}
