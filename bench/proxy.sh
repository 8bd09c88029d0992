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
#                             PORTCULLIS__SERVER__WORKERS=1 (server.workers: one
#                             serving thread). Each proxy gets the same single core; only
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
# nginx's worker_processes and PORTCULLIS__SERVER__WORKERS for the proxies under test.
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

BENCH_NAME=proxy.sh
# shellcheck source=bench/lib.sh
. "$SELF_DIR/lib.sh"

require_tools nginx wrk curl
bench_init
build_release
take_port UP_PORT
take_port NGX_PORT
take_port PC_PORT

# ---------------------------------------------------------------- nginx instances
start_upstream "$UP_PORT" "$BODY" "${LOAD_PIN[@]}"

NGX_DIR=$TMP/nginx-proxy
nginx_proxy_conf "$NGX_DIR" "$PROXY_THREADS" "$NGX_PORT" "$UP_PORT"
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
start_portcullis portcullis "$PC_CONF" "$PC_LOG" "${PROXY_PIN[@]}" PORTCULLIS__SERVER__WORKERS="$PROXY_THREADS"
wait_body portcullis "$PC_PID" "http://127.0.0.1:$PC_PORT/" "$BODY" \
    || { show_log "$PC_LOG"; die "portcullis does not proxy to the upstream"; }

# ---------------------------------------------------------------- setup report
nginx_workers() { pgrep -P "$1" | paste -sd' ' -; }
echo "== portcullis proxy benchmark"
echo "binary       $BIN"
echo "machine      $(nproc) CPUs online; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ((PIN)); then
    echo "pinning      core $PROXY_CPU: proxy under test (nginx worker_processes $PROXY_THREADS | portcullis PORTCULLIS__SERVER__WORKERS=$PROXY_THREADS)"
    echo "             core $LOAD_CPU: upstream nginx + wrk"
else
    echo "pinning      none (BENCH_UNPINNED=1 or taskset unusable); proxies: nginx worker_processes $PROXY_THREADS, portcullis PORTCULLIS__SERVER__WORKERS=$PROXY_THREADS"
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
