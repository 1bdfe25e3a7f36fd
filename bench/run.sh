#!/usr/bin/env bash
# Herald benchmarks (SPEC §8). Release build, real HTTP, loopback only.
#
#   bench/run.sh list     GET /api/v1/campaigns?per_page=10, 200 campaigns, 64 clients (wrk), SQLite
#   bench/run.sh import   CSV import of 1,000,000 rows, on SQLite and on PostgreSQL
#   bench/run.sh rss      idle RSS of `herald serve`
#   bench/run.sh dispatch end-to-end sending (queued -> rendered -> carrier-log -> sent persisted),
#                         embedded (SQLite, in-process) and PostgreSQL + NATS JetStream
#                         (dispatch-embedded, dispatch-nats: one of them)
#   bench/run.sh plugins  start-up time and idle RSS with a JavaScript and a Python carrier (sdk/examples),
#                         first start (compiles) and later starts (code cache); `plugin inspect` likewise
#   bench/run.sh hostile  hostile CSV uploads and webhook bodies (SPEC §9): wall time, server CPU and peak RSS of each
#   bench/run.sh scale    cost against size (SPEC §8 "Scale", issue 10): campaigns of 1,000 / 100,000 / 1,000,000
#                         contacts in a database seeded with 10,000,000 messages, on SQLite (herald serve) and on
#                         PostgreSQL + NATS (--role api + --role dispatcher): send and delete calls, queueing and
#                         purge times, p50/p99 of the constant-cost reads, the largest campaign dispatched end to end,
#                         RSS of every process sampled each second
#   bench/run.sh all      all of the above
#
# Environment: BENCH_ROWS (default 1000000), BENCH_DURATION (wrk seconds, default 20),
# BENCH_CAMPAIGNS (dispatch: campaigns of 1,000 messages each, default 30),
# BENCH_NATS_URL (default nats://127.0.0.1:4222), BENCH_LOG_LEVEL (server log filter, default warn),
# BENCH_KEEP_LOGS (a directory to copy the server's log into),
# BENCH_PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres), BENCH_BIN (the herald binary to run),
# BENCH_PORT (default 18181), BENCH_QUIET_HOURS (dispatch, scale: `recipient`, the default, or `campaign`).
# scale: BENCH_SIZES (default "1000 100000 1000000"), BENCH_BACKGROUND_MESSAGES (default 10000000),
# BENCH_SCALE_DBS (default "sqlite postgres"), BENCH_SCALE_DISPATCH (databases whose largest campaign is
# dispatched end to end, default "postgres sqlite"; "" for none), BENCH_READ_SECONDS (wrk per read, default 5),
# BENCH_SCALE_ANALYZE (PostgreSQL: ANALYZE messages once a send is queued), BENCH_DISPATCH_TIMEOUT (s, default 900),
# BENCH_SCALE_KEEP (a directory: keep the seeded databases for EXPLAIN, SQLite's there, PostgreSQL's as herald_bench_<pid>_kept).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${BENCH_ROWS:-1000000}"
DURATION="${BENCH_DURATION:-20}"
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${BENCH_PORT:-18181}"
WORK="$(mktemp -d /tmp/herald-bench.XXXXXX)"
SERVER_PID=""
DISPATCHER_PID=""
SAMPLER_PID=""

PG_BENCH_DB="herald_bench_$$"
cleanup() {
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
    [ -n "$DISPATCHER_PID" ] && kill "$DISPATCHER_PID" 2>/dev/null && wait "$DISPATCHER_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "${SCALE_STREAMS:-}" ] && nats_delete_streams "$SCALE_STREAMS"
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$PG_BENCH_DB\" WITH (FORCE)" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "installing $1"; apt-get install -y "$2" >/dev/null; }; }
need wrk wrk
need curl curl
need jq jq

