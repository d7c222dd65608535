#!/usr/bin/env bash
# Runs the contended-increment comparison (`compare.sh --match incr`) several times, each on
# fresh clusters, and prints every run's Invoke-on-Baton / CAS-on-etcd ratio and their median.
# One run's ratio swings by ±20 % with the machine's speed of the minute (both systems share
# its cores with the client), so a single run says little about the target of issue 4.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/incr_repeat.sh [RUNS] [compare.sh options...]
  RUNS             how many comparisons to run (default 5)
  other options    passed to bench/compare.sh (e.g. --pgo --duration 5s --no-build)
EOF
}

runs=5
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    ''|-*) ;;
    *) runs=$1; shift ;;
esac
case "$runs" in
    ''|*[!0-9]*|0) echo "RUNS must be a positive number" >&2; usage >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
ratios=()
for i in $(seq "$runs"); do
    # Build (if asked) only once.
    extra=()
    [ "$i" -gt 1 ] && extra=(--no-build)
    log=$(mktemp "${TMPDIR:-/tmp}/incr-repeat.XXXXXX")
    out=$("$here/compare.sh" --match incr "$@" "${extra[@]}" 2>"$log") || true
    line=$(grep 'Invoke on Baton / CAS on etcd 3.4:' <<<"$out") || {
        echo "run $i: no ratio in compare.sh's output:" >&2
        cat "$log" >&2
        echo "$out" >&2
        exit 1
    }
    rm -f "$log"
    ratio=$(grep -o '[0-9.]*x' <<<"$line" | head -n 1)
    etcd=$(awk '/^CAS on etcd 3.4/ {print $5}' <<<"$out")
    invoke=$(awk '/^Invoke on Baton/ && !/CAS/ {print $4}' <<<"$out")
    echo "run $i: Invoke on Baton $invoke/s, CAS on etcd $etcd/s: ${ratio}"
    ratios+=("${ratio%x}")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR]=$1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "median of $runs runs: ${median}x (target 10x)"
