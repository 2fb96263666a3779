#!/usr/bin/env bash
# benches/soak.sh: hours of realistic load, and whether adoxd's memory stays flat.
#
# One adoxd (1 worker on cpu 0; caches of CACHE_MIB each so that they fill during the
# warm-up) resolves through the lab while adox-load (cpu 1) offers RATE_PCT % of the
# capacity measured first on the same mix (the highest fixed rate answered in full). The
# mix, per 100 queries:
#   50 cache hits     the lab's names (deploy/lab/names.txt)
#   20 misses         unique names in alpha.lab. (signed: NXDOMAIN proven by NSEC3/NSEC)
#    8 misses         unique names in ed.lab. (ED25519, NSEC)
#   10 misses         unique names in dot.lab. (a strict DoT policy, PKIX)
#    2 misses         unique names in doq.lab. (opportunistic: RFC 9539 probing finds DoQ)
#   10 misses         unique names directly under lab.
# The load runs in segments of SEGMENT s, each with names of its own, so a miss stays a
# miss all along. Beside it, a policy writer POSTs a policy every 2 s and DELETEs every
# other one; each acknowledged write is remembered.
#
# RSS (VmRSS) and the bytes the two caches charge (adox_cache_size_bytes) are sampled every
# 10 s. The caches fill to their budgets on their own clock: the record cache here stays
# almost empty until the lab's first negative TTLs and NSEC spans expire (SOA minimum 300 s;
# before that every miss is denied from the spans, RFC 8198) and then fills in seconds. So
# the leak check is on the memory the caches do not account for: RSS minus their charge.
# Pass criteria, checked at the end (exit 1 if one fails):
#   - adoxd is still running (no crash) and answered >= 99 % of the queries;
#   - after WARMUP s, the slope (Theil-Sen) of RSS minus the caches' charge is under
#     SLOPE_MAX_KIB KiB per 10 min (1024; the CI version allows 4096: two minutes of samples
#     cannot resolve less); the slope of RSS itself is printed beside it;
#   - the policies on the server equal the acknowledged writes, also after a kill -9 and a
#     restart on the same state directory (0 lost acknowledged writes).
#
#   benches/soak.sh                           # 30 min: DURATION=1800 WARMUP=300
#   DURATION=180 WARMUP=60 benches/soak.sh    # the CI version (.ci/run)
# Root (the lab). Results: perf/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-1800}
WARMUP=${WARMUP:-300}
SEGMENT=${SEGMENT:-60}
RATE_PCT=${RATE_PCT:-80}
CACHE_MIB=${CACHE_MIB:-32}
SLOPE_MAX_KIB=${SLOPE_MAX_KIB:-1024}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
# The daemon under test (another build, to compare two side by side).
ADOXD=${ADOXD:-target/release/adoxd}
PORT=5360
API=5361
TOKEN=adox-soak-admin-token-0123456789

cargo build --release -q -p adoxd -p adox-benches
started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid= sampler= writer=
cleanup() {
    for p in $sampler $writer $pid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -z ${KEEP_WORK:-} ]]; then rm -rf -- "$WORK"; else echo "work files kept in $WORK"; fi
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

printf '%s\n' "$TOKEN" >"$WORK/admin.tokens"
: >"$WORK/writes.txt"
chmod 600 "$WORK/admin.tokens"
# The capacity is measured with overload shedding off (a flat-out closed-loop generator
# would wait out every dropped query, and the hits would count for the misses dropped);
# the soak itself runs with the default.
write_config() {
    cat >"$WORK/adox.toml" <<EOF
[server]
overload_after_ms = $1

[cache]
record_cache_bytes = $((CACHE_MIB << 20))
packet_cache_bytes = $((CACHE_MIB << 20))

[transport]
ca_file = "$LAB/tls/ca.pem"

[[policy]]
zone = "dot.lab"
nameserver = "ns1.dot.lab"
mode = "strict"
transports = ["dot"]
auth = "pkix"
EOF
}

start_adoxd() {
    taskset -c 0 "$ADOXD" --config "$WORK/adox.toml" --root-hints "$LAB/root.hints" \
        --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
        --listen "127.0.0.1:$PORT" --api "127.0.0.1:$API" --api-token-file "$WORK/admin.tokens" \
        --workers 1 --log-level info --state-dir "$WORK/state" 2>>"$WORK/adoxd.log" &
    pid=$!
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$API/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "soak: adoxd did not become ready" >&2
    exit 1
}

