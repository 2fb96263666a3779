#!/usr/bin/env bash
# benches/xdp.sh: what a cache hit costs the whole machine over a (virtual) Ethernet link:
# adoxd's AF_XDP path beside its socket path, Unbound, and an XDP echo floor, side by side
# in one run, rounds interleaved (issue 16, item 4).
#
# The load generator runs in a network namespace of its own (adox-xb), pinned to LOAD_CPU;
# each server is reached through its own veth pair, so that no XDP program sits on another
# server's path (the generator's ends all run benches/xdp/pass.bpf.c, see below):
#   10.97.1.2  adoxd, [xdp] off (socket path), :5360; Unbound :5362
#   10.97.2.2  adoxd, [xdp] on (AF_XDP path), :5361
#   10.97.3.2  the floor: benches/xdp/echo.bpf.c attached by iproute2, bouncing each query
#              back at the driver (QR set) without any DNS work, :5363
# The servers have one thread each, pinned to SERVER_CPU. After a warm-up pass, each round
# offers RATE qps for DURATION s to each target in turn; the figure is the machine's busy
# CPU time (every thread's runtime and the generator's, benches/veth.sh: /proc/stat's ticks
# miss most of a server's short wake-ups on this kernel) per answered query, the
# generator's and the kernel's included; the median of ROUNDS rounds; minus the
# floor's, it is what answering costs above a bare bounce. Only the queries adoxd answers
# NOERROR or NXDOMAIN after the warm-up are asked (cache hits). LOADGEN=both (default),
# dnsperf or adox-load. Needs root, clang, libbpf-dev, libxdp-dev, the lab's packages.
#
#   benches/xdp.sh                          # RATE=40000 DURATION=8 ROUNDS=5
#   LOADGEN=dnsperf RATE=60000 benches/xdp.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-40000}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
LOADGEN=${LOADGEN:-both}
case $LOADGEN in both | adox-load | dnsperf) ;; *) echo "xdp.sh: LOADGEN is both, adox-load or dnsperf" >&2; exit 2 ;; esac
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
QUERIES=${QUERIES:-deploy/lab/names.txt}

cargo build --release -q -p adoxd -p adox-benches --features adoxd/xdp
LOAD=target/release/adox-load
TMP=$(mktemp -d /tmp/adox-xdp-bench.XXXXXX)
# shellcheck source=benches/veth.sh
source benches/veth.sh

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    deploy/lab/peer unbound down "$LAB" >/dev/null 2>&1 || true
    veth_down
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
    rm -rf -- "$TMP"
}
trap cleanup EXIT

veth_up 3 "$TMP"
veth_floor 3

# adoxd twice: the socket path and the AF_XDP path (the same build).
start_adoxd() {
    local name=$1 listen=$2 conf="$TMP/$1.toml" # $3: --api
    printf '[server]\nworkers = 1\n' >"$conf"
    if [[ $name == adoxd-xdp ]]; then printf '[xdp]\nenabled = true\ninterface = "xb2"\n' >>"$conf"; fi
    mkdir -p "$TMP/state-$name"
    taskset -c "$SERVER_CPU" target/release/adoxd --config "$conf" --root-hints "$LAB/root.hints" \
        --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 --listen "$listen" \
        --log-level info --api "$3" --state-dir "$TMP/state-$name" 2>"$TMP/$name.log" &
    pids+=($!)
    eval "PID_${name//-/_}=$!"
}
start_adoxd adoxd-socket 10.97.1.2:5360 off
start_adoxd adoxd-xdp 10.97.2.2:5361 127.0.0.1:5391
printf 'server:\n    interface: 10.97.1.2\n    access-control: 10.97.0.0/16 allow\n' >"$TMP/unbound.conf"
PEER_CONF_APPEND=$TMP/unbound.conf deploy/lab/peer unbound up "$LAB" 5362 >/dev/null
PID_unbound=$(<"$LAB/run/peer-unbound.pid")
taskset -a -cp "$SERVER_CPU" "$PID_unbound" >/dev/null
sleep 1

targets=("floor 10.97.3.2 5363" "adoxd-socket 10.97.1.2 5360" "adoxd-xdp 10.97.2.2 5361" "unbound 10.97.1.2 5362")
json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

for t in "${targets[@]}"; do
    read -r name addr port <<<"$t"
    [[ $name == floor ]] && continue
    in_ns "$LOAD" --server "$addr:$port" --queries "$QUERIES" --rate 500 --duration 2 --timeout-ms 3000 >/dev/null
    in_ns "$LOAD" --server "$addr:$port" --queries "$QUERIES" --rate 2000 --duration 1 >/dev/null
done

