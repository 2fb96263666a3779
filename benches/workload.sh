#!/usr/bin/env bash
# benches/workload.sh: an ISP-like query stream (Zipf popularity over a large namespace)
# through adoxd, Unbound and PowerDNS Recursor, side by side in one run.
#
# The world (benches/world.py, 2,000 zones of 100 names, 40 % signed, 10 % on a nameserver
# that signals DoT with a secure SVCB and DANE: adoxd asks those zones over DoT, strictly;
# Unbound and PowerDNS over Do53, as they do by default) serves ~422,000
# distinct queries: A and AAAA of every name, each zone's MX, and names that do not exist.
# One stream is drawn from it with Zipf popularity (EXPONENT, default 0.9) and cut in
# three: WARM queries to fill the cache, then two parts of COUNT queries, the first sent
# by adox-load, the second by dnsperf (an independent generator), both at RATE qps. Every
# server gets the same stream; each part's hit ratio is printed (a cache that keeps
# everything answers about 90 % and 94 % of them from cache with the defaults). TTLs are a
# day, so nothing expires: the misses are the stream's first occurrences.
#
# Per server and part: CPU per answered query (utime + stime of the server), latency
# (adox-load: p50/p99; dnsperf: its average), SERVFAILs, upstream queries per client query
# (an iptables rule counts the queries to the world's servers) and the share answered
# from the answer cache as the server counts it (adoxd's packet cache, Unbound's message
# cache, PowerDNS's packet cache).
#
#   benches/workload.sh                       # RATE=10000 WARM=1000000 COUNT=600000
#   EXPONENT=1.0 benches/workload.sh
#   SERVERS="adoxd unbound" RATE=20000 benches/workload.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORLD=${WORLD:-/tmp/adox-world}
RATE=${RATE:-10000}
WARM=${WARM:-1000000}
WARM_RATE=${WARM_RATE:-20000}
COUNT=${COUNT:-600000}
EXPONENT=${EXPONENT:-0.9}
SERVERS=${SERVERS:-adoxd unbound pdns}
# shellcheck source=benches/lib.sh
source benches/lib.sh
trap bench_cleanup EXIT

cargo build --release -q -p adoxd -p adox-benches
LOAD=target/release/adox-load
# A world from before the DoT share (no dot_pct) is built again.
grep -q '^dot_pct=' "$WORLD/world.env" 2>/dev/null || benches/world.py build "$WORLD"
benches/world.py up "$WORLD"
benches/world.py stream "$WORLD" "$BENCH_TMP/q" --warm "$WARM" --count "$COUNT" --parts 2 --exponent "$EXPONENT" 2>&1 |
    tee "$BENCH_TMP/stream.txt" >&2
upstream_counter_on

PORT=5362
API=5363
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
hit_pct() { awk -v h0="$1" -v m0="$2" -v h1="$3" -v m1="$4" 'BEGIN { n = h1 - h0 + m1 - m0; printf "%.1f", n ? 100 * (h1 - h0) / n : 0 }'; }

rows=()
for s in $SERVERS; do
    case $s in
    adoxd) start_adoxd "$PORT" "$API" ;;
    *) start_peer "$s" "$PORT" ;;
    esac
    # Warm-up: dnsperf goes through the file once (up to 500 in flight).
    dnsperf_run "$BENCH_TMP/q.warm" -Q "$WARM_RATE" -q 500
    echo "workload.sh: $s warmed: $DP_ANSWERED answered, $DP_LOST lost, $DP_SERVFAIL SERVFAIL" >&2

    # Part 1: adox-load, once through the part at RATE.
    read -r h0 m0 <<<"$(cache_counts "$s" "$API")"
    c0=$(cpu_ticks "$SERVER_PID") u0=$(upstream_queries)
    out=$(taskset -c "$LOAD_CPU" "$LOAD" --server "127.0.0.1:$PORT" --queries "$BENCH_TMP/q.1" --rate "$RATE" \
        --duration $((COUNT / RATE)) --timeout-ms 5000 --json)
    c1=$(cpu_ticks "$SERVER_PID") u1=$(upstream_queries)
    read -r h1 m1 <<<"$(cache_counts "$s" "$API")"
    ans=$(json "$out" received)
    rows+=("$s adox-load $(per_answer $((c1 - c0)) "$ans") $(json "$out" sent) $ans $(json "$out" lost) $(json "$out" servfail) $(json "$out" p50_us) $(json "$out" p99_us) - $(awk -v u=$((u1 - u0)) -v n="$ans" 'BEGIN { printf "%.3f", u / n }') $(hit_pct "$h0" "$m0" "$h1" "$m1")")
    echo "workload.sh: ${rows[-1]}" >&2

    # Part 2: dnsperf, once through the next part at RATE.
    read -r h0 m0 <<<"$(cache_counts "$s" "$API")"
    c0=$(cpu_ticks "$SERVER_PID") u0=$(upstream_queries)
    dnsperf_run "$BENCH_TMP/q.2" -Q "$RATE" -q 1000
    c1=$(cpu_ticks "$SERVER_PID") u1=$(upstream_queries)
    read -r h1 m1 <<<"$(cache_counts "$s" "$API")"
    rows+=("$s dnsperf $(per_answer $((c1 - c0)) "$DP_ANSWERED") $DP_SENT $DP_ANSWERED $DP_LOST $DP_SERVFAIL - - $DP_AVG_US $(awk -v u=$((u1 - u0)) -v n="$DP_ANSWERED" 'BEGIN { printf "%.3f", u / n }') $(hit_pct "$h0" "$m0" "$h1" "$m1")")
    echo "workload.sh: ${rows[-1]}" >&2

    case $s in
    adoxd)
        dot=$(curl -s "http://127.0.0.1:$API/metrics" | awk '/^adox_upstream_queries_total\{transport="dot"\}/ { print $2 }')
        all=$(curl -s "http://127.0.0.1:$API/metrics" | awk '/^adox_upstream_queries_total/ { n += $2 } END { print n + 0 }')
        dot_note="adoxd sent ${dot:-0} of its $all upstream queries over DoT (the zones on ns2.zipf.)"
        echo "workload.sh: $dot_note" >&2
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        ;;
    *) stop_peer "$s" ;;
    esac
done

echo
echo "ISP-like workload, $(date -u +%F), $(nproc) cores; server on cpu $SERVER_CPU, load on cpu $LOAD_CPU; $RATE qps"
[[ -n ${dot_note:-} ]] && echo "  $dot_note"
sed 's/^world.py: /  /' "$BENCH_TMP/stream.txt"
printf '%-8s %-10s %9s %7s %8s %9s %6s %8s %7s %7s %7s %7s %6s\n' server loadgen "cpu_us/q" "x adox" sent answered lost servfail p50_us p99_us avg_us "up/q" "hit%"
declare -A base
for r in "${rows[@]}"; do
    read -r name gen cpu sent ans lost sf p50 p99 avg upq hit <<<"$r"
    [[ $name == adoxd ]] && base[$gen]=$cpu
    printf '%-8s %-10s %9s %7s %8s %9s %6s %8s %7s %7s %7s %7s %6s\n' "$name" "$gen" "$cpu" \
        "$(awk -v a="$cpu" -v b="${base[$gen]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
        "$sent" "$ans" "$lost" "$sf" "$p50" "$p99" "$avg" "$upq" "$hit"
done
