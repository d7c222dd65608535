#!/usr/bin/env bash
# How start-up grows with history: a 1-member cluster takes N puts (each a new revision of one
# of KEYS keys), is stopped with SIGTERM and started again on its data dir; reported are the
# seconds from the start until it accepts a write, its RSS then, and its data dir's size.
# etcd 3.4 and Baton, side by side, for each N given.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/startup.sh [options] [N ...]      (default N: 100000 1000000)
  --keys K       distinct keys the puts cycle over (default 100000)
  --val-size B   bytes per value (default 64)
  --only S       run only one system: etcd or baton
  --no-build     do not build Baton first
  -h, --help     this text
Environment: BATON_BIN, ETCD_BIN, ETCDCTL_BIN, PORT_BASE (default 42600) as in bench/rejoin.sh.
EOF
}

keys=100000
val_size=64
only=
build=1
sizes=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys=${2:?}; shift 2 ;;
        --val-size) val_size=${2:?}; shift 2 ;;
        --only) only=${2:?}; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) sizes+=("$1"); shift ;;
    esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
case "$only" in ''|etcd|baton) ;; *) echo "--only must be etcd or baton" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/baton}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
ETCDCTL_BIN=${ETCDCTL_BIN:-$(command -v etcdctl || true)}
PORT_BASE=${PORT_BASE:-42600}
START_TIMEOUT_S=1800
# shellcheck source=bench/single_member.sh
. "$repo/bench/single_member.sh"
bench_tmp startup

start() { start_member "$1" "$2" --quota-backend-bytes $((8 << 30)); }

# Seconds (with a fraction) until the member accepts a write.
wait_serving() {
    local t0=$EPOCHREALTIME deadline=$((SECONDS + START_TIMEOUT_S))
    until ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$client" --command-timeout=2s \
            put startup-probe x >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { echo "the member exited; see $1.log" >&2; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "not serving after ${START_TIMEOUT_S}s" >&2; return 1; }
        sleep 0.1
    done
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

run() {
    local system=$1 n=$2 dir=$tmp/$1-$2 fresh restarted rss size
    start "$system" "$dir"
    fresh=$(wait_serving "$dir")
    "$BATON_BIN" --endpoints "http://$client" bench put --total "$n" --clients 64 --conns 8 \
        --val-size "$val_size" --key-size 16 --key-space-size "$keys" --key-prefix s/ \
        --timeout 30s >/dev/null
    stop_member
    start "$system" "$dir"
    restarted=$(wait_serving "$dir")
    rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$pid/status")
    size=$(du -sm "$dir" | cut -f1)
    stop_member
    echo "RESULT $system revisions=$n: restart to serving ${restarted}s (fresh ${fresh}s); RSS ${rss} MB; data dir ${size} MB"
    rm -rf "$dir"
}

echo "startup: ${sizes[*]} puts over $keys keys of $val_size-byte values; $(date -u +%FT%TZ), $(cd "$repo" && git rev-parse --short HEAD)"
for n in "${sizes[@]}"; do
    if [ "$only" != baton ]; then run etcd "$n"; fi
    if [ "$only" != etcd ]; then run baton "$n"; fi
done
