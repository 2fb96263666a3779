# benches/lib.sh: what the benches over benches/world.py share (sourced, not run).
#
# Servers run one thread each, pinned to SERVER_CPU; load generators run on LOAD_CPU.
# Every server gets the same generous cache limits, so that what is compared is what a
# cached name costs, not where each one's default limit lies.

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Where the servers listen and the generators send (benches/veth.sh moves both).
SERVER_ADDR=${SERVER_ADDR:-127.0.0.1}
TCK=$(getconf CLK_TCK)
BENCH_TMP=$(mktemp -d /tmp/adox-bench.XXXXXX)
bench_pids=()

bench_cleanup() {
    local p
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    deploy/lab/peer unbound down "$WORLD" >/dev/null 2>&1 || true
    deploy/lab/peer pdns down "$WORLD" >/dev/null 2>&1 || true
    upstream_counter_off
    rm -rf -- "$BENCH_TMP"
}

# (Fields counted after the command's name, which may hold spaces: "nsd: server 1".)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# The CPU ticks of the world's NSD processes (each server's main, xfrd and worker processes).
nsd_ticks() {
    local p t=0
    for p in $(pgrep -f "^nsd -d -c $WORLD/conf/"); do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
    echo "$t"
}
# load_cmd CMD...: a load generator, pinned to LOAD_CPU (benches/veth.sh: in its namespace).
load_cmd() { taskset -c "$LOAD_CPU" "$@"; }
# Of those, the ticks spent in the kernel.
sys_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $13}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# per_answer TICKS ANSWERS: microseconds of CPU per answer.
per_answer() { awk -v t="$1" -v k="$TCK" -v n="$2" 'BEGIN { printf "%.1f", n ? t * 1e6 / k / n : 0 }'; }

# Queries the servers send to the world (127.54.0.0/16, port 53, UDP and TCP SYNs),
# counted by an iptables rule in OUTPUT: the same count for every resolver, at no cost
# to any of them.
UPSTREAM_RULE=(-d 127.54.0.0/16 -p udp --dport 53 -m comment --comment adox-bench-upstream)
UPSTREAM_RULE_TCP=(-d 127.54.0.0/16 -p tcp --dport 53 --syn -m comment --comment adox-bench-upstream)
upstream_counter_on() {
    command -v iptables >/dev/null || { echo "benches: needs iptables to count upstream queries (apt-get install iptables)" >&2; exit 1; }
    upstream_counter_off
    iptables -I OUTPUT "${UPSTREAM_RULE[@]}"
    iptables -I OUTPUT "${UPSTREAM_RULE_TCP[@]}"
}
upstream_counter_off() {
    while iptables -D OUTPUT "${UPSTREAM_RULE[@]}" 2>/dev/null; do :; done
    while iptables -D OUTPUT "${UPSTREAM_RULE_TCP[@]}" 2>/dev/null; do :; done
}
upstream_queries() {
    iptables -L OUTPUT -v -x -n | awk '/adox-bench-upstream/ { n += $1 } END { print n + 0 }'
}

# Answer-cache hits and misses as each server counts them ("hits misses"): adoxd's packet
# cache, Unbound's message cache, PowerDNS's packet cache.
cache_counts() {
    case $1 in
    adoxd*)
        curl -s "http://127.0.0.1:$2/metrics" |
            awk '/^adox_cache_hits_total/ { h += $NF } /^adox_cache_misses_total/ { m += $NF } END { print h + 0, m + 0 }'
        ;;
    unbound)
        unbound-control -c "$WORLD/peer-unbound/unbound.conf" stats_noreset |
            awk -F= '$1 == "total.num.cachehits" { h = $2 } $1 == "total.num.cachemiss" { m = $2 } END { print h + 0, m + 0 }'
        ;;
    pdns)
        rec_control --socket-dir="$WORLD/peer-pdns" get packetcache-hits packetcache-misses | tr '\n' ' '
        echo
        ;;
    esac
}

