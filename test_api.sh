#!/usr/bin/env bash
# Test the API: a smoke test of a running Service Nanny daemon, one line per endpoint,
#   OK  METHOD PATH
#   FAIL METHOD PATH: what went wrong (the HTTP status and an excerpt of the body)
#   SKIP METHOD PATH: why it was not tried
# then a summary. It reads only, but for POST /rediscover (a rescan, which changes no
# service); --lifecycle NAME also starts, restarts and stops NAME. Needs bash and curl.
# Exit codes: 0 every check passed, 1 a check failed, 2 usage, 4 no answer (curl's error).
set -uo pipefail

PROG=${0##*/}

usage() {
    cat <<EOF
usage: $PROG [--url URL] [--key KEY] [--cacert FILE] [--lifecycle NAME]
Checks every read-only endpoint of a running Service Nanny daemon and POST /rediscover,
one line each (OK, FAIL with the status and the body, or SKIP), then a summary.
  --url URL         the daemon (env NANNY_URL; default http://127.0.0.1:8080)
  --key KEY         the API key, sent as Authorization: Bearer KEY (env NANNY_KEY)
  --cacert FILE     trust this CA for an HTTPS daemon (env NANNY_CACERT)
  --lifecycle NAME  also start, restart and stop the service NAME (it is started again
                    at the end when it ran before); without it nothing is started or stopped
  -h, --help        this help
exit codes: 0 all passed, 1 a check failed, 2 usage, 4 no answer from the daemon
examples:
  ./test_api.sh
  NANNY_KEY=nanny_... ./test_api.sh --url https://gpu-box.example --cacert ca.pem
  ./test_api.sh --lifecycle hello
EOF
}

url=${NANNY_URL:-http://127.0.0.1:8080}
key=${NANNY_KEY:-}
cacert=${NANNY_CACERT:-}
lifecycle=""

die_usage() {
    echo "$PROG: $1" >&2
    echo "usage: $PROG [--url URL] [--key KEY] [--cacert FILE] [--lifecycle NAME] (--help)" >&2
    exit 2
}

while (($# > 0)); do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --url | --key | --cacert | --lifecycle)
        (($# >= 2)) || die_usage "$1 needs a value"
        case $1 in
        --url) url=$2 ;;
        --key) key=$2 ;;
        --cacert) cacert=$2 ;;
        --lifecycle) lifecycle=$2 ;;
        esac
        shift 2
        ;;
    --url=* | --key=* | --cacert=* | --lifecycle=*)
        value=${1#*=}
        case $1 in
        --url=*) url=$value ;;
        --key=*) key=$value ;;
        --cacert=*) cacert=$value ;;
        --lifecycle=*) lifecycle=$value ;;
        esac
        shift
        ;;
    *) die_usage "unknown argument '$1'" ;;
    esac
done

url=${url%/}
case $url in
http://* | https://*) ;;
*) die_usage "--url must start with http:// or https://, not '$url'" ;;
esac
name_re='^[a-z0-9][a-z0-9._-]{0,62}$'
if [[ -n $lifecycle && ! $lifecycle =~ $name_re ]]; then
    die_usage "--lifecycle: '$lifecycle' is not a service name ($name_re)"
fi
if [[ -n $cacert && ! -r $cacert ]]; then
    die_usage "--cacert: cannot read '$cacert'"
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "$PROG: needs curl (Debian: apt-get install curl)" >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nanny-test-api.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
body=$tmp/body

curl_args=(-sS -o "$body" -w '%{http_code} %{content_type}')
if [[ -n $key ]]; then
    # From a file, so that the key is not in the process list.
    (umask 077 && printf 'Authorization: Bearer %s\n' "$key" >"$tmp/auth")
    curl_args+=(-H "@$tmp/auth")
fi
if [[ -n $cacert ]]; then
    curl_args+=(--cacert "$cacert")
fi

ok=0
failed=0
skipped=0
status=""       # of the last request: the HTTP status code...
content_type="" # ...its Content-Type...
curl_error=""   # ...or curl's own error when there was no answer

