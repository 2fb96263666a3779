#!/usr/bin/env bash
# benches/policy_push.sh: do policy pushes stall the data plane? A fixed cache-hit load runs
# against adoxd (one worker, pinned to core 0) while 100,000 policy overrides are pushed
# through the REST API, and again without the push, side by side in one run.
#
# Each round runs the load three times: alone; while policy-push sends COUNT
# `POST /v1/policies` (CONCURRENCY at a time, each fsynced before its 201) for zones of
# their own; and, as a control, while a plain busy loop occupies core 1 for as long as the
# push took.
#
# Placement: adox-load spins (it paces below epoll's millisecond granularity), so on this
# 2-core machine the push must share a core with either the generator or the worker.
#   PLACEMENT=shared (default): adoxd's worker and adox-load share core 0; every other
#     adoxd thread (the API and its blocking pool) and policy-push run on core 1, as a
#     control plane runs beside the workers' cores. The push can reach the measured latency
#     only through the worker (shared state, the table swap, memory traffic); sharing core 0
#     with the generator raises latency (CFS time slices) equally in every condition.
#   PLACEMENT=split: the worker alone on core 0; adox-load, policy-push and adoxd's other
#     threads on core 1. Baseline latency is cleaner, but the push then takes the
#     generator's CPU, which the busy-loop control shows.
#   PLACEMENT=rt: as split, but adox-load sleeps between sends (--pace sleep) and runs at
#     real-time priority (SCHED_FIFO 50): it preempts the push whenever a send is due and
#     leaves the rest of core 1 to it. Latency is then measured to within one send
#     interval (50 us at 20,000 qps), and the push reaches it only through the worker. Reported per condition (median round by p99): latency percentiles,
# adoxd CPU per answered query for the whole process and for the worker thread alone, and
# the push rate. Needs root (the lab).
#
#   benches/policy_push.sh                  # RATE=20000 DURATION=15 COUNT=100000 ROUNDS=3
#   STATE_ROOT=/dev/shm benches/policy_push.sh   # the state directory on tmpfs (no disk fsync)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-20000}
DURATION=${DURATION:-15}
COUNT=${COUNT:-100000}
CONCURRENCY=${CONCURRENCY:-4}
ROUNDS=${ROUNDS:-3}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
QUERIES=${QUERIES:-deploy/lab/names.txt}
PLACEMENT=${PLACEMENT:-shared}
WORKER_CPU=0
CONTROL_CPU=1
LOAD_PREFIX=()
LOAD_PACE=()
case $PLACEMENT in
    shared) LOAD_CPU=0 ;;
    split) LOAD_CPU=1 ;;
    rt)
        LOAD_CPU=1
        LOAD_PREFIX=(chrt -f 50)
        LOAD_PACE=(--pace sleep)
        ;;
    *) echo "PLACEMENT is shared, split or rt" >&2; exit 2 ;;
esac
TCK=$(getconf CLK_TCK)
PORT=5350
API=127.0.0.1:5351

cargo build --release -q -p adoxd -p adox-benches
LOAD=target/release/adox-load
PUSH=target/release/policy-push

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
# The state directory (with the policy journal) lives under STATE_ROOT: /tmp (the disk) by
# default; /dev/shm takes the disk's fsync cost out, to see what part of any effect is it.
WORK=$(mktemp -d -p "${STATE_ROOT:-/tmp}")
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

TOKEN=policy-push-bench-token-$RANDOM$RANDOM
(umask 077 && echo "$TOKEN" >"$WORK/tokens")
printf '[api]\nrate_per_s = 1000000\nrate_burst = 1000000\n' >"$WORK/adox.toml"
target/release/adoxd --config "$WORK/adox.toml" --root-hints "$LAB/root.hints" --allow-upstream 127.0.0.0/8 \
    --listen 127.0.0.1:$PORT --api $API --api-token-file "$WORK/tokens" --state-dir "$WORK/state" \
    --workers 1 --log-level warn 2>"$WORK/adoxd.log" &
