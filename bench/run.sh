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
#   bench/run.sh all      all of the above
#
# Environment: BENCH_ROWS (default 1000000), BENCH_DURATION (wrk seconds, default 20),
# BENCH_CAMPAIGNS (dispatch: campaigns of 1,000 messages each, default 30),
# BENCH_NATS_URL (default nats://127.0.0.1:4222), BENCH_LOG_LEVEL (server log filter, default warn),
# BENCH_KEEP_LOGS (a directory to copy the server's log into),
# BENCH_PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres), BENCH_BIN (the herald binary to run),
# BENCH_PORT (default 18181).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${BENCH_ROWS:-1000000}"
DURATION="${BENCH_DURATION:-20}"
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${BENCH_PORT:-18181}"
WORK="$(mktemp -d /tmp/herald-bench.XXXXXX)"
SERVER_PID=""

PG_BENCH_DB="herald_bench_$$"
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
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
open_window() {
    local hour ahead zone
    hour=$((10#$(date -u +%H)))
    ahead=$((12 - hour))
    if [ "$ahead" -gt 0 ]; then zone="Etc/GMT-$ahead"; elif [ "$ahead" -lt 0 ]; then zone="Etc/GMT+$((-ahead))"; else zone="Etc/GMT"; fi
    echo "\"timezone\":\"$zone\",\"send_window_start\":\"06:00\",\"send_window_end\":\"23:00\",\"send_days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]"
}

sent_total() {
    curl -sf "localhost:$PORT/metrics" | awk '/^herald_messages\{status="(sent|delivered|failed)"\}/ {n += $2} END {print n + 0}'
}

# dispatch_once LABEL DATA_DIR [DATABASE_URL] [NATS_URL]
dispatch_once() {
    local label="$1" data="$2" url="${3:-}" nats="${4:-}" campaigns="${BENCH_CAMPAIGNS:-30}"
    mkdir -p "$data"
    # The log carrier unthrottled (its defaults are a real carrier's 100 segments/s).
    cat >"$data/herald.toml" <<TOML
[dispatch]
max_in_flight = 5000
[[carriers]]
name = "log"
plugin = "builtin:log"
default = true
max_per_second = 1000000
max_concurrency = 256
TOML
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

case "${1:-all}" in
    list) bench_list ;;
    import) bench_import ;;
    rss) bench_rss ;;
    dispatch) bench_dispatch_embedded; bench_dispatch_nats ;;
    dispatch-embedded) bench_dispatch_embedded ;;
    dispatch-nats) bench_dispatch_nats ;;
    hostile) bench_hostile ;;
    plugins) bench_plugins ;;
    all) bench_rss; bench_list; bench_import; bench_dispatch_embedded; bench_dispatch_nats ;;
    *) echo "usage: $0 list|import|rss|dispatch|dispatch-embedded|dispatch-nats|hostile|plugins|all" >&2; exit 2 ;;
esac
