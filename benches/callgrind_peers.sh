#!/usr/bin/env bash
# benches/callgrind_peers.sh: user-space instructions per cache hit, adoxd beside Unbound,
# under valgrind's callgrind on the same query stream. Instruction counts are stable
# where timings on a shared machine are not. Each server gets one thread, the lab's root
# and trust anchor, and a warm-up: dnsperf asks every name of the stream 3 times. The
# stream is the names of deploy/lab/names.txt that resolve (see below). Then the counters are zeroed, PASSES more passes are sent at RATE qps, and the
# counters are dumped. The figure is the whole process's instructions in that window
# (event loop, timers and all) divided by the answers. Then each server's top symbols
# by self cost. adoxd runs with RFC 9539 probing off (PROBING=on to keep it): Unbound
# does not probe, and the warm-up's probes (TLS handshakes) would land in the window.
#
#   benches/callgrind_peers.sh          # PASSES=20 (3,300 queries) at RATE=200
#   TOP=25 benches/callgrind_peers.sh
#   KEEP=1 benches/callgrind_peers.sh   # keeps the callgrind files (callgrind_annotate --tree=caller ...)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PASSES=${PASSES:-20}
RATE=${RATE:-200}
TOP=${TOP:-15}
PROBING=${PROBING:-off}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
for t in valgrind callgrind_control callgrind_annotate dnsperf kdig unbound; do
    command -v "$t" >/dev/null || { echo "callgrind_peers.sh: needs $t" >&2; exit 1; }
done
cargo build --release -q -p adoxd

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n ${KEEP:-} ]]; then echo "callgrind files kept in $WORK" >&2; else rm -rf -- "$WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Unbound with the lab peer's configuration (deploy/lab/unbound.conf.in), one thread.
sed -e "s|@PORT@|5396|g" -e "s|@DIR@|$LAB|g" -e "s|@WORK@|$WORK|g" -e "s|@NAME@|callgrind-unbound|g" \
    deploy/lab/unbound.conf.in >"$WORK/unbound.conf"
sed -i "s|logfile: .*|logfile: \"$WORK/unbound.log\"|" "$WORK/unbound.conf"
mkdir -p "$WORK/state"
printf '[transport]\nprobing = %s\n' "$([[ $PROBING == on ]] && echo true || echo false)" >"$WORK/adox.toml"

# The stream: the names of deploy/lab/names.txt that resolve (NOERROR or NXDOMAIN), so
# that every counted query is a cache hit. The lab's deliberately broken names (SERVFAIL:
# bogus, lame, unreachable) are left out: neither resolver caches those for long, so they
# would be resolved again inside the window, TLS handshakes and validation included.
target/release/adoxd --config "$WORK/adox.toml" --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
    --allow-upstream 127.0.0.0/8 --listen 127.0.0.1:5397 --workers 1 --log-level error --api off \
    --state-dir "$WORK/state" >/dev/null 2>&1 &
pid=$!
sleep 0.5
while read -r qname qtype; do
    [[ -z $qname || $qname == \#* ]] && continue
    rcode=$(kdig +time=5 +retry=0 @127.0.0.1 -p 5397 "$qname" "$qtype" 2>/dev/null | sed -n 's/.*status: \([A-Z]*\).*/\1/p')
    if [[ $rcode == NOERROR || $rcode == NXDOMAIN ]]; then echo "$qname $qtype"; fi
done <deploy/lab/names.txt >"$WORK/hits.txt"
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
rm -rf "$WORK/state"
mkdir -p "$WORK/state"
STREAM="$WORK/hits.txt"
echo "callgrind_peers.sh: $(wc -l <"$STREAM") of $(grep -c . deploy/lab/names.txt) names resolve" >&2

rows=()
# one NAME PORT COMMAND...: runs COMMAND under callgrind and counts the window.
one() {
    local name=$1 port=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$name.%p" "$@" >"$WORK/$name.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        kdig +short +time=1 +retry=0 @127.0.0.1 -p "$port" localhost. >/dev/null 2>&1 && break
        sleep 0.5
    done
    dnsperf -s 127.0.0.1 -p "$port" -d "$STREAM" -n 3 -Q 300 -t 10 >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null
    local out answered total
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$STREAM" -n "$PASSES" -Q "$RATE" -t 10 2>&1)
    callgrind_control -d "$pid" >/dev/null
    answered=$(awk '/Queries completed:/ { print $3 }' <<<"$out")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    total=$(awk '/^summary:/ { s += $2 } END { print s }' "$WORK"/cg-"$name".*.1)
    rows+=("$name $answered $total")
    echo "== $name: top $TOP symbols by self cost in the counted window" >"$WORK/top-$name"
    callgrind_annotate --inclusive=no --threshold=100 "$WORK"/cg-"$name".*.1 2>/dev/null |
        awk -v top="$TOP" '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ && n < top {
            # Thread entry frames carry the whole window (inlined callees): not self cost.
            pct = $2; gsub(/[()%]/, "", pct); if (pct + 0 < 90) { print; n++ } }' >>"$WORK/top-$name"
}

one adoxd 5395 target/release/adoxd --config "$WORK/adox.toml" --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" \
    --allow-upstream 127.0.0.0/8 --listen 127.0.0.1:5395 --workers 1 --log-level error --api off \
    --state-dir "$WORK/state"
one unbound 5396 unbound -d -c "$WORK/unbound.conf"

echo
echo "instructions per cache hit (callgrind, user space, whole process), $(date -u +%F): $PASSES passes over the $(wc -l <"$STREAM") names of deploy/lab/names.txt that resolve, at $RATE qps, after a warm-up; adoxd probing $PROBING"
printf '%-9s %9s %14s %10s %8s\n' server answered instructions "Ir/query" "x adoxd"
first=
for r in "${rows[@]}"; do
    read -r name n ir <<<"$r"
    per=$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", i / n }')
    first=${first:-$per}
    printf '%-9s %9s %14s %10s %8s\n' "$name" "$n" "$ir" "$per" "$(awk -v a="$per" -v b="$first" 'BEGIN { printf "%.3f", a / b }')"
done
echo
cat "$WORK/top-adoxd" "$WORK/top-unbound"
