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
# cache, PowerDNS's packet cache). Also the machine's busy CPU per answered query (both
# cores: every thread's runtime, benches/veth.sh) and, within it, the world's NSD
# processes' share.
#
# NET=veth runs the same over a (virtual) Ethernet link (benches/veth.sh; clang,
# libbpf-dev, libxdp-dev): the generators in a network namespace of their own, adox-load
# pacing by sleeping; SERVERS default to "floor adoxd adoxd-xdp unbound pdns": adoxd's
# socket path, its AF_XDP path (`[xdp]`, built with --features xdp), Unbound and PowerDNS,
# and the XDP echo floor (each query bounced at the driver, no DNS work). There the process's own CPU
# misses the kernel's receive work, done in softirq on the generator's core (the AF_XDP
# path's copy into its ring included), so the figure compared is the resolver's share of
# the machine: machine CPU per answer, minus the floor's (the generator and the link),
# minus the NSD processes' (the world's servers' own work).
#
#   benches/workload.sh                       # RATE=10000 WARM=1000000 COUNT=600000
#   EXPONENT=1.0 benches/workload.sh
#   SERVERS="adoxd unbound" RATE=20000 benches/workload.sh
#   NET=veth benches/workload.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORLD=${WORLD:-/tmp/adox-world}
RATE=${RATE:-10000}
WARM=${WARM:-1000000}
WARM_RATE=${WARM_RATE:-20000}
COUNT=${COUNT:-600000}
EXPONENT=${EXPONENT:-0.9}
NET=${NET:-loopback}
# shellcheck source=benches/lib.sh
source benches/lib.sh
# shellcheck source=benches/veth.sh
source benches/veth.sh
case $NET in
loopback)
    SERVERS=${SERVERS:-adoxd unbound pdns}
    trap bench_cleanup EXIT
    cargo build --release -q -p adoxd -p adox-benches
    load_cmd() { timed "$BENCH_TMP/gen" taskset -c "$LOAD_CPU" "$@"; }
    ;;
veth)
    SERVERS=${SERVERS:-floor adoxd adoxd-xdp unbound pdns}
    trap 'bench_cleanup; veth_down' EXIT
    cargo build --release -q -p adoxd -p adox-benches --features adoxd/xdp
    # 1: adoxd's socket path, Unbound and PowerDNS; 2: adoxd's AF_XDP path; 3: the floor.
    veth_up 3 "$BENCH_TMP"
    veth_floor 3
    load_cmd() { timed "$BENCH_TMP/gen" in_ns "$@"; }
    ;;
*)
    echo "workload.sh: NET is loopback or veth" >&2
    exit 2
    ;;
esac
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

# Over veth, adox-load sleeps between sends: the machine's CPU counts the generator's, and
# a spinning one would count as busy whatever it sent.
pace=()
[[ $NET == veth ]] && pace=(--pace sleep)

# The counters around a measured part, "server_ticks threads_file nsd_ticks upstream";
# the floor has no process and no cache. SIDE: a or b.
counters() {
    machine_snapshot "$BENCH_TMP/threads.$2"
    echo "$([[ $1 == floor ]] && echo 0 || cpu_ticks "$SERVER_PID") $BENCH_TMP/threads.$2 $(nsd_ticks) $(upstream_queries)"
}
# measured ANSWERED BEFORE AFTER: "cpu machine nsd upstream/q" per answer; machine is every
# thread's runtime and the generator's (`load_cmd` timed it).
measured() {
    local c0 t0 n0 u0 c1 t1 n1 u1
    read -r c0 t0 n0 u0 <<<"$2"
    read -r c1 t1 n1 u1 <<<"$3"
    echo "$(per_answer $((c1 - c0)) "$1") \
$(awk -v t=$(($(machine_ns "$t0" "$t1") + $(<"$BENCH_TMP/gen"))) -v n="$1" 'BEGIN { printf "%.1f", n ? t / 1e3 / n : 0 }') \
$(per_answer $((n1 - n0)) "$1") $(awk -v u=$((u1 - u0)) -v n="$1" 'BEGIN { printf "%.3f", n ? u / n : 0 }')"
}