[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -p herald >&2
BIN="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/herald}"

# start_server DATA_DIR [DATABASE_URL] [herald args...]
start_server() {
    local data="$1" url="${2:-}"
    shift 2 2>/dev/null || shift $#
    mkdir -p "$data"
    env HERALD_DATA_DIR="$data" HERALD_SERVER__BIND="127.0.0.1:$PORT" HERALD_LOG__LEVEL="${BENCH_LOG_LEVEL:-warn}" \
        HERALD_CONTACTS__MAX_IMPORT_BYTES=268435456 ${url:+HERALD_DATABASE__URL="$url"} \
        "$BIN" "$@" serve >"$data/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    TOKEN="$(HERALD_DATA_DIR="$data" "$BIN" token --sub "$(cat "$data/first_user")")"
}

stop_server() {
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    if [ -n "${BENCH_KEEP_LOGS:-}" ]; then cp "$WORK"/*/server.log "$BENCH_KEEP_LOGS"/ 2>/dev/null || true; fi
}

api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

bench_list() {
    local data="$WORK/list"
    start_server "$data"
    for i in $(seq 200); do
        api -X POST "localhost:$PORT/api/v1/campaigns" -d "{\"name\":\"Campaign $i\",\"message_template\":\"Hi {{name}}\"}" >/dev/null
    done
    echo "== GET /api/v1/campaigns?per_page=10, 200 campaigns, 64 connections, ${DURATION}s, SQLite"
    # One wrk thread: 64 connections are the 64 clients, and the generator leaves a core to Herald.
    wrk -t1 -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$PORT/api/v1/campaigns?per_page=10"
    stop_server
}

make_csv() {
    local file="$WORK/contacts.csv"
    [ -f "$file" ] || awk -v n="$ROWS" 'BEGIN {
        print "phone_number,name,first_name,city"
        for (i = 0; i < n; i++) printf "+1%03d%07d,Contact %d,First%d,City%d\n", 200 + int(i / 10000000), i % 10000000, i, i, i % 100
    }' >"$file"
    echo "$file"
}

# import_once LABEL DATA_DIR [DATABASE_URL]
import_once() {
    local label="$1" data="$2" url="${3:-}" csv
    csv="$(make_csv)"
    start_server "$data" "$url"
    local campaign
    campaign="$(api -X POST "localhost:$PORT/api/v1/campaigns" -d '{"name":"Import","message_template":"Hi {{name}}"}' | jq -r .id)"
    echo "== CSV import, $ROWS rows ($(du -h "$csv" | cut -f1)), $label"
    local start end
    start=$(date +%s.%N)
    curl -sf -H "Authorization: Bearer $TOKEN" -F "file=@$csv" \
        "localhost:$PORT/api/v1/campaigns/$campaign/contacts/import" | jq -c '{imported, duplicates, errors, total_contacts}'
    end=$(date +%s.%N)
    echo "elapsed: $(echo "$end - $start" | bc) s"
    stop_server
}

bench_import() {
    import_once "SQLite" "$WORK/import-sqlite"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$PG_BENCH_DB\""
    import_once "PostgreSQL" "$WORK/import-pg" "${PG_ADMIN_URL%/*}/$PG_BENCH_DB"
}

bench_rss() {
    start_server "$WORK/rss"
    sleep 3
    echo "== idle RSS of herald serve (SQLite, in-process): $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
    stop_server
}

# hostile_once LABEL FILE: uploads FILE, prints the answer, the wall time, the
# server's CPU time (utime + stime) and its RSS before and at its peak during the request.
hostile_once() {
    local label="$1" file="$2" campaign tck rss peak cpu0 cpu1 start end code
    tck="$(getconf CLK_TCK)"
    campaign="$(api -X POST "localhost:$PORT/api/v1/campaigns" -d '{"name":"Hostile","message_template":"Hi {{name}}"}' | jq -r .id)"
    echo 5 >"/proc/$SERVER_PID/clear_refs" # peak RSS (VmHWM) starts again from the current RSS
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
    cpu0="$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")"
    start=$(date +%s.%N)
    code="$(curl -s -o "$WORK/answer.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -F "file=@$file" \
        "localhost:$PORT/api/v1/campaigns/$campaign/contacts/import")"
    end=$(date +%s.%N)
    cpu1="$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")"
    peak="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
    echo "== $label ($(du -h "$file" | cut -f1)): HTTP $code $(head -c 160 "$WORK/answer.json")"
    echo "   wall $(echo "$end - $start" | bc) s, server CPU $(( (cpu1 - cpu0) * 1000 / tck )) ms, RSS $((rss / 1024)) MiB -> peak $((peak / 1024)) MiB"
}

bench_hostile() {
    local dir="$WORK/hostile"
    mkdir -p "$dir"
    start_server "$dir/data"
    { printf 'phone_number,name\n5551230001,"'; head -c 60000000 /dev/zero | tr '\0' '\n'; printf '"\n5551230002,Ada\n'; } >"$dir/newlines.csv"
    hostile_once "one quoted field of 60,000,000 newlines" "$dir/newlines.csv"
    { printf 'phone_number,name\n5551230001,'; head -c 200000000 /dev/zero | tr '\0' x; printf '\n5551230002,Ada\n'; } >"$dir/line.csv"
    hostile_once "one line of 200,000,000 bytes" "$dir/line.csv"
    awk 'BEGIN { printf "phone_number,name"; for (i = 0; i < 1000000; i++) printf ",c%d", i; print "" }' >"$dir/named.csv"
    hostile_once "a header of 1,000,000 named columns" "$dir/named.csv"
    awk 'BEGIN { printf "phone_number,name"; for (i = 0; i < 300000; i++) printf ",c%d", i; print "" }' >"$dir/named300k.csv"
    hostile_once "a header of 300,000 named columns" "$dir/named300k.csv"
    { printf 'phone_number,name'; head -c 1000000 /dev/zero | tr '\0' ,; printf '\n'; } >"$dir/empty.csv"
    hostile_once "a header of 1,000,000 empty columns" "$dir/empty.csv"
    stop_server
    bench_hostile_webhooks
}

# measure LABEL COMMAND...: runs COMMAND against the server, prints its output,
# the wall time, the server's CPU time and its RSS before and at its peak.
measure() {
    local label="$1" tck rss peak cpu0 cpu1 start end out
    shift
    tck="$(getconf CLK_TCK)"
    echo 5 >"/proc/$SERVER_PID/clear_refs"
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
    cpu0="$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")"
    start=$(date +%s.%N)
    out="$("$@" 2>&1 | sort | uniq -c | tr '\n' ' ')"
    end=$(date +%s.%N)
    cpu1="$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")"
    peak="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
    echo "== $label: answers (count, status) $out"
    echo "   wall $(echo "$end - $start" | bc) s, server CPU $(( (cpu1 - cpu0) * 1000 / tck )) ms, RSS $((rss / 1024)) MiB -> peak $((peak / 1024)) MiB"
}

WEBHOOK_SECRET="bench-webhook-secret"

# chunked_webhook BYTES: streams BYTES of JSON-ish spaces with no declared length.
chunked_webhook() {
    head -c "$1" /dev/zero | tr '\0' ' ' | curl -s -o /dev/null -w '%{http_code}\n' -X POST -T - \
        -H 'Content-Type: application/json' -H "X-Herald-Webhook-Secret: $WEBHOOK_SECRET" \
        "localhost:$PORT/webhooks/log/status" || true # curl fails its upload once the 413 is in
}

parallel_chunked_webhooks() {
    for _ in 1 2 3 4; do chunked_webhook 536870912 & done
    wait
}

# webhook_flood N FILE: N anonymous posts of FILE, 8 at a time.
webhook_flood() {
    seq "$1" | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
        --data-binary "@$2" "localhost:$PORT/webhooks/log/status"
}

bench_hostile_webhooks() {
    local dir="$WORK/webhooks"
    mkdir -p "$dir"
    printf '[[carriers]]\nname = "log"\nplugin = "builtin:log"\ndefault = true\n[carriers.settings]\nwebhook_secret = "%s"\n' \
        "$WEBHOOK_SECRET" >"$dir/herald.toml"
    HERALD_CONFIG="$dir/herald.toml" start_server "$dir/data"
    measure "a 512 MiB chunked webhook body" chunked_webhook 536870912
    measure "four 512 MiB chunked webhook bodies at once" parallel_chunked_webhooks
    python3 -c 'import sys; sys.stdout.write("[" + ",".join(["0"] * 500000) + "]")' >"$dir/array.json"
    measure "200 anonymous 1 MB JSON arrays to the log carrier's status webhook" webhook_flood 200 "$dir/array.json"
    stop_server
}

# rate COUNT SECONDS (bc expressions): messages/s, or a note when the interval
# is too short to time (a fast run can cross 10% and 90% between two polls).
rate() {
    if [ "$(echo "$2 > 0" | bc)" = 1 ]; then echo "$(echo "($1) / ($2)" | bc) messages/s"; else echo "n/a (faster than the polling interval)"; fi
}

# A send window open now whatever the time: a fixed-offset zone where it is about noon.
# The recipients' own hours (SPEC §4.1) apply unless BENCH_QUIET_HOURS=campaign: the
# dispatch bench's numbers are in area codes 201-230 (every US time zone but Alaska and
# Hawaii's), all open from 16:00 to 00:00 UTC on weekdays.
open_window() {
    local hour ahead zone
    hour=$((10#$(date -u +%H)))
    ahead=$((12 - hour))
    if [ "$ahead" -gt 0 ]; then zone="Etc/GMT-$ahead"; elif [ "$ahead" -lt 0 ]; then zone="Etc/GMT+$((-ahead))"; else zone="Etc/GMT"; fi
    local quiet="${BENCH_QUIET_HOURS-recipient}"
    # BENCH_QUIET_HOURS="" leaves the field out, for a binary from before issue 11.
    echo "\"timezone\":\"$zone\",\"send_window_start\":\"06:00\",\"send_window_end\":\"23:00\",\"send_days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]${quiet:+,\"quiet_hours\":\"$quiet\"}"
}

sent_total() {
    curl -sf "localhost:$PORT/metrics" | awk '/^herald_messages\{status="(sent|delivered|failed)"\}/ {n += $2} END {print n + 0}'
}

# dispatch_once LABEL DATA_DIR [DATABASE_URL] [NATS_URL]
dispatch_once() {
    local label="$1" data="$2" url="${3:-}" nats="${4:-}" campaigns="${BENCH_CAMPAIGNS:-30}"
    mkdir -p "$data"
    unthrottled_config "$data/herald.toml"
    if [ -n "$nats" ]; then
        # Fixed names: every run reuses the same three streams instead of adding some.
        export HERALD_BUS__NATS_URL="$nats" HERALD_BUS__STREAM_PREFIX="HERALD_BENCH" HERALD_BUS__SUBJECT_PREFIX="bench"
    fi
    start_server "$data" "$url" --config "$data/herald.toml"
    unset HERALD_BUS__NATS_URL HERALD_BUS__STREAM_PREFIX HERALD_BUS__SUBJECT_PREFIX
    local window ids=() i
    window="$(open_window)"
    for i in $(seq "$campaigns"); do
        local id
        id="$(api -X POST "localhost:$PORT/api/v1/campaigns" \
            -d "{\"name\":\"Bench $i\",\"message_template\":\"Hi {{name | first_word}}, your code is {{code}}\",\"daily_limit\":1000,$window}" | jq -r .id)"
        awk -v c="$i" 'BEGIN { printf "{\"contacts\":["; for (j = 0; j < 1000; j++) printf "%s{\"phone_number\":\"+1%03d%07d\",\"name\":\"Contact %d\",\"attributes\":{\"code\":\"%06d\"}}", (j ? "," : ""), 200 + c, j, j, j; printf "]}" }' \
            | api -X POST "localhost:$PORT/api/v1/campaigns/$id/contacts" -d @- >/dev/null
        api -X PUT "localhost:$PORT/api/v1/campaigns/$id" -d '{"status":"active"}' >/dev/null
        ids+=("$id")
    done
    local total=$((campaigns * 1000)) start now done=0 t10="" t90="" n10=0 n90=0
    echo "== dispatch end to end, $total messages ($campaigns campaigns), carrier-log, $label"
    start=$(date +%s.%N)
    for id in "${ids[@]}"; do api -X POST "localhost:$PORT/api/v1/campaigns/$id/send" >/dev/null; done
    local queued_at queued_done
    queued_at=$(date +%s.%N); queued_done=$(sent_total)
    echo "queued in: $(echo "$queued_at - $start" | bc) s ($queued_done already final by then)"
    while [ "$done" -lt "$total" ]; do
        sleep 0.2
        done=$(sent_total); now=$(date +%s.%N)
        if [ -z "$t10" ] && [ "$done" -ge $((total / 10)) ]; then t10=$now; n10=$done; fi
        if [ -z "$t90" ] && [ "$done" -ge $((total * 9 / 10)) ]; then t90=$now; n90=$done; fi
    done
    local elapsed
    elapsed=$(echo "$now - $start" | bc)
    echo "all $total final in: $elapsed s -> $(echo "$total / $elapsed" | bc) messages/s (send calls included)"
    echo "steady state (10% -> 90%): $(rate "$n90 - $n10" "$t90 - $t10")"
    echo "once everything was queued: $(rate "$total - $queued_done" "$now - $queued_at")"
    api "localhost:$PORT/api/v1/campaigns/${ids[0]}/stats" | jq -c .
    stop_server
}

bench_dispatch_embedded() {
    dispatch_once "embedded (SQLite, in-process transport)" "$WORK/dispatch-embedded"
}

bench_dispatch_nats() {
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$PG_BENCH_DB\""
    dispatch_once "PostgreSQL + NATS JetStream" "$WORK/dispatch-pg" "${PG_ADMIN_URL%/*}/$PG_BENCH_DB" \
        "${BENCH_NATS_URL:-nats://127.0.0.1:4222}"
}

# serve_until_ready LABEL DATA_DIR CONFIG: wall time from exec to /healthz, then idle RSS 3 s later.
serve_until_ready() {
    local label="$1" data="$2" config="$3" start ready
    mkdir -p "$data"
    start=$(date +%s%N)
    env HERALD_DATA_DIR="$data" HERALD_SERVER__BIND="127.0.0.1:$PORT" HERALD_LOG__LEVEL="${BENCH_LOG_LEVEL:-warn}" \
        "$BIN" --config "$config" serve >>"$data/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.02; done
    ready=$(( ($(date +%s%N) - start) / 1000000 ))
    sleep 3
    printf '%-44s ready in %6d ms, idle RSS %s\n' "$label" "$ready" \
        "$(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
    stop_server
}

# timed LABEL COMMAND...: wall time of one run.
timed() {
    local label="$1" start
    shift
    start=$(date +%s%N)
    "$@" >/dev/null
    printf '%-44s %6d ms\n' "$label" $(( ($(date +%s%N) - start) / 1000000 ))
}

bench_plugins() {
    local root config data
    root="$(cd "$(dirname "$0")/.." && pwd)"
    config="$WORK/plugins.toml"
    printf '[[carriers]]\nname = "log"\nplugin = "builtin:log"\ndefault = true\n' >"$config"
    for lang in js python; do
        "$root/sdk/examples/$lang/build.sh" "$WORK/$lang.wasm" >&2
        # Each behaves like builtin:http; nothing listens on the URL (start-up does not call it).
        printf '\n[[carriers]]\nname = "%s"\nplugin = "%s"\nallowed_hosts = ["127.0.0.1"]\n%s\n%s\n' \
            "$lang" "$WORK/$lang.wasm" 'allow_insecure_http = true' 'settings = { url = "http://127.0.0.1:9/send" }' \
            >>"$config"
    done
    echo "== plugins: $(du -h "$WORK/js.wasm" | cut -f1) JavaScript, $(du -h "$WORK/python.wasm" | cut -f1) Python component"
    data="$WORK/plugins-inspect"
    mkdir -p "$data"
    for lang in js python; do
        timed "plugin inspect $lang, first run (compiles)" env HERALD_DATA_DIR="$data" "$BIN" plugin inspect "$WORK/$lang.wasm"
        timed "plugin inspect $lang, again (code cache)" env HERALD_DATA_DIR="$data" "$BIN" plugin inspect "$WORK/$lang.wasm"
    done
    serve_until_ready "serve, shipped plugins only" "$WORK/plugins-shipped" /dev/null
    data="$WORK/plugins-serve"
    mkdir -p "$data"
    serve_until_ready "serve + JS + Python, first start" "$data" "$config"
    serve_until_ready "serve + JS + Python, second start" "$data" "$config"
    serve_until_ready "serve + JS + Python, third start" "$data" "$config"
    echo "   code cache: $(du -sh "$data/plugin-cache" | cut -f1) in $(find "$data/plugin-cache" -name '*.cwasm' | wc -l) entries"
}

# ---- scale (issue 10): cost against size, SPEC §8 "Scale" ----

SCALE_RESULTS=""   # one line per figure: database, size, key, value
SCALE_STREAMS=""   # the NATS stream prefix of this run, deleted at exit

# nats_delete_streams PREFIX: removes the run's JetStream streams (JetStream API over the plain protocol).
nats_delete_streams() {
    local hostport="${BENCH_NATS_URL:-nats://127.0.0.1:4222}" s
    hostport="${hostport#nats://}"
    exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}" || return 0
    { printf 'CONNECT {"verbose":false}\r\n'
      for s in JOBS RESULTS EVENTS RATE; do printf 'PUB $JS.API.STREAM.DELETE.%s_%s _INBOX.bench.%s 0\r\n\r\n' "$1" "$s" "$s"; done
      printf 'PING\r\n'; } >&3
    timeout 5 grep -qm1 PONG <&3 || true
    exec 3<&-
}

# record DB SIZE KEY VALUE
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SCALE_RESULTS"
    printf '   %-28s %s\n' "$3" "$4"
}

now_s() { date +%s.%N; }
since_s() { printf '%.1f' "$(echo "$(now_s) - $1" | bc)"; }

# phase DB WHAT: labels the RSS samples taken from now on.
phase() { echo "$1 $2" >"$WORK/phase.next" && mv "$WORK/phase.next" "$WORK/phase"; }

# The sampler: every second, the RSS (KiB) of each process listed in $WORK/pids, labelled with the phase.
rss_sampler() {
    local label pid rss
    while :; do
        while read -r label pid; do
            rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || continue
            [ -n "$rss" ] && echo "$(cat "$WORK/phase") $label $rss $(date +%s)"
        done <"$WORK/pids"
        sleep 1
    done >>"$WORK/rss.log"
}

# rss_of DB PHASE-PATTERN PROCESS: max, first and last RSS (MiB) sampled in the phases matching the pattern.
rss_of() {
    awk -v db="$1" -v pat="$2" -v proc="$3" 'NF == 5 && $1 == db && $2 ~ pat && $3 == proc {
        if (!n++) first = $4; last = $4; if ($4 > max) max = $4
    } END { if (n) printf "%d (%d -> %d)", max / 1024, first / 1024, last / 1024; else print "-" }' "$WORK/rss.log"
}

# unthrottled_config FILE: the log carrier unthrottled (its defaults are a real
# carrier's 100 segments/s), for the dispatch and scale benches.
unthrottled_config() {
    cat >"$1" <<TOML
[dispatch]
max_in_flight = 5000
[[carriers]]
name = "log"
plugin = "builtin:log"
default = true
max_per_second = 1000000
max_concurrency = 256
TOML
}

# scale_vars DATA URL: the environment of a herald process of this bench, in SCALE_VARS.
scale_vars() {
    SCALE_VARS=(HERALD_DATA_DIR="$1" HERALD_SERVER__BIND="127.0.0.1:$PORT" HERALD_LOG__LEVEL="${BENCH_LOG_LEVEL:-warn}"
        HERALD_CONTACTS__MAX_IMPORT_BYTES=268435456 HERALD_CAMPAIGNS__MAX_DAILY_LIMIT=1000000)
    [ -z "$2" ] || SCALE_VARS+=(HERALD_DATABASE__URL="$2")
    [ -z "$SCALE_STREAMS" ] || SCALE_VARS+=(HERALD_BUS__NATS_URL="${BENCH_NATS_URL:-nats://127.0.0.1:4222}"
        HERALD_BUS__STREAM_PREFIX="$SCALE_STREAMS" HERALD_BUS__SUBJECT_PREFIX="${SCALE_STREAMS,,}")
}

# scale_herald DATA URL ARGS...: runs herald with this bench's settings.
scale_herald() {
    scale_vars "$1" "$2"
    shift 2
    env "${SCALE_VARS[@]}" "$BIN" --config "$WORK/scale.toml" "$@"
}

# scale_start DB DATA [URL]: herald serve (SQLite), or --role api and --role dispatcher (PostgreSQL + NATS).
scale_start() {
    local db="$1" data="$2" url="${3:-}"
    mkdir -p "$data"
    : >"$WORK/pids"
    ! curl -sf "localhost:$PORT/healthz" >/dev/null || { echo "port $PORT is taken (BENCH_PORT)" >&2; return 1; }
    scale_vars "$data" "$url"
    if [ "$db" = sqlite ]; then
        env "${SCALE_VARS[@]}" "$BIN" --config "$WORK/scale.toml" serve >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        echo "serve $SERVER_PID" >>"$WORK/pids"
    else
        env "${SCALE_VARS[@]}" "$BIN" --config "$WORK/scale.toml" serve --role api >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        mkdir -p "$data/dispatcher"
        scale_vars "$data/dispatcher" ""
        env "${SCALE_VARS[@]}" "$BIN" --config "$WORK/scale.toml" serve --role dispatcher >>"$data/dispatcher.log" 2>&1 &
        DISPATCHER_PID=$!
        printf 'api %s\ndispatcher %s\n' "$SERVER_PID" "$DISPATCHER_PID" >>"$WORK/pids"
    fi
    for _ in $(seq 300); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    kill -0 "$SERVER_PID" && curl -sf "localhost:$PORT/healthz" >/dev/null || { tail -20 "$data/server.log" >&2; return 1; }
    TOKEN="$(HERALD_DATA_DIR="$data" "$BIN" token --sub "$(cat "$data/first_user")")"
}

scale_stop() {
    [ -n "$DISPATCHER_PID" ] && { kill "$DISPATCHER_PID"; wait "$DISPATCHER_PID" 2>/dev/null || true; DISPATCHER_PID=""; }
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    : >"$WORK/pids"
    if [ -n "${BENCH_KEEP_LOGS:-}" ]; then cp "$WORK"/scale-*/*.log "$BENCH_KEEP_LOGS"/ 2>/dev/null || true; fi
}

# Background data: PER contacts of a user of their own, CAMPS completed campaigns that each link all of
# them and sent each one message, so the database holds CAMPS x PER messages. Ids count up, and the
# messages go in contact by contact, so every index grows at its end or at one point per campaign.
scale_background() {
    SCALE_BG="${BENCH_BACKGROUND_MESSAGES:-10000000}"
    SCALE_PER=$((SCALE_BG < 100000 ? SCALE_BG : 100000))
    SCALE_CAMPS=$((SCALE_PER > 0 ? SCALE_BG / SCALE_PER : 0))
    SCALE_BG=$((SCALE_CAMPS * SCALE_PER))
}

seed_sqlite() {
    python3 - "$1" "$SCALE_PER" "$SCALE_CAMPS" <<'PY'
import sqlite3, sys, time
db, per, camps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = per * camps
con = sqlite3.connect(db, isolation_level=None)
for pragma in ("synchronous = OFF", "cache_size = -262144", "temp_store = MEMORY"):
    con.execute("PRAGMA " + pragma)
# As Herald writes them: uuids are 16-byte blobs (here 16 ASCII bytes that count up), times RFC 3339 text.
now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
seq = "WITH RECURSIVE s(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
user = b"bench-background"
con.execute("BEGIN")
con.execute("INSERT INTO users (id, created_at) VALUES (?, ?)", (user, now))
con.execute(seq + "INSERT INTO contacts (id, user_id, phone_number, name, attributes, opted_out, created_at, updated_at) "
    "SELECT CAST(printf('k%015d', n) AS BLOB), ?, printf('+1201%07d', n), 'Background ' || n, '{}', 0, ?, ? FROM s",
    (0, per - 1, user, now, now))
for c in range(camps):
    cid = b"c%015d" % c
    con.execute("INSERT INTO campaigns (id, user_id, name, message_template, daily_limit, status, timezone, "
        "send_window_start, send_window_end, send_days, created_at, updated_at) "
        "VALUES (?, ?, ?, 'Hi {{name}}', 1000, 'completed', 'UTC', '09:00', '20:00', 127, ?, ?)",
        (cid, user, "Background %d" % c, now, now))
    con.execute("INSERT INTO send_tasks (id, campaign_id, queued, created_at, queuing, queued_through, carrier) "
        "VALUES (?, ?, ?, ?, 0, ?, 'log')", (b"t%015d" % c, cid, per, now, per))
    con.execute(seq + "INSERT INTO campaign_contacts (campaign_id, contact_id, added_at, position) "
        "SELECT ?, CAST(printf('k%015d', n) AS BLOB), ?, n + 1 FROM s", (0, per - 1, cid, now))
con.execute("COMMIT")
chunk = 1000000
for start in range(0, total, chunk):
    # n = contact * camps + campaign; the triggers count every message into message_counts.
    con.execute("BEGIN")
    con.execute(seq + "INSERT INTO messages (id, campaign_id, contact_id, task_id, variant, status, carrier, "
        "carrier_message_id, segments, attempts, not_before, created_at, updated_at, sent_at, hand_offs, phone_number) "
        "SELECT CAST(printf('m%015d', n) AS BLOB), CAST(printf('c%015d', n % ?3) AS BLOB), "
        "CAST(printf('k%015d', n / ?3) AS BLOB), CAST(printf('t%015d', n % ?3) AS BLOB), 'a', 'sent', 'log', "
        "printf('bg-%015d', n), 1, 1, ?4, ?4, ?4, ?4, 1, printf('+1201%07d', n / ?3) FROM s",
        (start, min(start + chunk, total) - 1, camps, now))
    con.execute("COMMIT")
PY
}

seed_postgres() {
    local url="$1" from
    # Foreign-key checks off while seeding (the rows are consistent by construction); the counting triggers stay on.
    psql "$url" -q -v ON_ERROR_STOP=1 -v per="$SCALE_PER" -v camps="$SCALE_CAMPS" <<'SQL'
SET synchronous_commit = off;
ALTER TABLE campaign_contacts DISABLE TRIGGER ALL;
ALTER TABLE messages DISABLE TRIGGER ALL;
ALTER TABLE messages ENABLE TRIGGER messages_counted_on_insert;
BEGIN;
INSERT INTO users (id, created_at) VALUES ('bbbbbbbb-0000-0000-0000-000000000000', now());
INSERT INTO contacts (id, user_id, phone_number, name, attributes, opted_out, created_at, updated_at)
    SELECT ('cccccccc' || lpad(to_hex(n), 24, '0'))::uuid, 'bbbbbbbb-0000-0000-0000-000000000000',
        '+1201' || lpad(n::text, 7, '0'), 'Background ' || n, '{}', false, now(), now()
    FROM generate_series(0, :per - 1) n;
INSERT INTO campaigns (id, user_id, name, message_template, daily_limit, status, timezone, send_window_start,
        send_window_end, send_days, created_at, updated_at)
    SELECT ('caaaaaaa' || lpad(to_hex(c), 24, '0'))::uuid, 'bbbbbbbb-0000-0000-0000-000000000000', 'Background ' || c,
        'Hi {{name}}', 1000, 'completed', 'UTC', '09:00', '20:00', 127, now(), now()
    FROM generate_series(0, :camps - 1) c;
INSERT INTO send_tasks (id, campaign_id, queued, created_at, queuing, queued_through, carrier)
    SELECT ('daaaaaaa' || lpad(to_hex(c), 24, '0'))::uuid, ('caaaaaaa' || lpad(to_hex(c), 24, '0'))::uuid, :per, now(),
        false, :per, 'log'
    FROM generate_series(0, :camps - 1) c;
INSERT INTO campaign_contacts (campaign_id, contact_id, added_at, position)
    SELECT ('caaaaaaa' || lpad(to_hex(c), 24, '0'))::uuid, ('cccccccc' || lpad(to_hex(n), 24, '0'))::uuid, now(), n + 1
    FROM generate_series(0, :camps - 1) c, generate_series(0, :per - 1) n ORDER BY c, n;
COMMIT;
SQL
    for ((from = 0; from < SCALE_BG; from += 1000000)); do
        # n = contact * camps + campaign; the statement trigger counts them into message_counts.
        psql "$url" -q -v ON_ERROR_STOP=1 -v camps="$SCALE_CAMPS" -v from="$from" \
            -v to="$(( (from + 1000000 < SCALE_BG ? from + 1000000 : SCALE_BG) - 1 ))" <<'SQL'
SET synchronous_commit = off;
INSERT INTO messages (id, campaign_id, contact_id, task_id, variant, status, carrier, carrier_message_id, segments,
        attempts, not_before, created_at, updated_at, sent_at, hand_offs, phone_number)
    SELECT ('eeeeeeee' || lpad(to_hex(n), 24, '0'))::uuid, ('caaaaaaa' || lpad(to_hex(n % :camps), 24, '0'))::uuid,
        ('cccccccc' || lpad(to_hex(n / :camps), 24, '0'))::uuid, ('daaaaaaa' || lpad(to_hex(n % :camps), 24, '0'))::uuid,
        'a', 'sent', 'log', 'bg-' || lpad(n::text, 15, '0'), 1, 1, now(), now(), now(), now(), 1,
        '+1201' || lpad((n / :camps)::text, 7, '0')
    FROM generate_series(:from, :to) n;
SQL
    done
    psql "$url" -q -v ON_ERROR_STOP=1 -c "ALTER TABLE campaign_contacts ENABLE TRIGGER ALL" \
        -c "ALTER TABLE messages ENABLE TRIGGER ALL" -c "VACUUM ANALYZE"
}

# scale_csv N AREA: N contacts with numbers +1AAA0000000 up (one area code per size, so each import is new).
scale_csv() {
    local file="$WORK/scale-$1.csv"
    [ -f "$file" ] || awk -v n="$1" -v area="$2" 'BEGIN {
        print "phone_number,name,first_name,city"
        for (i = 0; i < n; i++) printf "+1%03d%07d,Contact %d,First%d,City%d\n", area, i, i, i, i % 100
    }' >"$file"
    echo "$file"
}