# start_adoxd PORT API_PORT [ARG...]: adoxd on the world's root, pinned, on SERVER_ADDR,
# with ADOXD_CONF_EXTRA (TOML lines) added to its configuration; sets SERVER_PID.
start_adoxd() {
    local port=$1 api=$2 state
    shift 2
    state=$(mktemp -d "$BENCH_TMP/state.XXXX")
    cat >"$BENCH_TMP/adoxd.toml" <<EOF
[cache]
record_cache_bytes = 8589934592
packet_cache_bytes = 4294967296
[server]
# The bench saturates the worker on purpose (a closed loop of misses); adoxd's
# overload shedding (which Unbound and PowerDNS have no equivalent of at this
# depth) would turn that into dropped queries.
overload_after_ms = 60000
${ADOXD_CONF_EXTRA:-}
EOF
    taskset -c "$SERVER_CPU" "${ADOXD:-target/release/adoxd}" --config "$BENCH_TMP/adoxd.toml" \
        --root-hints "$WORLD/root.hints" --trust-anchor "$WORLD/trust-anchor.ds" \
        --allow-upstream 127.0.0.0/8 --listen "$SERVER_ADDR:$port" --workers 1 --log-level warn \
        --api "127.0.0.1:$api" --state-dir "$state" "$@" &
    SERVER_PID=$!
    bench_pids+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        dig @"$SERVER_ADDR" -p "$port" +time=1 +tries=1 +short . SOA >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "adoxd did not start" >&2
    exit 1
}

# start_peer unbound|pdns PORT [validate|off]: a peer on the world's root, pinned, with
# caches as large as adoxd's here; sets SERVER_PID.
start_peer() {
    local impl=$1 port=$2 mode=${3:-validate} extra="$BENCH_TMP/peer-$1.conf"
    case $impl in
    unbound)
        {
            printf 'server:\n    msg-cache-size: 4g\n    rrset-cache-size: 8g\n    key-cache-size: 256m\n'
            printf '    neg-cache-size: 256m\n    num-queries-per-thread: 4096\n'
            [[ $SERVER_ADDR == 127.0.0.1 ]] ||
                printf '    interface: %s\n    access-control: %s/16 allow\n' "$SERVER_ADDR" "${SERVER_ADDR%.*.*}.0.0"
            [[ $mode == off ]] && printf '    module-config: "iterator"\n'
            printf 'remote-control:\n    control-enable: yes\n    control-use-cert: no\n'
            printf '    control-interface: %s/unbound.ctl\n' "$BENCH_TMP"
        } >"$extra"
        ;;
    pdns)
        {
            printf 'max-cache-entries=4000000\nmax-packetcache-entries=4000000\nmax-mthreads=4096\n'
            # "process" (the lab's) validates only for clients that ask (DO or AD);
            # dnsperf does not, and adoxd and Unbound validate every answer.
            if [[ $mode == off ]]; then printf 'dnssec=off\n'; else printf 'dnssec=validate\n'; fi
            # (Its default allow-from already has 10.0.0.0/8.)
            [[ $SERVER_ADDR == 127.0.0.1 ]] || printf 'local-address=127.0.0.1, %s\n' "$SERVER_ADDR"
        } >"$extra"
        ;;
    esac
    PEER_CONF_APPEND=$extra deploy/lab/peer "$impl" up "$WORLD" "$port" >/dev/null
    SERVER_PID=$(<"$WORLD/run/peer-$impl.pid")
    taskset -a -cp "$SERVER_CPU" "$SERVER_PID" >/dev/null
}

stop_peer() { deploy/lab/peer "$1" down "$WORLD" >/dev/null; }

# dnsperf_run FILE [DNSPERF_ARG...]: runs dnsperf once over FILE (`load_cmd`) against
# SERVER_ADDR:$PORT; sets DP_SENT DP_ANSWERED DP_LOST DP_AVG_US DP_SERVFAIL DP_QPS.
dnsperf_run() {
    local file=$1 out
    shift
    out=$(load_cmd dnsperf -s "$SERVER_ADDR" -p "$PORT" -d "$file" -n 1 -t 5 "$@" 2>&1)
    DP_SENT=$(sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' <<<"$out")
    DP_ANSWERED=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
    DP_LOST=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' <<<"$out")
    DP_AVG_US=$(sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' <<<"$out" | awk '{ printf "%d", $1 * 1e6 }')
    DP_QPS=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' <<<"$out" | awk '{ printf "%d", $1 }')
    DP_SERVFAIL=$(sed -n 's/.*SERVFAIL \([0-9]*\).*/\1/p' <<<"$out")
    DP_SERVFAIL=${DP_SERVFAIL:-0}
}