# One segment's queries, shuffled: names of its own for every miss.
mix() {
    local tag=$1 n=$2
    awk -v tag="$tag" -v n="$n" '
        NR == FNR { if ($0 !~ /^#/ && NF >= 2) hits[h++] = $1 " " $2; next }
        END {
            srand(tag + 0)
            for (i = 0; i < n; i++) {
                r = i % 100
                if (r < 50) print hits[int(rand() * h)]
                else if (r < 70) printf "m%s-%d.alpha.lab. A\n", tag, i
                else if (r < 78) printf "m%s-%d.ed.lab. A\n", tag, i
                else if (r < 88) printf "m%s-%d.dot.lab. A\n", tag, i
                else if (r < 90) printf "m%s-%d.doq.lab. A\n", tag, i
                else printf "m%s-%d.lab. A\n", tag, i
            }
        }' deploy/lab/names.txt /dev/null | shuf --random-source=<(yes "$tag") >"$WORK/mix-$tag.txt"
}

json() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
load() { taskset -c 1 target/release/adox-load --server "127.0.0.1:$PORT" --timeout-ms 2000 --json "$@"; }

write_config 60000
start_adoxd
# Warm the delegations and the DoT connection, then measure the capacity on this mix.
mix 0 20000
load --queries "$WORK/mix-0.txt" --rate 2000 --duration 5 >/dev/null
mix 1 400000
cap_out=$(load --queries "$WORK/mix-1.txt" --max-outstanding 200 --duration 10)
flat=$(awk -v a="$(json "$cap_out" received)" 'BEGIN { printf "%d", a / 10 }')
kill "$pid"
wait "$pid" 2>/dev/null || true
write_config 200
start_adoxd
load --queries "$WORK/mix-0.txt" --rate 2000 --duration 5 >/dev/null
# Evenly paced queries cost more than flat-out batches: the capacity is the highest fixed
# rate, in steps of 10 % of the flat-out figure, that is answered in full (>= 99.5 %).
capacity=0
for pct in 40 50 60 70 80 90 100 110; do
    r=$((flat * pct / 100))
    mix "s$pct" $((r * 4 + 1000))
    out=$(load --queries "$WORK/mix-s$pct.txt" --rate "$r" --duration 4)
    rm -f "$WORK/mix-s$pct.txt"
    awk -v a="$(json "$out" received)" -v s="$(json "$out" sent)" 'BEGIN { exit !(a >= 0.995 * s) }' || break
    capacity=$r
done
((capacity > 0)) || { echo "soak: not even 40 % of the flat-out rate (${flat} qps) is answered in full" >&2; exit 1; }
rate=$((capacity * RATE_PCT / 100))
echo "soak: capacity on the mix ${capacity} qps at a fixed rate (${flat} flat out); offering ${rate} qps for ${DURATION} s"

# Every 10 s: seconds since start, RSS in KiB, and the caches' charge in KiB (packet and
# record caches together).
t0=$(date +%s)
(
    while kill -0 "$pid" 2>/dev/null; do
        charged=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API/metrics" |
            awk '/^adox_cache_size_bytes/ { b += $2; n++ } END { if (n) printf "%d", b / 1024 }')
        printf '%d %s %s\n' $(($(date +%s) - t0)) "$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")" "$charged"
        sleep 10
    done
) >"$WORK/rss.txt" &
sampler=$!

# Policy writes: POST every 2 s, DELETE every other one; acknowledged ids are kept. The
# writer stops itself between writes when asked (a stop file): killing it mid-request would
# leave a write done on the server but not recorded here, which the check below would count
# as lost or unexpected.
(
    i=0
    while [[ ! -e $WORK/stop-writer ]]; do
        body="{\"zone\":\"p$i.soak.invalid\",\"mode\":\"cleartext\",\"comment\":\"soak\"}"
        out=$(curl -s --max-time 10 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -w '\n%{http_code}' -X POST --data "$body" "http://127.0.0.1:$API/v1/policies" || true)
        code=${out##*$'\n'}
        id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"${out%$'\n'*}" 2>/dev/null || true)
        if [[ $code == 201 && -n $id ]]; then
            echo "+ $id" >>"$WORK/writes.txt"
            if ((i % 2)); then
                code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
                    -X DELETE "http://127.0.0.1:$API/v1/policies/$id" || true)
                if [[ $code == 204 ]]; then echo "- $id" >>"$WORK/writes.txt"; fi
            fi
        fi
        i=$((i + 1))
        sleep 2
    done
) &
writer=$!

