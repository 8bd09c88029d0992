#!/usr/bin/env bash
# bench/proxy.sh: proxy overhead of portcullis compared with nginx, on loopback.
#
# What runs (all on 127.0.0.1, ports picked free at run time, everything in one
# temporary directory that is removed on exit together with every process started):
#   upstream     nginx, 1 worker, `return 200 "hello from upstream\n"` (20-byte body)
#   nginx proxy  nginx, 1 worker, proxy_pass to the upstream through an `upstream`
#                block with `keepalive 64` (HTTP/1.1, pooled upstream connections)
#   portcullis   target/release/portcullis, one public route `/` to the upstream,
#                log filter "warn" (no per-request access line)
#   load         wrk -t2 -c64 --latency, after a warm-up, against (a) the upstream
#                directly, (b) the nginx proxy, (c) portcullis
#
# Fairness (2-core machine). By default everything is pinned with taskset:
#   core 0 (BENCH_PROXY_CPU)  the proxy under test, alone: nginx with
#                             worker_processes 1, or portcullis with
#                             TOKIO_WORKER_THREADS=1 (the gateway builds tokio's
#                             multi-thread runtime with defaults, which honours that
#                             variable). Each proxy gets the same single core; only
#                             one proxy is under load at a time.
#   core 1 (BENCH_LOAD_CPU)   the upstream nginx and wrk, identical in every run.
# So "upstream direct" is the ceiling of this setup: core 1 doing the same work
# (wrk + upstream) with no proxy in between. When a proxy's req/s approaches it, core 1
# is the bottleneck, not the proxy; the busy% columns (per-core utilisation sampled
# from /proc/stat during each measurement) show which core saturated.
# "cpu us/req" is the CPU time (user + system, all threads) the server under test spent
# per completed request: the upstream nginx for "upstream direct", the proxy otherwise.
# It moves much less than req/s when other work shares the machine, so compare it too.
# Both proxies get the same keep-alive treatment: keepalive_requests is raised in
# every nginx so no side is forced to reconnect every 1000 requests (hyper has no such
# limit). portcullis still does more per request than nginx here (X-Forwarded-*,
# X-Request-Id, route match): that is the product being measured.
# BENCH_UNPINNED=1 runs without taskset; BENCH_PROXY_THREADS (default 1) sets both
# nginx's worker_processes and TOKIO_WORKER_THREADS for the proxies under test.
#
# Environment:
#   PORTCULLIS_BIN       use this binary, skip `cargo build --release --locked`
#   BENCH_DURATION=10s   measured run per target    BENCH_WARMUP=2s  warm-up per target
#   BENCH_THREADS=2      wrk threads                BENCH_CONNECTIONS=64  wrk connections
#   BENCH_ROUNDS=1       measure the three targets in turn this many times, report medians
#   BENCH_UNPINNED=1     no CPU pinning             BENCH_PROXY_THREADS=1
#   BENCH_PROXY_CPU=0    BENCH_LOAD_CPU=1           BENCH_KEEP_TMP=1  keep the temp dir
#
# Exit status: 0 when the benchmark ran (whether or not the goals below are met: a
# benchmark reports, it does not judge), 1 when something broke (missing tools, a
# process that did not start, wrong body, non-2xx responses, no requests completed).
# Goals printed: portcullis throughput >= 0.90x nginx, p99 latency <= 1.50x nginx.
set -euo pipefail

