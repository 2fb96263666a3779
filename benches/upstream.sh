#!/usr/bin/env bash
# benches/upstream.sh: cost of encrypted upstream, side by side in one run.
#
# Every query is a cache miss answered by the lab: unique names under one zone
# (NXDOMAIN from its server), so each client query costs exactly one upstream query
# once the delegation is cached. The same adoxd (one worker pinned to core 0) runs the
# same load three times, with the zone's server reached over:
#   do53 : a cleartext policy,
#   dot  : a strict DoT policy (PKIX against the lab CA, pooled connection, resumption),
#   doq  : a strict DoQ policy for DOQ_ZONE (default doq.lab), whose DoQ side is the lab's
#          Python front (aioquic, forwarding to NSD): its figures say what the front can do
#          more than what adox can;
#   dot-reconnect : the same at RECONNECT_RATE qps (default 1.5) for RECONNECT_DURATION s
#          (default 40) with a 100 ms idle timeout, so the connection closes between
#          queries and every new one should resume its TLS session;
#   do53-bind, doh, doh-reconnect : DOH_ZONE (default bdoh.lab, BIND 9.18 with its DoH
#          listener) over a cleartext policy, a strict DoH policy (HTTP/2, PKIX, POST), and
#          DoH with the 100 ms idle timeout; doh is compared with do53-bind (same server).
# For each: adoxd CPU per answered query (utime + stime), latency percentiles, full and
# resumed handshakes per 10,000 upstream queries. adox-load runs pinned to core 1.
#
#   benches/upstream.sh                     # RATE=4000 DURATION=10 ZONE=dot.lab
#   RUNS="do53-bind doh" benches/upstream.sh  # some of the runs (do53-bind is doh's baseline)
#   LOG_LEVEL="info,adox_dataplane::resolver::exchange=debug" ...  # log each strict failure
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-4000}
DURATION=${DURATION:-10}
RECONNECT_RATE=${RECONNECT_RATE:-1.5}
RECONNECT_DURATION=${RECONNECT_DURATION:-40}
ZONE=${ZONE:-dot.lab}
DOQ_ZONE=${DOQ_ZONE:-doq.lab}
DOQ_RATE=${DOQ_RATE:-500}
DOH_ZONE=${DOH_ZONE:-bdoh.lab}
read -ra RUNS <<<"${RUNS:-do53 dot doq dot-reconnect do53-bind doh doh-reconnect}"
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

# Unique names: more than RATE * DURATION, so none repeats within a run.
total=$((RATE * DURATION + 1000))
for run in "${RUNS[@]}"; do
    z=$ZONE
    if [[ $run == doq ]]; then z=$DOQ_ZONE; fi
    if [[ $run == do53-bind || $run == doh* ]]; then z=$DOH_ZONE; fi
    awk -v n="$total" -v z="$z" -v r="$run" 'BEGIN { for (i = 0; i < n; i++) printf "u%d-%s.%s A\n", i, r, z }' >"$WORK/$run.txt"
done

json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
stat() { grep ' stats ' "$1" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }

rows=()
for run in "${RUNS[@]}"; do
    zone=$ZONE
    case $run in
    do53) policy="mode = \"cleartext\"" idle=30000 ;;
    dot) policy="mode = \"strict\"
transports = [\"dot\"]" idle=30000 ;;
    doq) policy="mode = \"strict\"
transports = [\"doq\"]" idle=30000 zone=$DOQ_ZONE ;;
    dot-reconnect) policy="mode = \"strict\"
transports = [\"dot\"]" idle=100 ;;
    do53-bind) policy="mode = \"cleartext\"" idle=30000 zone=$DOH_ZONE ;;
    doh) policy="mode = \"strict\"
transports = [\"doh\"]" idle=30000 zone=$DOH_ZONE ;;
    doh-reconnect) policy="mode = \"strict\"
