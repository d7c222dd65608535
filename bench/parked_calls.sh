#!/usr/bin/env bash
# How consumers waiting on one queue cost as their number grows: a 1-member etcd 3.4 and a
# 1-member Baton (one at a time, each fresh), N consumers waiting on one empty queue, K items
# pushed one at a time, each once the previous push's herd has settled
# (`baton bench park --waiters N --items K`). Baton's consumers are `queue pop` calls the member
# parks; etcd's run its client-side queue recipe (watch the prefix, race a Txn per put). The
# bench reads the member's CPU and RSS from /proc. Prints the bench's summary line and one
# RESULT line per system and N.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/parked_calls.sh [options] [N ...]      (default N: 100 1000 10000)
  --items K     items pushed per run (default 20)
  --only S      run only one system: etcd or baton
  --no-build    do not build Baton first
  -h, --help    this text
Environment: BATON_BIN (the member), BENCH_BIN (the client run as `BENCH_BIN --endpoints ..
bench park ..`; default BATON_BIN), ETCD_BIN, PORT_BASE (default 42800).
EOF
}

items=20
only=
build=1
counts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --items) items=${2:?}; shift 2 ;;
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
BENCH_BIN=${BENCH_BIN:-$BATON_BIN}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
PORT_BASE=${PORT_BASE:-42800}
# The client holds N/100 connections per kind; the members one socket per connection.
ulimit -n "$(ulimit -Hn)"
# shellcheck source=bench/single_member.sh
. "$repo/bench/single_member.sh"
bench_tmp parked

start() {
    local system=$1 dir=$tmp/$1
    rm -rf "$dir" "$dir.log"
    start_member "$system" "$dir"
    local deadline=$((SECONDS + 60))
    until "$BENCH_BIN" --endpoints "http://$client" bench put --total 1 --timeout 2s \
            --key-prefix ready/ --key-size 16 --key-space-size 1 >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "$system not ready; see $dir.log" >&2; exit 1; }
        sleep 0.2
    done
}

# The RESULT line: the figures worth a table, picked from the bench's key=value line.
result() {
    local system=$1 n=$2 line=$3
    awk -v s="$system" -v n="$n" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        per = (s == "etcd") ? "txns_per_push=" f["txns_per_push"] " refused_per_push=" f["refused_per_push"] \
                            : "wakes_per_parked_call_per_push=" f["wakes_per_parked_call_per_push"]
        printf "RESULT %s waiters=%s: to_winner p50_ms=%s p99_ms=%s entries_per_push=%s %s cpu_ms_per_push=%s idle_cpu_pct=%s rss_mb_base=%s rss_mb_parked=%s errors=%s\n",
            s, n, f["p50_ms"], f["p99_ms"], f["entries_per_push"], per, f["cpu_ms_per_push"],
            f["idle_cpu_pct"], f["rss_mb_base"], f["rss_mb_parked"], f["errors"]
    }' <<<"$line"
}

echo "parked calls: ${counts[*]} waiters, $items pushes each; $(date -u +%FT%TZ), $(cd "$repo" && git rev-parse --short HEAD)"
echo "member: $BATON_BIN; client: $BENCH_BIN; $("$ETCD_BIN" --version | head -n 1)"
status=0
for n in "${counts[@]}"; do
    for system in etcd baton; do
        [ -z "$only" ] || [ "$only" = "$system" ] || continue
        mode=invoke
        [ "$system" = etcd ] && mode=recipe
        start "$system"
        if line=$("$BENCH_BIN" --endpoints "http://$client" bench park --mode "$mode" \
                --waiters "$n" --items "$items" --server-pid "$pid" --timeout 300s | tail -n 1); then
            echo "$system: $line"
            result "$system" "$n" "$line"
        else
            echo "RESULT $system waiters=$n: FAILED (see the error above)"
            status=1
        fi
        stop_member
    done
done
exit "$status"