# to_ms VALUE: a wrk latency (850.00us, 1.20ms, 2.01s) in milliseconds.
to_ms() {
    case "$1" in
        *us) echo "scale=3; ${1%us} / 1000" | bc ;;
        *ms) echo "${1%ms}" ;;
        *s) echo "scale=3; ${1%s} * 1000" | bc ;;
        *m) echo "scale=3; ${1%m} * 60000" | bc ;;
    esac
}

# read_latency DB SIZE LABEL PATH: p50/p99 (and requests/s) of GET PATH, wrk with 1 thread and 4 connections.
read_latency() {
    local db="$1" size="$2" label="$3" path="$4" out p50 p99 bad rps
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "localhost:$PORT$path" || { record "$db" "$size" "$label" "HTTP error"; return; }
    out="$(wrk -t1 -c4 -d"${BENCH_READ_SECONDS:-5}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$path")"
    p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    rps="$(awk '/^Requests\/sec/ {printf "%d", $2}' <<<"$out")"
    bad="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
    record "$db" "$size" "$label" "$(printf '%.2f / %.2f' "$p50" "$p99") ($rps/s)${bad:+ ($bad non-2xx)}"
}

# db_scalar DB URL SQL [BLOB-HEX]: one value from the database, straight (not through Herald).
db_scalar() {
    if [ "$1" = sqlite ]; then
        python3 -c 'import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
print(con.execute(sys.argv[2], tuple(bytes.fromhex(a) for a in sys.argv[3:])).fetchone()[0])' "$2" "$3" "${@:4}"
    else
        psql "$2" -Atc "$3"
    fi
}

