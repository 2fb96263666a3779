#!/usr/bin/env bash
# benches/overload.sh: twice the capacity for a minute, and what adoxd does about it.
#
# A load generator on this machine cannot offer twice a flat-out adoxd's rate, so adoxd is
# capped instead: one worker in a CPU cgroup with QUOTA_PCT % of one core (cgroup v2
# `cpu.max`, or v1 `cpu.cfs_quota_us` where the cpu controller is mounted as v1).
#   1. capacity: every query a miss (unique names, alpha.lab. NXDOMAIN), flat out for 10 s;
#      C = answers per second.
#   2. overload: misses offered at OVER_PCT % of C (default 200) for DURATION s (60), while
#      a second generator asks cached names at HIT_RATE qps (200): how many of those are
#      answered, and at what latency. RSS is sampled every second.
#   3. recovery: once the overload stops, a fresh miss is asked every 50 ms: the time
#      until the first is answered, and the answered share of misses at C/4 for 5 s after.
# Pass (exit 1 otherwise): hits >= 99 % answered during the overload, peak RSS below the
# two caches (CACHE_MIB each) + OVERHEAD_MIB, recovery within 1 s, >= 99 % after it.
#
#   benches/overload.sh            # root: the cgroup and the lab
# Results: perf/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUOTA_PCT=${QUOTA_PCT:-25}
OVER_PCT=${OVER_PCT:-200}
DURATION=${DURATION:-60}
HIT_RATE=${HIT_RATE:-200}
CACHE_MIB=${CACHE_MIB:-32}
OVERHEAD_MIB=${OVERHEAD_MIB:-64}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
# The daemon under test (another build, to compare two side by side).
ADOXD=${ADOXD:-target/release/adoxd}
PORT=5365

cargo build --release -q -p adoxd -p adox-benches
started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid= sampler= hits= cg=
cleanup() {
    for p in $sampler $hits $pid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n $cg ]]; then rmdir "$cg" 2>/dev/null || true; fi
    if [[ -z ${KEEP_WORK:-} ]]; then rm -rf -- "$WORK"; else echo "work files kept in $WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The CPU cap: a cgroup of its own, v2 if the unified hierarchy has the cpu controller.
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    cg=/sys/fs/cgroup/adox-overload-$$
    mkdir "$cg"
    echo "$((QUOTA_PCT * 1000)) 100000" >"$cg/cpu.max"
    cgroup_kind="v2 cpu.max $((QUOTA_PCT * 1000)) 100000"
elif [[ -d /sys/fs/cgroup/cpu ]]; then
    cg=/sys/fs/cgroup/cpu/adox-overload-$$
    mkdir "$cg"
    echo 100000 >"$cg/cpu.cfs_period_us"
    echo $((QUOTA_PCT * 1000)) >"$cg/cpu.cfs_quota_us"
    cgroup_kind="v1 cpu.cfs_quota_us $((QUOTA_PCT * 1000)) / cpu.cfs_period_us 100000"
else
    echo "overload: no cgroup cpu controller here" >&2
    exit 1
fi

# Capacity is measured with shedding off (a flat-out closed-loop generator would otherwise
# wait out every dropped query); the overload runs with the default.
for phase in capacity overload; do
    cat >"$WORK/$phase.toml" <<EOF
[server]
overload_after_ms = $([[ $phase == capacity ]] && echo 60000 || echo 200)
[cache]
record_cache_bytes = $((CACHE_MIB << 20))
packet_cache_bytes = $((CACHE_MIB << 20))
EOF
done
# Started inside the cgroup: a shell moves itself in, then becomes adoxd.
start_adoxd() {
    sh -c "echo \$\$ >$cg/cgroup.procs && exec taskset -c 0 $ADOXD --config $WORK/$1.toml \
        --root-hints $LAB/root.hints --trust-anchor $LAB/trust-anchor.ds --allow-upstream 127.0.0.0/8 \
        --listen 127.0.0.1:$PORT --api off --workers 1 --log-level info --state-dir $WORK/state" 2>>"$WORK/adoxd.log" &
    pid=$!
    sleep 1
    kill -0 "$pid"
}

misses() { awk -v n="$2" -v t="$1" 'BEGIN { for (i = 0; i < n; i++) printf "o%s-%d.alpha.lab. A\n", t, i }' >"$WORK/$1.txt"; }
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
load() { taskset -c 1 target/release/adox-load --server "127.0.0.1:$PORT" --json "$@"; }

