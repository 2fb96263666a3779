#!/usr/bin/env bash
# benches/memory.sh: memory per cached name and the cost of a cache miss, adoxd beside
# Unbound and PowerDNS Recursor, side by side in one run, over benches/world.py's world.
#
# For each server and each of the world's two million-name zones (mem.: unsigned;
# smem.: signed, validated), on a fresh process:
#   1. prime: the zone's delegation (and keys) in cache; RSS before;
#   2. pass 1: every name once (dnsperf, a closed loop of OUTSTANDING queries): each is a
#      cache miss; the figure is the server's CPU time per answered query (the miss cost);
#   3. pass 2: every name again: must make no upstream query (counted by an iptables
#      rule on the world's addresses; printed, and the run says so if it is not 0);
#      RSS after. Bytes per cached name = (RSS after - RSS before) / names.
# Then the miss cost without validation on smem. (adoxd --dnssec off, Unbound's iterator
# alone, PowerDNS dnssec=off), pass 1 only.
#
# Every server runs one thread pinned to core 0, with cache limits far above what a
# million names take (benches/lib.sh); dnsperf runs on core 1 with NSD.
#
#   benches/memory.sh                 # NAMES=1000000 (the world's mem. zone)
#   NAMES=200000 benches/memory.sh    # the first 200,000 names only (a quicker look)
#   SERVERS="adoxd unbound" benches/memory.sh
#   CASES=mem/validate benches/memory.sh   # the unsigned zone only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORLD=${WORLD:-/tmp/adox-world}
NAMES=${NAMES:-1000000}
OUTSTANDING=${OUTSTANDING:-100}
SERVERS=${SERVERS:-adoxd unbound pdns}
# zone/mode pairs, in order: validate runs both passes (miss cost and memory), off the first.
CASES=${CASES:-mem/validate smem/validate smem/off}
# shellcheck source=benches/lib.sh
source benches/lib.sh
trap bench_cleanup EXIT

cargo build --release -q -p adoxd
if ! [[ -f $WORLD/world.env ]] || ! grep -q "^mem_names=[1-9]" "$WORLD/world.env"; then
    benches/world.py build "$WORLD" --mem-names 1000000
fi
benches/world.py up "$WORLD"
world_names=$(sed -n 's/^mem_names=//p' "$WORLD/world.env")
((NAMES <= world_names)) || { echo "memory.sh: the world has $world_names names (NAMES=$NAMES)" >&2; exit 2; }
for z in mem smem; do
    benches/world.py mem-names "$WORLD" "$BENCH_TMP/all-$z.txt" --zone "$z."
    head -n "$NAMES" "$BENCH_TMP/all-$z.txt" >"$BENCH_TMP/$z.txt"
done
upstream_counter_on

PORT=5360
API=5361
rows=()
# start NAME MODE: a fresh server; sets SERVER_PID.
start() {
    case $1 in
    adoxd) start_adoxd "$PORT" "$API" --dnssec "$2" ;;
    *) start_peer "$1" "$PORT" "$2" ;;
    esac
}
stop() {
    case $1 in
    adoxd) kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true ;;
    *) stop_peer "$1" ;;
    esac
}

# Pass 1 keeps the server saturated (a closed loop of misses). adoxd sheds new misses once
# its worker has been saturated without a break for server.overload_after_ms (at most
# 60 s), which a signed million-name pass outlasts (about 110 s): the closed loop's 100
# queries were dropped, and lost, once per run. Pass 1 therefore runs in chunks of CHUNK
# names with a second's pause between them, for every server alike.
CHUNK=${CHUNK:-200000}
# pass_in_chunks FILE: dnsperf_run over FILE, CHUNK names at a time; sets DP_ANSWERED
# DP_LOST DP_SERVFAIL for the whole file.
pass_in_chunks() {
    local answered=0 lost=0 servfail=0 part
    split -l "$CHUNK" -d -a 3 "$1" "$BENCH_TMP/chunk."
    for part in "$BENCH_TMP"/chunk.*; do
        dnsperf_run "$part" -q "$OUTSTANDING"
        answered=$((answered + DP_ANSWERED)) lost=$((lost + DP_LOST)) servfail=$((servfail + DP_SERVFAIL))
        rm -f "$part"
        sleep 1
    done
    DP_ANSWERED=$answered DP_LOST=$lost DP_SERVFAIL=$servfail
}

# one NAME ZONE MODE PASSES: appends "name zone mode miss_us user/sys_us answered lost servfail
# upstream1 upstream2 rss0 rss1 bytes_per_name" to rows.
# UDP datagrams the kernel dropped, machine-wide, for a full receive buffer.
udp_rcvbuf_errors() { awk '$1 == "Udp:" && $6 ~ /^[0-9]+$/ { print $6 }' /proc/net/snmp; }

