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
    TLS="$DIR/tls"      # lab CA, server keys and certificates (fresh at every `lab up`)
    CAPTURES="$DIR/captures" # packet captures of deploy/lab/capture
    MARKER="$DIR/.adox-lab"
}

# The Python virtualenv with aioquic (DoQ front, doq-query.py): created once
# by `lab up`, reused by every lab (it does not depend on DIR).
LAB_VENV=${ADOX_LAB_VENV:-/var/cache/adox-lab/venv}
LAB_PY="$LAB_VENV/bin/python"
LAB_PY_REQUIREMENTS="$LAB_SRC/requirements-doq.txt"

# venv_ready: the virtualenv exists and holds exactly requirements-doq.txt.
venv_ready() {
    [[ -x $LAB_PY && -f $LAB_VENV/.adox-lab-requirements ]] &&
        cmp -s "$LAB_VENV/.adox-lab-requirements" "$LAB_PY_REQUIREMENTS"
}

# ensure_venv: create or update the virtualenv (needs PyPI the first time).
ensure_venv() {
    venv_ready && return 0
    [[ $LAB_VENV =~ ^/[A-Za-z0-9_./+-]+$ && $LAB_VENV != / ]] ||
        die "ADOX_LAB_VENV '$LAB_VENV' must be an absolute path made of [A-Za-z0-9_./+-]"
    if [[ -e $LAB_VENV && ! -f $LAB_VENV/pyvenv.cfg && -n $(ls -A -- "$LAB_VENV" 2>/dev/null) ]]; then
        die "$LAB_VENV exists and is not a Python virtualenv; refusing to use it (set ADOX_LAB_VENV)"
    fi
    local log
    log=$(mktemp)
    if [[ ! -x $LAB_PY ]]; then
        note "creating the Python virtualenv $LAB_VENV (once; aioquic from PyPI)"
        mkdir -p -- "$(dirname -- "$LAB_VENV")"
        python3 -m venv "$LAB_VENV" >"$log" 2>&1 || {
            cat -- "$log" >&2
            rm -f -- "$log"
            die "python3 -m venv $LAB_VENV failed (Debian package python3-venv)"
        }
    fi
    note "installing $(grep -E '^aioquic==' "$LAB_PY_REQUIREMENTS") and the rest of $(basename -- "$LAB_PY_REQUIREMENTS") into $LAB_VENV"
    if ! "$LAB_PY" -m pip install --disable-pip-version-check --no-input -q \
        --timeout 20 --retries 2 -r "$LAB_PY_REQUIREMENTS" >"$log" 2>&1; then
        tail -n 20 -- "$log" >&2
        rm -f -- "$log"
        die "pip could not install $LAB_PY_REQUIREMENTS into $LAB_VENV: is PyPI reachable (proxy, PIP_INDEX_URL)? The DoQ front needs aioquic."
    fi
    rm -f -- "$log"
    "$LAB_PY" -c 'import aioquic, dns.message' ||
        die "aioquic or dnspython does not import in $LAB_VENV"
    cp -- "$LAB_PY_REQUIREMENTS" "$LAB_VENV/.adox-lab-requirements"
}

# need_venv: for the scripts that use the virtualenv without creating it.
need_venv() {
    venv_ready || die "the Python virtualenv $LAB_VENV is missing or out of date (run: deploy/lab/lab up)"
}

# servers: print "name impl addr zone" lines from servers.txt.
servers() {
    grep -vE '^[[:space:]]*(#|$)' "$LAB_SRC/servers.txt"
}

# transports: "server nameserver transports tls cert-name doq-source" lines
# of transports.txt.
transports() {
    grep -vE '^[[:space:]]*(#|$)' "$LAB_SRC/transports.txt"
}

# transport_of SERVER: its transports.txt line ("server nameserver transports
# tls cert-name doq-source"), or "SERVER - - - - -" for a Do53-only server.
transport_of() {
    local line
    line=$(transports | awk -v s="$1" '$1 == s { print; exit }')
    printf '%s\n' "${line:-$1 - - - - -}"
}

# has_transport LIST T: the comma-separated LIST contains T.
has_transport() {
    [[ ,$1, == *,"$2",* ]]
}

# encrypted_endpoints: "server process proto addr port transport tls" per
# encrypted endpoint (DoT: TCP on the server itself; DoQ: UDP on its front).
encrypted_endpoints() {
    local server nsname transports tls certname src addr
    while read -r server nsname transports tls certname src; do
        addr=$(servers | awk -v s="$server" '$1 == s { print $3; exit }')
        if has_transport "$transports" dot; then
            printf '%s %s tcp %s 853 DoT %s\n' "$server" "$server" "$addr" "$tls"
        fi
        if has_transport "$transports" doq; then
            printf '%s %s udp %s 853 DoQ 1.3\n' "$server" "$server-front" "$addr"
        fi
        if has_transport "$transports" doh; then
            printf '%s %s tcp %s 443 DoH %s\n' "$server" "$server" "$addr" "$tls"
        fi
    done < <(transports)
}

# listens PROTO ADDR PORT: a socket listens on ADDR:PORT (PROTO tcp or udp).
listens() {
    local proto=$1 addr=$2 port=$3 out
    if [[ $proto == tcp ]]; then
        out=$(ss -Hlnt "src $addr and sport = :$port" 2>/dev/null) || return 1
    else
        out=$(ss -Hlnu "src $addr and sport = :$port" 2>/dev/null) || return 1
    fi
    [[ -n $out ]]
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

# stop_pidfiles FILE...: stop the processes named in the FILEs and everything
# in their process groups (spawn made each a session leader), all at once:
# TERM to each, then KILL after 10 s. Removes the FILEs. Quiet and safe if
# the processes are already gone.
stop_pidfiles() {
    local f pid k i alive leaders=() all=()
    for f in "$@"; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" && pid_owned "$pid"; then
            leaders+=("$pid")
            all+=("$pid")
            for k in $(pgrep -g "$pid" || true); do
                all+=("$k")
            done
        fi
    done
    for pid in "${leaders[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for k in "${all[@]}"; do
            if pid_alive "$k"; then
                alive=1
                break
            fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for k in "${all[@]}"; do
        if pid_alive "$k" && pid_owned "$k"; then
            note "process $k ($(tr '\0' ' ' <"/proc/$k/cmdline" 2>/dev/null)) did not stop on TERM, killing it"
            kill -KILL "$k" 2>/dev/null || true
        fi
    done
    rm -f -- "$@"
}

# stop_pidfile FILE: stop_pidfiles for one file.
stop_pidfile() {
    stop_pidfiles "$1"
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
