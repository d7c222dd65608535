#!/usr/bin/env bash
# Builds a profile-guided (PGO) release binary of baton and prints its path.
#
# Baton's CPU goes to many small steps spread over tonic, h2, tokio, openraft, redb and wasmtime
# (no single hot spot), which is what PGO is good at: the compiler learns which branches and calls
# are hot and lays out and inlines code accordingly. Three steps:
#   1. a release build instrumented to count what runs (-Cprofile-generate);
#   2. a training run: every workload of `bench/compare.sh` against a 3-member cluster of the
#      instrumented binary on loopback, the binary also acting as the client;
#   3. a release build that uses the merged counts (-Cprofile-use).
# Takes two release builds and a minute of training (~25 min on 2 cores). Needs rustup's
# llvm-tools component for llvm-profdata; it is added if missing.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/pgo_build.sh [--train-duration D]
  --train-duration D   how long each training workload runs (default 3s)
Output: $CARGO_TARGET_DIR/pgo/baton (or target/pgo/baton), its path printed last.
EOF
}

train_duration=3s
while [ $# -gt 0 ]; do
    case "$1" in
        --train-duration) train_duration=${2:?--train-duration needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${CARGO_TARGET_DIR:-$repo/target}/pgo
build_dir=$out/build
raw=$out/raw

# The toolchain is the one rust-toolchain.toml pins; llvm-profdata must match its LLVM.
rustup component add llvm-tools >/dev/null 2>&1 || true
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    echo "pgo: llvm-profdata not found at $profdata (rustup component add llvm-tools)" >&2
    exit 1
fi

build() {
    # Both builds share one target dir: the flags differ, so cargo rebuilds every crate anyway.
    # RUSTFLAGS replaces .cargo/config.toml's rustflags, so its cfg is repeated here.
    RUSTFLAGS="${RUSTFLAGS:-} --cfg tokio_unstable $1" CARGO_TARGET_DIR=$build_dir \
        cargo build --release --locked -p baton >&2
}

echo "pgo: 1/3 instrumented build" >&2
mkdir -p "$raw"
build "-Cprofile-generate=$raw"
cp "$build_dir/release/baton" "$out/baton-instrumented"
# Build scripts and proc macros were instrumented too and left counts of their own runs.
rm -rf "$raw"
mkdir -p "$raw"

echo "pgo: 2/3 training run (bench/compare.sh --only baton, $train_duration per workload)" >&2
# Members stop on SIGTERM and write their counts as they exit, as does the client after each run.
BATON_BIN=$out/baton-instrumented BENCH_BIN=$out/baton-instrumented \
    bench/compare.sh --only baton --no-build --duration "$train_duration" >"$out/training.txt"
if ! compgen -G "$raw/*.profraw" >/dev/null; then
    echo "pgo: the training run left no profiles in $raw" >&2
    exit 1
fi
"$profdata" merge -o "$out/baton.profdata" "$raw"

echo "pgo: 3/3 optimized build" >&2
build "-Cprofile-use=$out/baton.profdata"
cp "$build_dir/release/baton" "$out/baton"
echo "$out/baton"
