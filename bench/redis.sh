#!/usr/bin/env bash
# bench/redis.sh: the logged-in request path with the Redis session store against the
# memory store, in one run, on loopback; then Redis memory per session at 100,000 sessions.
#
# What runs (all on 127.0.0.1, ports picked free at run time, everything in one
# temporary directory that is removed on exit together with every process started):
#   upstream     nginx, 1 worker, `return 200 "hello from upstream\n"` (20-byte body)
#   redis        redis-server, in memory only (no RDB, no AOF)
#   idp          the test IdP (tests/idp, node oidc-provider, as it ships; needs
#                `npm ci` in tests/idp once)
#   gateways     three target/release/portcullis, one protected route `/` to the
#                upstream, log filter "warn", the same session secret:
#                  memory        session.store = "memory"
#                  redis L1 5s   session.store = "redis", cache_ttl = "5s" (the default)
#                  redis L1 off  session.store = "redis", cache_ttl = "0s"
#   login        one real login per gateway through the test IdP's devInteractions
#                forms with curl (the authorization code flow with PKCE, exactly as a
#                browser does it); the session cookie it gets is what wrk sends
#   load         wrk -t1 -c16 --latency with that cookie, after a warm-up, against each
#                gateway in turn, BENCH_ROUNDS times (medians reported)
#   fill         examples/redis_fill.rs: BENCH_SESSIONS real-sized sessions (~1 KB JWT
#                access token, refresh token, ~1 KB ID token, groups, sid) created
#                through the gateway's own Sessions::create over the Redis store the
#                gateway's config builds; then INFO memory and MEMORY USAGE on a sample
#
# Pinning (2-core machine), as bench/proxy.sh does: core 0 (BENCH_PROXY_CPU) runs the
# gateway under test alone (PORTCULLIS__SERVER__WORKERS=1; the two idle gateways share it but
# take no load); core 1 (BENCH_LOAD_CPU) runs wrk, the upstream, the IdP and Redis (Redis
# stands for a server on another machine: its CPU is not the gateway's). The core%
# columns show which core saturated; "cpu us/req" is the gateway's CPU time (user +
# system, all threads) per completed request, steadier than req/s on a busy machine.
#
# Goals printed (from issue 13): with L1 on, >= 0.95x the memory store's throughput;
# with L1 off, the p99 added by Redis (L1-off p99 minus memory p99) <= 300 us.
#
# Environment:
#   PORTCULLIS_BIN       use this binary (the redis_fill example is still built, dev profile)
#   BENCH_DURATION=8s    measured run per target    BENCH_WARMUP=2s  warm-up per target
#   BENCH_THREADS=1      wrk threads                BENCH_CONNECTIONS=16  wrk connections
#   BENCH_ROUNDS=3       the three targets in turn this many times, medians reported
#                        (0: no load, only the memory figures)
#   BENCH_STORES="memory redis-l1 redis-nol1"  the stores measured, in this order
#   BENCH_SESSIONS=100000  sessions for the memory figures (0: skip the fill and its build)
#   BENCH_SAMPLE=1000    keys sampled with MEMORY USAGE
#   BENCH_UNPINNED=1     no CPU pinning             BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_KEEP_TMP=1     keep the temp dir (configs, logs, wrk output)
# With the defaults the whole run takes about 1.5 minutes after the build.
#
# Exit status: 0 when the benchmark ran (goals met or not: a benchmark reports, it does
# not judge), 1 when something broke (missing tools, a process that did not start, a
# login that failed, non-2xx responses, no requests completed).
set -euo pipefail

