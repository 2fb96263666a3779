#!/usr/bin/env bash
# benches/rpz_load.sh: what a large Response Policy Zone costs adoxd: load time and memory
# of a policy zone of NAMES names (1 million by default) read from a file and transferred
# by AXFR from a BIND 9 primary, then the time of an IXFR of K changes for several K (the
# table is bucketed, so an IXFR costs O(k), not O(zone)).
#
# The zone: NAMES QNAME triggers `nNNN.block.example CNAME .`, one in ten a wildcard
# (`*.wNNN.block.example`), one in a hundred an RPZ-IP trigger. adoxd runs on the lab's
# root with one worker; memory is VmRSS once the zone is in force, against the same adoxd
# without [rpz] (the median of ROUNDS interleaved rounds).
#
#   benches/rpz_load.sh                 # NAMES=1000000 ROUNDS=3 KS="10 100 1000"
# (one nsupdate message per K, so K stays under about 2,000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NAMES=${NAMES:-1000000}
# Seconds before memory is read: the allocator returns what loading freed after ~10 s.
SETTLE=${SETTLE:-15}
ROUNDS=${ROUNDS:-3}
KS=${KS:-"10 100 1000"}
LAB=${ADOX_LAB_DIR:-/tmp/adox-lab}
for t in named nsupdate dig; do
    command -v "$t" >/dev/null || { echo "rpz_load.sh: needs $t (bind9, bind9-dnsutils)" >&2; exit 1; }
done

cargo build --release -q -p adoxd
ADOXD=target/release/adoxd

started_lab=0
if ! deploy/lab/lab status "$LAB" >/dev/null 2>&1; then
    deploy/lab/lab up "$LAB" >/dev/null
    started_lab=1
fi
WORK=$(mktemp -d)
pid= named_pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n $named_pid ]]; then kill "$named_pid" 2>/dev/null || true; fi
    rm -rf -- "$WORK"
    if ((started_lab)); then deploy/lab/lab down "$LAB" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The zone file.
{
    printf '$TTL 300\n@ SOA localhost. admin.rpz.bench. 1 3600 600 86400 60\n@ NS localhost.\n'
    awk -v n="$NAMES" 'BEGIN {
        for (i = 0; i < n; i++) {
            if (i % 100 == 99) printf "32.%d.%d.%d.10.rpz-ip CNAME .\n", i % 256, int(i / 256) % 256, int(i / 65536) % 256
            else if (i % 10 == 9) printf "*.w%d.block.example CNAME *.\n", i
            else printf "n%d.block.example CNAME .\n", i
        }
    }'
} >"$WORK/rpz.db"
echo "rpz_load.sh: zone of $NAMES triggers, $(du -h "$WORK/rpz.db" | cut -f1) of master file"

free_port() { python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts adoxd with config $1; waits for "adoxd ready"; sets pid and writes the seconds it
# took to $WORK/secs.
start_adoxd() {
    local t0 log=$WORK/adoxd.log
    : >"$log"
    t0=$(date +%s.%N)
    "$ADOXD" --config "$1" --listen 127.0.0.1:0 --api off --workers 1 --state-dir "$WORK/state" \
        --root-hints "$LAB/root.hints" --trust-anchor "$LAB/trust-anchor.ds" --allow-upstream 127.0.0.0/8 \
        --log-level info >/dev/null 2>"$log" &
    pid=$!
    for _ in $(seq 1 1200); do
        grep -q 'adoxd ready' "$log" && break
        sleep 0.05
    done
    grep -q 'adoxd ready' "$log" || { echo "adoxd did not start:" >&2; cat "$log" >&2; exit 1; }
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }' >"$WORK/secs"
}
stop_adoxd() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

mkdir -p "$WORK/state"
: >"$WORK/none.toml"
printf '[[rpz.zone]]\nname = "rpz.bench."\nfile = "%s"\n' "$WORK/rpz.db" >"$WORK/file.toml"
: >"$WORK/base.txt"
: >"$WORK/file.txt"
for r in $(seq 1 "$ROUNDS"); do
    start_adoxd "$WORK/none.toml"
    sleep "$SETTLE"
    rss_kib "$pid" >>"$WORK/base.txt"
    stop_adoxd
    start_adoxd "$WORK/file.toml"
    secs=$(cat "$WORK/secs")
    sleep "$SETTLE"
    echo "$secs $(rss_kib "$pid") $(hwm_kib "$pid")" >>"$WORK/file.txt"
    stop_adoxd
    echo "  round $r: without $(tail -1 "$WORK/base.txt") KiB; with the file $(tail -1 "$WORK/file.txt") (s, KiB, peak KiB)"
