//! Brings the built-in modules this release ships to the cluster, through the log like any
//! deploy, whenever this member becomes leader — on a new cluster and on one founded by an
//! older release alike. At the start of each term it asks the module table, through a
//! linearizable read, which built-ins apply would store ([`plan_at`], the decision apply
//! makes), and proposes only those: when nothing differs a term costs one read and no entry.
//! Apply decides again from the replicated state, so a user's module of a built-in's name, a
//! built-in the user deleted and a newer release's built-in are kept whatever this member
//! proposes.
//!
//! Test-only: `BATON_TEST_BUILTIN_SET=<set>:<name>,<name>...` makes this member deploy only the
//! named built-ins, as set `<set>` and with other bytes (a custom section appended), standing
//! in for an older release's built-ins in the upgrade test. Never set it in production.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;
use tonic::Status;

use crate::server::Server;
use baton_apply::entry::TypeConfig;
use baton_apply::sm::builtin::{DeployPlan, plan_at, with_custom_section};
use baton_limits::{BUILTIN_DEPLOY_ATTEMPTS, BUILTIN_DEPLOY_RETRY_MS};
use baton_proto::batonpb::{ModuleDeploy, log_command, log_reply};
use baton_wasm::builtin::BUILTIN_MODULES;
use baton_wasm::module_hash;

/// The ordinal of the built-ins this binary ships. Raise it with every change to a built-in's
/// bytes (a guest's code, the SDK, the toolchain): apply never replaces a built-in with one of
/// a lower set, so a member of an older release leading during an upgrade cannot downgrade.
/// Set 1 is what Batons recording no origins shipped
/// ([`baton_apply::sm::builtin::LEGACY_BUILTIN_SET`]).
pub(crate) const BUILTIN_SET: u32 = 3;
const _: () = assert!(BUILTIN_SET > baton_apply::sm::builtin::LEGACY_BUILTIN_SET);

/// The test-only switch described in the module doc.
const TEST_SET_ENV: &str = "BATON_TEST_BUILTIN_SET";
/// Custom section that tells a test set's components from the real ones.
const TEST_SET_SECTION: &str = "baton-test-builtin-set";

type Metrics = openraft::RaftMetrics<TypeConfig>;

/// One module this member deploys as a built-in.
struct Builtin {
    name: &'static str,
    component: Vec<u8>,
    set: u32,
}

/// The built-ins of this release, or the test set when [`TEST_SET_ENV`] names one.
fn shipped() -> Vec<Builtin> {
    let real = || {
        (BUILTIN_MODULES.iter())
            .map(|(name, component)| Builtin {
                name,
                component: component.to_vec(),
                set: BUILTIN_SET,
            })
            .collect()
    };
    let Ok(spec) = std::env::var(TEST_SET_ENV) else {
        return real();
    };
    match test_set(&spec) {
        Ok(set) => {
            tracing::warn!(
                spec,
                "deploying a test set of built-in modules ({TEST_SET_ENV})"
            );
            set
        }
        Err(message) => {
            tracing::error!(spec, message, "ignoring {TEST_SET_ENV}");
            real()
        }
    }
}

/// Parses `<set>:<name>,<name>...`.
fn test_set(spec: &str) -> Result<Vec<Builtin>, String> {
    let (set, names) = spec.split_once(':').ok_or("expected <set>:<names>")?;
    let set: u32 = set.parse().map_err(|e| format!("set {set:?}: {e}"))?;
    if set == 0 {
        return Err("set 0 is a user's deploy".into());
    }
    let mut builtins = Vec::new();
    for wanted in names.split(',').filter(|n| !n.is_empty()) {
        let (name, component) = (BUILTIN_MODULES.iter())
            .find(|(name, _)| *name == wanted)
            .ok_or_else(|| format!("no built-in module named {wanted:?}"))?;
        builtins.push(Builtin {
            name,
            component: with_custom_section(component, TEST_SET_SECTION, &set.to_be_bytes()),
            set,
        });
    }
    Ok(builtins)
}

