#!/usr/bin/env bash
# How long a member that was away takes to catch up, and how much memory that costs, side by
# side with etcd 3.4 on the same machine and the same data: a follower is killed (kill -9),
# SIZE megabytes of large values and then many small puts are written through the leader (so
# the log holding the large values is purged behind a snapshot), and the follower is started
# again on its old data dir (or, with --replace, removed and replaced by a fresh member).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/rejoin.sh [options]
  --size-mb N        megabytes of large values written while the member is away (default 1024)
  --value-kib N      size of each large value in KiB (default 256)
  --small N          small puts written after the large values (default 12000)
  --snapshot-count N both systems' --snapshot-count (default 2000)
  --quota-bytes N    both systems' --quota-backend-bytes (default 8 GiB: at the 2 GiB default
                     Baton's state database raises NOSPACE after ~290 MB of 256 KiB values)
  --replace          remove the away member and add a fresh one instead of restarting it
  --only S           run only one system: etcd or baton
  --timeout S        give up on a catch-up after S seconds (default 600)
  --no-build         do not build Baton first
  --keep             keep the temporary directory (data and logs) for inspection
  -h, --help         this text
Environment:
  BATON_BIN   baton binary (default: $CARGO_TARGET_DIR/release/baton or target/release/baton)
  ETCD_BIN    etcd binary (default: etcd on PATH); ETCDCTL_BIN likewise
  PORT_BASE   first loopback port used (default 42500; 40 ports from there)
Prints one line per system: catch-up seconds, the rejoining member's peak RSS, the leader's
peak RSS while it served the catch-up, and the size of the state that moved.
EOF
}

size_mb=1024
value_kib=256
small=12000
snapshot_count=2000
quota=$((8 * 1024 * 1024 * 1024))
replace=0
only=
timeout_s=600
build=1
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --size-mb) size_mb=${2:?}; shift 2 ;;
        --value-kib) value_kib=${2:?}; shift 2 ;;
        --small) small=${2:?}; shift 2 ;;
        --snapshot-count) snapshot_count=${2:?}; shift 2 ;;
        --quota-bytes) quota=${2:?}; shift 2 ;;
        --replace) replace=1; shift ;;
        --only) only=${2:?}; shift 2 ;;
        --timeout) timeout_s=${2:?}; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$only" in ''|etcd|baton) ;; *) echo "--only must be etcd or baton" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/baton}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
ETCDCTL_BIN=${ETCDCTL_BIN:-$(command -v etcdctl || true)}
PORT_BASE=${PORT_BASE:-42500}
READY_TIMEOUT_S=60
values=$((size_mb * 1024 / value_kib))

tmp=$(mktemp -d "${TMPDIR:-/tmp}/baton-rejoin.XXXXXX")
declare -A pid_of=()

cleanup() {
    local pid
    for pid in "${pid_of[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -n "$ETCDCTL_BIN" ] || { echo "etcdctl not found (Debian: apt-get install etcd-client)" >&2; exit 1; }
if [ "$build" = 1 ] && [ "$only" != etcd ]; then
    (cd "$repo" && cargo build --release --bin baton)
fi

client_url() { echo "http://127.0.0.1:$(($1 + $2))"; }
peer_url() { echo "http://127.0.0.1:$(($1 + 10 + $2))"; }

# Starts member $3 of system $1 (ports from $2) with --initial-cluster $4 in state $5.
start_member() {
    local system=$1 base=$2 i=$3 cluster=$4 state=$5 dir=$tmp/$1/n$3 client peer
    client=$(client_url "$base" "$i")
    peer=$(peer_url "$base" "$i")
    mkdir -p "$dir"
    if [ "$system" = etcd ]; then
        "$ETCD_BIN" --name "n$i" --data-dir "$dir/data" --snapshot-count "$snapshot_count" \
            --quota-backend-bytes "$quota" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state "$state" \
            --initial-cluster-token baton-rejoin >>"$dir/log" 2>&1 &
    else
        "$BATON_BIN" serve --name "n$i" --data-dir "$dir/data" --snapshot-count "$snapshot_count" \
            --quota-backend-bytes "$quota" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state "$state" \
            --initial-cluster-token baton-rejoin >>"$dir/log" 2>&1 &
    fi
    pid_of[$i]=$!
}

# Endpoints are given to etcdctl without a scheme: etcdctl 3.4 sends a lone `http://host:port`
# endpoint as the HTTP/2 authority, which Baton's HTTP/2 server refuses.
ctl() { ETCDCTL_API=3 "$ETCDCTL_BIN" --command-timeout=5s "$@"; }
host_port() { echo "${1#http://}"; }

# A member's own revision and whether it is the leader: "revision member_id leader_id"
# ("0 0 0" while it does not answer).
member_status() {
    ctl --endpoints "$(host_port "$1")" endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)[0]["Status"]
    print(s["header"]["revision"], s["header"]["member_id"], s["leader"])
except (ValueError, LookupError):
    print(0, 0, 0)'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_leader() {
    local endpoints=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ctl --endpoints "$endpoints" put rejoin-ready x >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "no leader after ${READY_TIMEOUT_S}s; logs in $tmp" >&2
    keep=1
    return 1
}

