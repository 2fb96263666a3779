#!/usr/bin/env bash
# benches/signal_wait.sh: what waiting for a nameserver's _dns signal before the first
# query to it (transport.signal_wait) costs a cold cache, side by side in one run.
#
# Each round starts one fresh adoxd per mode (none, signed, all; cold cache, empty state
# directory, the order rotated from round to round) and sends it the first query of every
# lab zone that answers (www.ZONE A, one at a time, each after the previous answer) with
# kdig, which reports each reply time to 0.1 ms. The figures are, per mode, the median over
# the rounds of: the sum of the first-query times (a cold start's cost), their median and
# 90th percentile, the SERVFAILs, and the waits adoxd counted (learnt in time / ran out).
# DELAY_MS > 0 puts netem on lo for the run (every loopback packet delayed DELAY_MS each
# way, so an exchange costs 2 x DELAY_MS as it would across a network; removed at exit).
# Needs root (the lab, netem) and the lab's packages (kdig from knot-dnsutils).
#
#   benches/signal_wait.sh                  # ROUNDS=5 DELAY_MS=0
#   DELAY_MS=10 benches/signal_wait.sh      # 20 ms round trips
#   ADOXD=/path/to/adoxd benches/signal_wait.sh   # another build (to compare two)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-5}
DELAY_MS=${DELAY_MS:-0}
MODES=(none signed all)
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}

ADOXD=${ADOXD:-target/release/adoxd}
if [[ $ADOXD == target/release/adoxd ]]; then cargo build --release -q -p adoxd; fi
started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid=
netem=0
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if ((netem)); then tc qdisc del dev lo root 2>/dev/null || true; fi
    if [[ -z ${KEEP_WORK:-} ]]; then rm -rf -- "$WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Every zone of the lab with a server (servers.txt), but for the root, lab. itself and
# the zones broken on purpose or whose server is hostile: the first query of a cold start
# to each of them.
awk '!/^#/ && NF == 4 && $4 != "." && $4 != "lab." { print $4 }' deploy/lab/servers.txt | sort -u |
    grep -Ev '^(expired|wrongds|nokey|nosig|badnsec3|notyet|nonsec|bogussig|tlsapkix|wdoh|badcert|tls12|dead)\.lab\.$' |
    sed 's/^/www./' >"$WORK/names"

if ((DELAY_MS > 0)); then
    tc qdisc add dev lo root netem delay "${DELAY_MS}ms"
    netem=1
fi

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# one MODE ROUND: a cold adoxd with signal_wait = MODE, the names once; appends
# "sum_ms p50_ms p90_ms servfail waits timeouts" to $WORK/MODE.
one() {
    local mode=$1 round=$2 dir="$WORK/$1-$2" name ms rcode times=() servfail=0 log
    mkdir -p "$dir/state"
    printf '[transport]\nsignal_wait = "%s"\n' "$mode" >"$dir/adox.toml"
    "$ADOXD" --config "$dir/adox.toml" --root-hints "$LAB/root.hints" \
        --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
        --listen 127.0.0.1:5370 --workers 1 --api off --state-dir "$dir/state" \
        --log-level info 2>"$dir/log" &
    pid=$!
    for _ in $(seq 50); do
        grep -q "ready" "$dir/log" 2>/dev/null && break
        sleep 0.1
    done
    while read -r name; do
        out=$(kdig @127.0.0.1 -p 5370 +retry=0 +timeout=10 "$name" A 2>&1 || true)
        ms=$(sed -n 's/^;; From .* in \([0-9.]*\) ms$/\1/p' <<<"$out")
        rcode=$(sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out" | head -1)
        [[ -n $ms ]] || ms=10000
        [[ $rcode == NOERROR || $rcode == NXDOMAIN ]] || servfail=$((servfail + 1))
        times+=("$ms")
    done <"$WORK/names"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    log=$(grep ' stats' "$dir/log" | tail -1)
    printf '%s\n' "${times[@]}" | sort -n >"$dir/times"
    awk -v sf="$servfail" -v w="$(sed -n 's/.*signal_waits=\([0-9]*\).*/\1/p' <<<"$log")" \
        -v t="$(sed -n 's/.*signal_wait_timeouts=\([0-9]*\).*/\1/p' <<<"$log")" \
        '{ v[NR] = $1; s += $1 } END { printf "%.1f %.2f %.2f %d %s %s\n", s, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], sf, w, t }' \
        "$dir/times" >>"$WORK/$mode"
}

for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < ${#MODES[@]}; i++)); do
        one "${MODES[$(((i + r) % ${#MODES[@]}))]}" "$r"
    done
done

echo
echo "signal_wait on a cold cache, $(date -u +%F), $(nproc) cores; $(wc -l <"$WORK/names") zones' first query (www.ZONE A), one at a time"
echo "netem delay on lo: ${DELAY_MS} ms each way; $ROUNDS rounds, a fresh adoxd per mode and round (order rotated); medians over rounds"
printf '%-8s %10s %8s %8s %9s %6s %9s   %s\n' mode "sum_ms" "p50_ms" "p90_ms" servfail waits timeouts "rounds (sum p50 p90 servfail waits timeouts)"
for m in "${MODES[@]}"; do
    printf '%-8s %10s %8s %8s %9s %6s %9s   %s\n' "$m" \
        "$(cut -d' ' -f1 "$WORK/$m" | median)" "$(cut -d' ' -f2 "$WORK/$m" | median)" \
        "$(cut -d' ' -f3 "$WORK/$m" | median)" "$(cut -d' ' -f4 "$WORK/$m" | median)" \
        "$(cut -d' ' -f5 "$WORK/$m" | median)" "$(cut -d' ' -f6 "$WORK/$m" | median)" \
        "$(tr '\n' '|' <"$WORK/$m")"
done
