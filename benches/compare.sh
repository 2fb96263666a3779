#!/usr/bin/env bash
# benches/compare.sh: cache-hit cost of adoxd beside Unbound, PowerDNS Recursor and the
# bare UDP echo floor, side by side in one run, on the lab's root.
#
# Each server runs with one thread pinned to core 0; the load generator (adox-load) runs
# pinned to core 1. After a warm-up pass over the query list, each server gets:
#   1. a fixed offered load (RATE qps for DURATION s): the main figure is the server's CPU
#      time (utime + stime from /proc/PID/stat) per answered query, with loss and latency;
#      ROUNDS times (default 3); the median round by p99 is reported;
#   2. a flat-out run (FLAT_DURATION s, MAX_OUTSTANDING in flight): throughput, which on a
#      2-core machine measures the load generator about as much as the server.
# Prints a table with ratios to adoxd. Needs root (the lab) and the lab's packages.
#
# LOADGEN=both (default) also measures step 1 with dnsperf, an independent load
# generator (one socket, its own pacing), ROUNDS times at the same RATE, median by CPU:
# a second table with CPU per answered query, loss and dnsperf's average latency (it
# reports no percentiles). LOADGEN=adox-load or LOADGEN=dnsperf for one of them.
#
#   benches/compare.sh                       # RATE=60000 DURATION=8 FLAT_DURATION=5
#   LOADGEN=dnsperf RATE=40000 benches/compare.sh
#   RATE=40000 DURATION=10 benches/compare.sh
#   ADOXD_BASE=/tmp/base-target/release/adoxd benches/compare.sh   # and an earlier build
#   ADOXD_BASE=target/release/adoxd ADOXD_BASE_ARGS="--config off.toml" benches/compare.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-60000}
DURATION=${DURATION:-8}
FLAT_DURATION=${FLAT_DURATION:-5}
MAX_OUTSTANDING=${MAX_OUTSTANDING:-500}
ROUNDS=${ROUNDS:-3}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
QUERIES=${QUERIES:-deploy/lab/names.txt}
LOADGEN=${LOADGEN:-both}
case $LOADGEN in both | adox-load | dnsperf) ;; *) echo "compare.sh: LOADGEN is both, adox-load or dnsperf" >&2; exit 2 ;; esac
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TCK=$(getconf CLK_TCK)

cargo build --release -q -p adoxd -p adox-benches
LOAD=target/release/adox-load

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
pids=()
STATE=
STATE_BASE=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n $STATE ]]; then rm -rf -- "$STATE"; fi
    if [[ -n $STATE_BASE ]]; then rm -rf -- "$STATE_BASE"; fi
    deploy/lab/peer unbound down "$LAB" >/dev/null 2>&1 || true
    deploy/lab/peer pdns down "$LAB" >/dev/null 2>&1 || true
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