SELF=${BASH_SOURCE[0]}
[[ $SELF == */* ]] && SELF_DIR=${SELF%/*} || SELF_DIR=.
ROOT=$(cd "$SELF_DIR/.." && pwd)
DURATION=${BENCH_DURATION:-8s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
ROUNDS=${BENCH_ROUNDS:-3}
SESSIONS=${BENCH_SESSIONS:-100000}
SAMPLE=${BENCH_SAMPLE:-1000}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BODY="hello from upstream"
PREFIX="portcullis-bench:"
CLIENT_SECRET="bench-client-secret"

BENCH_NAME=redis.sh
# shellcheck source=bench/lib.sh
. "$SELF_DIR/lib.sh"

require_tools nginx wrk curl node redis-server redis-cli
[[ -d $ROOT/tests/idp/node_modules/oidc-provider ]] \
    || die "the test IdP's packages are missing: run (cd tests/idp && npm ci) first"
bench_init
build_release
# The fill is a client of Redis, not the thing measured: built in the dev profile, whose
# dev-dependencies (examples link them) the test suite has compiled already.
FILL=$TARGET_DIR/debug/examples/redis_fill
if ((SESSIONS > 0)); then
    note "building: cargo build --locked --example redis_fill"
    (cd "$ROOT" && cargo build --locked --example redis_fill) || die "cargo build --example redis_fill failed"
    [[ -x $FILL ]] || die "no redis_fill example at $FILL after the build"
fi

take_port UP_PORT
take_port REDIS_PORT
take_port IDP_PORT
# The stores measured (BENCH_STORES picks some, in this order), and their labels.
read -r -a TARGETS <<<"${BENCH_STORES:-memory redis-l1 redis-nol1}"
declare -A LABEL=([memory]="memory" [redis-l1]="redis L1 5s" [redis-nol1]="redis L1 off")
declare -A PORT PID CONF LOG COOKIE
for t in "${TARGETS[@]}"; do
    [[ -n ${LABEL[$t]:-} ]] || die "BENCH_STORES: unknown store $t (memory, redis-l1, redis-nol1)"
    take_port "PORT[$t]"
done
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- upstream, Redis, IdP
start_upstream "$UP_PORT" "$BODY" "${LOAD_PIN[@]}"

REDIS_DIR=$TMP/redis
start_redis "$REDIS_DIR" "$REDIS_PORT" "${LOAD_PIN[@]}"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

redirects=()
for t in "${TARGETS[@]}"; do redirects+=("http://127.0.0.1:${PORT[$t]}/oauth2/callback"); done
IDP_LOG=$TMP/idp.log
start_idp "$IDP_PORT" "$IDP_LOG" "${LOAD_PIN[@]}" CLIENT_SECRET="$CLIENT_SECRET" \
    REDIRECT_URIS="$(IFS=,; echo "${redirects[*]}")"

# ---------------------------------------------------------------- gateways
SESSION_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
gateway_conf() { # target -> [session] lines
    case $1 in
        memory) echo 'store = "memory"' ;;
        redis-l1 | redis-nol1)
            local ttl=5s
            [[ $1 == redis-nol1 ]] && ttl=0s
            cat <<EOF
store = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
redis_key_prefix = "$PREFIX"
cache_ttl = "$ttl"
EOF
            ;;
    esac
}
for t in "${TARGETS[@]}"; do
    CONF[$t]=$TMP/$t.toml
    LOG[$t]=$TMP/$t.log
    cat >"${CONF[$t]}" <<EOF
[server]
listen = "127.0.0.1:${PORT[$t]}"
public_url = "http://127.0.0.1:${PORT[$t]}"
[log]
filter = "warn"
[oidc]
issuer = "$ISSUER"
client_id = "gateway"
client_secret = "$CLIENT_SECRET"
[session]
secret = "$SESSION_SECRET"
cookie_secure = false
$(gateway_conf "$t")
[[route]]
path = "/"
upstream = "http://127.0.0.1:$UP_PORT"
EOF
    start_portcullis "portcullis ($t)" "${CONF[$t]}" "${LOG[$t]}" "${PROXY_PIN[@]}" PORTCULLIS__SERVER__WORKERS=1
    PID[$t]=$PC_PID
done

# ---------------------------------------------------------------- login
# login target: the authorization code flow through the test IdP's devInteractions
# forms (lib.sh idp_login), with a cookie jar per login; sets COOKIE[target].
login() {
    local t=$1 gw="http://127.0.0.1:${PORT[$1]}"
    idp_login "$t" "$gw/" "$TMP/$t.jar" portcullis "$BODY" "${LOG[$t]}"
    COOKIE[$t]=$LOGIN_COOKIE
    # The session alone (no jar, no redirects) passes: this is what wrk sends.
    wait_body "portcullis ($t)" "${PID[$t]}" "$gw/" "$BODY" -H "Cookie: portcullis=${COOKIE[$t]}" \
        || die "$t: the session cookie does not pass"
}
for t in "${TARGETS[@]}"; do login "$t"; done
# The redis gateways really keep their sessions in Redis.
want=0
for t in "${TARGETS[@]}"; do [[ $t == redis-* ]] && want=$((want + 1)); done
redis_keys=$(rcli --scan --pattern "${PREFIX}s:*" | wc -l)
((redis_keys >= want)) || die "the redis gateways stored $redis_keys sessions under ${PREFIX}s:* (expected $want)"

# ---------------------------------------------------------------- setup report
echo "== portcullis session store benchmark (logged-in requests)"
echo "binary       $BIN"
echo "machine      $(nproc) CPUs online; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ((PIN)); then
    echo "pinning      core $PROXY_CPU: the gateway under test (PORTCULLIS__SERVER__WORKERS=1)"
    echo "             core $LOAD_CPU: wrk, upstream nginx, redis-server, test IdP"
else
    echo "pinning      none (BENCH_UNPINNED=1 or taskset unusable); gateways PORTCULLIS__SERVER__WORKERS=1"
fi
echo "upstream     nginx 127.0.0.1:$UP_PORT, return 200 (20 bytes)"
echo "redis        $(redis-server --version | grep -o 'v=[^ ]*') 127.0.0.1:$REDIS_PORT, no persistence"
for t in "${TARGETS[@]}"; do
    printf 'gateway      %-13s 127.0.0.1:%s (pid %s)\n' "${LABEL[$t]}" "${PORT[$t]}" "${PID[$t]}"
done
echo "login        one session per gateway through the test IdP ($ISSUER)"
echo "load         wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency with the session cookie, warm-up $WARMUP, $ROUNDS round(s)"
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning      load average $load1 before start: other work on this machine will skew the numbers"
fi
echo

# ---------------------------------------------------------------- measuring
declare -A RPS P50 P99 C0 C1 US
if ((ROUNDS > 0)); then
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do
        note "round $round/$ROUNDS: measuring ${LABEL[$t]} (${WARMUP} warm-up + ${DURATION})"
        run_wrk "$t" "http://127.0.0.1:${PORT[$t]}/" "${PID[$t]}" \
            -H "Cookie: portcullis=${COOKIE[$t]}"
        RPS[$t]+=" $R_RPS"; P50[$t]+=" $R_P50"; P99[$t]+=" $R_P99"
        C0[$t]+=" $R_C0"; C1[$t]+=" $R_C1"; US[$t]+=" $R_US"
    done
done
for t in "${TARGETS[@]}"; do
    ((ROUNDS > 1)) && note "${LABEL[$t]} req/s per round:${RPS[$t]}; p99 ms per round:${P99[$t]}"
    RPS[$t]=$(median <<<"${RPS[$t]}"); P50[$t]=$(median <<<"${P50[$t]}"); P99[$t]=$(median <<<"${P99[$t]}")
    C0[$t]=$(median <<<"${C0[$t]}"); C1[$t]=$(median <<<"${C1[$t]}"); US[$t]=$(median <<<"${US[$t]}")
done
redis_gets=$(rcli info commandstats | awk -F'[=,:]' '$1 == "cmdstat_get" { print $3 }')

# ---------------------------------------------------------------- report: throughput
if ((PIN)); then c0="core$PROXY_CPU%"; c1="core$LOAD_CPU%"; else c0="cpu$PROXY_CPU%"; c1="cpu$LOAD_CPU%"; fi
printf '%-14s %10s %9s %9s   %10s %6s %6s\n' store req/s "p50 ms" "p99 ms" "cpu us/req" "$c0" "$c1"
for t in "${TARGETS[@]}"; do
    printf '%-14s %10.0f %9.3f %9.3f   %10s %6s %6s\n' "${LABEL[$t]}" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
        "${US[$t]}" "${C0[$t]}" "${C1[$t]}"
done
if has memory && has redis-l1; then
    awk -v m="${RPS[memory]}" -v r="${RPS[redis-l1]}" -v mp="${P99[memory]}" -v rp="${P99[redis-l1]}" \
        -v mu="${US[memory]}" -v ru="${US[redis-l1]}" 'BEGIN { x = r / m
        printf "redis L1 5s vs memory: throughput %.3fx (goal >= 0.95%s), p99 %+.0f us, cpu/request %.2fx\n",
            x, (x >= 0.95 ? ", met" : ", NOT met"), (rp - mp) * 1000, (mu > 0 ? ru / mu : 0) }'
fi
if has memory && has redis-nol1; then
    awk -v m="${RPS[memory]}" -v r="${RPS[redis-nol1]}" -v mp="${P99[memory]}" -v rp="${P99[redis-nol1]}" \
        -v mu="${US[memory]}" -v ru="${US[redis-nol1]}" 'BEGIN { added = (rp - mp) * 1000
        printf "redis L1 off vs memory: p99 added by Redis %+.0f us (goal <= 300%s), throughput %.3fx, cpu/request %.2fx\n",
            added, (added <= 300 ? ", met" : ", NOT met"), r / m, (mu > 0 ? ru / mu : 0) }'
fi
echo "redis GET commands served during the run: ${redis_gets:-0}"
for t in "${TARGETS[@]}"; do
    printf 'memory after the run: %-13s VmRSS %s kB\n' "${LABEL[$t]}" "$(kb VmRSS "${PID[$t]}")"
done

fi

# ---------------------------------------------------------------- report: memory
((SESSIONS > 0)) || exit 0
has redis-l1 || has redis-nol1 || exit 0
fill_conf=${CONF[redis-l1]:-${CONF[redis-nol1]:-}}
echo
echo "== Redis memory per session"
rcli memory purge >/dev/null 2>&1 || true
used() { rcli info memory | awk -F: '$1 == "'"$1"'" { print $2 + 0 }'; }
before=$(used used_memory); before_rss=$(used used_memory_rss)
keys_before=$(rcli dbsize)
note "filling Redis with $SESSIONS sessions (examples/redis_fill.rs through Sessions::create)"
fill_start=$(date +%s.%N)
env -u RUST_LOG "$FILL" --config "$fill_conf" --count "$SESSIONS" >"$TMP/fill.out" 2>&1 \
    || { cat "$TMP/fill.out" >&2; die "redis_fill failed"; }
fill_s=$(awk -v a="$fill_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
after=$(used used_memory); after_rss=$(used used_memory_rss)
keys_after=$(rcli dbsize)
added_keys=$((keys_after - keys_before))
cat "$TMP/fill.out"
# A sample of session keys, in SCAN's (hash) order, and their MEMORY USAGE / STRLEN.
rcli --scan --pattern "${PREFIX}s:*" | head -n "$SAMPLE" >"$TMP/sample.keys" || true
sampled=$(wc -l <"$TMP/sample.keys")
((sampled > 0)) || die "no session keys under ${PREFIX}s:* to sample"
sed 's/^/MEMORY USAGE /' "$TMP/sample.keys" | rcli >"$TMP/usage.out"
sed 's/^/STRLEN /' "$TMP/sample.keys" | rcli >"$TMP/strlen.out"
stats() { sort -n "$1" | awk '{ v[NR] = $1; s += $1 } END {
    printf "mean %.0f, median %d, min %d, max %d", s / NR, v[int((NR + 1) / 2)], v[1], v[NR] }'; }
echo "sessions added:        $added_keys keys (fill took ${fill_s} s)"
echo "sealed value (STRLEN): $(stats "$TMP/strlen.out") bytes, sample of $sampled"
echo "MEMORY USAGE per key:  $(stats "$TMP/usage.out") bytes, sample of $sampled"
awk -v b="$before" -v a="$after" -v br="$before_rss" -v ar="$after_rss" -v n="$added_keys" 'BEGIN {
    if (n <= 0) exit
    printf "INFO used_memory:      %.1f MiB -> %.1f MiB: %.0f bytes per session\n", b / 1048576, a / 1048576, (a - b) / n
    printf "INFO used_memory_rss:  %.1f MiB -> %.1f MiB: %.0f bytes per session (allocator pages)\n", br / 1048576, ar / 1048576, (ar - br) / n }'
