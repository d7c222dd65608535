//! The CI runs of the fault harness: a ~2-minute seeded `baton-fault run` against Baton, and a
//! shorter one against etcd 3.4 (the reference), each as a separate process so its namespaces,
//! signals and exit code are exactly the CLI's. The default workload has KV, lock (etcd Lock
//! and, on Baton, the `lock` module; fenced writes) and `counter` module clients, all under the
//! nemesis. Needs root and `ip netns`; without them it fails (it is not skipped). Replay a
//! failure with the seed it prints: `BATON_FAULT_SEED=<seed> cargo nextest run -p baton-fault`.

use std::process::Command;

/// Long enough for a dozen faults of every kind, short enough for CI.
const RUN_DURATION: &str = "2m";
/// The reference run against etcd 3.4: the same schedule kinds, shorter, because it checks the
/// harness and its checker (a failure here is the harness's, not Baton's) rather than Baton.
const ETCD_RUN_DURATION: &str = "75s";

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

/// The same harness against etcd 3.4 (Debian's, at /usr/bin/etcd): what Baton is held to must
/// hold for the reference too, or the checker or a validator is wrong.
#[test]
fn seeded_fault_run_against_etcd_passes_the_same_checks() {
    let seed = baton_e2e::seed_from_env("BATON_FAULT_SEED").expect("BATON_FAULT_SEED");
    eprintln!("etcd fault run: seed {seed} (replay with BATON_FAULT_SEED={seed})");
    assert!(
        rustix::process::geteuid().is_root(),
        "the fault harness needs root (network namespaces); seed {seed}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_baton-fault"))
        .args([
            "run",
            "--backend",
            "etcd",
            "--duration",
            ETCD_RUN_DURATION,
            "--seed",
            &seed.to_string(),
        ])
        .status()
        .expect("starting baton-fault");
    assert!(
        status.success(),
        "etcd fault run failed ({status}); replay with BATON_FAULT_SEED={seed}"
    );
}
