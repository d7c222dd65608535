//! The CI run of the fault harness: a ~2-minute seeded `baton-fault run` against Baton, as a
//! separate process so its namespaces, signals and exit code are exactly the CLI's. Its default
//! workload has KV, lock (etcd Lock and the `lock` module, fenced writes) and `counter` module
//! clients, all under the nemesis. Needs root
//! and `ip netns`; without them it fails (it is not skipped). Replay a failure with the seed it
//! prints: `BATON_FAULT_SEED=<seed> cargo nextest run -p baton-fault`.

use std::process::Command;

/// Long enough for a dozen faults of every kind, short enough for CI.
const RUN_DURATION: &str = "2m";

#[test]
fn seeded_fault_run_is_linearizable_and_members_agree() {
    let seed = baton_e2e::seed_from_env("BATON_FAULT_SEED").expect("BATON_FAULT_SEED");
    eprintln!("fault run: seed {seed} (replay with BATON_FAULT_SEED={seed})");
    assert!(
        rustix::process::geteuid().is_root(),
        "the fault harness needs root (network namespaces); seed {seed}"
    );
    let baton = baton_e2e::baton_bin().expect("the baton binary");
    let status = Command::new(env!("CARGO_BIN_EXE_baton-fault"))
        .args([
            "run",
            "--duration",
            RUN_DURATION,
            "--seed",
            &seed.to_string(),
        ])
        .arg("--bin")
        .arg(&baton)
        .status()
        .expect("starting baton-fault");
    assert!(
        status.success(),
        "fault run failed ({status}); replay with BATON_FAULT_SEED={seed}"
    );
}