# request METHOD PATH [MAX_TIME]: sets status and content_type, the body in $body;
# returns 1 (curl_error set) when no HTTP answer came.
request() {
    local method=$1 path=$2 max_time=${3:-30} out rc=0
    : >"$body"
    out=$(curl "${curl_args[@]}" --max-time "$max_time" -X "$method" "$url$path" \
        2>"$tmp/err") || rc=$?
    status=${out%% *}
    content_type=${out#* }
    curl_error=""
    if ((rc != 0)) || [[ $status == 000 ]]; then
        curl_error=$(head -c 300 "$tmp/err" | tr '\n' ' ')
        curl_error=${curl_error% }
        [[ -n $curl_error ]] || curl_error="curl exited with $rc"
        return 1
    fi
    return 0
}

# The body's first 200 characters on one line.
excerpt() {
    local text
    text=$(head -c 200 "$body" | tr '\r\n\t' '   ')
    if (($(wc -c <"$body") > 200)); then text+="..."; fi
    printf '%s' "${text:-(empty body)}"
}

pass() {
    printf 'OK  %s %s\n' "$1" "$2"
    ok=$((ok + 1))
}

fail() {
    printf 'FAIL %s %s: %s\n' "$1" "$2" "$3"
    failed=$((failed + 1))
}

skip() {
    printf 'SKIP %s %s: %s\n' "$1" "$2" "$3"
    skipped=$((skipped + 1))
}

# check METHOD PATH WANT_STATUS PATTERN [WHAT [MAX_TIME]]: one request, one line. OK
# when the status is WANT_STATUS and the body matches the extended regex PATTERN (WHAT
# says what it should hold); PATTERN "text/plain" checks the Content-Type instead.
check() {
    local method=$1 path=$2 max_time=${6:-30}
    if ! request "$method" "$path" "$max_time"; then
        fail "$method" "$path" "no answer: $curl_error"
        return 1
    fi
    verdict "$@"
}

# verdict METHOD PATH WANT_STATUS PATTERN [WHAT]: the line for the answer just received.
verdict() {
    local method=$1 path=$2 want=$3 pattern=$4 what=${5:-$4}
    if [[ $status != "$want" ]]; then
        fail "$method" "$path" "HTTP $status (expected $want): $(excerpt)"
        return 1
    fi
    if [[ $pattern == text/plain ]]; then
        if [[ $content_type != text/plain* ]]; then
            fail "$method" "$path" "Content-Type '$content_type' (expected text/plain)"
            return 1
        fi
    elif ! grep -Eq -- "$pattern" "$body"; then
        fail "$method" "$path" "HTTP $status but the body has no $what: $(excerpt)"
        return 1
    fi
    pass "$method" "$path"
}

# optional METHOD PATH PATTERN WHAT: an endpoint of the contract that an older daemon
# may not serve yet: its 404 not_found is a SKIP, anything else as check.
optional() {
    local method=$1 path=$2 pattern=$3 what=$4
    if ! request "$method" "$path"; then
        fail "$method" "$path" "no answer: $curl_error"
    elif [[ $status == 404 ]] && grep -q '"error": *"not_found"' "$body"; then
        skip "$method" "$path" "this daemon does not serve it (404)"
    else
        verdict "$method" "$path" 200 "$pattern" "$what"
    fi
}

# The state of service $1 from GET /services/$1, or "" when it cannot be read.
service_state() {
    if ! request GET "/services/$1" || [[ $status != 200 ]]; then return 0; fi
    sed -nE 's/.*"state": *"([a-z]+)".*/\1/p' "$body"
}

# --- GET /health: also whether anything answers at all ------------------------
if ! request GET /health; then
    echo "$PROG: no answer from the daemon at $url: $curl_error" >&2
    exit 4
fi
if [[ $status == 200 ]] && grep -Eq '"status": *"ok"' "$body"; then
    pass GET /health
else
    fail GET /health "HTTP $status (expected 200 with \"status\":\"ok\"): $(excerpt)"
fi

# --- the services -------------------------------------------------------------
first=""
why="GET /services lists no service"
if ! check GET /services 200 '"services": *\[' '"services" list'; then
    why="no service name: GET /services failed"
else
    # The daemon writes each status object with "name" first, and names hold no quote.
    first=$(sed -nE 's/^[[:space:]]*\{[[:space:]]*"services":[[:space:]]*\[[[:space:]]*\{[[:space:]]*"name":[[:space:]]*"([a-z0-9][a-z0-9._-]*)".*/\1/p' "$body" | head -n 1)
fi
if [[ -n $first ]]; then
    check GET "/services/$first" 200 "\"name\": *\"$first\"" "\"name\":\"$first\""
    check GET "/services/$first/status" 200 '"state": *"[a-z]+"' '"state"'
    check GET "/services/$first/logs?tail=5" 200 text/plain
else
    for path in /services/NAME /services/NAME/status "/services/NAME/logs?tail=5"; do
        skip GET "$path" "$why"
    done
fi
check GET /services/nanny-test-api-no-such-service 404 '"error": *"not_found"' \
    '"error":"not_found"'
check POST /rediscover 200 '"added": *\[' '"added" list'
check GET "/audit?tail=5" 200 '"entries": *\[' '"entries" list'
optional GET /gpus '"gpus": *\[' '"gpus" list'
optional GET /metrics '^# (HELP|TYPE) nanny_' 'nanny_ metrics'

# --- --lifecycle NAME -----------------------------------------------------------
if [[ -n $lifecycle ]]; then
    before=$(service_state "$lifecycle")
    # A service that ran is left running at the end; a stopped one stopped.
    check POST "/services/$lifecycle/start" 200 '"state": *"(starting|running)"' \
        '"state":"starting" or "running"' 120
    check POST "/services/$lifecycle/restart" 200 '"state": *"(starting|running)"' \
        '"state":"starting" or "running"' 120
    check POST "/services/$lifecycle/stop" 200 '"state": *"stopped"' '"state":"stopped"' 120
    case $before in
    starting | running | unhealthy)
        check POST "/services/$lifecycle/start" 200 '"state": *"(starting|running)"' \
            '"state":"starting" or "running"' 120
        ;;
    esac
fi

printf '%d ok, %d failed, %d skipped (%s)\n' "$ok" "$failed" "$skipped" "$url"
((failed == 0))
