# shellcheck shell=bash disable=SC2034  # sourced: the variables it sets are the callers'
# bench/lib.sh: what the benchmark scripts share (sourced, not run): messages, CPU pinning,
# process cleanup, the release build, free loopback ports, throwaway nginx instances
# (the upstream and a plain reverse proxy), portcullis, redis-server, the test IdP and
# logins through it, and one wrk measurement with per-core busy time, CPU time per request
# of the server's whole process tree, p99.9, and a check that every response came from
# the upstream.
#
# The sourcing script sets, before calling bench_init:
#   BENCH_NAME   its name, for messages ("proxy.sh")
#   ROOT         the repository root
#   DURATION WARMUP THREADS CONNECTIONS PROXY_CPU LOAD_CPU   wrk and pinning settings
# bench_init then sets: NGINX WRK (tools), PIN PROXY_PIN LOAD_PIN (taskset prefixes;
# set_pinning switches them), PIN_OK (whether pinning is possible at all), TMP (temporary
# directory, removed on exit with every pid in PIDS), CLK_TCK, P999_LUA (a wrk script).

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
    PIN_OK=1
    if ! command -v taskset >/dev/null; then
        note "taskset not found (util-linux); running unpinned"
        PIN_OK=0
    elif ! taskset -c "$PROXY_CPU" true 2>/dev/null || ! taskset -c "$LOAD_CPU" true 2>/dev/null \
        || [[ $PROXY_CPU == "$LOAD_CPU" ]]; then
        note "cannot pin to CPUs $PROXY_CPU and $LOAD_CPU (need two distinct usable cores); running unpinned"
        PIN_OK=0
    fi
    if [[ ${BENCH_UNPINNED:-0} == 1 ]]; then set_pinning 0; else set_pinning "$PIN_OK"; fi

    # ---- cleanup
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
    read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { EPH_LO=32768; EPH_HI=60999; }
    USED_PORTS=" "

    # wrk's --latency stops at p99; its Lua `done` hook sees the whole histogram. With no
    # `request`/`response` function wrk still sends its prebuilt request (no Lua per request).
    P999_LUA=$TMP/p999.lua
    cat >"$P999_LUA" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("p99.9 latency: %.0f us\n", latency:percentile(99.9)))
end
LUA
}

# set_pinning 1|0: PIN and the command prefixes PROXY_PIN / LOAD_PIN (arrays, not
# functions, so `$!` is the pid of the real process: taskset and env exec what they run).
set_pinning() {
    PIN=$1
    PROXY_PIN=(); LOAD_PIN=()
    if ((PIN)); then PROXY_PIN=(taskset -c "$PROXY_CPU"); LOAD_PIN=(taskset -c "$LOAD_CPU"); fi
}

# tree_pids pid: the pid and all its descendants (nginx or Apache workers...), one a line.
tree_pids() {
    local p
    echo "$1"
    for p in $(pgrep -P "$1" || true); do tree_pids "$p"; done
}

