#!/usr/bin/env bash
# benches/handoff.sh: one encrypted connection per authoritative (queries handed across
# workers to the connection's owner) against per-worker connections, side by side.
#
# adoxd with WORKERS workers (default 2, unpinned: they share the machine with the load)
# and a strict DoT policy for ZONE (default dot.lab); every query a unique name (a miss
# answered NXDOMAIN by the zone's server: one upstream DoT query each). Each round runs
# transport.connections_per_server = 1 (hand-off to the owner) and = WORKERS (every worker
# its own connection, the pools of before), the order alternating; RATE qps for DURATION
# s from adox-load. Per mode, medians over ROUNDS: adoxd CPU per answered query (all its
# threads, utime + stime), p50/p99 latency, TLS handshakes (connections opened to the
# server), queries handed over.
#
# LOADGEN=dnsperf sends the same names with dnsperf instead of adox-load (dnsperf reports
# the average latency, not percentiles: its average goes in the p50 column, p99 is "-").
#
#   benches/handoff.sh                      # RATE=3000 DURATION=10 ROUNDS=5 WORKERS=2
#   LOADGEN=dnsperf benches/handoff.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-3000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-2}
ZONE=${ZONE:-dot.lab}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
TCK=$(getconf CLK_TCK)

cargo build --release -q -p adoxd -p adox-benches
started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -z ${KEEP_WORK:-} ]]; then rm -rf -- "$WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
stat() { grep ' stats ' "$1" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

total=$((RATE * DURATION + 1000))
MODES=("1" "$WORKERS")
# one K ROUND: appends "cpu_us/q p50 p99 handshakes handoffs answered servfail" to $WORK/k$K.
one() {
    local k=$1 r=$2 name="k$1-$2" c0 c1 out recv
    awk -v n="$total" -v z="$ZONE" -v r="$name" 'BEGIN { for (i = 0; i < n; i++) printf "u%d-%s.%s A\n", i, r, z }' >"$WORK/$name.txt"
    cat >"$WORK/$name.toml" <<EOF
[transport]
ca_file = "$LAB/tls/ca.pem"
probing = false
signals = false
connections_per_server = $k

[[policy]]
zone = "$ZONE"
mode = "strict"
transports = ["dot"]
EOF
    target/release/adoxd --config "$WORK/$name.toml" --root-hints "$LAB/root.hints" \
        --allow-upstream 127.0.0.0/8 --listen 127.0.0.1:5351 --workers "$WORKERS" --log-level "${LOG_LEVEL:-info}" \
        --api off --state-dir "$WORK/state-$name" 2>"$WORK/$name.log" &
    pid=$!
    sleep 0.5
    for i in $(seq 8); do dig +short @127.0.0.1 -p 5351 "warm$i.$ZONE" A >/dev/null || true; done
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    local p50 p99 servfail
    if [[ ${LOADGEN:-adox-load} == dnsperf ]]; then
        out=$(dnsperf -s 127.0.0.1 -p 5351 -d "$WORK/$name.txt" -Q "$RATE" -l "$DURATION" -t 2 -q 1000 2>&1)
        recv=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
        p50=$(sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' <<<"$out" | awk '{ printf "%d", $1 * 1e6 }')
        p99=-
        servfail=$(sed -n 's/.*SERVFAIL \([0-9]*\).*/\1/p' <<<"$out")
        servfail=${servfail:-0}
    else
        out=$(target/release/adox-load --server 127.0.0.1:5351 --queries "$WORK/$name.txt" \
            --rate "$RATE" --duration "$DURATION" --timeout-ms 2000 --json)
        recv=$(json "$out" received) p50=$(json "$out" p50_us) p99=$(json "$out" p99_us) servfail=$(json "$out" servfail)
    fi
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill -INT "$pid"
    wait "$pid" || true
    pid=
    echo "$(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.1f", t * 1e6 / k / n }') $p50 $p99 $(($(stat "$WORK/$name.log" tls_full) + $(stat "$WORK/$name.log" tls_resumed))) $(stat "$WORK/$name.log" upstream_handoffs) $recv $servfail" >>"$WORK/k$k"
}

for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2)); then one "${MODES[1]}" "$r"; one "${MODES[0]}" "$r"; else one "${MODES[0]}" "$r"; one "${MODES[1]}" "$r"; fi
done

echo
echo "hand-off vs per-worker connections, $(date -u +%F), $(nproc) cores; adoxd $WORKERS workers (unpinned), strict DoT to $ZONE's server, unique names at $RATE qps for $DURATION s from ${LOADGEN:-adox-load}; medians of $ROUNDS rounds"
printf '%-22s %9s %8s %8s %11s %9s %9s   %s\n' "connections_per_server" "cpu_us/q" p50_us p99_us handshakes handoffs servfail "rounds (cpu p50 p99 handshakes handoffs answered servfail)"
for k in "${MODES[@]}"; do
    f="$WORK/k$k"
    printf '%-22s %9s %8s %8s %11s %9s %9s   %s\n' "$k" "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f2 "$f" | median)" \
        "$(cut -d' ' -f3 "$f" | median)" "$(cut -d' ' -f4 "$f" | median)" "$(cut -d' ' -f5 "$f" | median)" \
        "$(cut -d' ' -f7 "$f" | median)" "$(tr '\n' '|' <"$f")"
done
