#!/usr/bin/env bash
# benches/hit_instructions.sh: user-space instructions per cache hit (valgrind's callgrind),
# per adoxd configuration, on the same query stream: counts are stable where timings on a
# shared machine are not, so a feature's cost on the hit path shows as a ratio to the same
# build with it off. The counters are zeroed after a warm-up and dumped after a fixed
# number of queries (dnsperf, PASSES passes over deploy/lab/names.txt), so start-up is not
# counted. What is counted includes the event loop's own turns, whose share per query
# depends on how many queries each wake-up reads: RATE is low enough (200 qps; callgrind
# runs adoxd about 50 times slower) that each wake-up reads one, the same for every
# variant (at 1,500 qps the batching varied and moved the figures by 10 %).
#
# Variants (one worker each):
#   off       [cookies] enabled = false, no rate (serve-stale on, its default)
#   nostale   as off, with [cache] serve_stale = false: serve-stale's cost is off / nostale
#   default   the defaults (cookies on; these queries carry none)
#   cookies   the defaults, every query with a client cookie (dnsperf -E): SipHash, option
#   valid     the defaults, every query with a valid server cookie for 127.0.0.1 (made
#             by adoxd for this client before the count starts)
#   rates     per-client, per-network and response rates on, never exceeded
#   dnstap    [dnstap] to fstrm_capture (writing to a file in a temporary directory),
#             client and resolver messages on
#   dnstap-resolver  the same with client_queries and client_responses off
#   rpz       a policy zone file of RPZ_NAMES QNAME triggers (100,000; one in ten a
#             wildcard three labels deep, as benches/rpz_load.sh makes them), none of
#             which the stream matches: the per-query check before the packet cache
#
#   benches/hit_instructions.sh                   # PASSES=20 (3,300 queries per variant) at RATE=200
#   VARIANTS="off rates" benches/hit_instructions.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PASSES=${PASSES:-20}
RATE=${RATE:-200}
VARIANTS=${VARIANTS:-"off default cookies valid rates"}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
for t in valgrind callgrind_control dnsperf kdig fstrm_capture; do
    command -v "$t" >/dev/null || { echo "hit_instructions.sh: needs $t (valgrind, dnsperf, knot-dnsutils)" >&2; exit 1; }
done

cargo build --release -q -p adoxd

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid=
capture=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n $capture ]]; then kill "$capture" 2>/dev/null || true; fi
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

printf '[cookies]\nenabled = false\n' >"$WORK/off.toml"
printf '[cookies]\nenabled = false\n[cache]\nserve_stale = false\n' >"$WORK/nostale.toml"
printf '[limits]\nqueries_per_second_per_client = 1000000\nqueries_per_second_per_prefix = 1000000\nresponses_per_second = 1000000\n' >"$WORK/rates.toml"
: >"$WORK/default.toml"
printf '[dnstap]\nsocket_path = "%s"\n' "$WORK/dnstap.sock" >"$WORK/dnstap.toml"
printf '[dnstap]\nsocket_path = "%s"\nclient_queries = false\nclient_responses = false\n' "$WORK/dnstap.sock" \
    >"$WORK/dnstap-resolver.toml"
{
    printf '$TTL 300\n@ SOA localhost. admin.rpz.bench. 1 3600 600 86400 60\n@ NS localhost.\n'
    awk -v n="${RPZ_NAMES:-100000}" 'BEGIN { for (i = 0; i < n; i++) if (i % 10 == 9) printf "*.w%d.block.example CNAME *.\n", i; else printf "n%d.block.example CNAME .\n", i }'
} >"$WORK/rpz.db"
printf '[[rpz.zone]]\nname = "rpz.bench."\nfile = "%s"\n' "$WORK/rpz.db" >"$WORK/rpz.toml"
config() { case $1 in off | nostale | rates | dnstap | dnstap-resolver | rpz) echo "$WORK/$1.toml" ;; *) echo "$WORK/default.toml" ;; esac; }

port=5390
rows=()
for v in $VARIANTS; do
    port=$((port + 1))
    mkdir -p "$WORK/state-$v"
    if [[ $v == dnstap* ]]; then
        rm -f "$WORK/dnstap.sock"
        fstrm_capture -t protobuf:dnstap.Dnstap -u "$WORK/dnstap.sock" -w "$WORK/$v.fstrm" >/dev/null 2>&1 &
        capture=$!
        sleep 0.5
    fi
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$v.%p" target/release/adoxd --config "$(config "$v")" \
        --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
        --listen "127.0.0.1:$port" --workers 1 --log-level error --api off --state-dir "$WORK/state-$v" \
        >"$WORK/$v.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        kdig +short +time=1 +retry=0 @127.0.0.1 -p "$port" localhost. >/dev/null 2>&1 && break
        sleep 0.5
    done
    extra=()
    case $v in
        cookies) extra=(-E 10:0123456789abcdef) ;;
        valid)
            c=$(kdig -b 127.0.0.1 @127.0.0.1 -p "$port" +cookie=0123456789abcdef localhost. | awk '/COOKIE:/ { print $3 }')
            extra=(-E "10:$c")
            ;;
    esac
    # Warm: every name answered and cached (slowly: callgrind runs adoxd ~50x slower).
    dnsperf -s 127.0.0.1 -p "$port" -d deploy/lab/names.txt -n 3 -Q 300 -t 10 "${extra[@]}" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d deploy/lab/names.txt -n "$PASSES" -Q "$RATE" -t 10 "${extra[@]}" 2>&1)
    callgrind_control -d "$pid" >/dev/null
    done_q=$(awk '/Queries completed:/ { print $3 }' <<<"$out")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    if [[ -n $capture ]]; then
        kill -INT "$capture"
        wait "$capture" 2>/dev/null || true
        capture=
    fi
    # The inclusive cost of the worker's UDP read (parse, cache, answer, send) only: the
    # loop's idle turns and timers cost by time, which callgrind stretches unevenly.
    ir=$(callgrind_annotate --inclusive=yes --threshold=100 "$WORK"/cg-"$v".*.1 2>/dev/null |
        awk '/read_udp/ && !done { gsub(",", "", $1); print $1; done = 1 }')
    total=$(awk '/^summary:/ { print $2 }' "$WORK"/cg-"$v".*.1)
    echo "$v: $done_q answered, read_udp $ir of $total instructions" >&2
    rows+=("$v $done_q $ir")
done

echo
echo "instructions per cache hit (callgrind, user space, inclusive in the worker's UDP read), $(date -u +%F): $PASSES passes over deploy/lab/names.txt at $RATE qps"
printf '%-9s %9s %14s %10s %8s\n' variant answered instructions "Ir/query" "x first"
first=
for r in "${rows[@]}"; do
    read -r v n ir <<<"$r"
    per=$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", i / n }')
    first=${first:-$per}
    printf '%-9s %9s %14s %10s %8s\n' "$v" "$n" "$ir" "$per" "$(awk -v a="$per" -v b="$first" 'BEGIN { printf "%.3f", a / b }')"
done
