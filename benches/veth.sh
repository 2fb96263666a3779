# benches/veth.sh: a load generator in a network namespace of its own, reaching each target
# over its own veth pair, for the benches that measure a server over a (virtual) Ethernet
# link and the AF_XDP path (sourced, not run; root, clang, libbpf-dev, libxdp-dev).
#
# Pair N: xbN on the host (10.97.N.2/24, where the target listens) and xbcN in the
# namespace VETH_NS (10.97.N.1/24, the generator's). The generator's ends all run
# benches/xdp/pass.bpf.c: veth delivers XDP_TX frames (the AF_XDP path's answers, the
# floor's bounces) only to a peer with an XDP program of its own, so every answer arrives
# the same way. `veth_floor N` attaches benches/xdp/echo.bpf.c to xbN: each query goes
# straight back from the driver with QR set, no DNS work at all: the floor.

VETH_NS=adox-xb
VETH_PAIRS=0
VETH_OBJ=

# veth_up N DIR: builds the XDP programs into DIR and makes pairs 1..N.
veth_up() {
    local n=$1 i prog
    VETH_OBJ=$2
    for prog in echo pass; do
        clang -O2 -g -target bpf -I "/usr/include/$(uname -m)-linux-gnu" -c "benches/xdp/$prog.bpf.c" -o "$VETH_OBJ/$prog.o"
    done
    veth_down
    VETH_PAIRS=$n
    ip netns add "$VETH_NS"
    ip -n "$VETH_NS" link set lo up
    for ((i = 1; i <= n; i++)); do
        ip link add "xb$i" type veth peer name "xbc$i"
        ip link set "xbc$i" netns "$VETH_NS"
        ip addr add "10.97.$i.2/24" dev "xb$i"
        ip link set "xb$i" up
        ip -n "$VETH_NS" addr add "10.97.$i.1/24" dev "xbc$i"
        ip -n "$VETH_NS" link set "xbc$i" up
        ip -n "$VETH_NS" link set dev "xbc$i" xdpdrv obj "$VETH_OBJ/pass.o" sec xdp
    done
}

# veth_floor N: the echo floor on pair N's host end.
veth_floor() { ip link set dev "xb$1" xdpdrv obj "$VETH_OBJ/echo.o" sec xdp; }

# veth_down: removes the namespace and every pair (also those of an interrupted run).
veth_down() {
    local i
    ip netns del "$VETH_NS" 2>/dev/null || true
    for ((i = 1; i <= 3 || i <= VETH_PAIRS; i++)); do ip link del "xb$i" 2>/dev/null || true; done
}

# in_ns CMD...: CMD in the generator's namespace, pinned to LOAD_CPU.
in_ns() { taskset -c "$LOAD_CPU" ip netns exec "$VETH_NS" "$@"; }

# The machine's busy time, precisely. This kernel accounts CPU by ticks (250 Hz), and a
# server that wakes 10,000 times a second for a few microseconds is mostly between them:
# /proc/stat's busy ticks then miss or double most of its work (a 60 s run of the workload
# gave 14 us per answer there where the server's own runtime was 27). The scheduler's
# runtime of each thread (/proc/PID/task/TID/schedstat, ns) is exact, and the kernel's
# receive and send work on veth runs in the context of the thread that sends (softirq on
# its way out), so it is in there too. `machine_snapshot FILE` notes every thread's
# runtime; `machine_ns A B` is the sum over threads of their runtime between the two
# (threads born in between in full); a thread that ended in between is not in it: time the
# load generator with `timed` and add its own.
machine_snapshot() {
    python3 - "$1" <<'PY'
import glob, sys
rows = []
for f in glob.glob("/proc/[0-9]*/task/[0-9]*/schedstat"):
    try:
        rows.append(f"{f.split('/')[4]} {open(f).read().split()[0]}")
    except OSError:
        pass  # ended meanwhile
open(sys.argv[1], "w").write("\n".join(rows) + "\n")
PY
}
machine_ns() { awk 'NR == FNR { a[$1] = $2; next } { d += $2 - ($1 in a ? a[$1] : 0) } END { printf "%.0f", d }' "$1" "$2"; }

# timed FILE CMD...: runs CMD (its standard error where it was), then writes its CPU time
# and its children's (user + system, ns) to FILE.
timed() {
    local file=$1 TIMEFORMAT='%3U %3S'
    shift
    { time "$@" 2>&4; } 4>&2 2>"$file.t"
    awk '{ printf "%.0f", ($1 + $2) * 1e9 }' "$file.t" >"$file"
}