# scale_size DB DATA URL N AREA: one campaign of N contacts, from import to purge.
scale_size() {
    local db="$1" data="$2" url="$3" n="$4" area="$5" csv campaign task start answer status pages out t
    csv="$(scale_csv "$n" "$area")"
    echo "== $db, campaign of $n contacts"
    phase "$db" "$n:import"
    campaign="$(api -X POST "localhost:$PORT/api/v1/campaigns" \
        -d "{\"name\":\"Scale $n\",\"message_template\":\"Hi {{name}}\",\"daily_limit\":$n,$(open_window)}" | jq -r .id)"
    start=$(now_s)
    curl -sf -H "Authorization: Bearer $TOKEN" -F "file=@$csv" "localhost:$PORT/api/v1/campaigns/$campaign/contacts/import" >/dev/null
    record "$db" "$n" "CSV import (s)" "$(since_s "$start")"
    # The forecast (issue 11) reads every linked contact once: a preview, O(contacts).
    if t="$(api -o /dev/null -w '%{time_total}' "localhost:$PORT/api/v1/campaigns/$campaign/forecast")"; then
        record "$db" "$n" "GET forecast (ms)" "$(echo "$t * 1000 / 1" | bc)"
    fi
    api -X PUT "localhost:$PORT/api/v1/campaigns/$campaign" -d '{"status":"active"}' >/dev/null

    phase "$db" "$n:send"
    start=$(now_s)
    answer="$(api -X POST -w '\n%{time_total}' "localhost:$PORT/api/v1/campaigns/$campaign/send")"
    # Paused at once: the reads below are measured on their own, without dispatch running beside them.
    api -X PUT "localhost:$PORT/api/v1/campaigns/$campaign" -d '{"status":"paused"}' >/dev/null
    task="$(head -1 <<<"$answer" | jq -r .task_id)"
    record "$db" "$n" "POST /send answer (ms)" "$(echo "$(tail -1 <<<"$answer") * 1000 / 1" | bc) (queued $(head -1 <<<"$answer" | jq .queued))"
    status=queuing
    while [ "$status" = queuing ]; do
        sleep 0.1
        status="$(api "localhost:$PORT/api/v1/tasks/$task" | jq -r .status)"
    done
    record "$db" "$n" "queued in (s)" "$(since_s "$start") (then $status)"
    if [ "$db" = postgres ] && [ -n "${BENCH_SCALE_ANALYZE:-}" ]; then
        # What autovacuum would do some time later: without it the statistics still say "no queued
        # messages" and the scheduler's claim can be planned as a semi join that never ends (docs/benchmarks.md).
        psql "$url" -qc "ANALYZE messages"
    fi
    api "localhost:$PORT/api/v1/campaigns/$campaign/stats" | jq -c '{total_contacts, messages_pending, messages_sent}'

    phase "$db" "$n:reads"
    pages=$(( (n + 99) / 100 ))
    read_latency "$db" "$n" "GET stats p50/p99 (ms)" "/api/v1/campaigns/$campaign/stats"
    read_latency "$db" "$n" "GET task p50/p99 (ms)" "/api/v1/tasks/$task"
    read_latency "$db" "$n" "contacts page 1 p50/p99 (ms)" "/api/v1/campaigns/$campaign/contacts?page=1&per_page=100"
    read_latency "$db" "$n" "contacts middle p50/p99 (ms)" "/api/v1/campaigns/$campaign/contacts?page=$(( (pages + 1) / 2 ))&per_page=100"
    read_latency "$db" "$n" "contacts last p50/p99 (ms)" "/api/v1/campaigns/$campaign/contacts?page=$pages&per_page=100"
    read_latency "$db" "$n" "GET /metrics p50/p99 (ms)" "/metrics"

    if [ "$n" = "$SCALE_LARGEST" ] && [[ " ${BENCH_SCALE_DISPATCH-postgres sqlite} " == *" $db "* ]]; then
        scale_dispatch "$db" "$campaign" "$n"
    fi

    phase "$db" "$n:delete"
    api -X PUT "localhost:$PORT/api/v1/campaigns/$campaign" -d '{"status":"paused"}' >/dev/null 2>&1 || true
    local hex="${campaign//-/}" gone=1 write worst=0 t
    start=$(now_s)
    t="$(api -X DELETE -o /dev/null -w '%{time_total}' "localhost:$PORT/api/v1/campaigns/$campaign")"
    record "$db" "$n" "DELETE answer (ms)" "$(echo "$t * 1000 / 1" | bc)"
    local q="SELECT COUNT(*) FROM campaigns WHERE id = " target="$data/herald.db"
    if [ "$db" = sqlite ]; then q+="?"; else q+="'$campaign'"; target="$url"; hex=""; fi
    while [ "$gone" != 0 ]; do
        # A write beside the purge: creating a (draft) campaign, timed.
        write="$(api -X POST -o /dev/null -w '%{time_total}' "localhost:$PORT/api/v1/campaigns" \
            -d '{"name":"Beside the purge","message_template":"Hi {{name}}"}')"
        write="$(echo "$write * 1000 / 1" | bc)"
        [ "$write" -gt "$worst" ] && worst=$write
        gone="$(db_scalar "$db" "$target" "$q" ${hex:+"$hex"})"
        [ "$gone" != 0 ] && sleep 0.2
    done
    record "$db" "$n" "purged in (s)" "$(since_s "$start")"
    record "$db" "$n" "write during purge, max (ms)" "$worst"
    record "$db" "$n" "RSS max (MiB)" "$(for p in $(awk '{print $1}' "$WORK/pids"); do printf '%s %s ' "$p" "$(rss_of "$db" "^$n:" "$p" | cut -d' ' -f1)"; done)"
}

