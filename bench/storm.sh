#!/usr/bin/env bash
# bench/storm.sh: a refresh storm. BENCH_STORM_SESSIONS (1,000) sessions whose access
# tokens have all expired are put under load at once: the gateway must make exactly one
# refresh_token grant per session at the IdP (single-flight per session; a second call
# would replay a rotated refresh token and make the IdP revoke the grant) and answer
# every request 2xx. Run by bench/run.sh as its storm section; runnable alone.
#
# What runs (all on 127.0.0.1, free ports, one temp dir, removed on exit with every
# process):
#   upstream  nginx, 1 worker, `return 200` (lib.sh start_upstream)
#   idp       the test IdP with ACCESS_TOKEN_TTL = BENCH_STORM_TOKEN_TTL (20 s), and
#             STORE_MAX_ENTRIES raised: with oidc-provider's default in-memory store (1000
#             recent entries, ~10 a login) the first sessions' refresh tokens would be
#             evicted before the storm and every refresh of theirs be invalid_grant
#   gateway   portcullis, memory store, one protected route, session.refresh_before =
#             BENCH_STORM_REFRESH_BEFORE (1 s), log.filter BENCH_LOG_FILTER
# Steps:
#   1. log in the sessions with curl, BENCH_STORM_PARALLEL at a time, each a full login
#      (the code flow with PKCE, a cookie jar of its own so the IdP shows its forms every
#      time: a new IdP session, grant and refresh token per session)
#   2. wait until the last session's token is due for refresh (its login + TTL -
#      refresh_before, + 1 s), so every session in the storm needs a refresh
#   3. reset the IdP's statistics (POST /__test/reset_stats)
#   4. wrk -t BENCH_THREADS -c BENCH_STORM_CONNECTIONS (256) for BENCH_STORM_DURATION
#      (10 s), a Lua script handing each request the next session cookie round robin;
#      the run is shorter than TTL - refresh_before, so no refreshed token is due again
#      before it ends
#   5. read the IdP's statistics: refresh_token grants must equal the sessions; wrk's
#      non-2xx count (and the upstream's request counter against wrk's, as run_wrk does)
#      must be 0
# Printed: both numbers, the IdP's token errors, non-2xx, and req/s, p50, p99, p99.9 and
# max latency of the storm run, then the goal met or NOT met. The whole run takes about
# a minute (the logins, then TTL of waiting, then the load).
#
# Pinning: none by default (BENCH_UNPINNED=1 is this script's default; the IdP does the
# refresh work and shares the cores with everything). BENCH_UNPINNED=0 pins as
# bench/proxy.sh: the gateway alone on BENCH_PROXY_CPU with BENCH_PC_PINNED_ENV, the rest
# on BENCH_LOAD_CPU.
#
# Environment:
#   PORTCULLIS_BIN                use this binary, skip `cargo build --release --locked`
#   BENCH_STORM_SESSIONS=1000     sessions        BENCH_STORM_PARALLEL=4  logins at a time
#   BENCH_STORM_TOKEN_TTL=20      the IdP's access token lifetime, seconds
#   BENCH_STORM_REFRESH_BEFORE=1  the gateway's session.refresh_before, seconds
#   BENCH_STORM_DURATION=10s      the storm run (must be < TTL - refresh_before - 1 s)
#   BENCH_STORM_CONNECTIONS=256   BENCH_THREADS=2   wrk
#   BENCH_STORM_TIMEOUT=30s       wrk's --timeout: a request waiting for its refresh longer
#                                 than wrk's default 2 s would be dropped from the latency
#                                 figures (counted as a socket timeout) instead of measured
#   BENCH_LOG_FILTER=warn         the gateway's log.filter
#   BENCH_UNPINNED=1              BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_PC_PINNED_ENV="PORTCULLIS__SERVER__WORKERS=1"  the gateway's environment when pinned
#   BENCH_KEEP_TMP=1              keep the temp dir (configs, logs, cookies, wrk output)
#
# Exit status: 0 when the storm ran (goal met or not: the numbers are the finding), 1 when
# something broke before it could (a tool missing, a process that did not start, a login
# that failed, unreadable IdP statistics).
set -euo pipefail