rows=()
for s in $SERVERS; do
    addr=$SERVER_ADDR
    case $NET.$s in
    veth.adoxd | veth.unbound | veth.pdns) addr=10.97.1.2 ;;
    veth.adoxd-xdp) addr=10.97.2.2 ;;
    veth.floor) addr=10.97.3.2 ;;
    loopback.floor | loopback.adoxd-xdp)
        echo "workload.sh: $s needs NET=veth" >&2
        exit 2
        ;;
    esac
    port=$PORT
    case $s in
    floor) port=5363 ;; # the echo program's port
    adoxd) SERVER_ADDR=$addr start_adoxd "$PORT" "$API" ;;
    adoxd-xdp) SERVER_ADDR=$addr ADOXD_CONF_EXTRA=$'[xdp]\nenabled = true\ninterface = "xb2"' start_adoxd "$PORT" "$API" ;;
    *) SERVER_ADDR=$addr start_peer "$s" "$PORT" ;;
    esac
    if [[ $s != floor ]]; then
        # Warm-up: dnsperf goes through the file once (up to 500 in flight).
        SERVER_ADDR=$addr dnsperf_run "$BENCH_TMP/q.warm" -Q "$WARM_RATE" -q 500
        echo "workload.sh: $s warmed: $DP_ANSWERED answered, $DP_LOST lost, $DP_SERVFAIL SERVFAIL" >&2
    fi

    # Part 1: adox-load, once through the part at RATE.
    read -r h0 m0 <<<"$(cache_counts "$s" "$API")"
    k0=$(counters "$s" a)
    load_cmd "$LOAD" --server "$addr:$port" --queries "$BENCH_TMP/q.1" --rate "$RATE" \
        --duration $((COUNT / RATE)) --timeout-ms 5000 "${pace[@]}" --json >"$BENCH_TMP/out.1"
    out=$(<"$BENCH_TMP/out.1")
    k1=$(counters "$s" b)
    read -r h1 m1 <<<"$(cache_counts "$s" "$API")"
    ans=$(json "$out" received)
    read -r cpu machine nsd upq <<<"$(measured "$ans" "$k0" "$k1")"
    rows+=("$s adox-load $cpu $machine $nsd $(json "$out" sent) $ans $(json "$out" lost) $(json "$out" servfail) $(json "$out" p50_us) $(json "$out" p99_us) - $upq $(hit_pct "$h0" "$m0" "$h1" "$m1")")
    echo "workload.sh: ${rows[-1]}" >&2

    # Part 2: dnsperf, once through the next part at RATE.
    read -r h0 m0 <<<"$(cache_counts "$s" "$API")"
    k0=$(counters "$s" a)
    PORT=$port SERVER_ADDR=$addr dnsperf_run "$BENCH_TMP/q.2" -Q "$RATE" -q 1000
    k1=$(counters "$s" b)
    read -r h1 m1 <<<"$(cache_counts "$s" "$API")"
    read -r cpu machine nsd upq <<<"$(measured "$DP_ANSWERED" "$k0" "$k1")"
    rows+=("$s dnsperf $cpu $machine $nsd $DP_SENT $DP_ANSWERED $DP_LOST $DP_SERVFAIL - - $DP_AVG_US $upq $(hit_pct "$h0" "$m0" "$h1" "$m1")")
    echo "workload.sh: ${rows[-1]}" >&2

    case $s in
    floor) ;;
    adoxd*)
        dot=$(curl -s "http://127.0.0.1:$API/metrics" | awk '/^adox_upstream_queries_total\{transport="dot"\}/ { print $2 }')
        all=$(curl -s "http://127.0.0.1:$API/metrics" | awk '/^adox_upstream_queries_total/ { n += $2 } END { print n + 0 }')
        dot_note="$s sent ${dot:-0} of its $all upstream queries over DoT (the zones on ns2.zipf.)"
        if [[ $s == adoxd-xdp ]]; then
            in_frames=$(curl -s "http://127.0.0.1:$API/metrics" | awk '/^adox_xdp_answered_total/ { print $2 }')
            dot_note+="; it answered ${in_frames:-0} queries in their own frames (AF_XDP)"
        fi
        echo "workload.sh: $dot_note" >&2
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        ;;
    *) stop_peer "$s" ;;
    esac
done

echo
echo "ISP-like workload, $(date -u +%F), $(nproc) cores; server on cpu $SERVER_CPU, load on cpu $LOAD_CPU; $RATE qps; NET=$NET"
[[ -n ${dot_note:-} ]] && echo "  $dot_note"
sed 's/^world.py: /  /' "$BENCH_TMP/stream.txt"
# cpu_us/q: the server process's CPU per answer; machine: both cores' busy CPU per answer,
# the generator's included; nsd: the world's servers' share of it; resolver (over veth):
# machine minus nsd minus the floor's machine figure. "x adox" compares cpu_us/q on
# loopback, resolver over veth, each to adoxd's (its socket path) with the same generator.
printf '%-9s %-9s %8s %8s %6s %8s %6s %7s %8s %6s %5s %6s %7s %6s %6s %5s\n' server loadgen "cpu_us/q" machine nsd resolver "x adox" sent answered lost sf p50_us p99_us avg_us "up/q" "hit%"
declare -A base floor_m
for r in "${rows[@]}"; do
    read -r name gen cpu machine nsd _ <<<"$r"
    [[ $name == floor ]] && floor_m[$gen]=$machine
done
for r in "${rows[@]}"; do
    read -r name gen cpu machine nsd sent ans lost sf p50 p99 avg upq hit <<<"$r"
    resolver=$(awk -v m="$machine" -v n="$nsd" -v f="${floor_m[$gen]:-0}" 'BEGIN { printf "%.1f", m - n - f }')
    [[ $name == floor ]] && resolver=0
    [[ $NET == loopback ]] && resolver=- # the generator's share is in machine
    key=$cpu
    [[ $NET == veth ]] && key=$resolver
    [[ $name == adoxd ]] && base[$gen]=$key
    [[ $name == floor ]] && hit=-
    printf '%-9s %-9s %8s %8s %6s %8s %6s %7s %8s %6s %5s %6s %7s %6s %6s %5s\n' "$name" "$gen" "$cpu" "$machine" "$nsd" "$resolver" \
        "$(awk -v a="$key" -v b="${base[$gen]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
        "$sent" "$ans" "$lost" "$sf" "$p50" "$p99" "$avg" "$upq" "$hit"
done
