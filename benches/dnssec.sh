#!/usr/bin/env bash
# benches/dnssec.sh: what DNSSEC validation costs adoxd, side by side in one run.
#
# 1. Cache hits. Two adoxd processes of the same build, one validating (the lab's trust
#    anchor) and one with --dnssec off, both up at once with one worker pinned to core 0;
#    both warmed over the query list (names.txt without the deliberately broken zones,
#    whose answers differ between the two: secure, insecure and negative answers).
#    Then ROUNDS fixed-load runs (RATE qps for DURATION s) alternate between them; the
#    figure is each one's CPU time (utime + stime) per answered query, median of its
#    rounds, and the ratio validate/off.
# 2. Cache misses over a signed zone. Every query a unique nonexistent name under
#    MISS_ZONE (default rsa.lab: RSASHA256 with NSEC3, so Unbound cannot synthesize the
#    answers from cached NSEC records, RFC 8198 being NSEC-only in Unbound), MISS_RATE
#    qps for MISS_DURATION s, after the zone's keys are cached: adoxd validating, adoxd
#    off, and Unbound (validating, one thread, same core): CPU per answered query, the
#    secure share of the answers, ratios to adoxd off.
# adox-load runs pinned to core 1. Needs root (the lab) and the lab's packages.
#
#   benches/dnssec.sh                       # RATE=40000 DURATION=5 ROUNDS=5 MISS_RATE=2000 MISS_DURATION=10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-40000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
MISS_RATE=${MISS_RATE:-2000}
MISS_DURATION=${MISS_DURATION:-10}
MISS_ZONE=${MISS_ZONE:-rsa.lab}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
TCK=$(getconf CLK_TCK)

cargo build --release -q -p adoxd -p adox-benches
LOAD=target/release/adox-load
started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pids=()
# The broken zones are SERVFAIL when validating and answers when not, and the zones whose
# signals are bogus or cannot authenticate change transport: not the same work.
if [[ -z ${QUERIES:-} ]]; then
    QUERIES=$WORK/names.txt
    grep -Ev '^(#|$)|(expired|wrongds|nokey|nosig|badnsec3|notyet|nonsec|bogussig|tlsapkix)\.lab\.' deploy/lab/names.txt >"$QUERIES"
fi
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    deploy/lab/peer unbound down "$LAB" >/dev/null 2>&1 || true
    if [[ -z ${KEEP_WORK:-} ]]; then rm -rf -- "$WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# start NAME PORT ARGS...: an adoxd with one worker on core 0; its pid in $last.
start() {
    local name=$1 port=$2
    shift 2
    taskset -c 0 target/release/adoxd --root-hints "$LAB/root.hints" --allow-upstream 127.0.0.0/8 \
        --listen "127.0.0.1:$port" --workers 1 --log-level warn \
        --api off --state-dir "$WORK/state-$name" "$@" 2>"$WORK/$name.log" &
    last=$!
    pids+=("$last")
    sleep 0.5
}

# run PID PORT FILE RATE SECONDS: one fixed-load run; prints "cpu_us/q sent answered servfail p50 p99".
run() {
    local pid=$1 port=$2 file=$3 rate=$4 secs=$5 c0 c1 out recv
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 "$LOAD" --server "127.0.0.1:$port" --queries "$file" --rate "$rate" --duration "$secs" \
        --timeout-ms 3000 --json)
    c1=$(cpu_ticks "$pid")
    recv=$(json "$out" received)
    echo "$(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.2f", t * 1e6 / k / n }') $(json "$out" sent) $recv $(json "$out" servfail) $(json "$out" p50_us) $(json "$out" p99_us)"
}

# ---- 1. cache hits, validation on and off, alternating rounds
start on 5360 --trust-anchor "$LAB/trust-anchor.ds"
on=$last
start off 5361 --dnssec off
off=$last
for port in 5360 5361; do
    taskset -c 1 "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --rate 500 --duration 2 --timeout-ms 3000 >/dev/null
    taskset -c 1 "$LOAD" --server "127.0.0.1:$port" --queries "$QUERIES" --rate 2000 --duration 1 >/dev/null