# The cache-hit path is what is compared: the runs ask only the names that adoxd answered
# with NOERROR or NXDOMAIN after the warm-up (the lab's broken-on-purpose zones fail
# again and again, and a failure is resolved anew, through the socket on both paths).
HITS=$TMP/hits.txt
while read -r qname qtype; do
    [[ -z $qname || $qname == \#* ]] && continue
    if ip netns exec "$VETH_NS" dig @10.97.1.2 -p 5360 "$qname" "$qtype" +tries=1 +time=2 |
        grep -qE 'status: (NOERROR|NXDOMAIN)'; then
        echo "$qname $qtype"
    fi
done <"$QUERIES" >"$HITS"
echo "xdp.sh: $(wc -l <"$HITS") of $(grep -c . "$QUERIES") queries answered NOERROR or NXDOMAIN: the runs ask those" >&2
QUERIES=$HITS

# one GEN NAME ADDR PORT: a fixed-rate run; prints "us_per_answer sent answered lost".
one() {
    local gen=$1 addr=$3 port=$4 out sent recv lost
    machine_snapshot "$TMP/threads.a"
    if [[ $gen == dnsperf ]]; then
        out=$(timed "$TMP/gen" in_ns dnsperf -s "$addr" -p "$port" -d "$QUERIES" -Q "$RATE" -l "$DURATION" -t 2 -q 1000 2>&1)
        sent=$(sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' <<<"$out")
        recv=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
        lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' <<<"$out")
    else
        # Sleeping between sends: a spinning generator would count as busy whatever it sent.
        out=$(timed "$TMP/gen" in_ns "$LOAD" --server "$addr:$port" --queries "$QUERIES" --rate "$RATE" --duration "$DURATION" --pace sleep --json)
        sent=$(json "$out" sent)
        recv=$(json "$out" received)
        lost=$(json "$out" lost)
    fi
    machine_snapshot "$TMP/threads.b"
    awk -v t=$(($(machine_ns "$TMP/threads.a" "$TMP/threads.b") + $(<"$TMP/gen"))) -v n="$recv" -v s="$sent" -v l="$lost" \
        'BEGIN { printf "%.2f %d %d %d\n", n ? t / 1e3 / n : 0, s, n, l }'
}

gens=()
[[ $LOADGEN != adox-load ]] && gens+=(dnsperf)
[[ $LOADGEN != dnsperf ]] && gens+=(adox-load)
declare -A results
for ((r = 0; r < ROUNDS; r++)); do
    for gen in "${gens[@]}"; do
        for t in "${targets[@]}"; do
            read -r name addr port <<<"$t"
            results[$gen.$name]+="$(one "$gen" "$name" "$addr" "$port")"$'\n'
        done
    done
done
in_frames=$(curl -s http://127.0.0.1:5391/metrics | awk '/^adox_xdp_answered_total/ { print $2 }')
udp=$(curl -s http://127.0.0.1:5391/metrics | awk '/^adox_client_queries_total\{protocol="udp"\}/ { print $2 }')
mode=$(grep -o 'mode="[a-z-]*"' "$TMP/adoxd-xdp.log" | head -1)

echo
echo "AF_XDP cache-hit cost, $(date -u +%F), $(nproc) cores, kernel $(uname -r); servers on cpu $SERVER_CPU, generator on cpu $LOAD_CPU in netns $VETH_NS over veth"
echo "offered $RATE qps for $DURATION s per run, $ROUNDS interleaved rounds, median by machine CPU per answer; queries: $QUERIES"
echo "adoxd-xdp: AF_XDP socket bound with ${mode:-no mode logged}; it answered ${in_frames:-?} of ${udp:-?} UDP queries in their frames"
for gen in "${gens[@]}"; do
    echo "$gen:"
    printf '  %-13s %12s %12s %12s %9s %9s %6s\n' target "machine_us/q" "minus_floor" "x socket" sent answered lost
    floor=$(sort -n <<<"${results[$gen.floor]}" | sed '/^$/d' | sed -n "$(((ROUNDS + 1) / 2))p" | cut -d' ' -f1)
    sock=$(sort -n <<<"${results[$gen.adoxd-socket]}" | sed '/^$/d' | sed -n "$(((ROUNDS + 1) / 2))p" | cut -d' ' -f1)
    for t in "${targets[@]}"; do
        read -r name _ _ <<<"$t"
        read -r cpu sent recv lost <<<"$(sort -n <<<"${results[$gen.$name]}" | sed '/^$/d' | sed -n "$(((ROUNDS + 1) / 2))p")"
        printf '  %-13s %12s %12s %12s %9s %9s %6s\n' "$name" "$cpu" \
            "$(awk -v a="$cpu" -v f="$floor" 'BEGIN { printf "%.2f", a - f }')" \
            "$(awk -v a="$cpu" -v f="$floor" -v s="$sock" 'BEGIN { printf "%.2f", (a - f) / (s - f) }')" "$sent" "$recv" "$lost"
    done
done
