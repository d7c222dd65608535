//! Baton's own clients and the worked example on them, each tested by its own language's
//! runner against clusters the suite starts from the `baton` binary under test (`BATON_BIN`):
//! run from here so they share the one test command and nextest's parallelism with the rest.
//! `.ci/run` (the README's test command) installs what they need: a venv at
//! `target/py-client-venv` holding `clients/python`, and `clients/node`'s npm packages and
//! TypeScript build. A missing toolchain fails the test with the command that installs it; it
//! is never skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

/// Bound on one suite: each starts a 3-member cluster or two and waits on recipes.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
const PYTHON_INSTALL: &str = "python3 -m venv target/py-client-venv && \
     target/py-client-venv/bin/pip install './clients/python[test]'";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `program args` in `dir` with `BATON_BIN` set, and fails with its output unless it
/// exits 0.
async fn run_suite(what: &str, program: &Path, args: &[&str], dir: &Path) -> Result<()> {
    let baton = baton_e2e::baton_bin()?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env(baton_e2e::BATON_BIN_ENV, &baton)
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{what} did not finish within {SUITE_TIMEOUT:?}"))?
        .with_context(|| format!("starting {}", program.display()))?;
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn venv_python() -> Result<PathBuf> {
    let python = repo_root().join("target/py-client-venv/bin/python");
    ensure!(
        python.exists(),
        "no venv with the Python client at {} (from the repo root: `{PYTHON_INSTALL}`)",
        python.display()
    );
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_suite_against_a_real_cluster() {
    baton_e2e::run_test(baton_e2e::Backend::Baton, async {
        let python = venv_python()?;
        let dir = repo_root().join("clients/python");
        run_suite(
            "the Python client's pytest suite",
            &python,
            &["-m", "pytest", "-q"],
            &dir,
        )
        .await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_suite_against_a_real_cluster() {
    baton_e2e::run_test(baton_e2e::Backend::Baton, async {
        let dir = repo_root().join("clients/node");
        ensure!(
            dir.join("node_modules").exists() && dir.join("dist/index.js").exists(),
            "clients/node is not installed and built (there: `npm ci && npm run build`)"
        );
        run_suite(
            "the Node client's test suite",
            Path::new("npm"),
            &["test", "--silent"],
            &dir,
        )
        .await
    })
    .await;
}

/// The seeds' worked example (`examples/cron`): jobs run exactly once while the scheduler is
/// killed or paused past its lease, fenced by Baton and by an external store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_example_runs_every_job_exactly_once_under_crashes() {
    baton_e2e::run_test(baton_e2e::Backend::Baton, async {
        let python = venv_python()?;
        let dir = repo_root().join("examples/cron");
        run_suite(
            "examples/cron's pytest suite",
            &python,
            &["-m", "pytest", "-q"],
            &dir,
        )
        .await
    })
    .await;
}