# scale_dispatch DB CAMPAIGN N: resumes the (fully queued) campaign and times it to the last message.
scale_dispatch() {
    local db="$1" campaign="$2" n="$3" stats done0 done pending start elapsed p
    phase "$db" "$n:dispatch"
    sleep 2 # a sample or two at the start
    stats="$(api "localhost:$PORT/api/v1/campaigns/$campaign/stats")"
    done0="$(jq '.messages_sent + .messages_failed' <<<"$stats")"
    echo "   dispatching $(jq .messages_pending <<<"$stats") messages ($done0 already final)"
    start=$(now_s)
    api -X PUT "localhost:$PORT/api/v1/campaigns/$campaign" -d '{"status":"active"}' >/dev/null
    pending=1
    while [ "$pending" != 0 ]; do
        sleep 1
        stats="$(api "localhost:$PORT/api/v1/campaigns/$campaign/stats")"
        pending="$(jq .messages_pending <<<"$stats")"
        if [ "$(echo "$(now_s) - $start > ${BENCH_DISPATCH_TIMEOUT:-900}" | bc)" = 1 ]; then
            echo "   gave up after ${BENCH_DISPATCH_TIMEOUT:-900} s with $pending pending"; break
        fi
    done
    elapsed="$(echo "$(now_s) - $start" | bc)"
    done="$(jq '.messages_sent + .messages_failed' <<<"$stats")"
    record "$db" "$n" "dispatch (msg/s)" "$(echo "($done - $done0) / $elapsed" | bc) ($((done - done0)) in $(printf '%.0f' "$elapsed") s, $pending left)"
    sleep 2
    for p in $(awk '{print $1}' "$WORK/pids"); do
        record "$db" "$n" "dispatch RSS $p max (start -> end), MiB" "$(rss_of "$db" "^$n:dispatch" "$p")"
    done
}