done
base=$(median <"$WORK/base.txt")
file_s=$(cut -d' ' -f1 "$WORK/file.txt" | median)
file_kib=$(cut -d' ' -f2 "$WORK/file.txt" | median)
file_hwm=$(cut -d' ' -f3 "$WORK/file.txt" | median)

# AXFR from a BIND primary (on 127.0.0.1 at a free port: named listens only on addresses
# of an interface, and the lab's own are taken), then IXFRs.
notify=$(free_port)
port=$(free_port)
cat >"$WORK/named.conf" <<EOF
options { directory "$WORK"; pid-file "$WORK/named.pid"; lock-file "$WORK/named.lock";
  session-keyfile "$WORK/session.key"; managed-keys-directory "$WORK";
  listen-on port $port { 127.0.0.1; }; listen-on-v6 { none; }; automatic-interface-scan no;
  recursion no; dnssec-validation no; allow-transfer { any; };
  notify-delay 0; max-journal-size unlimited; };
controls { };
logging { channel f { file "$WORK/named.log"; severity info; }; category default { f; }; };
zone "rpz.bench." { type primary; file "$WORK/rpz.db"; allow-update { 127.0.0.0/8; };
  notify explicit; also-notify { 127.0.0.1 port $notify; }; };
EOF
named -4 -f -n 1 -c "$WORK/named.conf" &
named_pid=$!
for _ in $(seq 1 600); do
    dig @127.0.0.1 -p "$port" +short +time=1 +tries=1 rpz.bench. SOA | grep -q '^localhost\.' && break
    sleep 0.2
done
printf '[rpz]\nnotify_listen = "127.0.0.1:%s"\n[[rpz.zone]]\nname = "rpz.bench."\nprimaries = ["127.0.0.1:%s"]\n' "$notify" "$port" \
    >"$WORK/xfr.toml"
start_adoxd "$WORK/xfr.toml"
wait_serial() {
    for _ in $(seq 1 1200); do
        line=$(grep "policy zone transferred" "$WORK/adoxd.log" | grep "serial=$1 " | tail -1 || true)
        [[ -n $line ]] && { echo "$line"; return; }
        sleep 0.05
    done
    echo "rpz_load.sh: serial $1 never arrived" >&2
    cat "$WORK/adoxd.log" >&2
    exit 1
}
field() { sed -E "s/.*$1=([0-9]+).*/\\1/" <<<"$2"; }
line=$(wait_serial 1)
axfr_ms=$(field took_ms "$line")
sleep "$SETTLE"
xfr_kib=$(rss_kib "$pid")
echo "  AXFR of $NAMES triggers: $axfr_ms ms, RSS $xfr_kib KiB"
serial=1
ixfr=()
for k in $KS; do
    serial=$((serial + 1))
    {
        echo "server 127.0.0.1 $port"
        echo "zone rpz.bench."
        awk -v k="$k" -v s="$serial" 'BEGIN { for (i = 0; i < k; i++) printf "update add x%d-%d.block.example.rpz.bench. 300 CNAME .\n", s, i }'
        echo "send"
    } | nsupdate
    line=$(wait_serial "$serial")
    ixfr+=("$k:$(field took_ms "$line")")
    echo "  IXFR of $k changes: $(field took_ms "$line") ms ($(field changes "$line") records applied)"
done

echo
echo "rpz_load, $(date -u +%F): a policy zone of $NAMES triggers (one worker)"
echo "  from a file: in force at start after $file_s s (median of $ROUNDS; adoxd without [rpz] starts in well under a second)"
echo "  memory: $file_kib KiB with it, $base KiB without: $(((file_kib - base) / 1024)) MiB, $(((file_kib - base) * 1024 / NAMES)) bytes per trigger (peak while loading $file_hwm KiB)"
echo "  AXFR from BIND 9: $axfr_ms ms; RSS $xfr_kib KiB"
echo "  IXFR: ${ixfr[*]} (changes:ms)"
