#!/usr/bin/env bash
# bench/scale.sh: session scale. One gateway whose memory store holds a million real-sized
# sessions: resident bytes per session, and the latency of logged-in requests that each
# pick a random one of those sessions against requests that all carry the same one.
#
# What runs (all on 127.0.0.1, ports picked free at run time, everything in one temporary
# directory that is removed on exit together with every process started):
#   upstream    nginx, 1 worker, `return 200 "hello from upstream\n"`
#   gateway     examples/session_scale.rs (release build): the real gateway, built from a
#               config file as `portcullis run --config` builds it (Config::load,
#               server::bind_workers, Gateway::new, server::serve_workers), one protected
#               route `/` to the upstream, log filter "warn" (BENCH_LOG_FILTER), the
#               memory store with session.max_sessions = N. Before
#               serving it creates N sessions through the production Sessions::create
#               (sealed exactly as a login seals them; tokens of real size: a ~1 KB JWT
#               access token, a refresh token, a ~1 KB ID token; examples/support/
#               fake_session.rs), measures its VmRSS before and after that fill, and writes
#               the N `Cookie` header values (`portcullis=<id>`) to a file, one a line.
#               The access tokens expire an hour after the fill, so nothing refreshes, and
#               no IdP runs: [oidc] names an issuer on a closed port; its discovery fails
#               in the background (a warning in the gateway's log), which logged-in
#               requests do not need.
#   load        wrk -t2 -c16 --latency with bench/scale.lua's logic (written to the temp
#               dir): every request carries the Cookie of a session picked uniformly at
#               random from a cookie file that each wrk thread loads whole in `init` (the
#               file is read as one string of fixed-length lines: a million cookies load
#               in well under a second, nothing sampled). Two runs of the same duration,
#               with the same script: "random session" over the N-line file, then
#               "one session" over a file holding one of those cookies.
# Before measuring, the script checks that the first, the last and 20 random cookies get
# the upstream's body through the gateway (a 302 to login or a 401 would make the
# benchmark worthless; wrk sends no `Accept: text/html`, so a request without a session
# gets 401, which wrk counts as non-2xx), and that requests without a cookie or with an
# unknown one get 401. During each run the upstream's request counter (stub_status) must
# move at least as much as wrk's count (lib.sh run_wrk), and after it the gateway's
# /metrics must show as many 2xx answers on the route as wrk completed (give or take the
# connections cut at the end), no other status (3xx included), as many upstream calls, and
# no token refresh.
#
# Pinning, as in proxy.sh: the fill runs unpinned (it is set-up, on every core: 1,000,000
# sessions take about half a minute on two cores), then every thread of the gateway is
# moved to core 0 (BENCH_PROXY_CPU) with taskset, where it serves alone with one serving
# thread (PORTCULLIS__SERVER__WORKERS=1, server.workers; BENCH_PROXY_THREADS sets it); the
# upstream and wrk share core 1 (BENCH_LOAD_CPU). BENCH_UNPINNED=1 runs without taskset.
#
# Last-seen writes: a read writes the session's last-seen time back when it is a minute
# old or more (session.idle_timeout / 4, at most 60 s). By default the sessions are
# logged in at the fill, so the random run (measured first, right after the fill) reads
# sessions seen less than a minute ago and writes nothing back, unless the fill and the
# runs last longer than a minute: the report says how many sessions were past that age
# when the random run ended. BENCH_SCALE_LAST_SEEN_AGO=120 backdates every session by two
# minutes instead, so each session's first request in a run writes its last-seen time
# back (users returning after a minute or more).
#
# Environment:
#   BENCH_SCALE_SESSIONS=1000000   sessions in the store
#   PORTCULLIS_SCALE_BIN           use this session_scale binary, skip
#                                  `cargo build --release --locked --example session_scale`
#                                  (PORTCULLIS_BIN is not used: the gateway is the example)
#   BENCH_DURATION=10s   measured run per target    BENCH_WARMUP=2s  warm-up per target
#   BENCH_THREADS=2      wrk threads                BENCH_CONNECTIONS=16  wrk connections
#   BENCH_ROUNDS=1       measure random and one in turn this many times, report medians
#   BENCH_SCALE_LAST_SEEN_AGO=0    seconds the sessions' login and last-seen are backdated
#   BENCH_SCALE_FILL_THREADS=0     fill threads (0: every CPU the process may use)
#   BENCH_SCALE_FILL_TIMEOUT=900   seconds the fill may take
#   BENCH_PROXY_THREADS=1          the gateway's server.workers (PORTCULLIS__SERVER__WORKERS)
#   BENCH_LOG_FILTER=warn          the gateway's log.filter
#   BENCH_UNPINNED=1     no CPU pinning             BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_KEEP_TMP=1     keep the temp dir (config, cookie files, logs, wrk output)
#
# Output (stdout): a Markdown section, a table (req/s, p50, p99, p99.9, gateway CPU per
# request, for "random session" and "one session") and lines for the fill, the resident
# bytes per session against the goal (<= 3072 B), what one session weighs in the store,
# and random p99 / one p99 against the goal (<= 1.2). Progress goes to stderr.
# Exit status: 0 when the benchmark ran, whether or not the goals are met; 1 when
# something broke (missing tools, a process that did not start, a cookie that does not
# reach the upstream, non-2xx responses, a /metrics count that does not match).
set -euo pipefail