SELF=${BASH_SOURCE[0]}
[[ $SELF == */* ]] && SELF_DIR=${SELF%/*} || SELF_DIR=.
ROOT=$(cd "$SELF_DIR/.." && pwd)
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
PROXY_THREADS=${BENCH_PROXY_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-1}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BODY="hello from upstream"

die() { echo "proxy.sh: error: $*" >&2; exit 1; }
note() { echo "proxy.sh: $*" >&2; }

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
WRK=$(command -v wrk || true)
missing=()
[[ -n $NGINX ]] || missing+=(nginx)
[[ -n $WRK ]] || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "proxy.sh: missing: ${missing[*]}. Install them with: apt-get install ${missing[*]}" >&2
    exit 1
fi

# ---------------------------------------------------------------- pinning
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

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
PIDS=()
cleanup() {
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
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# On a fatal error, show the tail of a process's log before the temp dir goes away.
show_log() { [[ -f $1 ]] && { echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; }; return 0; }

# ---------------------------------------------------------------- build
if [[ -n ${PORTCULLIS_BIN:-} ]]; then
    [[ -x $PORTCULLIS_BIN ]] || die "PORTCULLIS_BIN=$PORTCULLIS_BIN is not an executable file"
    BIN=$PORTCULLIS_BIN
else
    note "building: cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked) || die "cargo build failed"
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis
    [[ $BIN == /* ]] || BIN=$ROOT/$BIN
    [[ -x $BIN ]] || die "no binary at $BIN after the build"
fi

# ---------------------------------------------------------------- ports
# A port nobody listens on, outside the kernel's ephemeral range (so wrk's and the
# proxies' outgoing connections cannot be sitting on it) and not handed out before.
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { EPH_LO=32768; EPH_HI=60999; }
USED_PORTS=" "
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        ((p >= EPH_LO && p <= EPH_HI)) && continue
        [[ $USED_PORTS == *" $p "* ]] && continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        if command -v ss >/dev/null && [[ -n $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then continue; fi
        USED_PORTS+="$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}
UP_PORT=$(free_port); USED_PORTS+="$UP_PORT "
NGX_PORT=$(free_port); USED_PORTS+="$NGX_PORT "
PC_PORT=$(free_port); USED_PORTS+="$PC_PORT "

# ---------------------------------------------------------------- nginx instances
# Common part of both nginx configs: everything inside the prefix dir, no logs, no
# default paths under /var. `user` only matters (and is only accepted) as root.
nginx_conf() { # dir workers server-block
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

start_nginx() { # name dir cpu-prefix...
    local name=$1 dir=$2
    shift 2
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        || { show_log "$dir/logs/error.log"; die "$name: nginx rejected its config"; }
    "$@" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        >"$dir/logs/stdout.log" 2>&1 &
    PIDS+=($!)
    eval "${name}_PID=$!"
}

# wait_body name pid url expected: bounded wait until url answers 200 with the body.
wait_body() {
    local name=$1 pid=$2 url=$3 want=$4 got="" i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if got=$(curl -sf --max-time 2 "$url" 2>/dev/null) && [[ $got == "$want" ]]; then
            return 0
        fi
        sleep 0.1
    done
    note "$name: $url did not answer ${want@Q} within 10 s (last answer: ${got@Q})"
    return 1
}

UP_DIR=$TMP/upstream
nginx_conf "$UP_DIR" 1 "    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 \"$BODY\\n\"; }
    }"
start_nginx UP "$UP_DIR" "${LOAD_PIN[@]}"
wait_body upstream "$UP_PID" "http://127.0.0.1:$UP_PORT/" "$BODY" \
    || { show_log "$UP_DIR/logs/error.log"; die "upstream nginx did not start"; }

NGX_DIR=$TMP/nginx-proxy
nginx_conf "$NGX_DIR" "$PROXY_THREADS" "    upstream upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
start_nginx NGX "$NGX_DIR" "${PROXY_PIN[@]}"
wait_body "nginx proxy" "$NGX_PID" "http://127.0.0.1:$NGX_PORT/" "$BODY" \
    || { show_log "$NGX_DIR/logs/error.log"; die "nginx proxy did not start or does not proxy"; }

# ---------------------------------------------------------------- portcullis
PC_CONF=$TMP/portcullis.toml
PC_LOG=$TMP/portcullis.log
cat >"$PC_CONF" <<EOF
[server]
listen = "127.0.0.1:$PC_PORT"
[log]
filter = "warn"
[[route]]
path = "/"
upstream = "http://127.0.0.1:$UP_PORT"
public = true
EOF
# RUST_LOG would override log.filter; the bench measures the configured filter.
"${PROXY_PIN[@]}" env -u RUST_LOG TOKIO_WORKER_THREADS="$PROXY_THREADS" \
    "$BIN" run --config "$PC_CONF" >"$PC_LOG" 2>&1 &
PIDS+=($!)
PC_PID=$!
for ((i = 0; ; i++)); do
    kill -0 "$PC_PID" 2>/dev/null || { show_log "$PC_LOG"; die "portcullis exited during start-up"; }
    curl -sf --max-time 2 "http://127.0.0.1:$PC_PORT/healthz" >/dev/null 2>&1 && break
    ((i < 100)) || { show_log "$PC_LOG"; die "portcullis /healthz did not answer within 10 s"; }
    sleep 0.1
done
wait_body portcullis "$PC_PID" "http://127.0.0.1:$PC_PORT/" "$BODY" \
    || { show_log "$PC_LOG"; die "portcullis does not proxy to the upstream"; }

# ---------------------------------------------------------------- setup report
nginx_workers() { pgrep -P "$1" | paste -sd' ' -; }
echo "== portcullis proxy benchmark"
echo "binary       $BIN"
echo "machine      $(nproc) CPUs online; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ((PIN)); then
    echo "pinning      core $PROXY_CPU: proxy under test (nginx worker_processes $PROXY_THREADS | portcullis TOKIO_WORKER_THREADS=$PROXY_THREADS)"
    echo "             core $LOAD_CPU: upstream nginx + wrk"
else
    echo "pinning      none (BENCH_UNPINNED=1 or taskset unusable); proxies: nginx worker_processes $PROXY_THREADS, portcullis TOKIO_WORKER_THREADS=$PROXY_THREADS"
fi
echo "upstream     nginx 127.0.0.1:$UP_PORT (pid $UP_PID, workers $(nginx_workers "$UP_PID"))"
echo "nginx proxy  nginx 127.0.0.1:$NGX_PORT (pid $NGX_PID, workers $(nginx_workers "$NGX_PID")), keepalive 64 to upstream"
echo "portcullis   127.0.0.1:$PC_PORT (pid $PC_PID), log filter warn"
echo "load         wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, warm-up $WARMUP per target, $ROUNDS round(s)"
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning      load average $load1 before start: other work on this machine will skew the numbers"
fi
echo

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
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
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
        printf "%.2f", n }'
}

# run_wrk label url pid -> sets R_RPS R_P50 R_P99 R_C0 R_C1 R_US (CPU microseconds per
# request used by process pid, the one serving url); exits 1 on non-2xx/no requests.
run_wrk() {
    local label=$1 url=$2 pid=$3 out before0 before1 ticks0 non2xx sockerr requests
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >"$TMP/warmup.out" 2>&1 \
        || { cat "$TMP/warmup.out" >&2; die "$label: wrk warm-up failed"; }
    if non2xx=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$TMP/warmup.out"); then
        die "$label: warm-up got ${non2xx#*: } non-2xx/3xx responses from $url"
    fi
    out=$TMP/$label.out
    before0=$(cpu_ticks "$PROXY_CPU"); before1=$(cpu_ticks "$LOAD_CPU"); ticks0=$(proc_ticks "$pid")
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out" 2>&1 \
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

# With BENCH_ROUNDS > 1 the three targets are measured in turn, round after round, and
# each figure reported is the median over the rounds (drift on the machine hits all).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A RPS P50 P99 C0 C1 US
TARGETS=("upstream direct" "nginx proxy" "portcullis")
URLS=("http://127.0.0.1:$UP_PORT/" "http://127.0.0.1:$NGX_PORT/" "http://127.0.0.1:$PC_PORT/")
SERVERS=("$UP_PID" "$NGX_PID" "$PC_PID")
for ((round = 1; round <= ROUNDS; round++)); do
    for i in "${!TARGETS[@]}"; do
        t=${TARGETS[$i]}
        note "round $round/$ROUNDS: measuring $t (${WARMUP} warm-up + ${DURATION})"
        run_wrk "${t// /-}" "${URLS[$i]}" "${SERVERS[$i]}"
        RPS[$t]+=" $R_RPS"; P50[$t]+=" $R_P50"; P99[$t]+=" $R_P99"
        C0[$t]+=" $R_C0"; C1[$t]+=" $R_C1"; US[$t]+=" $R_US"
    done
done
for t in "${TARGETS[@]}"; do
    ((ROUNDS > 1)) && note "$t req/s per round:${RPS[$t]}"
    RPS[$t]=$(median <<<"${RPS[$t]}"); P50[$t]=$(median <<<"${P50[$t]}"); P99[$t]=$(median <<<"${P99[$t]}")
    C0[$t]=$(median <<<"${C0[$t]}"); C1[$t]=$(median <<<"${C1[$t]}"); US[$t]=$(median <<<"${US[$t]}")
done

# RSS after the run (the process is still up, its pools and buffers still allocated).
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status" 2>/dev/null || true; }
PC_RSS=$(kb VmRSS "$PC_PID"); PC_HWM=$(kb VmHWM "$PC_PID")
NGX_RSS=0
for pid in "$NGX_PID" $(pgrep -P "$NGX_PID" || true); do r=$(kb VmRSS "$pid"); NGX_RSS=$((NGX_RSS + ${r:-0})); done

# ---------------------------------------------------------------- report
echo
if ((PIN)); then c0="core$PROXY_CPU%"; c1="core$LOAD_CPU%"; else c0="cpu$PROXY_CPU%"; c1="cpu$LOAD_CPU%"; fi
printf '%-16s %10s %9s %9s   %10s %6s %6s\n' target req/s "p50 ms" "p99 ms" "cpu us/req" "$c0" "$c1"
for t in "${TARGETS[@]}"; do
    printf '%-16s %10.0f %9.2f %9.2f   %10s %6s %6s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
        "${US[$t]}" "${C0[$t]}" "${C1[$t]}"
done
if ((PIN)) && awk -v c="${C0[upstream direct]}" 'BEGIN { exit !(c > 15) }'; then
    echo "warning: core $PROXY_CPU was ${C0[upstream direct]}% busy while no proxy was under load:" \
        "other processes shared the proxy core, so these numbers are unreliable"
fi
awk -v pr="${RPS[portcullis]}" -v nr="${RPS[nginx proxy]}" \
    -v pp="${P99[portcullis]}" -v np="${P99[nginx proxy]}" 'BEGIN {
    tr = pr / nr; lr = (np > 0) ? pp / np : 0
    printf "ratio portcullis/nginx: throughput %.2fx (goal >= 0.90%s), p99 %.2fx (goal <= 1.50%s)\n",
        tr, (tr >= 0.90 ? ", met" : ", NOT met"), lr, (lr <= 1.50 ? ", met" : ", NOT met") }'
awk -v p="${US[portcullis]}" -v n="${US[nginx proxy]}" 'BEGIN { if (n > 0)
    printf "cpu per request portcullis/nginx: %.2fx (%s vs %s us; steadier than req/s on a busy machine)\n", p / n, p, n }'
printf 'memory after the run: portcullis VmRSS %s kB (peak VmHWM %s kB); nginx proxy master+workers VmRSS %s kB\n' \
    "${PC_RSS:-?}" "${PC_HWM:-?}" "$NGX_RSS"
