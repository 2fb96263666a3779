# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the sourcing scripts
# Helpers shared by deploy/lab/lab, deploy/lab/peer and deploy/lab/check.
# Sourced, not executed.

LAB_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export PATH

die() {
    printf '%s: error: %s\n' "${PROG:-lab}" "$*" >&2
    exit 1
}

note() {
    printf '%s: %s\n' "${PROG:-lab}" "$*" >&2
}

# resolve_dir [DIR]: absolute lab directory (default $ADOX_LAB_DIR or
# /tmp/adox-lab). Restricted to characters that are safe in every config
# file and sed expression we generate.
resolve_dir() {
    local d="${1:-${ADOX_LAB_DIR:-/tmp/adox-lab}}"
    [[ $d == /* ]] || d="$PWD/$d"
    d="$(realpath -m -- "$d")"
    [[ $d =~ ^/[A-Za-z0-9_./+-]+$ ]] ||
        die "lab directory '$d' must be an absolute path made of [A-Za-z0-9_./+-] (and not /)"
    printf '%s\n' "$d"
}

# set_dirs DIR: the layout of a lab directory.
set_dirs() {
    # Guard: an empty or relative DIR would turn "$DIR/run" etc. into
    # system paths that `lab up` removes.
    [[ ${1:-} =~ ^/[A-Za-z0-9_./+-]+$ && $1 != / ]] ||
        die "internal error: bad lab directory '${1:-}'"
    DIR=$1
    RUN="$DIR/run"      # our pid files (*.pid) and the list of added addresses
    LOGS="$DIR/logs"    # server logs
    ZONES="$DIR/zones"  # rendered and signed zone files
    KEYS="$DIR/keys"    # DNSSEC keys (fresh at every `lab up`)
    CONF="$DIR/conf"    # generated server configs
    WORK="$DIR/work"    # per-server working directories
    MARKER="$DIR/.adox-lab"
}

need_root() {
    [[ $(id -u) -eq 0 ]] ||
        die "must run as root (adds 127.53.x.y addresses to lo, binds port 53)"
}

# need_bins BIN:DEBIAN-PACKAGE ...
need_bins() {
    local spec bin pkg missing=() pkgs=()
    for spec in "$@"; do
        bin=${spec%%:*}
        pkg=${spec#*:}
        if ! command -v "$bin" >/dev/null 2>&1; then
            missing+=("$bin (Debian package $pkg)")
            pkgs+=("$pkg")
        fi
    done
    if ((${#missing[@]} > 0)); then
        die "missing program(s): ${missing[*]}; install with: apt-get install $(printf '%s\n' "${pkgs[@]}" | sort -u | tr '\n' ' ')"
    fi
}

# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ by VALUE. Values must not
# contain '|', '&' or '\' (paths are restricted by resolve_dir).
render() {
    local tpl=$1 out=$2 kv
    shift 2
    local args=()
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$tpl" >"$out"
    if grep -qE '@[A-Z_]+@' "$out"; then
        die "unsubstituted placeholder left in $out: $(grep -oE '@[A-Z_]+@' "$out" | sort -u | tr '\n' ' ')"
    fi
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# pid_owned PID: the process command line refers to the lab directory (so a
# recycled pid of an unrelated process is never killed).
pid_owned() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$DIR/"* ]]
}

# lo_has_addr ADDR: ADDR/32 is configured on lo. (No "| grep -q" here nor
# elsewhere: with pipefail, grep -q exiting early can fail the pipeline.)
lo_has_addr() {
    local out
    out=$(ip -4 -o addr show dev lo) || return 1
    [[ $out == *" inet $1/32 "* ]]
}

# spawn NAME OUTFILE CMD...: run CMD (a server in foreground mode) in a new
# session, detached from our stdio; its pid goes to $RUN/NAME.pid. setsid
# does not fork here (a background job is never a process group leader), so
# $! is the server's own pid.
spawn() {
    local name=$1 out=$2
    shift 2
    setsid "$@" </dev/null >>"$out" 2>&1 &
    printf '%s\n' "$!" >"$RUN/$name.pid"
}

# stop_pidfile FILE: stop the process named in FILE and everything in its
# process group (spawn made it a session leader): TERM, then KILL after
# 10 s. Removes FILE. Quiet and safe if the process is already gone.
stop_pidfile() {
    local f=$1 pid group k i alive
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" && pid_owned "$pid"; then
        group=$(pgrep -g "$pid" || true)
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive=0
            for k in $pid $group; do
                if pid_alive "$k"; then
                    alive=1
                    break
                fi
            done
            ((alive)) || break
            sleep 0.1
        done
        for k in $pid $group; do
            if pid_alive "$k" && pid_owned "$k"; then
                note "process $k ($(tr '\0' ' ' <"/proc/$k/cmdline" 2>/dev/null)) did not stop on TERM, killing it"
                kill -KILL "$k" 2>/dev/null || true
            fi
        done
    fi
    rm -f -- "$f"
}

# dns_answers ADDR PORT QNAME QTYPE [norec]: true if the server at ADDR#PORT
# gives a non-empty answer of type QTYPE within a short timeout.
dns_answers() {
    local addr=$1 port=$2 qname=$3 qtype=$4 rec=${5:-rec}
    local flags=(+time=1 +tries=1 +noall +answer)
    [[ $rec == norec ]] && flags+=(+norec)
    dig "${flags[@]}" -p "$port" "@$addr" "$qname" "$qtype" 2>/dev/null |
        awk -v t="$qtype" '$4 == t { found = 1 } END { exit !found }'
}

# port_listeners ADDR-REGEX PORT: print sockets listening on PORT whose local
# address matches ADDR-REGEX (UDP and TCP).
port_listeners() {
    local re=$1 port=$2
    ss -Hlnup 2>/dev/null | awk -v re="^($re):$port\$" '$4 ~ re'
    ss -Hlntp 2>/dev/null | awk -v re="^($re):$port\$" '$4 ~ re'
}

# show_log FILE...: print the tail of each existing log (for failures).
show_log() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '----- %s (last 40 lines) -----\n' "$f" >&2
        tail -n 40 -- "$f" >&2
    done
}