start_adoxd capacity
misses cap 2000000
out=$(load --queries "$WORK/cap.txt" --max-outstanding 500 --duration 10 --timeout-ms 3000)
capacity=$(awk -v a="$(json "$out" nxdomain)" 'BEGIN { printf "%d", a / 10 }')
kill "$pid"
wait "$pid" 2>/dev/null || true

start_adoxd overload
# Cached names for the hit load: asked once now.
grep -v '^#' deploy/lab/names.txt | awk 'NF >= 2 { print $1, $2 }' | grep -E 'alpha|beta|www' | head -40 >"$WORK/hits.txt"
load --queries "$WORK/hits.txt" --rate 100 --duration 1 >/dev/null
offered=$((capacity * OVER_PCT / 100))
echo "overload: adoxd capped at ${QUOTA_PCT} % of a core ($cgroup_kind): capacity ${capacity} misses/s; offering ${offered} misses/s for ${DURATION} s"

base_rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
(while kill -0 "$pid" 2>/dev/null; do awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; sleep 1; done) >"$WORK/rss.txt" &
sampler=$!
misses over $((offered * DURATION + 1000))
load --queries "$WORK/hits.txt" --rate "$HIT_RATE" --duration "$DURATION" --pace sleep >"$WORK/hits.json" &
hits=$!
over=$(load --queries "$WORK/over.txt" --rate "$offered" --duration "$DURATION" --timeout-ms 2000)
wait "$hits"
hits=
hit_out=$(cat "$WORK/hits.json")

# Recovery: a fresh miss every 50 ms until one is answered (1 s timeout each).
t0=$(date +%s%N)
recovered=
for i in $(seq 200); do
    reply=$(dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 "rec$i.alpha.lab." A || true)
    if [[ $reply == *"status: NXDOMAIN"* ]]; then
        recovered=$((($(date +%s%N) - t0) / 1000000))
        break
    fi
    sleep 0.05
done
misses after $((capacity * 5 / 4 + 1000))
after=$(load --queries "$WORK/after.txt" --rate $((capacity / 4)) --duration 5 --timeout-ms 2000)
kill "$sampler" 2>/dev/null || true
# The shed count: SIGINT makes adoxd log its counters on the way out.
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
pid=
shed=$(grep ' stats ' "$WORK/adoxd.log" | tail -1 | tr ' ' '\n' | sed -n 's/^overload_shed=//p')
peak_rss=$(sort -n "$WORK/rss.txt" | tail -1)
limit_kib=$(((2 * CACHE_MIB + OVERHEAD_MIB) * 1024))

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? 100 * a / b : 0 }'; }
hit_pct=$(pct "$(json "$hit_out" received)" "$(json "$hit_out" sent)")
after_pct=$(pct "$(json "$after" nxdomain)" "$(json "$after" sent)")
fail=0
awk -v p="$hit_pct" 'BEGIN { exit !(p >= 99) }' || fail=1
awk -v p="$after_pct" 'BEGIN { exit !(p >= 99) }' || fail=1
((peak_rss < limit_kib)) || fail=1
[[ -n $recovered ]] && ((recovered <= 1000)) || fail=1

echo
echo "overload, $(date -u +%F): 1 worker capped at ${QUOTA_PCT} % of a core; capacity ${capacity} misses/s; ${offered} misses/s offered for ${DURATION} s"
echo "  misses during the overload: sent $(json "$over" sent), NXDOMAIN $(json "$over" nxdomain) ($(pct "$(json "$over" nxdomain)" $((capacity * DURATION))) % of capacity), SERVFAIL $(json "$over" servfail), lost $(json "$over" lost); shed by adoxd ${shed}"
echo "  hits during the overload (${HIT_RATE} qps): ${hit_pct} % answered, p50 $(json "$hit_out" p50_us) us, p99 $(json "$hit_out" p99_us) us"
echo "  RSS: ${base_rss} KiB before, peak ${peak_rss} KiB (limit ${limit_kib} KiB = two ${CACHE_MIB} MiB caches + ${OVERHEAD_MIB} MiB)"
echo "  recovery: first fresh miss answered ${recovered:-never} ms after the overload; then ${after_pct} % of misses at $((capacity / 4))/s answered"
if ((fail)); then
    echo "overload: FAILED" >&2
    exit 1
fi
echo "overload: passed"
