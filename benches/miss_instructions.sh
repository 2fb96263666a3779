#!/usr/bin/env bash
# benches/miss_instructions.sh: user-space instructions per cache miss (valgrind's
# callgrind), for one or more adoxd builds side by side, over benches/world.py's world.
# Timings of a miss on this shared machine spread by 20 % between runs (benches/memory.sh);
# instruction counts repeat within about 1 %, so a change on the miss path shows here.
#
# For each build and each zone (mem.: unsigned; smem.: signed, validated): a fresh adoxd
# under callgrind, one worker; one name primes the zone's delegation and keys; the
# counters are zeroed; dnsperf (a closed loop of 10) asks COUNT names of the zone that are
# not cached yet, each once; the counters are dumped. The figure is the whole process's
# instructions in that window divided by the answers.
#
#   benches/miss_instructions.sh                          # target/release/adoxd, COUNT=2000
#   BUILDS="base=/tmp/adoxd-base new=target/release/adoxd" benches/miss_instructions.sh
#   KEEP=1 benches/miss_instructions.sh                   # keeps the callgrind files
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORLD=${WORLD:-/tmp/adox-world}
COUNT=${COUNT:-2000}
BUILDS=${BUILDS:-adoxd=target/release/adoxd}
ZONES=${ZONES:-mem smem}
for t in valgrind callgrind_control dnsperf kdig; do
    command -v "$t" >/dev/null || { echo "miss_instructions.sh: needs $t (valgrind, dnsperf, knot-dnsutils)" >&2; exit 1; }
done
# shellcheck source=benches/lib.sh
source benches/lib.sh
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n ${KEEP:-} ]]; then echo "callgrind files kept in $BENCH_TMP" >&2 && BENCH_TMP=/nonexistent; fi
    bench_cleanup
}
trap cleanup EXIT

cargo build --release -q -p adoxd
if ! [[ -f $WORLD/world.env ]] || ! grep -q "^mem_names=[1-9]" "$WORLD/world.env"; then
    benches/world.py build "$WORLD" --mem-names 1000000
fi
benches/world.py up "$WORLD"
for z in $ZONES; do
    benches/world.py mem-names "$WORLD" "$BENCH_TMP/all-$z.txt" --zone "$z."
    # n0 primes; the counted names follow it.
    sed -n "2,$((COUNT + 1))p" "$BENCH_TMP/all-$z.txt" >"$BENCH_TMP/$z.txt"
done
printf '[cache]\nrecord_cache_bytes = 1073741824\n[server]\noverload_after_ms = 60000\n' >"$BENCH_TMP/adoxd.toml"

PORT=5365
rows=()
for build in $BUILDS; do
    label=${build%%=*} bin=${build#*=}
    for z in $ZONES; do
        state=$(mktemp -d "$BENCH_TMP/state.XXXX")
        valgrind --tool=callgrind --callgrind-out-file="$BENCH_TMP/cg-$label-$z.%p" \
            "$bin" --config "$BENCH_TMP/adoxd.toml" --root-hints "$WORLD/root.hints" \
            --trust-anchor "$WORLD/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
            --listen "127.0.0.1:$PORT" --workers 1 --log-level error --api off \
            --state-dir "$state" >"$BENCH_TMP/$label-$z.out" 2>&1 &
        pid=$!
        for _ in $(seq 1 120); do
            kdig +short +time=1 +retry=0 @127.0.0.1 -p "$PORT" localhost. >/dev/null 2>&1 && break
            sleep 0.5
        done
        kdig +short +time=10 +retry=1 @127.0.0.1 -p "$PORT" "n0.$z." A >/dev/null
        callgrind_control -z "$pid" >/dev/null
        out=$(dnsperf -s 127.0.0.1 -p "$PORT" -d "$BENCH_TMP/$z.txt" -n 1 -q 10 -t 10 2>&1)
        callgrind_control -d "$pid" >/dev/null
        answered=$(awk '/Queries completed:/ { print $3 }' <<<"$out")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=
        total=$(awk '/^summary:/ { s += $2 } END { print s }' "$BENCH_TMP"/cg-"$label-$z".*.1)
        rows+=("$label $z $answered $total")
        echo "miss_instructions.sh: ${rows[-1]}" >&2
    done
done

echo
echo "instructions per cache miss (callgrind, user space, whole process), $(date -u +%F): $COUNT distinct names per zone, dnsperf closed loop of 10, one worker"
printf '%-10s %-6s %9s %14s %10s %8s\n' build zone answered instructions "Ir/miss" "x first"
declare -A first
for r in "${rows[@]}"; do
    read -r label z n ir <<<"$r"
    per=$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", n ? i / n : 0 }')
    first[$z]=${first[$z]:-$per}
    printf '%-10s %-6s %9s %14s %10s %8s\n' "$label" "$z." "$n" "$ir" "$per" \
        "$(awk -v a="$per" -v b="${first[$z]}" 'BEGIN { printf "%.3f", b ? a / b : 0 }')"
done