SELF=${BASH_SOURCE[0]}
[[ $SELF == */* ]] && SELF_DIR=${SELF%/*} || SELF_DIR=.
ROOT=$(cd "$SELF_DIR/.." && pwd)
SESSIONS=${BENCH_STORM_SESSIONS:-1000}
PARALLEL=${BENCH_STORM_PARALLEL:-4}
TOKEN_TTL=${BENCH_STORM_TOKEN_TTL:-20}
REFRESH_BEFORE=${BENCH_STORM_REFRESH_BEFORE:-1}
STORM_DURATION=${BENCH_STORM_DURATION:-10s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_STORM_CONNECTIONS:-256}
WRK_TIMEOUT=${BENCH_STORM_TIMEOUT:-30s}
LOG_FILTER=${BENCH_LOG_FILTER:-warn}
read -r -a PC_PINNED_ENV <<<"${BENCH_PC_PINNED_ENV-PORTCULLIS__SERVER__WORKERS=1}"
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
export BENCH_UNPINNED=${BENCH_UNPINNED:-1}
# lib.sh's run_wrk settings (unused here: the storm has no warm-up, which would refresh).
DURATION=$STORM_DURATION
WARMUP=0s
BODY="hello from upstream"
CLIENT_SECRET="bench-client-secret"

BENCH_NAME=storm.sh
# shellcheck source=bench/lib.sh
. "$SELF_DIR/lib.sh"

for v in SESSIONS PARALLEL TOKEN_TTL REFRESH_BEFORE CONNECTIONS THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got ${!v})"
done
# The storm run in seconds (wrk's units: s, m, h; a bare number is seconds).
storm_s=$(awk -v d="$STORM_DURATION" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    if (u == "m") n *= 60; else if (u == "h") n *= 3600; else if (u != "s" && u != "") n = -1; print n }')
awk -v s="$storm_s" -v t="$TOKEN_TTL" -v r="$REFRESH_BEFORE" 'BEGIN { exit !(s > 0 && s + 1 < t - r) }' \
    || die "BENCH_STORM_DURATION=$STORM_DURATION must be shorter than TOKEN_TTL - REFRESH_BEFORE - 1 s ($TOKEN_TTL - $REFRESH_BEFORE - 1): a session refreshed at the start would be due again before the end"

require_tools nginx wrk curl node
bench_init
build_release
pc_env=()
((PIN)) && pc_env=("${PC_PINNED_ENV[@]}")

take_port UP_PORT
take_port IDP_PORT
take_port GW_PORT
GW=http://127.0.0.1:$GW_PORT

start_upstream "$UP_PORT" "$BODY" "${LOAD_PIN[@]}"
# STORE_MAX_ENTRIES: oidc-provider's in-memory store would evict the oldest sessions'
# refresh tokens after ~150 logins (tests/idp/README.md).
start_idp "$IDP_PORT" "$TMP/idp.log" "${LOAD_PIN[@]}" CLIENT_SECRET="$CLIENT_SECRET" \
    ACCESS_TOKEN_TTL="$TOKEN_TTL" REDIRECT_URIS="$GW/oauth2/callback" STORE_MAX_ENTRIES=$((SESSIONS * 100 + 10000))
cat >"$TMP/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "$GW"
[log]
filter = "$LOG_FILTER"
[oidc]
issuer = "$ISSUER"
client_id = "gateway"
client_secret = "$CLIENT_SECRET"
[session]
secret = "$(head -c 48 /dev/urandom | base64 -w0)"
cookie_secure = false
store = "memory"
refresh_before = "${REFRESH_BEFORE}s"
[[route]]
path = "/"
upstream = "http://127.0.0.1:$UP_PORT"
EOF
start_portcullis gateway "$TMP/gateway.toml" "$TMP/gateway.log" "${PROXY_PIN[@]}" "${pc_env[@]}"
GW_PID=$PC_PID

# ---------------------------------------------------------------- 1. logins
mkdir -p "$TMP/jars" "$TMP/cookies"
# login_one i: a full login into a jar of its own; the session cookie to cookies/i.
login_one() {
    LOGIN_USER=storm$1 idp_login "session $1" "$GW/" "$TMP/jars/$1" portcullis "$BODY" 2>>"$TMP/login-errors.log"
    printf '%s\n' "$LOGIN_COOKIE" >"$TMP/cookies/$1"
}
note "logging in $SESSIONS sessions, $PARALLEL at a time (access tokens live $TOKEN_TTL s, refresh_before ${REFRESH_BEFORE}s)"
login_start=$(date +%s.%N)
# PARALLEL logins in flight: a new one starts as one ends (`wait -n` on the logins only;
# a plain `wait` would wait for the servers too).
declare -A inflight=()
for ((i = 1; i <= SESSIONS; i++)); do
    (login_one "$i") &
    inflight[$!]=1
    while ((${#inflight[@]} >= PARALLEL)); do
        done_pid=""
        wait -n -p done_pid "${!inflight[@]}" || true
        if [[ -n $done_pid ]]; then
            unset "inflight[$done_pid]"
        else
            for pid in "${!inflight[@]}"; do wait "$pid" || true; done
            inflight=()
        fi
    done
done
for pid in "${!inflight[@]}"; do wait "$pid" || true; done
login_end=$(date +%s.%N)
logged_in=$(find "$TMP/cookies" -type f | wc -l)
if ((logged_in != SESSIONS)); then
    show_log "$TMP/login-errors.log"
    die "only $logged_in of $SESSIONS logins succeeded"
fi
cat "$TMP"/cookies/* >"$TMP/cookies.txt"
((logged_in == $(sort -u "$TMP/cookies.txt" | wc -l))) || die "the logins did not give $SESSIONS distinct sessions"
login_s=$(awk -v a="$login_start" -v b="$login_end" 'BEGIN { printf "%.1f", b - a }')
logins_stats=$(idp_stats) || die "cannot read the IdP's statistics"
note "$logged_in sessions in $login_s s; IdP after the logins: $logins_stats"
# Every login made one code grant and nothing refreshed yet.
[[ $(json_num authorization_code <<<"$logins_stats") == "$SESSIONS" ]] \
    || die "the IdP counted $(json_num authorization_code <<<"$logins_stats") authorization_code grants for $SESSIONS logins"

# ---------------------------------------------------------------- 2.-4. the storm
# The last token was issued before login_end; it is due at issue + TTL - refresh_before.
due=$(awk -v e="$login_end" -v t="$TOKEN_TTL" -v r="$REFRESH_BEFORE" -v n="$(date +%s.%N)" \
    'BEGIN { w = e + t - r + 1 - n; printf "%.1f", (w > 0 ? w : 0) }')
note "waiting $due s until every session's access token is due for refresh"
sleep "$due"
idp_reset_stats || die "cannot reset the IdP's statistics"

# Each wrk thread walks the cookies round robin from its own offset; requests are built
# once in init (no string work per request).
cat >"$TMP/storm.lua" <<EOF
local threads = 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local reqs, i = {}, 0
init = function(args)
  for line in io.lines("$TMP/cookies.txt") do
    reqs[#reqs + 1] = wrk.format("GET", "/", { ["Cookie"] = "portcullis=" .. line })
  end
  i = math.floor(id * #reqs / $THREADS)
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  io.write(string.format("p99.9 latency: %.0f us\\n", latency:percentile(99.9)))
  io.write(string.format("max latency: %.0f us\\n", latency.max))
end
EOF
note "storm: wrk -t$THREADS -c$CONNECTIONS -d$STORM_DURATION over the $SESSIONS session cookies"
up0=$(upstream_requests)
ticks0=$(proc_ticks "$GW_PID")
"${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$STORM_DURATION" --timeout "$WRK_TIMEOUT" \
    --latency -s "$TMP/storm.lua" "$GW/" \
    >"$TMP/storm.out" 2>&1 || { cat "$TMP/storm.out" >&2; die "wrk failed"; }
ticks=$(($(proc_ticks "$GW_PID") - ticks0))
up1=$(upstream_requests)
wrk_parse "$TMP/storm.out" || { cat "$TMP/storm.out" >&2; die "cannot parse wrk output"; }
max_ms=$(awk '/^max latency:/ { printf "%.1f", $3 / 1000 }' "$TMP/storm.out")
not_upstream=$((R_REQUESTS - (up1 - up0)))
((not_upstream > 0)) || not_upstream=0

# ---------------------------------------------------------------- 5. the IdP's count
# Refreshes still in flight when wrk stopped are counted too: wait until the count holds.
prev=""
for ((i = 0; i < 50; i++)); do
    stats=$(idp_stats) || die "cannot read the IdP's statistics"
    [[ $stats == "$prev" ]] && break
    prev=$stats
    sleep 0.2
done
refreshes=$(json_num refresh_token <<<"$stats")
codes=$(json_num authorization_code <<<"$stats")
errors=$(grep -o '"token_errors":{[^}]*}' <<<"$stats" | sed 's/^"token_errors"://') || true
errors=${errors:-"{}"}
cpu_us=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$R_REQUESTS" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * t / hz / n : 0) }')

echo "== refresh storm: $SESSIONS sessions whose access tokens expired together, under load"
echo "setup     IdP access tokens live $TOKEN_TTL s; gateway session.refresh_before ${REFRESH_BEFORE}s, memory store, log.filter \"$LOG_FILTER\"; $(if ((PIN)); then echo "pinned: gateway on core $PROXY_CPU (${pc_env[*]}), the rest on core $LOAD_CPU"; else echo "unpinned, gateway default runtime"; fi)"
echo "logins    $logged_in full logins (code flow + PKCE, $PARALLEL at a time) in $login_s s"
echo "load      wrk -t$THREADS -c$CONNECTIONS -d$STORM_DURATION, each request the next session cookie round robin; started when every token was due"
printf 'storm     %.0f req/s, %s requests; latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %s ms; gateway CPU %s µs/request\n' \
    "$R_RPS" "$R_REQUESTS" "$R_P50" "$R_P99" "$R_P999" "${max_ms:-?}" "$cpu_us"
echo "IdP       refresh_token grants during the storm: $refreshes (sessions: $SESSIONS); authorization_code grants: $codes; token errors: $errors"
echo "responses non-2xx: $R_NON2XX; not from the upstream: $not_upstream${R_SOCKERR:+; $R_SOCKERR}"
ok=1
((refreshes == SESSIONS)) || ok=0
((R_NON2XX == 0 && not_upstream == 0)) || ok=0
[[ -z $R_SOCKERR ]] || ok=0
[[ $errors == "{}" ]] || ok=0
if ((ok)); then
    echo "goal      refresh storm: IdP calls == sessions ($refreshes == $SESSIONS), zero errors — met"
else
    why=()
    if ((refreshes > SESSIONS)); then why+=("$((refreshes - SESSIONS)) refresh calls more than sessions: some session refreshed more than once")
    elif ((refreshes < SESSIONS)); then why+=("$((SESSIONS - refreshes)) sessions made no refresh call during the run"); fi
    ((R_NON2XX == 0)) || why+=("$R_NON2XX non-2xx responses")
    ((not_upstream == 0)) || why+=("$not_upstream responses not from the upstream")
    [[ -z $R_SOCKERR ]] || why+=("wrk $R_SOCKERR")
    [[ $errors == "{}" ]] || why+=("IdP token errors $errors")
    echo "goal      refresh storm: IdP calls == sessions ($refreshes vs $SESSIONS), zero errors — NOT met: $(printf '%s; ' "${why[@]}" | sed 's/; $//')"
    note "the gateway's log: $TMP/gateway.log (BENCH_KEEP_TMP=1 keeps it); its last lines:"
    tail -n 5 "$TMP/gateway.log" >&2 || true
fi
exit 0
