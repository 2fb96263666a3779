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
#   fleet     the defaults in fleet mode ([fleet] backend = "etcd") against a one-member
#             etcd on 127.0.0.1 (Debian's etcd-server), holding 1,000 policies; skipped
#             with a note when etcd is not installed (FLEET=off skips it too)
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
    # The servers first (a fleet node writes its state file when etcd goes), then etcd.
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${etcd_pid:-} ]]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

printf '[cookies]\nenabled = false\n' >"$WORK/off.toml"
printf '[limits]\nqueries_per_second_per_client = 1000000\nqueries_per_second_per_prefix = 1000000\nresponses_per_second = 1000000\n' >"$WORK/rates.toml"
: >"$WORK/default.toml"
# Fleet mode: a one-member etcd with 1,000 policies under the prefix, which the fleet
# node loads and watches (nothing on its query path waits on etcd).
etcd_pid=
if [[ ${FLEET:-on} != off ]] && command -v etcd >/dev/null; then
    etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls http://127.0.0.1:23790 \
        --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
        --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster bench=http://127.0.0.1:23800 \
        >"$WORK/etcd.log" 2>&1 &
    etcd_pid=$!
    for ((i = 0; i < 100; i++)); do
        ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23790 endpoint health >/dev/null 2>&1 && break
        sleep 0.1
    done
    printf '[fleet]\nbackend = "etcd"\netcd_endpoints = ["http://127.0.0.1:23790"]\nkey_prefix = "/bench"\n' >"$WORK/fleet.toml"
elif [[ ${FLEET:-on} != off ]]; then
    echo "features.sh: no etcd (Debian package etcd-server): the fleet variant is skipped" >&2
fi
# dnsperf's query file: the lab's names, as "name type".
cp deploy/lab/names.txt "$WORK/queries.txt"

names=()
ports=()
procs=()
start() { # NAME BINARY PORT CONFIG [API ARG...]
    mkdir -p "$WORK/state-$1"
    local name=$1 bin=$2 port=$3 config=$4 api=(--api off)
    shift 4
    (($#)) && api=("$@")
    taskset -c "$SERVER_CPU" "$bin" --config "$config" --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
        --allow-upstream 127.0.0.0/8 --listen "127.0.0.1:$port" --workers 1 --log-level warn "${api[@]}" \
        --state-dir "$WORK/state-$name" &
    pids+=($!)
    names+=("$name")
    ports+=("$port")
    procs+=($!)
}
start off target/release/adoxd 5350 "$WORK/off.toml"
start default target/release/adoxd 5351 "$WORK/default.toml"
start cookies target/release/adoxd 5352 "$WORK/default.toml"
start rates target/release/adoxd 5353 "$WORK/rates.toml"
if [[ -n $etcd_pid ]]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
    chmod 600 "$WORK/token"
    start fleet target/release/adoxd 5355 "$WORK/fleet.toml" --api 127.0.0.1:5356 --api-token-file "$WORK/token"
fi
if [[ -n ${ADOXD_BASE:-} ]]; then
    start base "$ADOXD_BASE" 5354 "$WORK/default.toml"
fi
sleep 1
if [[ -n $etcd_pid ]]; then
    # 1,000 policies through the fleet node's API (into etcd, back through its watch).
    bundle=$(awk 'BEGIN { printf "{\"policies\":["; for (i = 0; i < 1000; i++) printf "%s{\"zone\":\"z%d.example\",\"mode\":\"opportunistic\"}", (i ? "," : ""), i; printf "]}" }')
    curl -sf -X POST -H "Authorization: Bearer $(<"$WORK/token")" -H 'Content-Type: application/json' \
        --data "$bundle" "http://127.0.0.1:5356/v1/policies/import" >/dev/null ||
        { echo "features.sh: importing policies into the fleet node failed" >&2; exit 1; }
    curl -s http://127.0.0.1:5356/metrics | grep -q '^adox_fleet_connected 1' ||
        { echo "features.sh: the fleet node is not connected to etcd" >&2; exit 1; }
fi

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
