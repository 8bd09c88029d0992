#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark of issue 14, in one command. The same wrk load
# (2 threads, 16 and 256 connections, the same duration) against, in one run:
#   upstream        the upstream directly: nginx, 1 worker, `return 200` (20-byte body)
#   nginx           nginx as a plain reverse proxy, keep-alive pool to the upstream
#   apache          Apache httpd (Debian apache2, mpm_event) + libapache2-mod-auth-openidc
#                   as an OIDC relying party (code flow with PKCE S256, the test IdP's
#                   second client), logged in through the IdP with curl; the access token
#                   goes upstream as `Authorization: Bearer` (bench/apache/httpd.conf.in)
#   public          portcullis, a public route
#   memory          portcullis logged in (memory store), the session cookie of a real login
#   bearer          portcullis, a route with accept_bearer = true, requests carrying an API
#                   client's JWT access token (from the test IdP, `resource` =
#                   oidc.api_audience), validated locally
#   redis-l1        portcullis logged in, store = "redis", cache_ttl default (L1 5s)
#   redis-nol1      portcullis logged in, store = "redis", cache_ttl = "0s" (L1 off)
# Every portcullis runs with log.filter = BENCH_LOG_FILTER ("warn", as the other
# benchmarks). Before measuring, each logged-in target is checked end to end: the session
# cookie alone passes, and the upstream receives a bearer (its /__echo location answers
# the Authorization header it got; for Apache and the memory gateway the token is also
# introspected at the IdP: active). During each run the upstream's request counter must
# move at least as much as wrk's count: a proxy answering by itself (a redirect to the
# login, an error page) makes the run broken, as any non-2xx response does.
#
# Sections (BENCH_SKIP takes a comma-separated list of them to leave out):
#   unpinned  everything shares both cores; proxies with their default worker counts:
#             nginx worker_processes auto, Apache mpm_event with Debian's 2 child
#             processes (StartServers) of 256 threads each (see below), portcullis its
#             default runtime (BENCH_PC_UNPINNED_ENV, default none)
#   pinned    each proxy alone on core BENCH_PROXY_CPU with one worker: nginx
#             worker_processes 1, Apache one child process (ThreadsPerChild 256),
#             portcullis with BENCH_PC_PINNED_ENV ("PORTCULLIS__SERVER__WORKERS=1"); wrk, the
#             upstream, the IdP and Redis on core BENCH_LOAD_CPU (as bench/proxy.sh pins)
#   storm     bench/storm.sh: 1,000 sessions whose access tokens expire together under load
#   scale     bench/scale.sh, when it exists (session scale: 1,000,000 sessions)
# Each section starts its own upstream, IdP, Redis and servers and stops them at its end.
# Apache's threads: mpm_event closes a child's idle keep-alive connections whenever all of
# that child's threads are busy. With Debian's mpm_event.conf (25 threads a child, more
# children spawned on demand) wrk at 256 connections saw thousands of connections closed
# under it (socket read errors) as the connections spread unevenly over the children, so
# every child here has a thread for each of the 256 connections.
#
# Output: one Markdown table on stdout (also written to BENCH_OUT when set, with the goals,
# the storm's and the scale section's reports): per section, target and connection count
# req/s, p50/p99/p99.9 (wrk's --latency, and a Lua `done` hook for p99.9), CPU
# microseconds per request of the server's whole process tree (utime + stime of every
# process and thread under it, and of children it reaped, from /proc/<pid>/stat before and
# after the measured run: all nginx workers, all Apache children, all portcullis threads;
# for "upstream direct" the upstream nginx), RSS after the run (VmRSS summed over the
# tree), req/s against nginx proxy and against Apache + mod_auth_openidc in the same
# section at the same connection count, and the non-2xx count. Then the issue's goals,
# met or NOT met, from the "portcullis logged in (memory)" rows.
#
# Needs: apt-get install nginx wrk curl redis-server redis-tools apache2
# libapache2-mod-auth-openidc openssl (the packages' own services are not used), node and
# (cd tests/idp && npm ci). Everything binds 127.0.0.1 on free ports; every process and
# the temporary directory go away on exit.
#
# Environment:
#   PORTCULLIS_BIN         use this binary, skip `cargo build --release --locked`
#   BENCH_DURATION=10s     measured run per target and connection count
#   BENCH_WARMUP=2s        warm-up before each measured run
#   BENCH_THREADS=2        wrk threads          BENCH_CONNS="16 256"  connection counts
#   BENCH_TARGETS="upstream nginx apache public memory bearer redis-l1 redis-nol1"
#                          the targets measured, in this order
#   BENCH_SKIP=            sections left out: unpinned,pinned,storm,scale
#   BENCH_LOG_FILTER=warn  portcullis log.filter
#   BENCH_PC_PINNED_ENV="PORTCULLIS__SERVER__WORKERS=1"   environment of every pinned portcullis
#                          (VAR=value words; PORTCULLIS__SERVER__WORKERS is server.workers)
#   BENCH_PC_UNPINNED_ENV= environment of every unpinned portcullis (default runtime)
#   BENCH_PROXY_CPU=0      BENCH_LOAD_CPU=1     cores of the pinned section
#   BENCH_APACHE_MPM_UNPINNED="2 2 256 256 512 1 512"  BENCH_APACHE_MPM_PINNED="1 1 256 256 256 1 256"
#                          mpm_event StartServers ServerLimit ThreadLimit ThreadsPerChild
#                          MaxRequestWorkers MinSpareThreads MaxSpareThreads
#   BENCH_OUT=file         also write the report there
#   BENCH_KEEP_TMP=1       keep the temp dir (configs, logs, wrk output of every run)
#   BENCH_STORM_*          see bench/storm.sh (run with this run's binary and filter)
# With the defaults: 2 sections x 8 targets x 2 connection counts x 12 s, ~7 minutes,
# then the storm (~3 minutes, most of it the 1,000 logins) and the scale section.
#
# Exit status: 0 when everything ran (goals met or not: the benchmark reports), 1 when
# something broke: a tool missing, a process that did not start, a login that failed, a
# bearer that did not reach the upstream, non-2xx or non-upstream responses in a run (the
# table shows them), or a section script (storm, scale) that exited non-zero.
set -euo pipefail

