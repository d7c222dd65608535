#!/usr/bin/env bash
# The leader's CPU cost of keeping many leases alive: starts a 3-member etcd 3.4 cluster and a
# 3-member Baton cluster on loopback (one at a time), measures each member's CPU while idle,
# then runs `baton bench keepalive` against the leader and measures each member's CPU from the
# moment every lease is granted until the run ends. CPU is utime+stime from /proc/<pid>/stat,
# as a percentage of one core.
set -euo pipefail

usage() {
    cat <<'EOF_USAGE'
Usage: bench/keepalive_cpu.sh [options]
  --leases N       leases kept alive (default 10000)
  --ttl S          their TTL in seconds (default 10)
  --interval D     how often each is renewed (default 3s)
  --streams M      LeaseKeepAlive streams (default 16, over 4 connections)
  --duration D     length of the renewal run (default 30s)
  --idle S         seconds of idle measurement first (default 10)
  --only S         run only one system: etcd or baton
Environment: BATON_BIN, ETCD_BIN, PORT_BASE (as for bench/compare.sh).
EOF_USAGE
}

leases=10000 ttl=10 interval=3s streams=16 duration=30s idle_s=10 only=
while [ $# -gt 0 ]; do
    case "$1" in
        --leases) leases=$2; shift 2 ;;
        --ttl) ttl=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --streams) streams=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --idle) idle_s=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/baton}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd)}
PORT_BASE=${PORT_BASE:-42400}
READY_TIMEOUT_S=60
MARKER="leases granted"
CLK_TCK=$(getconf CLK_TCK)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/baton-keepalive-cpu.XXXXXX")
pids=()
client_pid=

stop_cluster() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    if [ -n "$client_pid" ]; then kill -TERM "$client_pid" 2>/dev/null || true; fi
    stop_cluster
    rm -rf "$tmp"
}
trap cleanup EXIT

client_url() { echo "http://127.0.0.1:$(($1 + $2))"; }
peer_url() { echo "http://127.0.0.1:$(($1 + 10 + $2))"; }

start_cluster() {
    local system=$1 base=$2 i cluster="" dir
    for i in 1 2 3; do cluster+="${cluster:+,}n$i=$(peer_url "$base" "$i")"; done
    for i in 1 2 3; do
        dir=$tmp/$system/n$i
        mkdir -p "$dir"
        if [ "$system" = etcd ]; then
            "$ETCD_BIN" --name "n$i" --data-dir "$dir/data" \
                --listen-client-urls "$(client_url "$base" "$i")" \
                --advertise-client-urls "$(client_url "$base" "$i")" \
                --listen-peer-urls "$(peer_url "$base" "$i")" \
                --initial-advertise-peer-urls "$(peer_url "$base" "$i")" \
                --initial-cluster "$cluster" --initial-cluster-state new \
                --initial-cluster-token baton-keepalive-cpu >"$dir/log" 2>&1 &
        else
            "$BATON_BIN" serve --name "n$i" --data-dir "$dir/data" \
                --listen-client-urls "$(client_url "$base" "$i")" \
                --listen-peer-urls "$(peer_url "$base" "$i")" \
                --initial-cluster "$cluster" >"$dir/log" 2>&1 &
        fi
        pids+=($!)
    done
}

endpoints_of() {
    local i list=""
    for i in 1 2 3; do list+="${list:+,}$(client_url "$1" "$i")"; done
    echo "$list"
}

wait_ready() {
    local endpoints=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$BATON_BIN" --endpoints "$endpoints" bench put --total 3 --clients 3 --conns 3 \
                --timeout 2s --key-prefix ready/ --sequential-keys --key-space-size 3 \
                2>/dev/null | grep -q ' errors=0 '; then
            return 0
        fi
        sleep 0.5
    done
    echo "cluster not ready after ${READY_TIMEOUT_S}s" >&2
    return 1
}

# utime + stime of every member, in clock ticks, space-separated in member order.
cpu_ticks() {
    local pid out=""
    for pid in "${pids[@]}"; do
        # Fields 14 and 15 after the command name, which may contain spaces: cut after ')'.
        out+="$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') "
    done
    echo "$out"
}

now_s() { date +%s.%N; }

# Prints "p1 p2 p3": each member's CPU % of one core between two samples.
cpu_percent() {
    local before=$1 after=$2 seconds=$3
    paste <(tr ' ' '\n' <<<"$before") <(tr ' ' '\n' <<<"$after") | awk -v s="$seconds" \
        -v hz="$CLK_TCK" 'NF == 2 { printf "%.1f ", ($2 - $1) / hz / s * 100 }'
}

measure() {
    local system=$1 base=$2 endpoints t0 t1 c0 c1 leader_url leader=0 i
    endpoints=$(endpoints_of "$base")
    start_cluster "$system" "$base"
    wait_ready "$endpoints"
    c0=$(cpu_ticks); t0=$(now_s)
    sleep "$idle_s"
    c1=$(cpu_ticks); t1=$(now_s)
    local idle
    idle=$(cpu_percent "$c0" "$c1" "$(echo "$t1 - $t0" | bc)")

    "$BATON_BIN" --endpoints "$endpoints" bench keepalive --leases "$leases" --ttl "$ttl" \
        --interval "$interval" --clients "$streams" --conns 4 --target leader \
        --duration "$duration" >"$tmp/$system.out" 2>"$tmp/$system.err" &
    client_pid=$!
    until grep -q "$MARKER" "$tmp/$system.err"; do
        kill -0 "$client_pid" 2>/dev/null || { cat "$tmp/$system.err" >&2; return 1; }
        sleep 0.05
    done
    c0=$(cpu_ticks); t0=$(now_s)
    if ! wait "$client_pid"; then
        client_pid=
        echo "$system: the benchmark client failed:" >&2
        cat "$tmp/$system.out" "$tmp/$system.err" >&2
        return 1
    fi
    client_pid=
    c1=$(cpu_ticks); t1=$(now_s)
    local busy
    busy=$(cpu_percent "$c0" "$c1" "$(echo "$t1 - $t0" | bc)")
    leader_url=$(awk '/^target/ { print $3 }' "$tmp/$system.out")
    for i in 1 2 3; do
        [ "$(client_url "$base" "$i")" = "$leader_url" ] && leader=$i
    done
    echo "== $system"
    cat "$tmp/$system.out"
    echo "member CPU % of one core, idle:      $idle (n1 n2 n3)"
    echo "member CPU % of one core, renewing:  $busy (n1 n2 n3); leader is n$leader"
    local leader_idle leader_busy
    leader_idle=$(cut -d' ' -f"$leader" <<<"$idle")
    leader_busy=$(cut -d' ' -f"$leader" <<<"$busy")
    echo "$system leader_idle_cpu%=$leader_idle leader_renewing_cpu%=$leader_busy" \
        "renewals/s=$(tr ' ' '\n' <"$tmp/$system.out" | awk -F= '$1 == "ops/s" { print $2 }' | tail -1)" \
        >>"$tmp/summary"
    stop_cluster
}

[ "$only" = baton ] || measure etcd "$PORT_BASE"
[ "$only" = etcd ] || measure baton "$((PORT_BASE + 20))"
echo
echo "$leases leases, TTL ${ttl}s, each renewed every $interval over $streams streams, ${duration}:"
cat "$tmp/summary"
