#!/usr/bin/env bash
# benches/nxflood.sh: a random-subdomain flood (unique names that do not exist) under a
# signed zone of the lab (alpha.lab., NSEC), against adoxd with aggressive use of the
# validated cache (RFC 8198) on and off, and Unbound (its own default), one after the
# other in one run, with dnsperf as the load.
#
# Each server gets its own fresh names (RATE x DURATION of them, each asked once) at a
# fixed RATE; reported per server: answered, NXDOMAIN, SERVFAIL, the server's CPU time
# (utime + stime) per answered query, and for adoxd the upstream queries per client query.
# Needs root (the lab) and the lab's packages.
#
# Run past 300 s (the lab's negative TTL, its SOA minimum), the flood crosses the first
# expiry of the spans: each has to be learnt again from one denial, so the upstream
# queries show how many names went upstream meanwhile.
#
#   benches/nxflood.sh                 # RATE=2000 DURATION=10
#   RATE=5000 DURATION=10 benches/nxflood.sh
#   SERVERS=aggr-on RATE=5000 DURATION=330 benches/nxflood.sh   # across the spans' expiry
#   ADOXD=/tmp/adoxd-other SERVERS=aggr-on ...                  # another build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-2000}
DURATION=${DURATION:-10}
ZONE=${ZONE:-alpha.lab.}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
SERVERS=${SERVERS:-aggr-on aggr-off unbound}
ADOXD=${ADOXD:-target/release/adoxd}
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

# names SEED: RATE x DURATION unique random names under ZONE, one "NAME A" per line.
names() {
    python3 - "$1" "$((RATE * DURATION))" "$ZONE" <<'PY'
import random, string, sys
rng = random.Random(int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    print("".join(rng.choice(string.ascii_lowercase) for _ in range(12)) + "." + sys.argv[3], "A")
PY
}

# flood NAME PORT PID SEED: warms the zone's keys, floods, appends a row to $rows.
rows=()
flood() {
    local name=$1 port=$2 pid=$3 c0 c1 out
    dig +short +dnssec @127.0.0.1 -p "$port" "www.$ZONE" A >/dev/null
    names "$4" >"$WORK/q"
    c0=$(cpu_ticks "$pid")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/q" -l "$DURATION" -Q "$RATE" -q 500 -t 3 2>&1)
    c1=$(cpu_ticks "$pid")
    local done_ lost nx sf
    done_=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    nx=$(sed -n 's/.*NXDOMAIN \([0-9]*\).*/\1/p' <<<"$out" | head -1)
    sf=$(sed -n 's/.*SERVFAIL \([0-9]*\).*/\1/p' <<<"$out" | head -1)
    rows+=("$name ${done_:-0} ${lost:-0} ${nx:-0} ${sf:-0} $(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="${done_:-1}" 'BEGIN { printf "%.1f", t * 1e6 / k / n }')")
}

# adoxd ON|OFF PORT: one worker, validating with the lab's anchor; its stop line gives
# the upstream queries.
adoxd() {
    "$ADOXD" --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
        --allow-upstream 127.0.0.0/8 --listen "127.0.0.1:$2" --workers 1 --log-level info --api off \
        --state-dir "$WORK" --aggressive-nsec "$1" 2>"$WORK/adoxd-$1.log" &
    pids+=($!)
    sleep 0.5
    flood "adoxd-aggr-$1" "$2" "${pids[-1]}" "$3"
    kill -TERM "${pids[-1]}"
    wait "${pids[-1]}" || true
    local up clients
    up=$(grep ' stats ' "$WORK/adoxd-$1.log" | tail -1 | tr ' ' '\n' | awk -F= '$1 ~ /^upstream_(udp|tcp|dot|doq|doh)$/ {s += $2} END {print s + 0}')
    clients=$(grep ' stats ' "$WORK/adoxd-$1.log" | tail -1 | tr ' ' '\n' | awk -F= '$1 == "queries_udp" {print $2}')
    rows[-1]+=" $up $(awk -v u="$up" -v c="$clients" 'BEGIN { printf "%.4f", u / c }')"
}

for s in $SERVERS; do
    case $s in
        aggr-on) adoxd on 5350 1 ;;
        aggr-off) adoxd off 5351 2 ;;
        unbound)
            deploy/lab/peer unbound up "$LAB" 5352 >/dev/null
            flood unbound 5352 "$(<"$LAB/run/peer-unbound.pid")" 3
            rows[-1]+=" - -"
            ;;
        *) echo "nxflood.sh: unknown server $s (aggr-on, aggr-off, unbound)" >&2; exit 1 ;;
    esac
done

echo
echo "random-subdomain flood under $ZONE, $(date -u +%F), $(nproc) cores: $RATE qps for $DURATION s (dnsperf), fresh names per server"
printf '%-16s %9s %6s %9s %8s %9s %9s %14s\n' server answered lost nxdomain servfail "cpu_us/q" upstream "upstream/query"
for r in "${rows[@]}"; do
    # shellcheck disable=SC2086 # the row's words on purpose
    printf '%-16s %9s %6s %9s %8s %9s %9s %14s\n' $r
done
