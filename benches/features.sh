#!/usr/bin/env bash
# benches/features.sh: the cache-hit cost of adoxd's optional front-door features, each
# as a ratio to the same build with them off, side by side in one run, with dnsperf as
# the load (an independent generator). Rounds are interleaved (off, on, off, on, ...) so
# that the machine's drift falls on every variant alike; the median round is reported.
#
# Variants (one adoxd each, one worker pinned to SERVER_CPU; dnsperf on LOAD_CPU):
#   off       [cookies] enabled = false, no rate: the floor the others are compared to
#   default   the defaults (cookies on), queries without a cookie
#   cookies   the defaults, every query with a client cookie (dnsperf -E): a SipHash and
#             the option appended to each answer
#   rates     per-client, per-network and response rates on, never exceeded
#   base      ADOXD_BASE=PATH (an earlier build) with its defaults, when given
#
#   benches/features.sh                           # RATE=40000 DURATION=6 ROUNDS=5
#   ADOXD_BASE=/tmp/base-target/release/adoxd benches/features.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-40000}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TCK=$(getconf CLK_TCK)
command -v dnsperf >/dev/null || { echo "features.sh: needs dnsperf (Debian package dnsperf)" >&2; exit 1; }

cargo build --release -q -p adoxd

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

printf '[cookies]\nenabled = false\n' >"$WORK/off.toml"
printf '[limits]\nqueries_per_second_per_client = 1000000\nqueries_per_second_per_prefix = 1000000\nresponses_per_second = 1000000\n' >"$WORK/rates.toml"
: >"$WORK/default.toml"
# dnsperf's query file: the lab's names, as "name type".
cp deploy/lab/names.txt "$WORK/queries.txt"

names=()
ports=()
procs=()
start() { # NAME BINARY PORT CONFIG
    mkdir -p "$WORK/state-$1"
    taskset -c "$SERVER_CPU" "$2" --config "$4" --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
        --allow-upstream 127.0.0.0/8 --listen "127.0.0.1:$3" --workers 1 --log-level warn --api off \
        --state-dir "$WORK/state-$1" &
    pids+=($!)
    names+=("$1")
    ports+=("$3")
    procs+=($!)
}
start off target/release/adoxd 5350 "$WORK/off.toml"
start default target/release/adoxd 5351 "$WORK/default.toml"
start cookies target/release/adoxd 5352 "$WORK/default.toml"
start rates target/release/adoxd 5353 "$WORK/rates.toml"
if [[ -n ${ADOXD_BASE:-} ]]; then
    start base "$ADOXD_BASE" 5354 "$WORK/default.toml"
fi
sleep 1

extra() { [[ $1 == cookies ]] && echo "-E 10:0123456789abcdef" || true; }
perf() { # NAME PORT RATE SECONDS -> completed queries
    # shellcheck disable=SC2046 # extra: words on purpose
    taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -Q "$3" -l "$4" -c 4 -t 2 \
        $(extra "$1") 2>&1 | awk '/Queries completed:/ { print $3 }'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Warm every cache.
for i in "${!names[@]}"; do
    perf "${names[$i]}" "${ports[$i]}" 500 2 >/dev/null
done

declare -A samples
for ((r = 0; r < ROUNDS; r++)); do
    for i in "${!names[@]}"; do
        c0=$(cpu_ticks "${procs[$i]}")
        done_q=$(perf "${names[$i]}" "${ports[$i]}" "$RATE" "$DURATION")
        c1=$(cpu_ticks "${procs[$i]}")
        us=$(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$done_q" 'BEGIN { printf "%.3f", t * 1e6 / k / n }')
        samples[${names[$i]}]+="$us "
    done
done

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | sed -n "$(((ROUNDS + 1) / 2))p"; }
echo
echo "front-door features, $(date -u +%F), dnsperf $RATE qps x ${DURATION} s, $ROUNDS interleaved rounds (median); server cpu $SERVER_CPU, dnsperf cpu $LOAD_CPU"
printf '%-9s %10s %8s   %s\n' variant "cpu_us/q" "x off" "rounds"
off=$(median "${samples[off]}")
for n in "${names[@]}"; do
    m=$(median "${samples[$n]}")
    printf '%-9s %10s %8s   %s\n' "$n" "$m" "$(awk -v a="$m" -v b="$off" 'BEGIN { printf "%.3f", a / b }')" "${samples[$n]}"
done
