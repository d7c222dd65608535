//! Finding the server and CLI executables the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// Overrides the cargo build of the baton binary (e.g. a release build in CI).
pub const BATON_BIN_ENV: &str = "BATON_BIN";

/// Where Debian's `etcd-server` and `etcd-client` packages install their binaries.
const DEBIAN_BIN_DIR: &str = "/usr/bin";

const ETCD_INSTALL_HINT: &str = "apt-get update && apt-get install -y etcd-server etcd-client";

/// The baton server binary: `$BATON_BIN`, or built once per test process with cargo.
pub fn baton_bin() -> Result<PathBuf> {
    static BATON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BATON
        .get_or_init(|| locate_baton().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The etcd 3.4 server from Debian's `etcd-server` package.
pub fn etcd_bin() -> Result<PathBuf> {
    find_tool("etcd").with_context(|| format!("etcd is not installed; run `{ETCD_INSTALL_HINT}`"))
}

/// The etcdctl CLI from Debian's `etcd-client` package.
pub fn etcdctl_bin() -> Result<PathBuf> {
    find_tool("etcdctl")
        .with_context(|| format!("etcdctl is not installed; run `{ETCD_INSTALL_HINT}`"))
}

fn find_tool(name: &str) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let debian = Path::new(DEBIAN_BIN_DIR).join(name);
    on_path
        .chain(std::iter::once(debian))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow!("`{name}` not found on PATH or in {DEBIAN_BIN_DIR}"))
}

fn locate_baton() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(BATON_BIN_ENV) {
        // Relative paths would depend on the runner's working directory; pin them now.
        let path = std::path::absolute(PathBuf::from(path))?;
        if !path.is_file() {
            bail!("{BATON_BIN_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    cargo_build_baton()
}

/// Runs `cargo build` for the baton bin; cargo's own lock serialises concurrent test processes
/// and the build is a no-op when the binary is fresh.
fn cargo_build_baton() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(&cargo)
        .args(["build", "-p", "baton", "--bin", "baton"])
        .args([
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running cargo build for the baton binary")?;
    if !output.status.success() {
        bail!(
            "cargo build -p baton failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    executable_from_cargo_json(&String::from_utf8_lossy(&output.stdout))
}

fn executable_from_cargo_json(stdout: &str) -> Result<PathBuf> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| msg["target"]["name"] == "baton")
        .filter(|msg| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo build output named no executable for the baton bin target")
}