sent=0 answered=0 servfail=0 seg=2
end=$((t0 + DURATION))
while (($(date +%s) < end)); do
    left=$((end - $(date +%s)))
    d=$((left < SEGMENT ? left : SEGMENT))
    ((d > 0)) || break
    mix "$seg" $((rate * d + 1000))
    out=$(load --queries "$WORK/mix-$seg.txt" --rate "$rate" --duration "$d")
    rm -f "$WORK/mix-$seg.txt"
    sent=$((sent + $(json "$out" sent)))
    answered=$((answered + $(json "$out" received)))
    servfail=$((servfail + $(json "$out" servfail)))
    seg=$((seg + 1))
done
touch "$WORK/stop-writer"
wait "$writer" 2>/dev/null || true
writer=
sleep 1

fail=0
alive=yes
kill -0 "$pid" 2>/dev/null || { alive=no; fail=1; }
# Slopes after the warm-up, in KiB per 10 minutes: the median of the slopes between every
# pair of samples (Theil-Sen), which one spike does not move; of `rss` or of `unexplained`
# (RSS minus the caches' charge). A sample whose scrape failed is left out of both.
theil_sen() {
    awk -v w="$WARMUP" -v what="$1" 'BEGIN { n = 0 }
        $1 >= w && $2 > 0 && NF >= 3 { t[n] = $1; r[n] = (what == "rss") ? $2 : $2 - $3; n++ }
        END { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) printf "%.3f %d %d %d\n", (r[j] - r[i]) / (t[j] - t[i]) * 600, n, r[0], r[n - 1] }' "$WORK/rss.txt" |
        sort -g | awk '{ s[NR] = $1; n = $2; f = $3; l = $4 } END { if (NR == 0) { print "nan 0 0 0"; exit } printf "%.0f %d %d %d\n", (NR % 2) ? s[(NR + 1) / 2] : (s[NR / 2] + s[NR / 2 + 1]) / 2, n, f, l }'
}
read -r rss_slope samples first last < <(theil_sen rss)
read -r slope _ ufirst ulast < <(theil_sen unexplained)
read -r charged_first charged_last < <(awk -v w="$WARMUP" '$1 >= w && NF >= 3 { if (!n++) f = $3; l = $3 } END { print f + 0, l + 0 }' "$WORK/rss.txt")
ratio=$(awk -v a="$answered" -v s="$sent" 'BEGIN { printf "%.2f", s ? 100 * a / s : 0 }')
awk -v r="$ratio" 'BEGIN { exit !(r >= 99) }' || fail=1
if [[ $slope == nan ]] || ((slope >= SLOPE_MAX_KIB)); then fail=1; fi

# Acknowledged writes against what the server holds, before and after kill -9 + restart.
expected=$(awk '$1 == "+" { live[$2] = 1 } $1 == "-" { delete live[$2] } END { for (k in live) print k }' "$WORK/writes.txt" | sort)
held() {
    curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API/v1/policies" | python3 -c '
import json, sys
body = json.load(sys.stdin)
items = body["policies"] if isinstance(body, dict) else body
print("\n".join(p["id"] for p in items if p.get("comment") == "soak"))' | sort
}
acked=$(wc -l <"$WORK/writes.txt")
lost_live=$(comm -23 <(echo "$expected") <(held) | sed '/^$/d' | wc -l)
extra_live=$(comm -13 <(echo "$expected") <(held) | sed '/^$/d' | wc -l)
if [[ $alive == yes ]]; then kill -9 "$pid"; wait "$pid" 2>/dev/null || true; fi
start_adoxd
lost_restart=$(comm -23 <(echo "$expected") <(held) | sed '/^$/d' | wc -l)
extra_restart=$(comm -13 <(echo "$expected") <(held) | sed '/^$/d' | wc -l)
((lost_live + extra_live + lost_restart + extra_restart == 0)) || fail=1

echo
echo "soak, $(date -u +%F): ${DURATION} s at ${rate} qps (${RATE_PCT} % of ${capacity}), caches ${CACHE_MIB} MiB each, 1 worker"
echo "  queries sent ${sent}, answered ${answered} (${ratio} %), servfail ${servfail}"
echo "  RSS after ${WARMUP} s warm-up: ${first} KiB -> ${last} KiB over ${samples} samples; slope ${rss_slope} KiB per 10 min"
echo "  caches' charge ${charged_first} KiB -> ${charged_last} KiB; RSS minus charge ${ufirst} KiB -> ${ulast} KiB, slope ${slope} KiB per 10 min (limit ${SLOPE_MAX_KIB})"
echo "  adoxd alive at the end: ${alive}"
echo "  policy writes acknowledged ${acked}; lost ${lost_live}, unexpected ${extra_live}; after kill -9 and restart: lost ${lost_restart}, unexpected ${extra_restart}"
if ((fail)); then
    echo "soak: FAILED" >&2
    exit 1
fi
echo "soak: passed"
