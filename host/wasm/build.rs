//! Builds the modules under `guests/` for wasm32-unknown-unknown with a nested cargo and turns
//! each core module into a component with `wit-component`, so `cargo build` needs nothing more.
//! The components land in `OUT_DIR`, where `src/builtin.rs` embeds them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The guests' own workspace, relative to this crate.
const GUESTS_DIR: &str = "../../guests";
/// Paths whose changes require rebuilding the guests.
const GUEST_INPUTS: [&str; 3] = ["../../guests", "../../sdk", "../../wit"];
const GUEST_TARGET: &str = "wasm32-unknown-unknown";
/// A 64 KiB shadow stack (clang's default for wasm) instead of rustc's 1 MiB: a smaller linear
/// memory for every call's fresh instance to set up, scan for dirty pages and reset (`cargo
/// bench --bench wasm_invoke`: a trivial call 6.4 -> 6.1 us; with `opt-level = 3` in
/// `guests/Cargo.toml`, ~6 % less server CPU per counter call on the `incr` benchmark). The
/// stack sits below the data, so overflowing it is an out-of-bounds trap, never corruption.
const GUEST_RUSTFLAGS: &str = "-Clink-arg=-zstack-size=65536";
/// Crates of the guests' workspace; each becomes `OUT_DIR/<name>.wasm` (a component).
const GUESTS: [&str; 12] = [
    "counter",
    "compare-and-move",
    "hostile",
    "lock",
    "election",
    "queue",
    "priority-queue",
    "registry",
    // Semaphore, rwlock and barriers (issue 21).
    "semaphore",
    "rwlock",
    "barrier",
    "double-barrier",
];

fn main() -> Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);
    build_guests(&out_dir)
}

fn build_guests(out_dir: &Path) -> Result<()> {
    for input in GUEST_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    ensure_guest_target()?;
    // Its own target dir: the outer cargo holds a lock on ours for the whole build.
    let target_dir = out_dir.join("guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(Path::new(GUESTS_DIR).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guests;
    // the guests' own flags replace CARGO_ENCODED_RUSTFLAGS below.
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", GUEST_RUSTFLAGS);
    let status = cmd.status().context("running cargo for the guests")?;
    if !status.success() {
        bail!("building the guests failed ({status})");
    }
    let core_dir = target_dir.join(GUEST_TARGET).join("release");
    for guest in GUESTS {
        let core_path = core_dir.join(format!("{}.wasm", guest.replace('-', "_")));
        let component = componentize(&core_path)?;
        let out: PathBuf = out_dir.join(format!("{guest}.wasm"));
        std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Makes sure the toolchain has the guests' standard library. rustup installs the targets that
/// `rust-toolchain.toml` names only when it installs the toolchain itself, so on a machine that
/// already had this toolchain the target may be missing: add it, as `.ci/run` does.
fn ensure_guest_target() -> Result<()> {
    if guest_std_present() {
        return Ok(());
    }
    println!(
        "cargo:warning=installing the {GUEST_TARGET} target with rustup for the built-in modules"
    );
    let added = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status();
    match added {
        Ok(status) if status.success() && guest_std_present() => Ok(()),
        _ => bail!(
            "the built-in modules need Rust's {GUEST_TARGET} target and it could not be \
             installed; run `rustup target add {GUEST_TARGET}` and build again"
        ),
    }
}

/// Whether the compiler's sysroot holds a standard library for the guests' target.
fn guest_std_present() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output();
    let Ok(libdir) = libdir else { return false };
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

/// Wraps a core module carrying wit-bindgen's type section into a component.
fn componentize(core_path: &Path) -> Result<Vec<u8>> {
    let core =
        std::fs::read(core_path).with_context(|| format!("reading {}", core_path.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&core)
        .with_context(|| format!("decoding {}", core_path.display()))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {} as a component", core_path.display()))
}