/// The term this member leads in, if it leads.
fn leading_term(m: &Metrics, member_id: u64) -> Option<u64> {
    (m.state == ServerState::Leader && m.current_leader == Some(member_id))
        .then_some(m.current_term)
}

/// Runs until the member stops (the task is aborted then): deploys what differs at the start
/// of every term this member leads.
pub(crate) async fn run(server: Arc<Server>) {
    let builtins = shipped();
    let metrics = server.raft().metrics();
    // Role changes only: the full metrics change with every append and apply.
    let mut roles = server.raft().server_metrics();
    let member_id = server.member_id();
    loop {
        let leading = leading_term(&metrics.borrow_watched(), member_id);
        if let Some(term) = leading {
            deploy_differing(&server, term, &builtins).await;
        }
        // Until leadership changes: a new term of this member's starts over.
        while leading_term(&metrics.borrow_watched(), member_id) == leading {
            if roles.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Proposes a deploy of each of `builtins` that apply would store, while this member leads in
/// `term`; each with bounded retries.
async fn deploy_differing(server: &Server, term: u64, builtins: &[Builtin]) {
    let still_leading = || {
        leading_term(
            &server.raft().metrics().borrow_watched(),
            server.member_id(),
        ) == Some(term)
    };
    for builtin in builtins {
        for attempt in 1..=BUILTIN_DEPLOY_ATTEMPTS {
            if !still_leading() {
                // The next leader runs its own deployer.
                return;
            }
            match deploy_if_differing(server, builtin).await {
                Ok(()) => break,
                Err(status) if attempt < BUILTIN_DEPLOY_ATTEMPTS => {
                    tracing::debug!(module = builtin.name, attempt, %status, "deploying a built-in module");
                    tokio::time::sleep(Duration::from_millis(BUILTIN_DEPLOY_RETRY_MS)).await;
                }
                Err(status) => tracing::error!(
                    module = builtin.name, attempts = attempt, %status,
                    "gave up deploying a built-in module until this member leads again"
                ),
            }
        }
    }
}

/// Reads whether apply would store `builtin` and, only then, proposes it. Err: try again.
async fn deploy_if_differing(server: &Server, builtin: &Builtin) -> Result<(), Status> {
    let hash = module_hash(&builtin.component);
    server.linearize().await?;
    let view = server.read_view().await?;
    let plan =
        plan_at(&view, builtin.name, &hash, builtin.set).map_err(|e| Status::internal(e.0))?;
    drop(view);
    if let DeployPlan::Keep(effect) = plan {
        tracing::debug!(
            module = builtin.name,
            ?effect,
            "built-in module left as it is"
        );
        return Ok(());
    }
    let op = log_command::Op::ModuleDeploy(ModuleDeploy {
        name: builtin.name.to_string(),
        component: builtin.component.clone(),
        builtin_set: builtin.set,
    });
    match server.propose(op).await?.result {
        Some(log_reply::Result::ModuleDeployed(d)) => tracing::info!(
            module = builtin.name,
            version = d.version,
            set = builtin.set,
            effect = ?d.effect(),
            "built-in module deployed"
        ),
        other => tracing::error!(module = builtin.name, reply = ?other, "built-in module refused"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_set_names_real_built_ins_with_other_bytes() {
        let set = test_set("1:counter,lock").unwrap();
        let names: Vec<_> = set.iter().map(|b| (b.name, b.set)).collect();
        assert_eq!(names, [("counter", 1), ("lock", 1)]);
        let real = BUILTIN_MODULES
            .iter()
            .find(|(n, _)| *n == "counter")
            .unwrap()
            .1;
        assert_ne!(set[0].component, real);
        assert!(set[0].component.starts_with(real));
        for bad in ["", "1", "0:counter", "x:counter", "1:nope"] {
            assert!(test_set(bad).is_err(), "{bad:?} accepted");
        }
    }
}