SELF=${BASH_SOURCE[0]}
[[ $SELF == */* ]] && SELF_DIR=${SELF%/*} || SELF_DIR=.
ROOT=$(cd "$SELF_DIR/.." && pwd)
SESSIONS=${BENCH_SCALE_SESSIONS:-1000000}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
ROUNDS=${BENCH_ROUNDS:-1}
LAST_SEEN_AGO=${BENCH_SCALE_LAST_SEEN_AGO:-0}
FILL_THREADS=${BENCH_SCALE_FILL_THREADS:-0}
FILL_TIMEOUT=${BENCH_SCALE_FILL_TIMEOUT:-900}
PROXY_THREADS=${BENCH_PROXY_THREADS:-1}
LOG_FILTER=${BENCH_LOG_FILTER:-warn}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BODY="hello from upstream"
# A read writes last-seen back once it is this old (clamp(idle_timeout / 4, 1 s, 60 s),
# idle_timeout 8h as configured below).
TOUCH_AFTER=60
GOAL_BYTES=3072
GOAL_RATIO=1.2

BENCH_NAME=scale.sh
# shellcheck source=bench/lib.sh
. "$SELF_DIR/lib.sh"

[[ $SESSIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE_SESSIONS must be a positive integer (got ${SESSIONS@Q})"
[[ $LAST_SEEN_AGO =~ ^[0-9]+$ ]] || die "BENCH_SCALE_LAST_SEEN_AGO must be whole seconds (got ${LAST_SEEN_AGO@Q})"
require_tools nginx wrk curl taskset
bench_init

# ---------------------------------------------------------------- the example
if [[ -n ${PORTCULLIS_SCALE_BIN:-} ]]; then
    [[ -x $PORTCULLIS_SCALE_BIN ]] || die "PORTCULLIS_SCALE_BIN=$PORTCULLIS_SCALE_BIN is not an executable file"
    SCALE_BIN=$PORTCULLIS_SCALE_BIN
else
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
    note "building: cargo build --release --locked --example session_scale"
    (cd "$ROOT" && cargo build --release --locked --example session_scale) \
        || die "cargo build --example session_scale failed"
    SCALE_BIN=$TARGET_DIR/release/examples/session_scale
    [[ -x $SCALE_BIN ]] || die "no session_scale example at $SCALE_BIN after the build"
fi

take_port UP_PORT
take_port GW_PORT
start_upstream "$UP_PORT" "$BODY" "${LOAD_PIN[@]}"

GW_CONF=$TMP/gateway.toml
GW_OUT=$TMP/gateway.out
GW_LOG=$TMP/gateway.log
COOKIES=$TMP/cookies.txt
SESSION_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
cat >"$GW_CONF" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "http://127.0.0.1:$GW_PORT"
[log]
filter = "$LOG_FILTER"
[oidc]
# Nobody listens here: discovery fails in the background; logged-in requests with a
# fresh access token never need the IdP.
issuer = "http://127.0.0.1:1"
client_id = "gateway"
client_secret = "bench-client-secret"
discovery_retry_max = "10m"
[session]
secret = "$SESSION_SECRET"
cookie_secure = false
store = "memory"
max_sessions = $SESSIONS
idle_timeout = "8h"
absolute_timeout = "24h"
[[route]]
path = "/"
upstream = "http://127.0.0.1:$UP_PORT"
EOF

note "filling $SESSIONS sessions (unpinned), then serving on core $PROXY_CPU"
# RUST_LOG would override log.filter; the bench measures the configured filter.
env -u RUST_LOG -u TOKIO_WORKER_THREADS -u PORTCULLIS__SERVER__WORKERS \
    PORTCULLIS__SERVER__WORKERS="$PROXY_THREADS" "$SCALE_BIN" --config "$GW_CONF" --cookies "$COOKIES" \
    --count "$SESSIONS" --last-seen-ago "$LAST_SEEN_AGO" --fill-threads "$FILL_THREADS" \
    >"$GW_OUT" 2>"$GW_LOG" &
PIDS+=($!)
GW_PID=$!
for ((i = 0; ; i++)); do
    kill -0 "$GW_PID" 2>/dev/null || { show_log "$GW_LOG"; die "session_scale exited during the fill"; }
    grep -q '^listening=' "$GW_OUT" && break
    ((i < FILL_TIMEOUT * 10)) || { show_log "$GW_LOG"; die "the fill did not finish within $FILL_TIMEOUT s"; }
    sleep 0.1
done
# pin_gateway: every thread of the gateway onto PROXY_CPU (threads started later inherit
# it; run again once the serving threads surely exist).
pin_gateway() {
    ((PIN)) || return 0
    taskset -a -p -c "$PROXY_CPU" "$GW_PID" >/dev/null || die "cannot pin the gateway to core $PROXY_CPU"
}
pin_gateway
# fmt_int 1000000 -> 1,000,000
fmt_int() { sed ':a; s/\B[0-9]\{3\}\>/,&/; ta' <<<"$1"; }
# field key: the value of key=... in the example's output.
field() { grep -o "\\b$1=[^ ]*" "$GW_OUT" | head -n 1 | cut -d= -f2-; }
HELD=$(field held); FILL_S=$(field fill_seconds); FILL_RATE=$(field fill_per_second)
FILL_THREADS_USED=$(field fill_threads); LOGGED_IN=$(field logged_in)
SEALED=$(field sealed_bytes); PLAIN=$(field plain_bytes)
RSS_BEFORE=$(field rss_before); RSS_AFTER=$(field rss_after); PER_SESSION=$(field bytes_per_session)
ACCESS_CHARS=$(field access_chars); ID_CHARS=$(field id_chars); REFRESH_CHARS=$(field refresh_chars)
COOKIE_NAME=$(field cookie_name)
[[ -n $PER_SESSION && -n $HELD && -n $COOKIE_NAME ]] || { cat "$GW_OUT" >&2; die "cannot parse session_scale's output"; }
((HELD == SESSIONS)) || die "the store holds $HELD of $SESSIONS sessions"
GW=http://127.0.0.1:$GW_PORT
wait_http gateway "$GW_PID" "$GW/healthz" "$GW_LOG"
pin_gateway

# ---------------------------------------------------------------- the cookies pass
LINES=$(wc -l <"$COOKIES")
((LINES == SESSIONS)) || die "$COOKIES has $LINES lines, not $SESSIONS"
LINE_LEN=$(($(head -n 1 "$COOKIES" | wc -c)))
(($(wc -c <"$COOKIES") == SESSIONS * LINE_LEN)) || die "$COOKIES: the lines are not all $LINE_LEN bytes long"
# The first, the last and 20 random sessions, read in one pass: "line cookie".
awk -v n="$SESSIONS" -v seed="$RANDOM" 'BEGIN { srand(seed); pick[1] = 1; pick[n] = 1
    for (i = 0; i < 20; i++) pick[int(rand() * n) + 1] = 1 }
    NR in pick { print NR, $0 }' "$COOKIES" >"$TMP/picked.txt"
checked=0
while read -r n cookie; do
    [[ $cookie == "$COOKIE_NAME="* ]] || die "cookie line $n is ${cookie@Q}"
    got=$(curl -sS --max-time 5 -H "Cookie: $cookie" "$GW/" 2>&1) || true
    [[ $got == "$BODY" ]] || { show_log "$GW_LOG"; die "session $n (${cookie:0:20}...) does not reach the upstream (got: ${got:0:200})"; }
    checked=$((checked + 1))
done <"$TMP/picked.txt"
((checked >= 2 || (SESSIONS == 1 && checked == 1))) || die "no cookies checked"
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$GW/"; }
[[ $(status) == 401 ]] || die "a request without a session cookie did not get 401"
[[ $(status -H "Cookie: $COOKIE_NAME=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") == 401 ]] \
    || die "a request with an unknown session cookie did not get 401"
# The one session: the last of the random picks.
ONE=$TMP/one-cookie.txt
tail -n 1 "$TMP/picked.txt" | cut -d' ' -f2 >"$ONE"
note "$checked sessions checked: each reaches the upstream; no cookie or an unknown one gets 401"

# ---------------------------------------------------------------- the wrk script
LUA=$TMP/scale.lua
cat >"$LUA" <<'EOF'
-- Each request carries the Cookie of a session picked uniformly at random from the file
-- $SCALE_COOKIES: fixed-length lines ($SCALE_LINE_LEN bytes with the newline), loaded
-- whole as one string per thread. done() prints the exact percentiles (and p99.9 in the
-- form lib.sh's wrk_parse reads).
local data, len, count, head, tail
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
end
function init(args)
    local f = assert(io.open(os.getenv("SCALE_COOKIES"), "rb"))
    data = f:read("*a")
    f:close()
    len = tonumber(os.getenv("SCALE_LINE_LEN"))
    count = math.floor(#data / len)
    assert(count >= 1 and count * len == #data, "cookie file: lines of unequal length")
    math.randomseed(os.time() * 100 + (thread_number or 0))
    head = "GET " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port .. "\r\nCookie: "
    tail = "\r\n\r\n"
end
function request()
    local at = math.random(0, count - 1) * len
    return head .. data:sub(at + 1, at + len - 1) .. tail
end
function done(summary, latency, requests)
    io.write(string.format("p99.9 latency: %.0f us\n", latency:percentile(99.9)))
    io.write(string.format("scale: p50_us=%d p99_us=%d p999_us=%d requests=%d non2xx=%d\n",
        math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
        math.floor(latency:percentile(99.9)),
        summary.requests, summary.errors.status))
end
EOF

# ---------------------------------------------------------------- /metrics check
# metric name route -> the value of name{route="route",...} summed over its other labels;
# for requests, class= picks one status class.
metric() { # name route [class]
    curl -sf --max-time 5 "$GW/metrics" | awk -v n="$1" -v r="route=\"$2\"" -v c="${3:+class=\"$3\"}" '
        index($0, n "{") == 1 && index($0, r) && (c == "" || index($0, c)) { s += $NF; found = 1 }
        END { if (found) printf "%.0f\n", s; else print "none" }'
}
metrics_snapshot() { # -> "2xx other upstream refreshes"
    local ok all up refreshes
    ok=$(metric portcullis_requests_total "route[0]" 2xx)
    all=$(metric portcullis_requests_total "route[0]")
    up=$(metric portcullis_upstream_duration_seconds_count "route[0]")
    refreshes=$(curl -sf --max-time 5 "$GW/metrics" | awk '/^portcullis_refreshes_total/ { s += $NF } END { printf "%.0f\n", s }')
    if [[ $ok == none || $all == none || $up == none ]]; then echo none; return; fi
    echo "$ok $((all - ok)) $up $refreshes"
}
METRICS_OK=1
[[ $(metrics_snapshot) == none ]] && { METRICS_OK=0; note "warning: /metrics has no counters for route[0]; the count check is skipped"; }
check_metrics() { # label before after wrk-requests
    ((METRICS_OK)) || return 0
    local label=$1 want=$4 b a ok other up refr
    [[ $2 != none && $3 != none ]] || die "$label: cannot read the gateway's /metrics"
    read -r -a b <<<"$2"; read -r -a a <<<"$3"
    ok=$((a[0] - b[0])); other=$((a[1] - b[1])); up=$((a[2] - b[2])); refr=$((a[3] - b[3]))
    ((other == 0)) || die "$label: the gateway answered $other requests with a status other than 2xx"
    ((refr == 0)) || die "$label: $refr token refreshes happened (the sessions' access tokens should be fresh)"
    ((ok >= want && ok <= want + 2 * CONNECTIONS)) \
        || die "$label: the gateway counted $ok 2xx answers, wrk $want completed requests"
    ((up == ok)) || die "$label: $ok 2xx answers but $up upstream calls"
}

# ---------------------------------------------------------------- measuring
echo "== portcullis session scale benchmark" >&2
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    note "warning: load average $load1 before start: other work on this machine will skew the numbers"
fi
declare -A RPS P50 P99 P999 US FILE
TARGETS=(random one)
FILE[random]=$COOKIES
FILE[one]=$ONE
declare -A LABEL=([random]="random session (uniform over $(fmt_int "$SESSIONS"))" [one]="one session")
# secs 10s|2m|1h|5 -> seconds (wrk's duration syntax).
secs() { awk -v d="$1" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    if (u == "m") n *= 60; else if (u == "h") n *= 3600; print n }'; }
DURATION_S=$(secs "$DURATION")
# Seconds of the random runs' measured time during which the sessions were due a
# last-seen write, and their measured time in all.
DUE_S=0; RANDOM_S=0
due_from=$((LOGGED_IN + TOUCH_AFTER))
pct() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do
        note "round $round/$ROUNDS: measuring ${LABEL[$t]} (${WARMUP} warm-up + ${DURATION})"
        before=$(metrics_snapshot)
        export SCALE_COOKIES=${FILE[$t]} SCALE_LINE_LEN=$LINE_LEN
        run_wrk "$t" "$GW/" "$GW_PID" -s "$LUA"
        ended=$(date +%s)
        after=$(metrics_snapshot)
        if [[ $t == random ]]; then
            RANDOM_S=$(awk -v a="$RANDOM_S" -v d="$DURATION_S" 'BEGIN { print a + d }')
            DUE_S=$(awk -v a="$DUE_S" -v d="$DURATION_S" -v e="$ended" -v f="$due_from" 'BEGIN {
                s = e - d; if (f > s) s = f; print a + (e > s ? e - s : 0) }')
        fi
        out=$TMP/$t.out
        line=$(grep '^scale: ' "$out") || { cat "$out" >&2; die "$t: no percentiles from the wrk script"; }
        get() { grep -o "\\b$1=[0-9]*" <<<"$line" | cut -d= -f2; }
        (($(get non2xx) == 0)) || die "$t: $(get non2xx) non-2xx responses"
        warm=$(awk '/ requests in / { print $1 }' "$TMP/warmup.out")
        check_metrics "$t" "$before" "$after" "$((warm + $(get requests)))"
        RPS[$t]+=" $R_RPS"; US[$t]+=" $R_US"
        P50[$t]+=" $(pct "$(get p50_us)")"; P99[$t]+=" $(pct "$(get p99_us)")"; P999[$t]+=" $(pct "$(get p999_us)")"
    done
done
for t in "${TARGETS[@]}"; do
    ((ROUNDS > 1)) && note "${LABEL[$t]} p99 ms per round:${P99[$t]}"
    RPS[$t]=$(median <<<"${RPS[$t]}"); US[$t]=$(median <<<"${US[$t]}")
    P50[$t]=$(median <<<"${P50[$t]}"); P99[$t]=$(median <<<"${P99[$t]}"); P999[$t]=$(median <<<"${P999[$t]}")
done
RSS_END=$(kb VmRSS "$GW_PID"); HWM_END=$(kb VmHWM "$GW_PID")

# Every session was logged in and last seen at LOGGED_IN: from LOGGED_IN + TOUCH_AFTER on,
# a session's first request writes its last-seen time back.
touch_note=$(awk -v ago="$LAST_SEEN_AGO" -v after="$TOUCH_AFTER" -v due="$DUE_S" -v all="$RANDOM_S" 'BEGIN {
    if (ago >= after) print "the sessions were last seen " ago " s before the fill: each one'"'"'s first request in the runs wrote its last-seen time back"
    else if (due <= 0) print "no session was a minute old during the random run: no request wrote last-seen back"
    else printf "the sessions were a minute old (due a last-seen write on their first request) for %.0f%% of the random run'"'"'s measured time\n", 100 * due / all }')

# ---------------------------------------------------------------- report
echo "### Session scale: $(fmt_int "$SESSIONS") sessions in the memory store"
echo
if ((PIN)); then
    pinning="gateway alone on core $PROXY_CPU (server.workers $PROXY_THREADS), wrk and the nginx upstream on core $LOAD_CPU"
else
    pinning="unpinned (server.workers $PROXY_THREADS)"
fi
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP), $ROUNDS round(s), medians; $pinning; load average at start $load1."
echo
echo "| requests | req/s | p50 ms | p99 ms | p99.9 ms | gateway CPU µs/req |"
echo "|---|---:|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
    printf '| %s | %.0f | %.3f | %.3f | %.3f | %s |\n' "${LABEL[$t]}" "${RPS[$t]}" "${P50[$t]}" \
        "${P99[$t]}" "${P999[$t]}" "${US[$t]}"
done
echo
awk -v r="${P99[random]}" -v o="${P99[one]}" -v g="$GOAL_RATIO" 'BEGIN {
    x = (o > 0) ? r / o : 0
    printf "- random p99 / one-session p99: **%.2fx** (goal <= %.1f: %s)\n", x, g, (x <= g ? "met" : "NOT met") }'
awk -v b="$PER_SESSION" -v g="$GOAL_BYTES" -v before="$RSS_BEFORE" -v after="$RSS_AFTER" 'BEGIN {
    printf "- resident per session: **%d B** (goal <= %d B: %s): VmRSS %.0f MiB before the fill, %.0f MiB after\n",
        b, g, (b <= g ? "met" : "NOT met"), before / 1048576, after / 1048576 }'
awk -v b="$PER_SESSION" -v s="$SEALED" -v p="$PLAIN" -v a="$ACCESS_CHARS" -v i="$ID_CHARS" -v r="$REFRESH_CHARS" 'BEGIN {
    printf "- one session in the store: %d B sealed (%d B plain: access token %d, ID token %d, refresh token %d chars, and the identity); the other %d B per session are the store entry (key, entry, expiry and index), the allocator and the rest\n",
        s, p, a, i, r, b - s }'
echo "- fill: $(fmt_int "$HELD") sessions through Sessions::create in $FILL_S s ($FILL_RATE/s on $FILL_THREADS_USED threads)"
echo "- every request was a 2xx proxied to the upstream (the first, the last and 20 random sessions checked by body first; /metrics counts matched wrk's; no refresh); $touch_note"
echo "- gateway after the runs: VmRSS $((RSS_END / 1024)) MiB (peak $((HWM_END / 1024)) MiB)"
