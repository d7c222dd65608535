#!/usr/bin/env bash
# How watch delivery grows with the number of watchers: a 1-member etcd 3.4 and a 1-member
# Baton (one at a time), W watch streams on one prefix (each on its own connection), puts under
# it; each put's latency is from the put until the LAST watcher has its event
# (`baton bench watch --watchers W`). Prints the bench summary line per system and W.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/watch_fanout.sh [options] [W ...]      (default W: 100 1000 10000)
  --total N     puts per run (default 500)
  --only S      run only one system: etcd or baton
  --no-build    do not build Baton first
  -h, --help    this text
Environment: BATON_BIN, ETCD_BIN, PORT_BASE (default 42700) as in bench/rejoin.sh.
Each watcher is a connection: W needs W + a few file descriptors in the client (ulimit -n).
EOF
}

total=500
only=
build=1
counts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --total) total=${2:?}; shift 2 ;;
        --only) only=${2:?}; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) counts+=("$1"); shift ;;
    esac
done
[ ${#counts[@]} -gt 0 ] || counts=(100 1000 10000)
case "$only" in ''|etcd|baton) ;; *) echo "--only must be etcd or baton" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/baton}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
PORT_BASE=${PORT_BASE:-42700}
# shellcheck source=bench/single_member.sh
. "$repo/bench/single_member.sh"
bench_tmp fanout

start() {
    local system=$1 dir=$tmp/$1
    rm -rf "$dir"
    start_member "$system" "$dir"
    local deadline=$((SECONDS + 60))
    until "$BATON_BIN" --endpoints "http://$client" bench put --total 1 --timeout 2s \
            --key-prefix ready/ --key-size 16 --key-space-size 1 >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "$system not ready; see $dir.log" >&2; exit 1; }
        sleep 0.2
    done
}

echo "watch fan-out: ${counts[*]} watchers, $total puts each; $(date -u +%FT%TZ), $(cd "$repo" && git rev-parse --short HEAD)"
for w in "${counts[@]}"; do
    for system in etcd baton; do
        [ -z "$only" ] || [ "$only" = "$system" ] || continue
        start "$system"
        printf '%s watchers=%s: ' "$system" "$w"
        "$BATON_BIN" --endpoints "http://$client" bench watch --watchers "$w" --total "$total" \
            --timeout 30s | tail -n 1
        stop_member
    done
done