# scale_db DB: seeds a database, then runs every size on it.
scale_db() {
    local db="$1" data="$WORK/scale-$1" url="" start area=300 n
    rm -rf "$data"; mkdir -p "$data"
    if [ "$db" = postgres ]; then
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$PG_BENCH_DB\" WITH (FORCE)" -c "CREATE DATABASE \"$PG_BENCH_DB\""
        url="${PG_ADMIN_URL%/*}/$PG_BENCH_DB"
        SCALE_STREAMS="HERALD_BSCALE_$$"
    else
        SCALE_STREAMS=""
    fi
    scale_herald "$data" "$url" migrate >/dev/null
    phase "$db" "seed"
    echo "== $db: seeding $SCALE_BG background messages ($SCALE_CAMPS campaigns x $SCALE_PER contacts)"
    start=$(now_s)
    if [ "$db" = sqlite ]; then seed_sqlite "$data/herald.db"; else seed_postgres "$url"; fi
    record "$db" "-" "seed (s)" "$(since_s "$start")"
    start=$(now_s)
    scale_herald "$data" "$url" verify
    record "$db" "-" "herald verify after seed (s)" "$(since_s "$start")"
    if [ "$db" = sqlite ]; then record "$db" "-" "database size" "$(du -sh "$data" | cut -f1)"
    else record "$db" "-" "database size" "$(psql "$url" -Atc "SELECT pg_size_pretty(pg_database_size(current_database()))")"; fi
    phase "$db" "idle"
    scale_start "$db" "$data" "$url"
    sleep 2
    for n in $SCALE_SIZES; do
        scale_size "$db" "$data" "$url" "$n" "$area"
        area=$((area + 1))
    done
    scale_stop
    if [ "$db" = postgres ]; then
        if [ -n "${BENCH_SCALE_KEEP:-}" ]; then
            psql "$PG_ADMIN_URL" -qc "ALTER DATABASE \"$PG_BENCH_DB\" RENAME TO \"${PG_BENCH_DB}_kept\""
            echo "   kept: database ${PG_BENCH_DB}_kept"
        fi
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$PG_BENCH_DB\" WITH (FORCE)"
        nats_delete_streams "$SCALE_STREAMS"
    elif [ -n "${BENCH_SCALE_KEEP:-}" ]; then
        mkdir -p "$BENCH_SCALE_KEEP" && rm -rf "$BENCH_SCALE_KEEP/sqlite" && mv "$data" "$BENCH_SCALE_KEEP/sqlite"
        echo "   kept: $BENCH_SCALE_KEEP/sqlite"
    fi
    rm -rf "$data"
}