one() {
    local name=$1 zone=$2 mode=$3 passes=$4 k0 rss0 rss1 c0 c1 s0 s1 u0 u1 u2 miss split ans lost sf bpn="-" up2="-" rss1_mib="-"
    start "$name" "$mode"
    dig @127.0.0.1 -p "$PORT" +time=5 +tries=1 +short "n0.$zone." A >/dev/null
    sleep 1
    rss0=$(rss_kib "$SERVER_PID")
    c0=$(cpu_ticks "$SERVER_PID") s0=$(sys_ticks "$SERVER_PID")
    u0=$(upstream_queries)
    k0=$(udp_rcvbuf_errors)
    pass_in_chunks "$BENCH_TMP/$zone.txt"
    c1=$(cpu_ticks "$SERVER_PID") s1=$(sys_ticks "$SERVER_PID")
    u1=$(upstream_queries)
    if ((DP_LOST > 0)) && [[ $name == adoxd ]]; then
        # Lost queries: what adoxd says about them (kept in the run's output).
        echo "memory.sh: $DP_LOST lost on $zone.; datagrams the kernel dropped for full receive buffers meanwhile: $(($(udp_rcvbuf_errors) - k0)); adoxd's counters:" >&2
        curl -s "http://127.0.0.1:$API/metrics" |
            grep -E '^adox_(dropped|overload|rcode|upstream_timeouts|upstream_queries|probe|signal|resolution_duration_seconds_count|cache_entries)' >&2 || true
    fi
    miss=$(per_answer $((c1 - c0)) "$DP_ANSWERED")
    # The miss cost split: user space / kernel.
    split="$(per_answer $((c1 - c0 - (s1 - s0))) "$DP_ANSWERED")/$(per_answer $((s1 - s0)) "$DP_ANSWERED")"
    ans=$DP_ANSWERED lost=$DP_LOST sf=$DP_SERVFAIL
    if ((passes == 2)); then
        dnsperf_run "$BENCH_TMP/$zone.txt" -q "$OUTSTANDING"
        u2=$(upstream_queries)
        up2=$((u2 - u1))
        rss1=$(rss_kib "$SERVER_PID")
        rss1_mib=$((rss1 / 1024))
        bpn=$(awk -v a="$rss0" -v b="$rss1" -v n="$NAMES" 'BEGIN { printf "%d", (b - a) * 1024 / n }')
        if ((up2 != 0)); then
            echo "memory.sh: $name made $up2 upstream queries on the second pass over $zone. (cache too small?)" >&2
        fi
    fi
    stop "$name"
    rows+=("$name $zone. $mode $miss $split $ans $lost $sf $((u1 - u0)) $up2 $((rss0 / 1024)) $rss1_mib $bpn")
    echo "memory.sh: ${rows[-1]}" >&2
}

for case in $CASES; do
    zone=${case%/*} mode=${case#*/}
    for s in $SERVERS; do
        if [[ $mode == validate ]]; then one "$s" "$zone" validate 2; else one "$s" "$zone" off 1; fi
    done
done

echo
echo "memory per cached name and cache-miss cost, $(date -u +%F), $(nproc) cores; server on cpu $SERVER_CPU, dnsperf on cpu $LOAD_CPU"
echo "$NAMES distinct names per zone, one A record each; dnsperf closed loop of $OUTSTANDING; upstream = queries to the world's servers"
printf '%-8s %-6s %-9s %8s %7s %11s %9s %6s %8s %9s %9s %8s %8s %9s %7s\n' server zone dnssec "miss_us" "x adox" "usr/sys_us" answered lost servfail "up/q" "up_pass2" "rss0_MiB" "rss1_MiB" "B/name" "x adox"
declare -A base_miss base_bpn
for r in "${rows[@]}"; do
    read -r name zone mode miss split ans lost sf up1 up2 rss0 rss1 bpn <<<"$r"
    key="$zone-$mode"
    [[ $name == adoxd ]] && base_miss[$key]=$miss && base_bpn[$key]=$bpn
    printf '%-8s %-6s %-9s %8s %7s %11s %9s %6s %8s %9s %9s %8s %8s %9s %7s\n' "$name" "$zone" "$mode" "$miss" \
        "$(awk -v a="$miss" -v b="${base_miss[$key]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
        "$split" "$ans" "$lost" "$sf" "$(awk -v u="$up1" -v n="$ans" 'BEGIN { printf "%.2f", n ? u / n : 0 }')" "$up2" "$rss0" "$rss1" "$bpn" \
        "$(awk -v a="$bpn" -v b="${base_bpn[$key]:-x}" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }')"
done