# dnsperf_rounds NAME PORT PID: ROUNDS fixed-rate runs with dnsperf; appends the median
# round by CPU per answered query to $drows.
drows=()
dnsperf_rounds() {
    local name=$1 port=$2 pid=$3 c0 c1 out sent recv lost avg results=()
    for ((r = 0; r < ROUNDS; r++)); do
        c0=$(cpu_ticks "$pid")
        out=$(taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -Q "$RATE" -l "$DURATION" -t 2 -q 1000 2>&1)
        c1=$(cpu_ticks "$pid")
        sent=$(sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' <<<"$out")
        recv=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
        lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' <<<"$out")
        avg=$(sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' <<<"$out" | awk '{ printf "%d", $1 * 1e6 }')
        results+=("$(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.2f", t * 1e6 / k / n }') $sent $recv $lost $avg")
    done
    drows+=("$name $(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")")
}

# measure NAME PORT PID: warm, fixed rate, flat out; appends a row to $rows (and, with
# dnsperf, to $drows).
rows=()
measure() {
    local name=$1 port=$2 pid=$3 c0 c1 fixed flat recv r best="" best_p99=""
    taskset -a -cp "$SERVER_CPU" "$pid" >/dev/null
    # Warm-up: every name a few times, slowly, until all are cached.
    taskset -c "$LOAD_CPU" "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --rate 500 --duration 2 --timeout-ms 3000 >/dev/null
    taskset -c "$LOAD_CPU" "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --rate 2000 --duration 1 >/dev/null
    if [[ $LOADGEN != adox-load ]]; then
        dnsperf_rounds "$name" "$port" "$pid"
    fi
    if [[ $LOADGEN == dnsperf ]]; then
        return
    fi
    # ROUNDS fixed-load runs; the row kept is the median run by p99 (CPU per query of
    # that same run), so one noisy round on a shared machine does not decide.
    local results=()
    for ((r = 0; r < ROUNDS; r++)); do
        c0=$(cpu_ticks "$pid")
        fixed=$(taskset -c "$LOAD_CPU" "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --rate "$RATE" --duration "$DURATION" --json)
        c1=$(cpu_ticks "$pid")
        recv=$(json "$fixed" received)
        results+=("$(json "$fixed" p99_us) $(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.2f", t * 1e6 / k / n }') $(json "$fixed" sent) $recv $(json "$fixed" lost) $(json "$fixed" p50_us) $(json "$fixed" p999_us) $(json "$fixed" servfail)")
    done
    best=$(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
    flat=$(taskset -c "$LOAD_CPU" "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --max-outstanding "$MAX_OUTSTANDING" --duration "$FLAT_DURATION" --json)
    local p99 cpu sent lost p50 p999 sf
    read -r p99 cpu sent recv lost p50 p999 sf <<<"$best"
    rows+=("$name $cpu $sent $recv $lost $p50 $p99 $p999 $sf $(json "$flat" qps)")
}

# adoxd: one worker (pinned to core 0 by adoxd itself, and by taskset), validating with the
# lab's trust anchor like the two peers.
STATE=$(mktemp -d)
taskset -c "$SERVER_CPU" target/release/adoxd --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
    --allow-upstream 127.0.0.0/8 \
    --listen 127.0.0.1:5340 --workers 1 --log-level warn --api off --state-dir "$STATE" &
pids+=($!)
sleep 0.5
measure adoxd 5340 "${pids[-1]}"
kill "${pids[-1]}"

# ADOXD_BASE=PATH: another adoxd build (an earlier commit) measured the same way, right
# after this one, to tell a change's cost from the machine's drift; ADOXD_BASE_ARGS adds
# arguments to it (e.g. "--config off.toml": the same build with a feature switched off).
if [[ -n ${ADOXD_BASE:-} ]]; then
    STATE_BASE=$(mktemp -d)
    # shellcheck disable=SC2086 # ADOXD_BASE_ARGS: words on purpose
    taskset -c "$SERVER_CPU" "$ADOXD_BASE" ${ADOXD_BASE_ARGS:-} --root-hints "$LAB/root.hints" \
        --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
        --listen 127.0.0.1:5344 --workers 1 --log-level warn --api off --state-dir "$STATE_BASE" &
    pids+=($!)
    sleep 0.5
    measure adoxd-base 5344 "${pids[-1]}"
    kill "${pids[-1]}"
fi

deploy/lab/peer unbound up "$LAB" 5341 >/dev/null
measure unbound 5341 "$(<"$LAB/run/peer-unbound.pid")"
deploy/lab/peer unbound down "$LAB" >/dev/null

deploy/lab/peer pdns up "$LAB" 5342 >/dev/null
measure pdns-recursor 5342 "$(<"$LAB/run/peer-pdns.pid")"
deploy/lab/peer pdns down "$LAB" >/dev/null

taskset -c "$SERVER_CPU" target/release/echo-floor 127.0.0.1:5343 &
pids+=($!)
sleep 0.2
measure echo-floor 5343 "${pids[-1]}"

echo
echo "cache-hit cost, $(date -u +%F), $(nproc) cores; server on cpu $SERVER_CPU, load generator on cpu $LOAD_CPU; queries: $QUERIES"
if ((${#rows[@]})); then
    echo "adox-load: fixed load $RATE qps for $DURATION s, $ROUNDS rounds (median by p99 shown); flat out: $MAX_OUTSTANDING in flight for $FLAT_DURATION s"
    printf '%-14s %9s %7s %9s %9s %6s %7s %7s %8s %8s %10s %7s\n' server "cpu_us/q" "x adox" sent answered lost p50_us p99_us p999_us servfail "flat_qps" "x adox"
    base_cpu=$(cut -d' ' -f2 <<<"${rows[0]}")
    base_qps=$(cut -d' ' -f10 <<<"${rows[0]}")
    for r in "${rows[@]}"; do
        read -r name cpu sent recv lost p50 p99 p999 sf qps <<<"$r"
        printf '%-14s %9s %7s %9s %9s %6s %7s %7s %8s %8s %10s %7s\n' "$name" "$cpu" \
            "$(awk -v a="$cpu" -v b="$base_cpu" 'BEGIN { printf "%.2f", a / b }')" "$sent" "$recv" "$lost" "$p50" "$p99" "$p999" "$sf" "$qps" \
            "$(awk -v a="$qps" -v b="$base_qps" 'BEGIN { printf "%.2f", a / b }')"
    done
fi
if ((${#drows[@]})); then
    echo "dnsperf: fixed load $RATE qps for $DURATION s, $ROUNDS rounds (median by CPU shown)"
    printf '%-14s %9s %7s %9s %9s %6s %7s\n' server "cpu_us/q" "x adox" sent answered lost avg_us
    base_cpu=$(cut -d' ' -f2 <<<"${drows[0]}")
    for r in "${drows[@]}"; do
        read -r name cpu sent recv lost avg <<<"$r"
        printf '%-14s %9s %7s %9s %9s %6s %7s\n' "$name" "$cpu" \
            "$(awk -v a="$cpu" -v b="$base_cpu" 'BEGIN { printf "%.2f", a / b }')" "$sent" "$recv" "$lost" "$avg"
    done
fi