scale_table() {
    local db="$1"
    echo
    echo "### $db (background: $SCALE_BG messages)"
    awk -F'\t' -v db="$db" -v sizes="$SCALE_SIZES" '
        BEGIN { ns = split(sizes, size, " ") }
        $1 == db && $2 == "-" { once[++no] = $3 ": " $4 }
        $1 == db && $2 != "-" { if (!(($3) in seen)) { seen[$3] = 1; key[++nk] = $3 }; v[$2, $3] = $4 }
        END {
            for (i = 1; i <= no; i++) print "- " once[i]
            printf "\n| |"; for (j = 1; j <= ns; j++) printf " %s |", size[j]; printf "\n|---|"
            for (j = 1; j <= ns; j++) printf "---|"; print ""
            for (i = 1; i <= nk; i++) {
                printf "| %s |", key[i]
                for (j = 1; j <= ns; j++) printf " %s |", ((size[j], key[i]) in v) ? v[size[j], key[i]] : ""
                print ""
            }
        }' "$SCALE_RESULTS"
}

bench_scale() {
    SCALE_SIZES="${BENCH_SIZES:-1000 100000 1000000}"
    SCALE_LARGEST="$(tr ' ' '\n' <<<"$SCALE_SIZES" | sort -n | tail -1)"
    SCALE_RESULTS="$WORK/scale-results.tsv"
    : >"$SCALE_RESULTS"; : >"$WORK/pids"; : >"$WORK/rss.log"
    scale_background
    unthrottled_config "$WORK/scale.toml"
    phase "-" "start"
    rss_sampler &
    SAMPLER_PID=$!
    local db
    for db in ${BENCH_SCALE_DBS:-sqlite postgres}; do scale_db "$db"; done
    kill "$SAMPLER_PID"; SAMPLER_PID=""
    echo
    echo "== scale: cost against size (reads: wrk -t1 -c4 -d${BENCH_READ_SECONDS:-5}s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    for db in ${BENCH_SCALE_DBS:-sqlite postgres}; do scale_table "$db"; done
    echo
    echo "RSS per phase, max MiB (database, size:phase, process):"
    awk 'NF == 5 && $2 != "start" { k = $1 " " $2 " " $3; if ($4 > m[k]) m[k] = $4 }
        END { for (k in m) printf "%s %d\n", k, m[k] / 1024 }' "$WORK/rss.log" | sort -V | column -t | sed 's/^/   /'
}

case "${1:-all}" in
    list) bench_list ;;
    import) bench_import ;;
    rss) bench_rss ;;
    dispatch) bench_dispatch_embedded; bench_dispatch_nats ;;
    dispatch-embedded) bench_dispatch_embedded ;;
    dispatch-nats) bench_dispatch_nats ;;
    hostile) bench_hostile ;;
    plugins) bench_plugins ;;
    scale) bench_scale ;;
    all) bench_rss; bench_list; bench_import; bench_dispatch_embedded; bench_dispatch_nats ;;
    *) echo "usage: $0 list|import|rss|dispatch|dispatch-embedded|dispatch-nats|hostile|plugins|scale|all" >&2; exit 2 ;;
esac