pid=$!
for _ in $(seq 50); do curl -sf "http://$API/readyz" >/dev/null && break; sleep 0.1; done
worker_tid=$(grep -l '^adox-worker-0$' /proc/"$pid"/task/*/comm | head -1 | cut -d/ -f5)
taskset -a -cp "$CONTROL_CPU" "$pid" >/dev/null
taskset -cp "$WORKER_CPU" "$worker_tid" >/dev/null
push_seconds=5

ticks() { awk '{print $14 + $15}' "$1"; }
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

taskset -c "$LOAD_CPU" "$LOAD" --server 127.0.0.1:$PORT --queries "$QUERIES" --rate 500 --duration 2 --timeout-ms 3000 >/dev/null
taskset -c "$LOAD_CPU" "$LOAD" --server 127.0.0.1:$PORT --queries "$QUERIES" --rate 2000 --duration 1 >/dev/null

# run CONDITION ROUND: one load run, with or without a push; prints one result line.
run() {
    local cond=$1 round=$2 p0 w0 p1 w1 out recv push_pid="" push="-"
    p0=$(ticks /proc/$pid/stat)
    w0=$(ticks /proc/$pid/task/$worker_tid/stat)
    if [[ $cond == push ]]; then
        taskset -c "$CONTROL_CPU" "$PUSH" --api "http://$API" --token "$TOKEN" --count "$COUNT" \
            --concurrency "$CONCURRENCY" --tag "r$round" >"$WORK/push.json" &
        push_pid=$!
    elif [[ $cond == busy ]]; then
        taskset -c "$CONTROL_CPU" timeout "$push_seconds" sh -c 'while :; do :; done' &
        push_pid=$!
    fi
    out=$(taskset -c "$LOAD_CPU" "${LOAD_PREFIX[@]}" "$LOAD" --server 127.0.0.1:$PORT --queries "$QUERIES" --rate "$RATE" \
        --duration "$DURATION" "${LOAD_PACE[@]}" --json)
    p1=$(ticks /proc/$pid/stat)
    w1=$(ticks /proc/$pid/task/$worker_tid/stat)
    if [[ $cond == push ]]; then
        wait "$push_pid"
        push="$(json "$(cat "$WORK/push.json")" per_second)/s,$(json "$(cat "$WORK/push.json")" seconds)s,err=$(json "$(cat "$WORK/push.json")" errors)"
    elif [[ $cond == busy ]]; then
        wait "$push_pid" || true
        push="busy-loop,${push_seconds}s"
    fi
    recv=$(json "$out" received)
    echo "$(json "$out" p99_us) $(json "$out" p50_us) $(json "$out" p999_us) $recv $(json "$out" lost) \
$(awk -v t=$((p1 - p0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.2f", t * 1e6 / k / n }') \
$(awk -v t=$((w1 - w0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.2f", t * 1e6 / k / n }') $push"
}

declare -A results
for ((r = 0; r < ROUNDS; r++)); do
    results[alone]+="$(run alone "$r")"$'\n'
    results[push]+="$(run push "$r")"$'\n'
    # The control lasts as long as this round's push did.
    push_seconds=$(json "$(cat "$WORK/push.json")" seconds)
    results[busy]+="$(run busy "$r")"$'\n'
done
policies=$(curl -s "http://$API/metrics" | sed -n 's/^adox_policies \([0-9]*\)$/\1/p')

echo
echo "policy pushes under load, $(date -u +%F), $(nproc) cores, PLACEMENT=$PLACEMENT: adoxd worker on core $WORKER_CPU, adox-load on core $LOAD_CPU, adoxd's other threads and policy-push on core $CONTROL_CPU"
echo "fixed load: $RATE qps for $DURATION s; push: $COUNT POSTs, $CONCURRENCY at a time, per round; $ROUNDS rounds, median by p99; policies held at the end: $policies; state on $(df --output=fstype "$WORK" | tail -1)"
printf '%-8s %8s %8s %8s %9s %6s %12s %12s  %s\n' condition p50_us p99_us p999_us answered lost "cpu_us/q" "worker_us/q" "push rate,time,errors"
for cond in alone push busy; do
    med=$(printf '%s' "${results[$cond]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
    read -r p99 p50 p999 recv lost cpu wcpu push <<<"$med"
    printf '%-8s %8s %8s %8s %9s %6s %12s %12s  %s\n' "$cond" "$p50" "$p99" "$p999" "$recv" "$lost" "$cpu" "$wcpu" "$push"
done
for cond in alone push busy; do
    echo "all rounds, $cond (p99 p50 p999 answered lost cpu_us/q worker_us/q push):"
    printf '%s' "${results[$cond]}" | sed 's/^/    /'
done
