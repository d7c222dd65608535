# Sourced by the benchmark scripts that run one 1-member cluster at a time (startup.sh,
# watch_fanout.sh). Expects BATON_BIN, ETCD_BIN and PORT_BASE set, `build` and `only` from the
# caller's options, and $1 of `bench_tmp` a name for the run's temporary directory.
# shellcheck shell=bash

client="127.0.0.1:$PORT_BASE"
peer="127.0.0.1:$((PORT_BASE + 1))"
pid=

# Creates the run's temporary directory ($tmp), removed with any running member on exit.
bench_tmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/baton-$1.XXXXXX")
    trap 'if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ "$build" = 1 ] && [ "$only" != etcd ]; then
        (cd "$repo" && cargo build --release --bin baton)
    fi
}

# Starts a 1-member cluster of $1 (etcd or baton) on data dir $2 (log beside it, appended),
# with any further arguments as extra flags both servers take; sets $pid.
start_member() {
    local system=$1 dir=$2
    shift 2
    if [ "$system" = etcd ]; then
        "$ETCD_BIN" --name n1 --data-dir "$dir" "$@" \
            --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
            --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
            --initial-cluster "n1=http://$peer" >>"$dir.log" 2>&1 &
    else
        "$BATON_BIN" serve --name n1 --data-dir "$dir" "$@" \
            --listen-client-urls "http://$client" --listen-peer-urls "http://$peer" \
            --initial-cluster "n1=http://$peer" >>"$dir.log" 2>&1 &
    fi
    pid=$!
}

stop_member() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}