SELF=${BASH_SOURCE[0]}
[[ $SELF == */* ]] && SELF_DIR=${SELF%/*} || SELF_DIR=.
ROOT=$(cd "$SELF_DIR/.." && pwd)
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
read -r -a CONNS <<<"${BENCH_CONNS:-16 256}"
CONNECTIONS=${CONNS[0]:-16}
read -r -a TARGETS <<<"${BENCH_TARGETS:-upstream nginx apache public memory bearer redis-l1 redis-nol1}"
SKIP=",${BENCH_SKIP:-},"
SKIP=${SKIP// /}
LOG_FILTER=${BENCH_LOG_FILTER:-warn}
read -r -a PC_PINNED_ENV <<<"${BENCH_PC_PINNED_ENV-PORTCULLIS__SERVER__WORKERS=1}"
read -r -a PC_UNPINNED_ENV <<<"${BENCH_PC_UNPINNED_ENV:-}"
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BODY="hello from upstream"
CLIENT_ID=gateway
CLIENT_SECRET="bench-client-secret"
APACHE_CLIENT_ID=apache
APACHE_CLIENT_SECRET="bench-apache-secret"
# The test IdP's API_RESOURCE default: the `aud` of the API client's JWT.
API_RESOURCE="https://api.portcullis.test"
APACHE=$(command -v apache2 || echo /usr/sbin/apache2)
# mpm_event: StartServers ServerLimit ThreadLimit ThreadsPerChild MaxRequestWorkers
# MinSpareThreads MaxSpareThreads.
APACHE_MPM_UNPINNED=${BENCH_APACHE_MPM_UNPINNED:-2 2 256 256 512 1 512}
APACHE_MPM_PINNED=${BENCH_APACHE_MPM_PINNED:-1 1 256 256 256 1 256}
APACHE_MODULES=/usr/lib/apache2/modules

BENCH_NAME=run.sh
# shellcheck source=bench/lib.sh
. "$SELF_DIR/lib.sh"

declare -A LABEL=(
    [upstream]="upstream direct"
    [nginx]="nginx proxy"
    [apache]="Apache + mod_auth_openidc"
    [public]="portcullis public route"
    [memory]="portcullis logged in (memory)"
    [bearer]="portcullis API bearer JWT"
    [redis-l1]="portcullis logged in (redis, L1 5s)"
    [redis-nol1]="portcullis logged in (redis, L1 off)"
)
for t in "${TARGETS[@]}"; do
    [[ -n ${LABEL[$t]:-} ]] || die "BENCH_TARGETS: unknown target $t (${!LABEL[*]})"
done
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
skipped() { [[ $SKIP == *",$1,"* ]]; }
((${#CONNS[@]} > 0)) || die "BENCH_CONNS is empty"
for c in "${CONNS[@]}"; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNS: not a connection count: $c"; done
for v in "${PC_PINNED_ENV[@]}" "${PC_UNPINNED_ENV[@]}"; do
    [[ $v == [A-Za-z_]*=* ]] || die "BENCH_PC_PINNED_ENV / BENCH_PC_UNPINNED_ENV: not VAR=value: $v"
done

tools=(nginx wrk curl node openssl)
if has redis-l1 || has redis-nol1; then tools+=(redis-server redis-cli); fi
require_tools "${tools[@]}"
if has apache && { [[ ! -x $APACHE ]] || [[ ! -f $APACHE_MODULES/mod_auth_openidc.so ]]; }; then
    die "Apache httpd or mod_auth_openidc is missing. Install them with: apt-get install apache2 libapache2-mod-auth-openidc"
fi
[[ -d $ROOT/tests/idp/node_modules/oidc-provider ]] \
    || die "the test IdP's packages are missing: run (cd tests/idp && npm ci) first"
bench_init
build_release
REPORT=$TMP/report.md
: >"$REPORT"
# out line...: to stdout and the report.
out() { printf '%s\n' "$@" | tee -a "$REPORT"; }
BROKEN=0

# ---------------------------------------------------------------- servers of a section
# pc_conf target port -> the gateway's config.
pc_conf() {
    local t=$1 port=$2
    cat <<EOF
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
[log]
filter = "$LOG_FILTER"
EOF
    if [[ $t == public ]]; then
        printf '[[route]]\npath = "/"\nupstream = "http://127.0.0.1:%s"\npublic = true\n' "$UP_PORT"
        return
    fi
    cat <<EOF
[oidc]
issuer = "$ISSUER"
client_id = "$CLIENT_ID"
client_secret = "$CLIENT_SECRET"
EOF
    [[ $t == bearer ]] && echo "api_audience = \"$API_RESOURCE\""
    cat <<EOF
[session]
secret = "$SESSION_SECRET"
cookie_secure = false
EOF
    case $t in
        memory | bearer) echo 'store = "memory"' ;;
        redis-l1 | redis-nol1)
            echo 'store = "redis"'
            echo "redis_url = \"redis://127.0.0.1:$REDIS_PORT/0\""
            echo 'redis_key_prefix = "portcullis-bench:"'
            [[ $t == redis-nol1 ]] && echo 'cache_ttl = "0s"'
            ;;
    esac
    printf '[[route]]\npath = "/"\nupstream = "http://127.0.0.1:%s"\n' "$UP_PORT"
    [[ $t == bearer ]] && echo 'accept_bearer = true'
    return 0
}

# start_apache dir port pinned: Apache from bench/apache/httpd.conf.in on PROXY_PIN; sets
# AP_PID.
start_apache() {
    local dir=$1 port=$2 pinned=$3 user_group="" mpm i code
    mkdir -p "$dir/logs" "$dir/run"
    # As root Apache must switch its children to another user (it refuses to serve as
    # root); the children need nothing from the temp dir after start-up.
    if ((EUID == 0)); then
        user_group="User nobody"$'\n'"Group $(getent group nogroup >/dev/null && echo nogroup || echo nobody)"
    fi
    if ((pinned)); then read -r -a mpm <<<"$APACHE_MPM_PINNED"; else read -r -a mpm <<<"$APACHE_MPM_UNPINNED"; fi
    ((${#mpm[@]} == 7)) || die "BENCH_APACHE_MPM_(UN)PINNED: 7 numbers, got ${mpm[*]}"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM_PORT@|$UP_PORT|g" \
        -e "s|@ISSUER@|$ISSUER|g" -e "s|@CLIENT_ID@|$APACHE_CLIENT_ID|g" \
        -e "s|@CLIENT_SECRET@|$APACHE_CLIENT_SECRET|g" \
        -e "s|@PASSPHRASE@|$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')|g" \
        -e "s|@START_SERVERS@|${mpm[0]}|g" -e "s|@SERVER_LIMIT@|${mpm[1]}|g" \
        -e "s|@THREAD_LIMIT@|${mpm[2]}|g" -e "s|@THREADS_PER_CHILD@|${mpm[3]}|g" \
        -e "s|@MAX_REQUEST_WORKERS@|${mpm[4]}|g" -e "s|@MIN_SPARE_THREADS@|${mpm[5]}|g" \
        -e "s|@MAX_SPARE_THREADS@|${mpm[6]}|g" -e "s|/usr/lib/apache2/modules|$APACHE_MODULES|g" \
        "$SELF_DIR/apache/httpd.conf.in" | awk -v ug="$user_group" '$0 == "@USER_GROUP@" { print ug; next } { print }' \
        >"$dir/httpd.conf"
    ! grep -n '@[A-Z_]*@' "$dir/httpd.conf" >&2 || die "apache: unfilled placeholders in $dir/httpd.conf"
    "$APACHE" -t -f "$dir/httpd.conf" >"$dir/logs/configtest.log" 2>&1 \
        || { cat "$dir/logs/configtest.log" >&2; die "apache: httpd -t rejected $dir/httpd.conf"; }
    "${PROXY_PIN[@]}" "$APACHE" -f "$dir/httpd.conf" -DFOREGROUND >"$dir/logs/stdout.log" 2>&1 &
    PIDS+=($!)
    AP_PID=$!
    # Up when / answers the redirect to the IdP (the module fetched the IdP's metadata).
    for ((i = 0; ; i++)); do
        kill -0 "$AP_PID" 2>/dev/null || { show_log "$dir/logs/error.log"; die "apache exited during start-up"; }
        code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H 'Accept: text/html' "http://127.0.0.1:$port/" || true)
        [[ $code == 302 ]] && break
        ((i < 200)) || { show_log "$dir/logs/error.log"; die "apache: / did not redirect to the IdP within 20 s (last status $code)"; }
        sleep 0.1
    done
}

# check_bearer name url pid header client secret: the upstream receives a bearer through
# url with that request header; with a client, the IdP says the token is active.
check_bearer() {
    local name=$1 url=$2 pid=$3 header=$4 client=${5:-} secret=${6:-} got token
    kill -0 "$pid" 2>/dev/null || die "$name is not running"
    got=$(curl -sf --max-time 5 -H "$header" "$url/__echo") || die "$name: GET /__echo failed"
    token=${got#Bearer }
    [[ $got == "Bearer "* && ${#token} -ge 20 ]] || die "$name: the upstream did not receive a bearer (got: ${got:0:100})"
    if [[ -n $client ]]; then
        got=$(curl -sf --max-time 5 -u "$client:$secret" --data-urlencode "token=$token" "$ISSUER/token/introspection") \
            || die "$name: introspecting the forwarded token failed"
        [[ $got == *'"active":true'* ]] || die "$name: the bearer the upstream got is not an active token (${got:0:200})"
    fi
    note "$name: the upstream receives Authorization: Bearer ${token:0:12}... (${#token} chars)"
}

# idp_diff stats-before stats-after: the IdP's counters that moved ("userinfo_requests
# +3, ..."), empty when none did.
idp_diff() {
    awk -v a="$1" -v b="$2" 'function pairs(s, m,   k) {
            while (match(s, /"[a-z_]+":[0-9]+/)) {
                k = substr(s, RSTART + 1, RLENGTH - 1); s = substr(s, RSTART + RLENGTH)
                split(k, kv, "\":"); m[kv[1]] += kv[2]
            } }
        BEGIN { pairs(a, x); pairs(b, y); out = ""
            for (k in y) if (y[k] != x[k]) out = out (out == "" ? "" : ", ") k " +" (y[k] - x[k])
            print out }'
}

# ---------------------------------------------------------------- one section
declare -A RPS P50 P99 P999 US RSS NON2XX MISSING C0 SOCKERR IDPCALLS REQUESTS
# broken key: the run had non-2xx responses, responses not from the upstream, or none.
broken() { ((NON2XX[$1] > 0 || MISSING[$1] > 0 || REQUESTS[$1] == 0)); }
SECTIONS=()
run_section() {
    local sec=$1 pinned=$2 dir=$TMP/$1 t port workers jar env_words=() redirects=() c key args
    local -A PORT SERVER URL HDR
    set_pinning "$pinned"
    if ((pinned)); then env_words=("${PC_PINNED_ENV[@]}"); workers=1; else env_words=("${PC_UNPINNED_ENV[@]}"); workers=auto; fi
    mkdir -p "$dir"
    take_port UP_PORT; take_port IDP_PORT; take_port REDIS_PORT
    for t in "${TARGETS[@]}"; do [[ $t == upstream ]] || take_port "PORT[$t]"; done

    UPSTREAM_DIR=$dir/upstream
    start_upstream "$UP_PORT" "$BODY" "${LOAD_PIN[@]}"
    SERVER[upstream]=$UP_PID; URL[upstream]=http://127.0.0.1:$UP_PORT
    if has redis-l1 || has redis-nol1; then start_redis "$dir/redis" "$REDIS_PORT" "${LOAD_PIN[@]}"; fi
    for t in "${TARGETS[@]}"; do
        case $t in
            upstream | nginx | public) ;;
            apache) redirects+=("http://127.0.0.1:${PORT[$t]}/redirect_uri") ;;
            *) redirects+=("http://127.0.0.1:${PORT[$t]}/oauth2/callback") ;;
        esac
    done
    # REDIRECT_URIS is required even when no target logs in.
    redirects+=("http://127.0.0.1:$IDP_PORT/unused")
    start_idp "$IDP_PORT" "$dir/idp.log" "${LOAD_PIN[@]}" CLIENT_ID="$CLIENT_ID" CLIENT_SECRET="$CLIENT_SECRET" \
        CLIENT2_ID="$APACHE_CLIENT_ID" CLIENT2_SECRET="$APACHE_CLIENT_SECRET" \
        REDIRECT_URIS="$(IFS=,; echo "${redirects[*]}")"
    SESSION_SECRET=$(head -c 48 /dev/urandom | base64 -w0)

    for t in "${TARGETS[@]}"; do
        port=${PORT[$t]:-}
        URL[$t]=${URL[$t]:-http://127.0.0.1:$port}
        case $t in
            upstream) ;;
            nginx)
                nginx_proxy_conf "$dir/nginx-proxy" "$workers" "$port" "$UP_PORT"
                start_nginx NGX "$dir/nginx-proxy" "${PROXY_PIN[@]}"
                wait_body "nginx proxy" "$NGX_PID" "${URL[$t]}/" "$BODY" \
                    || { show_log "$dir/nginx-proxy/logs/error.log"; die "nginx proxy did not start or does not proxy"; }
                SERVER[$t]=$NGX_PID
                ;;
            apache)
                start_apache "$dir/apache" "$port" "$pinned"
                SERVER[$t]=$AP_PID
                jar=$dir/apache.jar
                idp_login "apache" "${URL[$t]}/" "$jar" mod_auth_openidc_session "$BODY" "$dir/apache/logs/error.log"
                HDR[$t]="Cookie: mod_auth_openidc_session=$LOGIN_COOKIE"
                ;;
            *)
                pc_conf "$t" "$port" >"$dir/$t.toml"
                start_portcullis "portcullis ($t)" "$dir/$t.toml" "$dir/$t.log" "${PROXY_PIN[@]}" "${env_words[@]}"
                SERVER[$t]=$PC_PID
                case $t in
                    public) ;;
                    bearer)
                        idp_access_token "$CLIENT_ID" "$CLIENT_SECRET" "${URL[$t]}/oauth2/callback" "$API_RESOURCE" "$dir/api.jar"
                        HDR[$t]="Authorization: Bearer $API_TOKEN"
                        ;;
                    *)
                        idp_login "portcullis ($t)" "${URL[$t]}/" "$dir/$t.jar" portcullis "$BODY" "$dir/$t.log"
                        HDR[$t]="Cookie: portcullis=$LOGIN_COOKIE"
                        ;;
                esac
                ;;
        esac
    done

    # ---- end-to-end checks before measuring: what wrk sends alone passes, and the
    # upstream gets a bearer.
    for t in "${TARGETS[@]}"; do
        args=()
        [[ -n ${HDR[$t]:-} ]] && args=(-H "${HDR[$t]}")
        wait_body "${LABEL[$t]}" "${SERVER[$t]}" "${URL[$t]}/" "$BODY" "${args[@]}" \
            || die "${LABEL[$t]}: what wrk sends does not get the upstream's answer"
        case $t in
            apache) check_bearer "${LABEL[$t]}" "${URL[$t]}" "${SERVER[$t]}" "${HDR[$t]}" "$APACHE_CLIENT_ID" "$APACHE_CLIENT_SECRET" ;;
            memory) check_bearer "${LABEL[$t]}" "${URL[$t]}" "${SERVER[$t]}" "${HDR[$t]}" "$CLIENT_ID" "$CLIENT_SECRET" ;;
            redis-*) check_bearer "${LABEL[$t]}" "${URL[$t]}" "${SERVER[$t]}" "${HDR[$t]}" ;;
            bearer)
                [[ $(curl -sf --max-time 5 -H "${HDR[$t]}" "${URL[$t]}/__echo") == "Bearer $API_TOKEN" ]] \
                    || die "${LABEL[$t]}: the upstream did not receive the API client's token unchanged"
                # Without the token the route refuses: the JWT is what lets the load in.
                [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${URL[$t]}/") == 401 ]] \
                    || die "${LABEL[$t]}: the route answers without a token"
                ;;
        esac
    done

    note "$sec: load average $(cut -d' ' -f1-3 /proc/loadavg); measuring ${#TARGETS[@]} targets x ${#CONNS[@]} connection counts (${WARMUP} warm-up + ${DURATION} each)"
    for c in "${CONNS[@]}"; do
        CONNECTIONS=$c
        for t in "${TARGETS[@]}"; do
            key="$sec|$t|$c"
            args=()
            [[ -n ${HDR[$t]:-} ]] && args=(-H "${HDR[$t]}")
            note "$sec: ${LABEL[$t]}, $c connections"
            idp0=$(idp_stats) || die "cannot read the IdP's statistics"
            WRK_SOFT=1 run_wrk "$sec-$t-c$c" "${URL[$t]}/" "${SERVER[$t]}" "${args[@]}"
            idp1=$(idp_stats) || die "cannot read the IdP's statistics"
            IDPCALLS[$key]=$(idp_diff "$idp0" "$idp1")
            RPS[$key]=$R_RPS; P50[$key]=$R_P50; P99[$key]=$R_P99; P999[$key]=$R_P999; US[$key]=$R_US
            RSS[$key]=$(tree_kb "${SERVER[$t]}"); NON2XX[$key]=$R_NON2XX; MISSING[$key]=$R_MISSING; C0[$key]=$R_C0
            SOCKERR[$key]=$R_SOCKERR; REQUESTS[$key]=$R_REQUESTS
            if broken "$key"; then
                BROKEN=1
                note "error: $sec ${LABEL[$t]} at $c connections: $R_NON2XX non-2xx, $R_MISSING not from the upstream, $R_REQUESTS requests (wrk output: $TMP/$sec-$t-c$c.out)"
            fi
        done
    done
    SECTIONS+=("$sec")
    stop_all
}

# ---------------------------------------------------------------- run
out "== portcullis side by side (issue 14): bench/run.sh"
out "binary    $BIN"
out "machine   $(nproc) CPUs online; load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
out "load      wrk -t$THREADS, ${CONNS[*]} connections, $DURATION per run after a $WARMUP warm-up; portcullis log.filter \"$LOG_FILTER\""
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    out "warning   load average $load1 before start: other work on this machine will skew the numbers"
fi
skipped unpinned || run_section unpinned 0
if ! skipped pinned; then
    if ((PIN_OK)) && [[ ${BENCH_UNPINNED:-0} != 1 ]]; then
        run_section pinned 1
    else
        note "pinned section skipped: pinning is not possible here (or BENCH_UNPINNED=1)"
    fi
fi

# ---------------------------------------------------------------- report: the table
ratio() { awk -v a="$1" -v b="${2:-}" 'BEGIN { if (b == "" || b + 0 <= 0) print "-"; else printf "%.2f×", a / b }'; }
if ((${#SECTIONS[@]})); then
    out ""
    for sec in "${SECTIONS[@]}"; do
        case $sec in
            unpinned) out "unpinned: both cores shared, default workers (nginx auto, Apache mpm_event 2 children, portcullis ${PC_UNPINNED_ENV[*]:-default runtime})." ;;
            pinned) out "pinned: the proxy alone on core $PROXY_CPU with one worker (nginx 1 worker, Apache 1 child, portcullis ${PC_PINNED_ENV[*]:-default runtime}); wrk, upstream, IdP, Redis on core $LOAD_CPU." ;;
        esac
    done
    out "CPU µs/req: the server's whole process tree (the upstream nginx for upstream direct). RSS: VmRSS summed over the tree after the run." ""
    out "| section | target | conns | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | RSS kB | vs nginx proxy | vs mod_auth_openidc | non-2xx |" \
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for sec in "${SECTIONS[@]}"; do
        for c in "${CONNS[@]}"; do
            for t in "${TARGETS[@]}"; do
                key="$sec|$t|$c"
                bad=${NON2XX[$key]}
                ((MISSING[$key] == 0)) || bad+=" (+${MISSING[$key]} not from upstream)"
                ! broken "$key" || bad+=" BROKEN"
                out "$(printf '| %s | %s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %s |' \
                    "$sec" "${LABEL[$t]}" "$c" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${P999[$key]}" \
                    "${US[$key]}" "${RSS[$key]}" "$(ratio "${RPS[$key]}" "${RPS[$sec|nginx|$c]:-}")" \
                    "$(ratio "${RPS[$key]}" "${RPS[$sec|apache|$c]:-}")" "$bad")"
            done
        done
    done
    notes=()
    for sec in "${SECTIONS[@]}"; do
        for c in "${CONNS[@]}"; do
            for t in "${TARGETS[@]}"; do
                [[ -z ${SOCKERR[$sec|$t|$c]:-} ]] || notes+=("note: $sec ${LABEL[$t]} at $c connections: wrk ${SOCKERR[$sec|$t|$c]}")
                [[ -z ${IDPCALLS[$sec|$t|$c]:-} ]] \
                    || notes+=("note: $sec ${LABEL[$t]} at $c connections: the IdP was called during the run (warm-up included): ${IDPCALLS[$sec|$t|$c]}")
            done
            if [[ $sec == pinned ]] && has upstream && awk -v x="${C0[pinned|upstream|$c]}" 'BEGIN { exit !(x > 15) }'; then
                notes+=("warning: core $PROXY_CPU was ${C0[pinned|upstream|$c]}% busy during pinned upstream direct ($c connections), when no proxy was under load: other work shared the proxy core, the pinned figures are unreliable")
            fi
        done
    done
    ((${#notes[@]} == 0)) || out "" "${notes[@]}"

    # ---------------------------------------------------------------- report: goals
    # goal text value ok: one line.
    # goal text value ok [key...]: a goal from those runs; not judged if one was broken.
    goal() {
        local text=$1 value=$2 ok=$3 k verdict
        shift 3
        if ((ok)); then verdict=met; else verdict="NOT met"; fi
        for k in "$@"; do broken "$k" && verdict="not judged: a BROKEN run ($k)"; done
        out "- $text: $value — $verdict"
    }
    int() { printf '%.0f' "$1"; }
    # cmp a op b: 1 when a op b (awk numbers).
    cmp() { awk -v a="$1" -v b="$3" "BEGIN { print (a $2 b) ? 1 : 0 }"; }
    if ! has memory || ! { has nginx || has apache; }; then
        out "" "Goals (issue 14): not computed (they need the memory target and nginx and/or apache)."
    else
        for sec in "${SECTIONS[@]}"; do
            out "" "Goals (issue 14) for portcullis logged in (memory), $sec:"
            for c in "${CONNS[@]}"; do
                m=$sec\|memory\|$c; n=$sec\|nginx\|$c; a=$sec\|apache\|$c
                if [[ -n ${RPS[$n]:-} ]]; then
                    x=$(awk -v a="${RPS[$m]}" -v b="${RPS[$n]}" 'BEGIN { printf "%.2f", a / b }')
                    goal "req/s ≥ 0.9× nginx proxy at $c connections" "${x}× ($(int "${RPS[$m]}") vs $(int "${RPS[$n]}") req/s)" "$(cmp "$x" ">=" 0.9)" "$m" "$n"
                fi
                if [[ -n ${RPS[$a]:-} ]]; then
                    x=$(awk -v a="${RPS[$m]}" -v b="${RPS[$a]}" 'BEGIN { printf "%.2f", a / b }')
                    goal "req/s ≥ 5× Apache + mod_auth_openidc at $c connections" "${x}× ($(int "${RPS[$m]}") vs $(int "${RPS[$a]}") req/s)" "$(cmp "$x" ">=" 5)" "$m" "$a"
                fi
            done
            c=${CONNS[0]}; m=$sec\|memory\|$c; n=$sec\|nginx\|$c
            if [[ -n ${RPS[$n]:-} ]]; then
                x=$(awk -v a="${P99[$m]}" -v b="${P99[$n]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
                goal "p99 ≤ 1.5× nginx proxy's at $c connections" "${x}× (${P99[$m]} vs ${P99[$n]} ms)" "$(cmp "$x" "<=" 1.5)" "$m" "$n"
                for c in "${CONNS[@]}"; do
                    m=$sec\|memory\|$c; n=$sec\|nginx\|$c
                    x=$(awk -v a="${US[$m]}" -v b="${US[$n]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
                    goal "CPU/request ≤ 1.2× nginx proxy's at $c connections" "${x}× (${US[$m]} vs ${US[$n]} µs)" "$(cmp "$x" "<=" 1.2)" "$m" "$n"
                done
            fi
        done
    fi
fi

# ---------------------------------------------------------------- storm, scale
# section name script: run it with this run's binary; its stdout goes into the report.
section() {
    local name=$1 script=$2 rc
    out ""
    note "section $name: $script"
    set +e
    PORTCULLIS_BIN=$BIN BENCH_LOG_FILTER=$LOG_FILTER bash "$script" | tee -a "$REPORT"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        BROKEN=1
        out "error: $script exited $rc"
    fi
}
skipped storm || section storm "$SELF_DIR/storm.sh"
if ! skipped scale; then
    if [[ -f $SELF_DIR/scale.sh ]]; then
        section scale "$SELF_DIR/scale.sh"
    else
        note "section scale: no bench/scale.sh yet, skipped"
    fi
fi

if [[ -n ${BENCH_OUT:-} ]]; then
    cp "$REPORT" "$BENCH_OUT" || die "cannot write BENCH_OUT=$BENCH_OUT"
    note "report written to $BENCH_OUT"
fi
if ((BROKEN)); then
    note "something broke (see the errors above and the BROKEN rows): exit 1"
    exit 1
fi
exit 0
