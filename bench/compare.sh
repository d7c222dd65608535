#!/usr/bin/env bash
# Runs the same workloads against a 3-member etcd 3.4 cluster and a 3-member Baton cluster on
# loopback, one system at a time, and prints the numbers side by side.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]
  --duration D     length of each workload run (default 10s; e.g. 5s, 1m)
  --target T       leader (default): every request goes to the current leader;
                   all: connections are spread over the three members
  --only S         run only one system: etcd or baton
  --match TEXT     run only the workloads whose name contains TEXT (e.g. incr)
  --pgo            benchmark the profile-guided build (bench/pgo_build.sh, ~25 min to build)
                   instead of the plain release build
  --threads N      give every member N threads for its own work: Baton members
                   `--worker-threads N`, etcd members GOMAXPROCS=N (default: each system's
                   own default, one per core)
  --recipes        run the coordination recipes instead (issue 21): lock hand-off, semaphore,
                   queue push+pop and barrier release to 100 waiters; etcd runs its client-side
                   algorithms, Baton the same algorithms and its built-in modules
  --no-build       do not build Baton first
  --keep           keep the temporary directory (data and logs) for inspection
  -h, --help       this text
Environment:
  BATON_BIN        baton binary (default: $CARGO_TARGET_DIR/release/baton or target/release/baton;
                   with --pgo, pgo/baton there instead)
  BENCH_BIN        binary used as the client as `BENCH_BIN --endpoints .. bench ..` (default: BATON_BIN)
  ETCD_BIN         etcd binary (default: etcd on PATH; installed with apt-get if missing)
  PORT_BASE        first loopback port used (default 42300; 40 ports from there)
EOF
}

duration=10s
target=leader
only=
match=
build=1
pgo=0
keep=0
threads=
recipes=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=${2:?--duration needs a value}; shift 2 ;;
        --target) target=${2:?--target needs a value}; shift 2 ;;
        --only) only=${2:?--only needs a value}; shift 2 ;;
        --match) match=${2:?--match needs a value}; shift 2 ;;
        --pgo) pgo=1; shift ;;
        --threads) threads=${2:?--threads needs a value}; shift 2 ;;
        --recipes) recipes=1; shift ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$target" in leader|all) ;; *) echo "--target must be leader or all" >&2; exit 2 ;; esac
case "$only" in ''|etcd|baton) ;; *) echo "--only must be etcd or baton" >&2; exit 2 ;; esac
case "$threads" in ''|[1-9]|[1-9][0-9]) ;; *) echo "--threads must be a number from 1 to 99" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
# bench/pgo_build.sh leaves its binary in pgo/ beside cargo's release/.
build_kind=release
[ "$pgo" = 1 ] && build_kind=pgo
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/$build_kind/baton}
BENCH_BIN=${BENCH_BIN:-$BATON_BIN}
PORT_BASE=${PORT_BASE:-42300}
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=5
MEMBERS=(1 2 3)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/baton-compare.XXXXXX")
pids=()
# The running benchmark client, so an interrupt does not wait for it to finish.
client_pid=