run_system() {
    local system=$1 base=$2 cluster="" i endpoints="" leader="" away status
    pid_of=()
    for i in 1 2 3; do
        cluster+="${cluster:+,}n$i=$(peer_url "$base" "$i")"
        endpoints+="${endpoints:+,}$(client_url "$base" "$i")"
    done
    for i in 1 2 3; do start_member "$system" "$base" "$i" "$cluster" new; done
    wait_leader "$endpoints"
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    while [ -z "$leader" ] && [ "$SECONDS" -lt "$deadline" ]; do
        for i in 1 2 3; do
            read -r _ id lead < <(member_status "$(client_url "$base" "$i")")
            [ "$id" != 0 ] && [ "$id" = "$lead" ] && leader=$i
        done
        [ -n "$leader" ] || sleep 0.5
    done
    [ -n "$leader" ] || { echo "$system: no leader found" >&2; return 1; }
    away=$((leader % 3 + 1))
    kill -KILL "${pid_of[$away]}"
    wait "${pid_of[$away]}" 2>/dev/null || true
    local lurl
    lurl=$(client_url "$base" "$leader")
    echo "== $system: member n$away away; writing $values x ${value_kib} KiB, then $small small puts"
    local t0=$SECONDS
    "$BATON_BIN" --endpoints "$lurl" bench put --total "$values" --clients 8 --conns 4 \
        --val-size $((value_kib * 1024)) --key-prefix big/ --key-size 16 \
        --key-space-size "$values" --sequential-keys --timeout 30s | tail -n 1
    if [ "$small" -gt 0 ]; then
        "$BATON_BIN" --endpoints "$lurl" bench put --total "$small" --clients 32 --conns 4 \
            --val-size 16 --key-prefix small/ --key-size 16 --key-space-size "$small" \
            --sequential-keys | tail -n 1
    fi
    echo "   written in $((SECONDS - t0)) s"
    local target
    read -r target _ _ < <(member_status "$lurl")
    local rejoin=$away rejoin_url
    if [ "$replace" = 1 ]; then
        local away_id
        away_id=$(ctl --endpoints "$(host_port "$lurl")" member list -w json | python3 -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    if m.get("name") == sys.argv[1]:
        print("%x" % m["ID"])' "n$away")
        ctl --endpoints "$(host_port "$lurl")" member remove "$away_id" >/dev/null
        rejoin=4
        local added=""
        for i in 1 2 3; do [ "$i" != "$away" ] && added+="${added:+,}n$i=$(peer_url "$base" "$i")"; done
        added+=",n4=$(peer_url "$base" 4)"
        until ctl --endpoints "$(host_port "$lurl")" member add n4 --peer-urls "$(peer_url "$base" 4)" >/dev/null 2>&1; do
            sleep 0.5
        done
        start_member "$system" "$base" 4 "$added" existing
    else
        start_member "$system" "$base" "$away" "$cluster" new
    fi
    rejoin_url=$(client_url "$base" "$rejoin")
    local start=$EPOCHREALTIME leader_peak=0 rss rev=0 deadline=$((SECONDS + timeout_s))
    while [ "$SECONDS" -lt "$deadline" ]; do
        rss=$(rss_kib "${pid_of[$leader]}")
        [ "$rss" -gt "$leader_peak" ] && leader_peak=$rss
        if ! kill -0 "${pid_of[$rejoin]}" 2>/dev/null; then
            echo "$system: the rejoining member exited; its log:" >&2
            tail -n 20 "$tmp/$system/n$rejoin/log" >&2
            keep=1
            return 1
        fi
        read -r rev _ _ < <(member_status "$rejoin_url")
        [ "${rev:-0}" -ge "$target" ] && break
        sleep 0.2
    done
    local took
    took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    local hwm state
    hwm=$(hwm_kib "${pid_of[$rejoin]}")
    state=$(du -sm "$tmp/$system/n$leader/data" | cut -f1)
    if [ "${rev:-0}" -lt "$target" ]; then
        echo "RESULT $system: did NOT catch up in ${timeout_s}s (revision $rev of $target)"
        keep=1
    else
        echo "RESULT $system: caught up in ${took}s to revision $target; rejoining member peak RSS $((hwm / 1024)) MB; leader peak RSS during catch-up $((leader_peak / 1024)) MB; leader data dir ${state} MB"
    fi
    for i in "${!pid_of[@]}"; do
        kill -KILL "${pid_of[$i]}" 2>/dev/null || true
        wait "${pid_of[$i]}" 2>/dev/null || true
    done
    pid_of=()
}

echo "rejoin: ${size_mb} MB in ${value_kib} KiB values + $small small puts, --snapshot-count $snapshot_count, quota $((quota >> 20)) MiB, $([ "$replace" = 1 ] && echo "member replaced" || echo "member restarted"); $(date -u +%FT%TZ), $(cd "$repo" && git rev-parse --short HEAD)"
if [ "$only" != baton ]; then
    [ -n "$ETCD_BIN" ] || { echo "etcd not found (Debian: apt-get install etcd-server)" >&2; exit 1; }
    run_system etcd "$PORT_BASE"
fi
if [ "$only" != etcd ]; then run_system baton $((PORT_BASE + 20)); fi
