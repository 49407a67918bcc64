#!/usr/bin/env bash
# The GPU inventory's check on a machine with real NVIDIA GPUs (issue 15):
#   1. inventory: GET /gpus of a daemon on the box lists what nvidia-smi lists (count,
#      index, name, UUID, total memory) and says it read NVML;
#   2. foreign usage: a CUDA process started outside the daemon (build/gpu-foreign, which
#      takes memory on GPU 0 through the driver's libcuda) shows on GPU 0 as foreign, with
#      the memory NVML gives it;
#   3. placement counts it: a service pinned to GPU 0 that needs the GPU's free memory
#      less half of what the foreign process took is refused while it runs, and placed on
#      GPU 0 once it has ended (the next reading, within seconds).
# It prints each check and the daemon's pages, and exits 0 when all pass, 1 when one
# fails, 2 where there is no NVIDIA GPU (no nvidia-smi, or it lists none).
#
# Usage:
#   bench/gpu-device.sh pack   here: builds nanny and gpu-foreign (build/) and copies them,
#                              jq, curl and every library they load (the C library and its
#                              loader too) into build/gpu-pack, so that a GPU machine where
#                              nothing can be installed runs them (about 30 MB);
#   bench/gpu-device.sh        there: runs the checks with build/gpu-pack's programs, each
#                              through the packed loader (the driver's libnvidia-ml and
#                              libcuda are the machine's own).
# Traffic goes to 127.0.0.1 only; every wait is bounded; on exit the daemon, its service
# and the CUDA process are stopped and the temp folder removed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACK=${GPU_PACK:-$REPO/build/gpu-pack}
BENCH_NAME=gpu-device
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# pack: the programs and their libraries, for a machine that has none of them.
pack() {
    local bin lib
    meson setup "$REPO/build" >/dev/null 2>&1 || true
    ninja -C "$REPO/build" nanny gpu-foreign >/dev/null
    rm -rf "$PACK"
    mkdir -p "$PACK/bin" "$PACK/lib"
    for bin in "$REPO/build/nanny" "$REPO/build/gpu-foreign" "$(command -v jq)" \
        "$(command -v curl)"; do
        cp -L "$bin" "$PACK/bin/"
        for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
            [[ -e $PACK/lib/${lib##*/} ]] || cp -L "$lib" "$PACK/lib/"
        done
    done
    # The loader is run by its own name, which does not end in .so.2 in every ldd line.
    cp -L /lib64/ld-linux-x86-64.so.2 "$PACK/lib/ld.so"
    du -sh "$PACK"
}

if [[ ${1:-} == pack ]]; then
    pack
    exit 0
fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-device: no NVIDIA GPU here (nvidia-smi is missing or lists none)"
    exit 2
fi
[[ -x $PACK/bin/nanny ]] || {
    echo "gpu-device: $PACK has no nanny: run bench/gpu-device.sh pack first" >&2
    exit 1
}

# Each packed program through the packed loader and libraries.
packed() {
    local name=$1
    shift
    "$PACK/lib/ld.so" --library-path "$PACK/lib" "$PACK/bin/$name" "$@"
}
jq() { packed jq "$@"; }
curl() { packed curl "$@"; }

TMP=$(mktemp -d /tmp/nanny-gpu-device.XXXXXX)
DAEMON="" FOREIGN="" FAILED=0
# shellcheck disable=SC2317 # the EXIT trap calls it
cleanup() {
    [[ -n $DAEMON ]] && curl -s --max-time 10 -X POST "$URL/services/fits/stop" >/dev/null 2>&1
    [[ -n $FOREIGN ]] && kill "$FOREIGN" 2>/dev/null && wait "$FOREIGN" 2>/dev/null
    [[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

check() { # check NAME CONDITION-STATUS DETAIL
    if [[ $2 == 0 ]]; then
        echo "PASS $1"
    else
        echo "FAIL $1: $3"
        FAILED=1
    fi
}

gpus_page() { curl -fsS --max-time 5 "$URL/gpus"; }

# Waits up to 20 s for the jq filter $1 to be true of GET /gpus.
wait_gpus() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(gpus_page | jq -r "$1") == true ]] && return 0
        sleep 0.2
    done
    return 1
}

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used --format=csv,noheader,nounits |
    tee "$TMP/smi.csv"

mkdir -p "$TMP/services/fits" "$TMP/state"
PORT=$((20000 + RANDOM % 20000))
(exec "$PACK/lib/ld.so" --library-path "$PACK/lib" "$PACK/bin/nanny" serve \
    --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    --stop-services-on-exit >"$TMP/daemon.log" 2>&1) &
DAEMON=$!
port=$(bench_daemon_port "$TMP/daemon.log" "$DAEMON")
[[ -n $port ]] || die "the daemon did not start"
URL=http://127.0.0.1:$port

echo "== 1. inventory"
gpus_page | jq . | tee "$TMP/gpus.json"
check "source is nvml" "$([[ $(jq -r .source "$TMP/gpus.json") == nvml ]]; echo $?)" \
    "source $(jq -r .source "$TMP/gpus.json")"
n=$(wc -l <"$TMP/smi.csv")
check "as many GPUs as nvidia-smi ($n)" \
    "$([[ $(jq '.gpus | length' "$TMP/gpus.json") == "$n" ]]; echo $?)" \
    "$(jq '.gpus | length' "$TMP/gpus.json") in /gpus"
while IFS=, read -r index name uuid total _; do
    ours=$(jq -r --argjson i "$index" \
        '.gpus[$i] | "\(.index),\(.name),\(.uuid),\(.memory.total / 1048576 | floor)"' \
        "$TMP/gpus.json")
    theirs="$index,${name# },${uuid# },${total# }"
    check "GPU $index matches nvidia-smi" "$([[ $ours == "$theirs" ]]; echo $?)" \
        "/gpus: $ours, nvidia-smi: $theirs"
done <"$TMP/smi.csv"

echo "== 2. foreign usage"
total0=$(jq '.gpus[0].memory.total' "$TMP/gpus.json")
free0=$(jq '.gpus[0].memory.free' "$TMP/gpus.json")
take=$((free0 / 4 / 1048576))
((take > 4096)) && take=4096
(CUDA_DEVICE_ORDER=PCI_BUS_ID exec "$PACK/lib/ld.so" --library-path "$PACK/lib" \
    "$PACK/bin/gpu-foreign" 0 "$take" 120 >"$TMP/foreign.out" 2>&1) &
FOREIGN=$!
for ((i = 0; i < 300; i++)); do
    grep -q holding "$TMP/foreign.out" && break
    kill -0 "$FOREIGN" 2>/dev/null || break
    sleep 0.1
done
cat "$TMP/foreign.out"
grep -q holding "$TMP/foreign.out" || die "the CUDA process could not take GPU memory"
# The loader runs it in its own process: the pid NVML sees is $!.
wait_gpus "[.gpus[0].foreign[].pid] | index($FOREIGN) != null" || true
gpus_page | jq . >"$TMP/gpus-foreign.json"
jq '.gpus[0]' "$TMP/gpus-foreign.json"
held=$(jq --argjson p "$FOREIGN" '[.gpus[0].foreign[] | select(.pid == $p) | .memory][0]' \
    "$TMP/gpus-foreign.json")
check "the CUDA process (pid $FOREIGN) is foreign on GPU 0" \
    "$([[ $held != null ]]; echo $?)" "not listed"

echo "== 3. placement counts it"
# Fits on GPU 0 as it was before, not beside the foreign process.
need=$(((free0 - ${held:-0} / 2) / 1048576))
cat >"$TMP/services/fits/service.yaml" <<EOF
name: fits
description: needs GPU 0's free memory less half of what the foreign process holds
driver: process
command: ["sleep", "600"]
ports: ["$PORT"]
health: false
gpu: {count: 1, memory: ${need}MiB}
devices: [0]
EOF
curl -fsS --max-time 10 -X POST "$URL/rediscover" >/dev/null
code=$(curl -s --max-time 30 -o "$TMP/refused.json" -w '%{http_code}' -X POST \
    "$URL/services/fits/start")
jq -c . "$TMP/refused.json" || cat "$TMP/refused.json"
check "needing ${need} MiB of GPU 0 (total $((total0 / 1048576)) MiB) is refused beside it" \
    "$([[ $code == 409 || $code == 422 ]]; echo $?)" "HTTP $code"
kill "$FOREIGN"
wait "$FOREIGN" 2>/dev/null || true
FOREIGN=""
wait_gpus '.gpus[0].foreign == []' || true
code=$(curl -s --max-time 30 -o "$TMP/placed.json" -w '%{http_code}' -X POST \
    "$URL/services/fits/start")
jq -c '{state, last_error}' "$TMP/placed.json" || cat "$TMP/placed.json"
check "once it ended, the same start is placed" "$([[ $code == 200 ]]; echo $?)" "HTTP $code"
gpus_page | jq -c '.gpus[0] | {services, foreign, memory}'

exit "$FAILED"