transports = [\"doh\"]" idle=100 zone=$DOH_ZONE ;;
    esac
    rate=$RATE duration=$DURATION
    if [[ $run == *-reconnect ]]; then rate=$RECONNECT_RATE duration=$RECONNECT_DURATION; fi
    if [[ $run == doq ]]; then rate=$DOQ_RATE; fi
    cat >"$WORK/$run.toml" <<EOF
[transport]
ca_file = "$LAB/tls/ca.pem"
probing = false
signals = false
dot_idle_timeout_ms = $idle

[[policy]]
zone = "$zone"
$policy
EOF
    taskset -c 0 target/release/adoxd --config "$WORK/$run.toml" --root-hints "$LAB/root.hints" \
        --allow-upstream 127.0.0.0/8 --listen 127.0.0.1:5350 --workers 1 --log-level "${LOG_LEVEL:-info}" \
        --state-dir "$WORK/state-$run" 2>"$WORK/$run.log" &
    pid=$!
    sleep 0.5
    # Warm the delegation (root, lab., the zone's referral) so that each measured query
    # is exactly one upstream query.
    dig +short @127.0.0.1 -p 5350 "warm.$zone" A >/dev/null || true
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(taskset -c 1 target/release/adox-load --server 127.0.0.1:5350 --queries "$WORK/$run.txt" \
        --rate "$rate" --duration "$duration" --timeout-ms 2000 --json)
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill -INT "$pid"
    wait "$pid" || true
    pid=
    recv=$(json "$out" received)
    up=$(( $(stat "$WORK/$run.log" upstream_udp) + $(stat "$WORK/$run.log" upstream_tcp) + $(stat "$WORK/$run.log" upstream_dot) + $(stat "$WORK/$run.log" upstream_doq) + $(stat "$WORK/$run.log" upstream_doh) ))
    full=$(stat "$WORK/$run.log" tls_full)
    resumed=$(stat "$WORK/$run.log" tls_resumed)
    cpu=$(awk -v t=$((c1 - c0)) -v k="$TCK" -v n="$recv" 'BEGIN { printf "%.1f", t * 1e6 / k / n }')
    rows+=("$run $cpu $(json "$out" sent) $recv $(json "$out" servfail) $(json "$out" p50_us) $(json "$out" p99_us) $up $full $resumed")
done

echo
echo "upstream cost, $(date -u +%F): every query a miss answered by $ZONE's server ($DOQ_ZONE's for doq, $DOH_ZONE's for do53-bind and doh*); $RATE qps for $DURATION s ($DOQ_RATE qps for doq, $RECONNECT_RATE qps for $RECONNECT_DURATION s for *-reconnect); adoxd 1 worker on cpu 0"
printf '%-14s %9s %6s %8s %9s %9s %7s %8s %10s %9s %10s %10s\n' run "cpu_us/q" "x do53" sent answered servfail p50_us p99_us upstream tls_full "full/10k" "resumed%"
base=$(cut -d' ' -f2 <<<"${rows[0]}")
for r in "${rows[@]}"; do
    read -r name cpu sent recv sf p50 p99 up full resumed <<<"$r"
    printf '%-14s %9s %6s %8s %9s %9s %7s %8s %10s %9s %10s %10s\n' "$name" "$cpu" \
        "$(awk -v a="$cpu" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" "$sent" "$recv" "$sf" "$p50" "$p99" "$up" "$full" \
        "$(awk -v f="$full" -v u="$up" 'BEGIN { printf "%.2f", (u ? f * 10000 / u : 0) }')" \
        "$(awk -v f="$full" -v r="$resumed" 'BEGIN { printf "%.1f", ((f + r) > 1 ? 100 * r / (f + r - 1) : 0) }')"
done
echo "resumed% = resumed handshakes / reconnects (all handshakes after the first), DoT, DoQ and DoH alike"
doh_cpu=$(printf '%s\n' "${rows[@]}" | awk '$1 == "doh" { print $2 }')
bind_cpu=$(printf '%s\n' "${rows[@]}" | awk '$1 == "do53-bind" { print $2 }')
echo "doh / do53-bind (same server): $(awk -v a="$doh_cpu" -v b="$bind_cpu" 'BEGIN { printf "%.2f", a / b }')x CPU per query"