stop_cluster() {
    local pid deadline=$((SECONDS + STOP_TIMEOUT_S))
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

cleanup() {
    if [ -n "$client_pid" ]; then kill -TERM "$client_pid" 2>/dev/null || true; fi
    stop_cluster
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_etcd() {
    if [ -z "${ETCD_BIN:-}" ]; then
        if ! command -v etcd >/dev/null 2>&1; then
            echo "etcd not found; installing etcd-server with apt-get" >&2
            apt-get install -y etcd-server >/dev/null 2>&1 \
                || { apt-get update >/dev/null && apt-get install -y etcd-server >/dev/null; }
        fi
        ETCD_BIN=$(command -v etcd)
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Client port of member i of a system whose ports start at $1; peer ports sit 10 above.
client_port() { echo $(($1 + $2)); }
peer_port() { echo $(($1 + 10 + $2)); }

start_cluster() {
    local system=$1 base=$2 i cluster="" dir client peer
    for i in "${MEMBERS[@]}"; do
        for port in "$(client_port "$base" "$i")" "$(peer_port "$base" "$i")"; do
            port_free "$port" || { echo "port $port is in use; set PORT_BASE" >&2; exit 1; }
        done
        cluster+="${cluster:+,}n$i=http://127.0.0.1:$(peer_port "$base" "$i")"
    done
    for i in "${MEMBERS[@]}"; do
        dir=$tmp/$system/n$i
        mkdir -p "$dir"
        client=http://127.0.0.1:$(client_port "$base" "$i")
        peer=http://127.0.0.1:$(peer_port "$base" "$i")
        if [ "$system" = etcd ]; then
            GOMAXPROCS=${threads:-${GOMAXPROCS:-}} "$ETCD_BIN" --name "n$i" --data-dir "$dir/data" \
                --listen-client-urls "$client" --advertise-client-urls "$client" \
                --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
                --initial-cluster "$cluster" --initial-cluster-state new \
                --initial-cluster-token baton-compare >"$dir/log" 2>&1 &
        else
            "$BATON_BIN" serve --name "n$i" --data-dir "$dir/data" \
                --listen-client-urls "$client" --listen-peer-urls "$peer" \
                --initial-cluster "$cluster" ${threads:+--worker-threads "$threads"} \
                >"$dir/log" 2>&1 &
        fi
        pids+=($!)
    done
}

endpoints_of() {
    local base=$1 i list=""
    for i in "${MEMBERS[@]}"; do list+="${list:+,}http://127.0.0.1:$(client_port "$base" "$i")"; done
    echo "$list"
}

# Ready means every member answers a read and accepts a write, so a leader exists.
wait_ready() {
    local system=$1 endpoints=$2 deadline=$((SECONDS + READY_TIMEOUT_S)) pid out
    while [ "$SECONDS" -lt "$deadline" ]; do
        for pid in "${pids[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "$system: a member exited during start-up; its log:" >&2
                tail -n 20 "$tmp/$system"/n*/log >&2
                return 1
            fi
        done
        if out=$(run_client --endpoints "$endpoints" bench put --total 3 --clients 3 --conns 3 \
                --timeout 2s --key-prefix bench-ready/ --key-size 16 --key-space-size 3 \
                --sequential-keys 2>/dev/null) && grep -q ' errors=0 ' <<<"$out"; then
            return 0
        fi
        sleep 0.5
    done
    echo "$system: not ready after ${READY_TIMEOUT_S}s; logs in $tmp/$system" >&2
    keep=1
    return 1
}

# name|arguments: identical for both systems.
WORKLOADS=(
    "put 1 client, 1 conn|put --clients 1 --conns 1"
    "put 64 clients, 8 conns|put --clients 64 --conns 8"
    "range l 64 clients, 8 conns|range --consistency l --clients 64 --conns 8"
    "range s 64 clients, 8 conns|range --consistency s --clients 64 --conns 8"
    "lock 16 clients, 4 conns|lock --clients 16 --conns 4"
    "watch 1 client|watch --clients 1 --conns 1"
    "incr cas 32 clients, 8 counters|incr --mode cas --clients 32 --conns 8 --counters 8"
)
# Workloads only Baton can run (etcd has no Modules service), reported beside the ones above.
# shellcheck disable=SC2034 # used through a name reference in run_workloads
BATON_WORKLOADS=(
    "incr invoke 32 clients, 8 counters|incr --mode invoke --clients 32 --conns 8 --counters 8"
)

# --recipes: each recipe by etcd's client-side algorithm (on both systems) and, on Baton, by its
# built-in module. A barrier round is timed from the release to the 100th waiter's return.
if [ "$recipes" = 1 ]; then
    WORKLOADS=(
        "lock hand-off, 16 clients|recipe --recipe lock --mode client --clients 16 --conns 4"
        "semaphore 4 permits, 16 clients|recipe --recipe semaphore --permits 4 --mode client --clients 16 --conns 4"
        "queue push+pop, 16 clients|recipe --recipe queue --mode client --clients 16 --conns 4"
        "barrier, 100 waiters|barrier --mode client --waiters 100 --rounds 1000"
    )
    BATON_WORKLOADS=(
        "lock hand-off, 16 clients|recipe --recipe lock --mode module --clients 16 --conns 4"
        "semaphore 4 permits, 16 clients|recipe --recipe semaphore --permits 4 --mode module --clients 16 --conns 4"
        "queue push+pop, 16 clients|recipe --recipe queue --mode module --clients 16 --conns 4"
        "barrier, 100 waiters|barrier --mode module --waiters 100 --rounds 1000"
        "barrier read-only, 100 waiters|barrier --mode module --read-only --waiters 100 --rounds 1000"
    )
fi

# Runs the client in the background and waits, so INT/TERM traps fire at once.
run_client() {
    local status=0
    "$BENCH_BIN" "$@" &
    client_pid=$!
    wait "$client_pid" || status=$?
    client_pid=
    return "$status"
}

# Runs each spec of the array named $3, keeping workload n's summary line in results.$system.$4$n.
run_workloads() {
    local system=$1 endpoints=$2 n=0 spec args out=$tmp/bench.out
    local -n specs=$3
    for spec in "${specs[@]}"; do
        args=${spec#*|}
        if [ -n "$match" ] && [[ "${spec%%|*}" != *"$match"* ]]; then
            n=$((n + 1))
            continue
        fi
        echo "== $system: ${spec%%|*}"
        # shellcheck disable=SC2086 # args is a word list by design
        if run_client --endpoints "$endpoints" bench $args --duration "$duration" \
                --target "$target" >"$out"; then
            tail -n 1 "$out" >"$tmp/results.$system.$4$n"
        else
            echo "$system: workload failed: ${spec%%|*}" >&2
        fi
        cat "$out"
        n=$((n + 1))
    done
}

bench_system() {
    local system=$1 base=$2 endpoints
    endpoints=$(endpoints_of "$base")
    echo "== starting 3-member $system cluster: $endpoints"
    start_cluster "$system" "$base"
    wait_ready "$system" "$endpoints" || { stop_cluster; return 1; }
    run_workloads "$system" "$endpoints" WORKLOADS ""
    if [ "$system" = baton ]; then run_workloads "$system" "$endpoints" BATON_WORKLOADS only.; fi
    stop_cluster
}

# The value of `key=` in a summary line, or empty.
field() {
    local file=$1 key=$2
    [ -f "$file" ] || return 0
    tr ' ' '\n' <"$file" | awk -F= -v k="$key" '$1 == k { print $2; exit }'
}

ratio() {
    awk -v b="$1" -v e="$2" 'BEGIN { if (b == "" || e == "" || e + 0 == 0) print "-"; else printf "%.2f", b / e }'
}

report() {
    local n=0 spec e b key where
    if [ "$target" = leader ]; then where="every request sent to the leader"
    else where="connections spread over all three members"; fi
    echo
    echo "Baton vs etcd: 3-member clusters on loopback, $where, ${duration} per workload."
    if [ -n "$threads" ]; then
        echo "Every member ran with $threads thread(s) for its own work (Baton --worker-threads, etcd GOMAXPROCS)."
    fi
    echo "Load average before the first run: $load_at_start (other work on the machine skews numbers)."
    echo "The client shares the machine's $(nproc) cores. ratio = baton/etcd: above 1 is better for"
    echo "ops/s, below 1 is better for latency (ms). '-' marks a run that failed or was skipped."
    printf '%-28s %10s %10s %6s  %9s %9s %6s  %9s %9s %6s\n' workload "etcd ops/s" "baton" ratio \
        "etcd p50" "baton" ratio "etcd p99" "baton" ratio
    for spec in "${WORKLOADS[@]}"; do
        e=$tmp/results.etcd.$n b=$tmp/results.baton.$n
        printf '%-28s %10s %10s %6s' "${spec%%|*}" "$(field "$e" ops/s)" "$(field "$b" ops/s)" \
            "$(ratio "$(field "$b" ops/s)" "$(field "$e" ops/s)")"
        for key in p50_ms p99_ms; do
            printf '  %9s %9s %6s' "$(field "$e" "$key")" "$(field "$b" "$key")" \
                "$(ratio "$(field "$b" "$key")" "$(field "$e" "$key")")"
        done
        echo
        n=$((n + 1))
    done
    if [ "$recipes" = 1 ]; then report_recipes; else report_incr; fi
}

# Each recipe: etcd's client-side algorithm on etcd against Baton's built-in module.
report_recipes() {
    local n=0 spec e b
    echo
    echo "Recipes: Baton's built-in module / etcd 3.4 running etcd's client-side algorithm"
    echo "(barrier: latency is release to the 100th waiter's return; ops/s counts rounds)."
    printf '%-32s %10s %10s %6s  %9s %9s %6s  %9s %9s %6s\n' recipe "etcd ops/s" "module" ratio \
        "etcd p50" "module" ratio "etcd p99" "module" ratio
    for spec in "${BATON_WORKLOADS[@]}"; do
        e=$tmp/results.etcd.$(index_of "${spec%% *}")
        b=$tmp/results.baton.only.$n
        printf '%-32s %10s %10s %6s' "${spec%%|*}" "$(field "$e" ops/s)" "$(field "$b" ops/s)" \
            "$(ratio "$(field "$b" ops/s)" "$(field "$e" ops/s)")"
        for key in p50_ms p99_ms; do
            printf '  %9s %9s %6s' "$(field "$e" "$key")" "$(field "$b" "$key")" \
                "$(ratio "$(field "$b" "$key")" "$(field "$e" "$key")")"
        done
        echo
        n=$((n + 1))
    done
}

# Contended increments: etcd's CAS loop against Baton's CAS loop and Baton's module call.
report_incr() {
    local cas_etcd cas_baton invoke_baton row file
    cas_etcd=$tmp/results.etcd.$(index_of "incr cas")
    cas_baton=$tmp/results.baton.$(index_of "incr cas")
    invoke_baton=$tmp/results.baton.only.0
    echo
    echo "Contended increments, 32 clients on 8 counters (every sum checked: no lost increments):"
    printf '%-18s %10s %9s %9s %13s\n' "" "incr/s" "p50 ms" "p99 ms" "retries/incr"
    for row in "CAS on etcd 3.4|$cas_etcd" "CAS on Baton|$cas_baton" "Invoke on Baton|$invoke_baton"; do
        file=${row#*|}
        printf '%-18s %10s %9s %9s %13s\n' "${row%%|*}" "$(field "$file" ops/s)" \
            "$(field "$file" p50_ms)" "$(field "$file" p99_ms)" "$(field "$file" retries_per_incr)"
    done
    echo "Invoke on Baton / CAS on etcd 3.4: $(ratio "$(field "$invoke_baton" ops/s)" \
        "$(field "$cas_etcd" ops/s)")x increments/s"
}

# Position in WORKLOADS of the first workload whose name starts with $1.
index_of() {
    local n=0 spec
    for spec in "${WORKLOADS[@]}"; do
        if [[ "${spec%%|*}" == "$1"* ]]; then echo "$n"; return; fi
        n=$((n + 1))
    done
    echo none
}

main() {
    if [ "$build" = 1 ] && [ "$pgo" = 1 ]; then
        echo "== bench/pgo_build.sh"
        "$repo/bench/pgo_build.sh" >/dev/null
    elif [ "$build" = 1 ]; then
        echo "== cargo build --release"
        (cd "$repo" && cargo build --release -p baton --bin baton)
    fi
    [ -x "$BENCH_BIN" ] || { echo "no client binary at $BENCH_BIN" >&2; exit 1; }
    local status=0
    load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
    if [ "$only" != baton ]; then
        ensure_etcd
        echo "== $("$ETCD_BIN" --version | head -1) at $ETCD_BIN"
        bench_system etcd "$PORT_BASE" || status=1
    fi
    if [ "$only" != etcd ]; then
        [ -x "$BATON_BIN" ] || { echo "no baton binary at $BATON_BIN" >&2; exit 1; }
        bench_system baton "$((PORT_BASE + 20))" || status=1
    fi
    report
    return "$status"
}

main
