# bench/lib.sh: what the benchmark scripts share (sourced, not run): messages, CPU pinning,
# process cleanup, the release build, free loopback ports, throwaway nginx instances, and
# one wrk measurement with per-core busy time and CPU time per request.
#
# The sourcing script sets, before calling bench_init:
#   BENCH_NAME   its name, for messages ("proxy.sh")
#   ROOT         the repository root
#   DURATION WARMUP THREADS CONNECTIONS PROXY_CPU LOAD_CPU   wrk and pinning settings
# bench_init then sets: NGINX WRK (tools), PIN PROXY_PIN LOAD_PIN (taskset prefixes),
# TMP (temporary directory, removed on exit with every pid in PIDS), CLK_TCK.

die() { echo "$BENCH_NAME: error: $*" >&2; exit 1; }
note() { echo "$BENCH_NAME: $*" >&2; }

# require_tools name...: exits with the apt-get line when one is missing. "nginx" is also
# found at /usr/sbin/nginx (not on a non-root PATH).
require_tools() {
    local missing=() t
    for t in "$@"; do
        case $t in
            nginx) NGINX=$(command -v nginx || true)
                [[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
                [[ -n $NGINX ]] || missing+=(nginx) ;;
            wrk) WRK=$(command -v wrk || true); [[ -n $WRK ]] || missing+=(wrk) ;;
            *) command -v "$t" >/dev/null || missing+=("$t") ;;
        esac
    done
    if ((${#missing[@]})); then
        echo "$BENCH_NAME: missing: ${missing[*]}. Install them with: apt-get install ${missing[*]}" >&2
        exit 1
    fi
}

bench_init() {
    # ---- pinning: the server under test alone on PROXY_CPU, the load side on LOAD_CPU
    PIN=1
    if [[ ${BENCH_UNPINNED:-0} == 1 ]]; then
        PIN=0
    elif ! command -v taskset >/dev/null; then
        note "taskset not found (util-linux); running unpinned"
        PIN=0
    elif ! taskset -c "$PROXY_CPU" true 2>/dev/null || ! taskset -c "$LOAD_CPU" true 2>/dev/null \
        || [[ $PROXY_CPU == "$LOAD_CPU" ]]; then
        note "cannot pin to CPUs $PROXY_CPU and $LOAD_CPU (need two distinct usable cores); running unpinned"
        PIN=0
    fi
    # Command prefixes (arrays, not functions, so `$!` is the pid of the real process:
    # taskset and env exec what they run).
    PROXY_PIN=(); LOAD_PIN=()
    if ((PIN)); then PROXY_PIN=(taskset -c "$PROXY_CPU"); LOAD_PIN=(taskset -c "$LOAD_CPU"); fi

    # ---- cleanup
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
    read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { EPH_LO=32768; EPH_HI=60999; }
    USED_PORTS=" "
}

bench_cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        note "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}

# On a fatal error, show the tail of a process's log before the temp dir goes away.
show_log() { [[ -f $1 ]] && { echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; }; return 0; }

# build_release: sets BIN to PORTCULLIS_BIN, or builds the release binary with
# `cargo build --release --locked`; TARGET_DIR is cargo's target directory.
build_release() {
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
    if [[ -n ${PORTCULLIS_BIN:-} ]]; then
        [[ -x $PORTCULLIS_BIN ]] || die "PORTCULLIS_BIN=$PORTCULLIS_BIN is not an executable file"
        BIN=$PORTCULLIS_BIN
    else
        note "building: cargo build --release --locked"
        (cd "$ROOT" && cargo build --release --locked) || die "cargo build failed"
        BIN=$TARGET_DIR/release/portcullis
        [[ -x $BIN ]] || die "no binary at $BIN after the build"
    fi
}

# free_port: a port nobody listens on, outside the kernel's ephemeral range (so outgoing
# connections cannot be sitting on it) and not handed out before in this run.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        ((p >= EPH_LO && p <= EPH_HI)) && continue
        [[ $USED_PORTS == *" $p "* ]] && continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        if command -v ss >/dev/null && [[ -n $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then continue; fi
        echo "$p"
        return 0
    done
    die "no free port found"
}
# take_port VAR: VAR=$(free_port), remembered so no later call hands it out again.
take_port() { local p; p=$(free_port); USED_PORTS+="$p "; printf -v "$1" '%s' "$p"; }

# ---------------------------------------------------------------- nginx instances
# nginx_conf dir workers server-block: everything inside the prefix dir, no logs, no
# default paths under /var. `user` only matters (and is only accepted) as root. Both
# sides get the same keep-alive treatment: keepalive_requests is raised so no client is
# forced to reconnect every 1000 requests (hyper has no such limit).
nginx_conf() {
    local dir=$1 workers=$2 server=$3 user_line=""
    ((EUID == 0)) && user_line="user root;"
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
$server
}
EOF
}

# start_nginx name dir cpu-prefix...: sets <name>_PID.
start_nginx() {
    local name=$1 dir=$2
    shift 2
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        || { show_log "$dir/logs/error.log"; die "$name: nginx rejected its config"; }
    "$@" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        >"$dir/logs/stdout.log" 2>&1 &
    PIDS+=($!)
    eval "${name}_PID=$!"
}

# start_upstream port body cpu-prefix...: an nginx answering `return 200 "<body>\n"`;
# sets UP_PID and UP_DIR.
start_upstream() {
    local port=$1 body=$2
    shift 2
    UP_DIR=$TMP/upstream
    nginx_conf "$UP_DIR" 1 "    server {
        listen 127.0.0.1:$port;
        location / { return 200 \"$body\\n\"; }
    }"
    start_nginx UP "$UP_DIR" "$@"
    wait_body upstream "$UP_PID" "http://127.0.0.1:$port/" "$body" \
        || { show_log "$UP_DIR/logs/error.log"; die "upstream nginx did not start"; }
}

# wait_body name pid url expected [curl args...]: bounded wait until url answers 200 with
# the body.
wait_body() {
    local name=$1 pid=$2 url=$3 want=$4 got="" i
    shift 4
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if got=$(curl -sf --max-time 2 "$@" "$url" 2>/dev/null) && [[ $got == "$want" ]]; then
            return 0
        fi
        sleep 0.1
    done
    note "$name: $url did not answer ${want@Q} within 10 s (last answer: ${got@Q})"
    return 1
}

# wait_http name pid url [log]: bounded wait (20 s) until url answers 2xx.
wait_http() {
    local name=$1 pid=$2 url=$3 log=${4:-} i
    for ((i = 0; ; i++)); do
        kill -0 "$pid" 2>/dev/null || { show_log "$log"; die "$name exited during start-up"; }
        curl -sf --max-time 2 "$url" >/dev/null 2>&1 && return 0
        ((i < 200)) || { show_log "$log"; die "$name: $url did not answer 2xx within 20 s"; }
        sleep 0.1
    done
}

# ---------------------------------------------------------------- measuring
# Per-core busy ticks from /proc/stat: "user nice system idle iowait irq softirq steal".
cpu_ticks() { # cpu -> "busy total"
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
busy_pct() { # before after -> percent
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        dt = y[2] - x[2]; printf "%.0f", (dt > 0 ? 100 * (y[1] - x[1]) / dt : 0) }'
}
# CPU time (user + system, in clock ticks) used so far by a process and its children
# processes' own (not reaped) ticks: for nginx, pass the master's pid; its workers are
# added. All threads of a process are included (portcullis's runtime and accept threads).
proc_ticks() { # pid -> ticks
    local pid total=0 t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# wrk latency value with unit (us, ms, s, m) -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u != "ms") { print "?"; exit 1 }
        printf "%.3f", n }'
}

# run_wrk label url pid [wrk args...] -> sets R_RPS R_P50 R_P99 R_C0 R_C1 R_US (CPU
# microseconds per request used by process pid, the one serving url); exits 1 on
# non-2xx/no requests. The extra wrk args (e.g. -H 'Cookie: ...') go to both runs.
run_wrk() {
    local label=$1 url=$2 pid=$3 out before0 before1 ticks0 non2xx sockerr requests
    shift 3
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >"$TMP/warmup.out" 2>&1 \
        || { cat "$TMP/warmup.out" >&2; die "$label: wrk warm-up failed"; }
    if non2xx=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$TMP/warmup.out"); then
        die "$label: warm-up got ${non2xx#*: } non-2xx/3xx responses from $url"
    fi
    out=$TMP/$label.out
    before0=$(cpu_ticks "$PROXY_CPU"); before1=$(cpu_ticks "$LOAD_CPU"); ticks0=$(proc_ticks "$pid")
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1 \
        || { cat "$out" >&2; die "$label: wrk failed"; }
    R_C0=$(busy_pct "$before0" "$(cpu_ticks "$PROXY_CPU")")
    R_C1=$(busy_pct "$before1" "$(cpu_ticks "$LOAD_CPU")")
    ticks0=$(($(proc_ticks "$pid") - ticks0))
    if non2xx=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$out"); then
        cat "$out" >&2
        die "$label: ${non2xx#*: } non-2xx/3xx responses from $url"
    fi
    if sockerr=$(grep 'Socket errors:' "$out"); then
        note "warning: $label: ${sockerr#"${sockerr%%[! ]*}"}"
    fi
    R_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    R_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    R_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    [[ -n $R_RPS && $R_P50 != "?" && $R_P99 != "?" ]] || { cat "$out" >&2; die "$label: cannot parse wrk output"; }
    requests=$(awk '/ requests in / { print $1 }' "$out")
    ((${requests:-0} > 0)) || { cat "$out" >&2; die "$label: no requests completed"; }
    R_US=$(awk -v t="$ticks0" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", 1e6 * t / hz / n }')
}

# Median of whitespace-separated numbers on stdin. With BENCH_ROUNDS > 1 the targets are
# measured in turn, round after round, and each figure reported is the median over the
# rounds (drift on the machine hits all of them).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Resident memory of a process, in kB (VmRSS or VmHWM).
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status" 2>/dev/null || true; }