done
: >"$WORK/hit-on" && : >"$WORK/hit-off"
for ((r = 0; r < ROUNDS; r++)); do
    run "$on" 5360 "$QUERIES" "$RATE" "$DURATION" >>"$WORK/hit-on"
    run "$off" 5361 "$QUERIES" "$RATE" "$DURATION" >>"$WORK/hit-off"
done
ad=$(dig +dnssec @127.0.0.1 -p 5360 www.alpha.lab A | grep -c 'flags:.* ad' || true)
kill "$on" "$off"
wait "$on" "$off" 2>/dev/null || true

# ---- 2. cache misses over MISS_ZONE
total=$((MISS_RATE * MISS_DURATION + 1000))
miss_rows=()
for name in adoxd-validate adoxd-off unbound; do
    awk -v n="$total" -v z="$MISS_ZONE" -v r="$name" 'BEGIN { for (i = 0; i < n; i++) printf "u%d-%s.%s A\n", i, r, z }' >"$WORK/miss-$name.txt"
    case $name in
    adoxd-validate) start "$name" 5362 --trust-anchor "$LAB/trust-anchor.ds" && pid=$last port=5362 ;;
    adoxd-off) start "$name" 5363 --dnssec off && pid=$last port=5363 ;;
    unbound)
        deploy/lab/peer unbound up "$LAB" 5364 >/dev/null
        pid=$(<"$LAB/run/peer-unbound.pid") port=5364
        taskset -a -cp 0 "$pid" >/dev/null
        ;;
    esac
    # The delegation and the zone's keys, cached before the clock starts.
    dig +dnssec @127.0.0.1 -p "$port" "warm.$MISS_ZONE" A >/dev/null || true
    dig +dnssec @127.0.0.1 -p "$port" "www.$MISS_ZONE" A >/dev/null || true
    row=$(run "$pid" "$port" "$WORK/miss-$name.txt" "$MISS_RATE" "$MISS_DURATION")
    secure=$(dig +dnssec @127.0.0.1 -p "$port" "probe-ad.$MISS_ZONE" A | grep -c 'flags:.* ad' || true)
    miss_rows+=("$name $row $secure")
    if [[ $name == unbound ]]; then
        deploy/lab/peer unbound down "$LAB" >/dev/null
    else
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    fi
done

echo
echo "DNSSEC validation cost, $(date -u +%F), $(nproc) cores; servers on cpu 0 (one thread), adox-load on cpu 1"
echo "cache hits: $QUERIES at $RATE qps for $DURATION s, $ROUNDS alternating rounds each; median cpu_us/q"
on_med=$(cut -d' ' -f1 "$WORK/hit-on" | median)
off_med=$(cut -d' ' -f1 "$WORK/hit-off" | median)
printf '%-16s %9s %s\n' mode "cpu_us/q" "rounds (cpu_us/q sent answered servfail p50_us p99_us)"
printf '%-16s %9s %s\n' validate "$on_med" "$(tr '\n' '|' <"$WORK/hit-on")"
printf '%-16s %9s %s\n' off "$off_med" "$(tr '\n' '|' <"$WORK/hit-off")"
echo "validate / off = $(awk -v a="$on_med" -v b="$off_med" 'BEGIN { printf "%.3f", a / b }')  (www.alpha.lab A from the validating adoxd has AD: $ad)"
echo
echo "cache misses: unique nonexistent names under $MISS_ZONE at $MISS_RATE qps for $MISS_DURATION s"
printf '%-16s %9s %8s %8s %9s %9s %8s %8s %4s\n' server "cpu_us/q" "x off" sent answered servfail p50_us p99_us ad
base=$(printf '%s\n' "${miss_rows[@]}" | awk '$1 == "adoxd-off" { print $2 }')
for r in "${miss_rows[@]}"; do
    read -r name cpu sent recv sf p50 p99 secure <<<"$r"
    printf '%-16s %9s %8s %8s %9s %9s %8s %8s %4s\n' "$name" "$cpu" \
        "$(awk -v a="$cpu" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" "$sent" "$recv" "$sf" "$p50" "$p99" "$secure"
done
echo "ad = 1 when a fresh nonexistent name's NXDOMAIN came back with AD (validated) after the run"