# stop_all: every process in PIDS, and whatever they started, gone; PIDS empty. TERM
# first, KILL after 5 s.
stop_all() {
    local pid i tree=() p
    for pid in "${PIDS[@]}"; do
        # Descendants with their start time, so a pid reused meanwhile is left alone.
        for p in $(tree_pids "$pid"); do tree+=("$p:$(proc_start "$p")"); done
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for p in "${tree[@]}"; do
        pid=${p%%:*}
        if [[ -n ${p#*:} && $(proc_start "$pid") == "${p#*:}" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    PIDS=()
    return 0
}
# proc_start pid: its start time (clock ticks after boot), empty once it is gone.
proc_start() { awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true; }

bench_cleanup() {
    stop_all
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

# start_upstream port body cpu-prefix...: an nginx (one worker) answering
# `return 200 "<body>\n"`, and two locations a benchmark does not load:
#   /__echo   answers the Authorization header it received (what a proxy sent upstream)
#   /__stats  nginx's stub_status; its request counter lets run_wrk check that every
#             response the load generator counted came from the upstream (UP_STATS_URL)
# Sets UP_PID, UP_DIR (UPSTREAM_DIR, default $TMP/upstream) and UP_STATS_URL.
start_upstream() {
    local port=$1 body=$2
    shift 2
    UP_DIR=${UPSTREAM_DIR:-$TMP/upstream}
    nginx_conf "$UP_DIR" 1 "    server {
        listen 127.0.0.1:$port;
        location = /__echo { return 200 \"\$http_authorization\\n\"; }
        location = /__stats { stub_status; }
        location / { return 200 \"$body\\n\"; }
    }"
    start_nginx UP "$UP_DIR" "$@"
    wait_body upstream "$UP_PID" "http://127.0.0.1:$port/" "$body" \
        || { show_log "$UP_DIR/logs/error.log"; die "upstream nginx did not start"; }
    UP_STATS_URL=http://127.0.0.1:$port/__stats
    [[ -n $(upstream_requests) ]] || die "upstream nginx: no stub_status at $UP_STATS_URL"
}

# upstream_requests: the upstream's request counter (stub_status), empty if unreadable.
upstream_requests() { curl -sf --max-time 2 "$UP_STATS_URL" 2>/dev/null | awk 'NR == 3 { print $3 }'; }

# nginx_proxy_conf dir workers port upstream-port: nginx as a plain reverse proxy to the
# upstream, HTTP/1.1 with a pool of keep-alive upstream connections (`keepalive 64`).
nginx_proxy_conf() {
    local dir=$1 workers=$2 port=$3 upstream_port=$4
    nginx_conf "$dir" "$workers" "    upstream upstream {
        server 127.0.0.1:$upstream_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
}

# start_portcullis name config log cpu-prefix... [VAR=value...]: the gateway (BIN) with
# that config, RUST_LOG unset (it would override log.filter: the benchmarks measure the
# configured filter) and PORTCULLIS__SERVER__WORKERS (server.workers) unset unless given after the prefix (e.g.
# `taskset -c 0 PORTCULLIS__SERVER__WORKERS=1`: everything up to the first VAR=value is the
# prefix). Sets PC_PID; waits for /readyz on the config's server.listen.
start_portcullis() {
    local name=$1 conf=$2 log=$3 prefix=() listen
    shift 3
    while (($#)) && [[ $1 != *=* ]]; do prefix+=("$1"); shift; done
    listen=$(awk -F'"' '/^listen *=/ { print $2; exit }' "$conf")
    [[ -n $listen ]] || die "$name: no server.listen in $conf"
    "${prefix[@]}" env -u RUST_LOG -u TOKIO_WORKER_THREADS -u PORTCULLIS__SERVER__WORKERS "$@" "$BIN" run --config "$conf" >"$log" 2>&1 &
    PIDS+=($!)
    PC_PID=$!
    wait_http "$name" "$PC_PID" "http://$listen/readyz" "$log"
}

# start_redis dir port cpu-prefix...: redis-server in memory only (no RDB, no AOF); waits
# for PONG. Sets REDIS_PID.
start_redis() {
    local dir=$1 port=$2 i
    shift 2
    mkdir -p "$dir"
    "$@" redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --save "" --appendonly no --daemonize no --logfile "$dir/redis.log" &
    PIDS+=($!)
    REDIS_PID=$!
    for ((i = 0; ; i++)); do
        kill -0 "$REDIS_PID" 2>/dev/null || { show_log "$dir/redis.log"; die "redis-server exited during start-up"; }
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
        ((i < 100)) || { show_log "$dir/redis.log"; die "redis-server did not answer PING within 10 s"; }
        sleep 0.1
    done
}

# ---------------------------------------------------------------- the test IdP
# start_idp port log cpu-prefix... [VAR=value...]: tests/idp/server.mjs (needs `npm ci`
# in tests/idp once) with that environment (REDIRECT_URIS is required; see
# tests/idp/README.md), as for start_portcullis. Sets IDP_PID and ISSUER; waits for
# discovery.
start_idp() {
    local port=$1 log=$2 prefix=()
    shift 2
    while (($#)) && [[ $1 != *=* ]]; do prefix+=("$1"); shift; done
    [[ -d $ROOT/tests/idp/node_modules/oidc-provider ]] \
        || die "the test IdP's packages are missing: run (cd tests/idp && npm ci) first"
    "${prefix[@]}" env IDP_PORT="$port" "$@" node "$ROOT/tests/idp/server.mjs" >"$log.out" 2>"$log" &
    PIDS+=($!)
    IDP_PID=$!
    ISSUER=http://127.0.0.1:$port
    wait_http "test IdP" "$IDP_PID" "$ISSUER/.well-known/openid-configuration" "$log"
}
idp_stats() { curl -sf --max-time 5 "$ISSUER/__test/stats"; }
idp_reset_stats() { curl -sf --max-time 5 -X POST "$ISSUER/__test/reset_stats" >/dev/null; }
# json_num key < json: the first number after "key": (flat enough for the IdP's stats).
json_num() { grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }
# json_str key < json: the first string value of "key".
json_str() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4; }

# form_action: the action of the first form in the HTML page on stdin.
form_action() { grep -o 'action="[^"]*"' | head -n 1 | sed 's/^action="//; s/"$//; s/&amp;/\&/g'; }

# idp_login name url jar cookie expected-body [log]: a browser's login. GET url (an RP
# behind the test IdP: portcullis, Apache + mod_auth_openidc) with a cookie jar of its
# own, following redirects, submit the IdP's devInteractions forms (login as
# LOGIN_USER, default "bench"; consent if asked), and end at url answering the expected
# body. Sets LOGIN_COOKIE to the value of the RP's session cookie named `cookie`.
# A failure is fatal (in a subshell: for that subshell).
idp_login() {
    local name=$1 url=$2 jar=$3 cookie=$4 want=$5 log=${6:-} page action
    local c=(curl -sS --max-time 10 -L --max-redirs 20 -c "$jar" -b "$jar" -H 'Accept: text/html')
    page=$("${c[@]}" "$url") || die "$name: login: GET $url failed"
    action=$(form_action <<<"$page")
    [[ $action == "$ISSUER"/interaction/* ]] || die "$name: login: no IdP login form after GET $url (got: ${page:0:200})"
    page=$("${c[@]}" --data "prompt=login&login=${LOGIN_USER:-bench}&password=bench" "$action") \
        || die "$name: login: posting the IdP login form failed"
    if [[ $page == *'name="prompt" value="consent"'* ]]; then
        action=$(form_action <<<"$page")
        page=$("${c[@]}" --data 'prompt=consent' "$action") || die "$name: login: posting the consent form failed"
    fi
    [[ $page == "$want" ]] || { show_log "$log"; die "$name: login did not end at the upstream (got: ${page:0:200})"; }
    LOGIN_COOKIE=$(awk -F'\t' -v n="$cookie" '$6 == n { v = $7 } END { print v }' "$jar")
    [[ -n $LOGIN_COOKIE ]] || die "$name: login set no $cookie cookie"
}

# b64url: base64url without padding of stdin.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
# urlenc string: percent-encoded for a query string.
urlenc() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in [a-zA-Z0-9.~_-]) out+=$c ;; *) printf -v c '%%%02X' "'$c"; out+=$c ;; esac
    done
    printf '%s' "$out"
}

# idp_access_token client secret redirect-uri resource jar: what an API client does to
# get its own token: the authorization code flow with PKCE (S256) and a `resource`
# parameter, driven by hand through the IdP's forms (the code is taken from the redirect
# to redirect-uri, which is never fetched), then the code exchanged at the token endpoint
# with client_secret_basic. With a resource the test IdP issues a JWT access token (aud =
# resource). Sets API_TOKEN.
idp_access_token() {
    local client=$1 secret=$2 redirect=$3 resource=$4 jar=$5 verifier challenge url out status loc
    local page action code="" i data=() resp
    verifier=$(head -c 32 /dev/urandom | b64url)
    challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary | b64url)
    url="$ISSUER/auth?client_id=$(urlenc "$client")&response_type=code&scope=openid"
    url+="&redirect_uri=$(urlenc "$redirect")&state=$(head -c 8 /dev/urandom | b64url)"
    url+="&nonce=$(head -c 8 /dev/urandom | b64url)&code_challenge=$challenge&code_challenge_method=S256"
    url+="&resource=$(urlenc "$resource")"
    for ((i = 0; i < 20; i++)); do
        out=$(curl -sS --max-time 10 -c "$jar" -b "$jar" -H 'Accept: text/html' -o "$jar.page" \
            -w '%{http_code} %{redirect_url}' "${data[@]}" "$url") || die "API token: GET $url failed"
        status=${out%% *}; loc=${out#* }; data=()
        if [[ $loc == "$redirect?"* ]]; then
            code=$(grep -o '[?&]code=[^&]*' <<<"$loc" | cut -d= -f2)
            break
        fi
        if [[ $status == 30? && -n $loc ]]; then url=$loc; continue; fi
        page=$(<"$jar.page")
        action=$(form_action <<<"$page")
        if [[ $page == *'name="prompt" value="login"'* ]]; then
            data=(--data "prompt=login&login=${LOGIN_USER:-bench}&password=bench")
        elif [[ $page == *'name="prompt" value="consent"'* ]]; then
            data=(--data 'prompt=consent')
        else
            die "API token: unexpected IdP answer $status at $url (${page:0:200})"
        fi
        url=$action
    done
    [[ -n $code ]] || die "API token: no authorization code from the IdP"
    resp=$(curl -sS --max-time 10 -u "$client:$secret" --data grant_type=authorization_code \
        --data-urlencode "code=$code" --data-urlencode "redirect_uri=$redirect" \
        --data-urlencode "code_verifier=$verifier" --data-urlencode "resource=$resource" \
        "$ISSUER/token") || die "API token: the token request failed"
    API_TOKEN=$(json_str access_token <<<"$resp")
    [[ $API_TOKEN == *.*.* ]] || die "API token: no JWT access token in the token response (${resp:0:200})"
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
# CPU time (user + system, in clock ticks) used so far by a process tree: the process, all
# its descendants (nginx or Apache workers), all their threads (portcullis's runtime and
# accept threads), and the children they have reaped (cutime + cstime: an Apache child
# that exits during a run still counts). Pass the master's pid.
proc_ticks() { # pid -> ticks
    local pid total=0 t
    for pid in $(tree_pids "$1"); do
        t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# Resident memory of a process tree (sum of VmRSS; pages shared between the processes
# count in each), in kB.
tree_kb() { # pid -> kB
    local pid total=0 r
    for pid in $(tree_pids "$1"); do r=$(kb VmRSS "$pid"); total=$((total + ${r:-0})); done
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

# wrk_parse file: from wrk's output (run with --latency and P999_LUA) sets R_RPS R_P50
# R_P99 R_P999 (ms) R_REQUESTS R_NON2XX (responses >= 400: wrk's "Non-2xx or 3xx" counter
# counts exactly those) R_SOCKERR (wrk's socket error line, or empty); returns 1 when the
# output does not parse.
wrk_parse() {
    local out=$1 us
    R_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    R_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")") || true
    R_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")") || true
    us=$(awk '/^p99.9 latency:/ { print $3 }' "$out")
    R_P999=$(awk -v u="$us" 'BEGIN { if (u == "") print "?"; else printf "%.3f", u / 1000 }')
    R_REQUESTS=$(awk '/ requests in / { print $1 }' "$out")
    R_NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    R_NON2XX=${R_NON2XX:-0}
    R_SOCKERR=$(grep 'Socket errors:' "$out" | sed 's/^ *//') || true
    [[ -n $R_RPS && -n $R_REQUESTS && $R_P50 != "?" && $R_P99 != "?" && $R_P999 != "?" ]]
}

# run_wrk label url pid [wrk args...]: a warm-up, then the measured run (--latency,
# P999_LUA); sets R_RPS R_P50 R_P99 R_P999 R_C0 R_C1 (busy % of PROXY_CPU / LOAD_CPU)
# R_US (CPU microseconds per request used by the process tree of pid, the one serving
# url) R_REQUESTS R_NON2XX R_SOCKERR R_MISSING. R_MISSING counts completed responses the
# upstream never saw (its stub_status counter, UP_STATS_URL, moved less than wrk's count):
# a proxy answering by itself (a login redirect, an error page: wrk counts a 3xx as a
# success). The extra wrk args (e.g. -H 'Cookie: ...') go to both runs.
# Non-2xx, missing upstream responses or no requests at all are fatal, unless
# WRK_SOFT=1: then they are only counted (the caller reports the target as broken).
run_wrk() {
    local label=$1 url=$2 pid=$3 out before0 before1 ticks0 up0="" up1 bad
    shift 3
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >"$TMP/warmup.out" 2>&1 \
        || { cat "$TMP/warmup.out" >&2; die "$label: wrk warm-up failed"; }
    if [[ ${WRK_SOFT:-0} != 1 ]] && bad=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$TMP/warmup.out"); then
        die "$label: warm-up got ${bad#*: } non-2xx/3xx responses from $url"
    fi
    out=$TMP/$label.out
    [[ -n ${UP_STATS_URL:-} ]] && up0=$(upstream_requests)
    before0=$(cpu_ticks "$PROXY_CPU"); before1=$(cpu_ticks "$LOAD_CPU"); ticks0=$(proc_ticks "$pid")
    "${LOAD_PIN[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$P999_LUA" "$@" "$url" \
        >"$out" 2>&1 || { cat "$out" >&2; die "$label: wrk failed"; }
    R_C0=$(busy_pct "$before0" "$(cpu_ticks "$PROXY_CPU")")
    R_C1=$(busy_pct "$before1" "$(cpu_ticks "$LOAD_CPU")")
    ticks0=$(($(proc_ticks "$pid") - ticks0))
    wrk_parse "$out" || { cat "$out" >&2; die "$label: cannot parse wrk output"; }
    R_MISSING=0
    if [[ -n $up0 ]]; then
        up1=$(upstream_requests)
        [[ -n $up1 ]] || die "$label: cannot read the upstream's request counter"
        R_MISSING=$((R_REQUESTS - (up1 - up0)))
        ((R_MISSING > 0)) || R_MISSING=0
    fi
    if [[ ${WRK_SOFT:-0} != 1 ]]; then
        ((R_NON2XX == 0)) || { cat "$out" >&2; die "$label: $R_NON2XX non-2xx/3xx responses from $url"; }
        ((R_MISSING == 0)) || { cat "$out" >&2; die "$label: $R_MISSING responses from $url did not come from the upstream"; }
        ((R_REQUESTS > 0)) || { cat "$out" >&2; die "$label: no requests completed"; }
    fi
    [[ -z $R_SOCKERR ]] || note "warning: $label: $R_SOCKERR"
    R_US=$(awk -v t="$ticks0" -v hz="$CLK_TCK" -v n="$R_REQUESTS" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * t / hz / n : 0) }')
}

# Median of whitespace-separated numbers on stdin. With BENCH_ROUNDS > 1 the targets are
# measured in turn, round after round, and each figure reported is the median over the
# rounds (drift on the machine hits all of them).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Resident memory of a process, in kB (VmRSS or VmHWM).
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status" 2>/dev/null || true; }
