#!/usr/bin/env bash
# benches/failflood.sh: clients repeating questions that cannot be resolved, against adoxd
# with its failure cache (RFC 9520, `cache.failure_ttl_s`, default 5 s) on with its
# backoff (`cache.failure_max_ttl_s`, default 60 s), on without backoff, and off, and
# Unbound (its own default), one after the other in one run, with dnsperf as the load.
#
# The questions: five names under down.lab. (its only server's port is unreachable) and
# five under tlsapkix.lab. (a strict zone: adoxd's DoT exchange cannot be authenticated
# by DANE, so it answers SERVFAIL with EDE 22; Unbound asks in cleartext and answers),
# asked over and over at a fixed RATE. Reported per server: answered, SERVFAIL, the
# server's CPU time (utime + stime) per answered query, and for adoxd the upstream
# queries per client query and the failures it kept (`failures_cached`). Needs root (the
# lab) and the lab's packages.
#
#   benches/failflood.sh               # RATE=5000 DURATION=10
#   RATE=20000 DURATION=10 benches/failflood.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-5000}
DURATION=${DURATION:-10}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TCK=$(getconf CLK_TCK)

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
    deploy/lab/peer unbound down "$LAB" >/dev/null 2>&1 || true
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for n in www mail ftp api cdn; do
    echo "$n.down.lab. A"
    echo "$n.tlsapkix.lab. A"
done >"$WORK/q"

# flood NAME PORT PID: appends a row to $rows.
rows=()
flood() {
    local name=$1 port=$2 pid=$3 c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/q" -l "$DURATION" -Q "$RATE" -q 500 -t 3 2>&1)
    c1=$(cpu_ticks "$pid")
    local done_ sf
    done_=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    sf=$(sed -n 's/.*SERVFAIL \([0-9]*\).*/\1/p' <<<"$out" | head -1)
    rows+=("$name ${done_:-0} ${sf:-0} $(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="${done_:-1}" 'BEGIN { printf "%.1f", t * 1e6 / k / n }')")
}

# adoxd LABEL PORT CACHE: one worker, validating with the lab's anchor, with CACHE (the
# [cache] lines, printf escapes) as its failure cache; its stop line gives the upstream
# queries.
adoxd() {
    printf '[cache]\n%b\n' "$3" >"$WORK/adox-$1.toml"
    taskset -c "$SERVER_CPU" target/release/adoxd --config "$WORK/adox-$1.toml" --root-hints "$LAB/root.hints" \
        --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 --listen "127.0.0.1:$2" \
        --workers 1 --log-level info --api off --state-dir "$WORK" 2>"$WORK/adoxd-$1.log" &
    pids+=($!)
    sleep 0.5
    flood "adoxd-$1" "$2" "${pids[-1]}"
    kill -TERM "${pids[-1]}"
    wait "${pids[-1]}" || true
    local up clients kept
    up=$(grep ' stats ' "$WORK/adoxd-$1.log" | tail -1 | tr ' ' '\n' | awk -F= '$1 ~ /^upstream_(udp|tcp|dot|doq|doh)$/ {s += $2} END {print s + 0}')
    clients=$(grep ' stats ' "$WORK/adoxd-$1.log" | tail -1 | tr ' ' '\n' | awk -F= '$1 == "queries_udp" {print $2}')
    kept=$(grep ' stats ' "$WORK/adoxd-$1.log" | tail -1 | tr ' ' '\n' | awk -F= '$1 == "failures_cached" {print $2}')
    rows[-1]+=" $(awk -v u="$up" -v c="$clients" 'BEGIN { printf "%.4f", c ? u / c : 0 }') ${kept:-0}"
}

adoxd backoff 5353 'failure_ttl_s = 5'
adoxd flat-5s 5356 'failure_ttl_s = 5\nfailure_max_ttl_s = 5'
adoxd off 5354 'failure_ttl_s = 0'
deploy/lab/peer unbound up "$LAB" 5355 >/dev/null
flood unbound 5355 "$(<"$LAB/run/peer-unbound.pid")"
rows[-1]+=" - -"

echo
echo "questions that cannot be resolved, asked over and over: $(date -u +%F), $(nproc) cores: $RATE qps for $DURATION s (dnsperf), 10 questions (5 under down.lab., 5 under tlsapkix.lab.)"
printf '%-15s %9s %8s %9s %14s %6s\n' server answered servfail "cpu_us/q" "upstream/query" kept
for r in "${rows[@]}"; do
    # shellcheck disable=SC2086 # the row's words on purpose
    printf '%-15s %9s %8s %9s %14s %6s\n' $r
done
