# shellcheck shell=bash
# A Docker engine for test.sh and bench/compose.sh: use the one that answers, or start
# dockerd and stop it (and its containerd) again at the end. Source it; it defines
# variables and functions only.
#
# dockerd_start LOG [ARGS...]  starts `dockerd ARGS` with its output in LOG; 0 once
#                              `docker info` answers, else its log's tail is shown, it
#                              is stopped, and 1.
# dockerd_stop                 stops the dockerd dockerd_start started, if any.

dockerd_pid=""      # a dockerd started here
dockerd_children=() # its children, for making sure its containerd ended
DOCKERD_START_TIMEOUT=${DOCKERD_START_TIMEOUT:-60} # seconds for `docker info` to answer
DOCKERD_STOP_TIMEOUT=30                            # it stops its containers first

# True while process $1 exists and is not a zombie (kill -0 is true for a zombie).
proc_alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && ${st:0:1} != Z && ${st:0:1} != X ]]
}

# Wait up to $2 seconds for process $1 to end; true when it did.
proc_wait_gone() {
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        proc_alive "$pid" || return 0
        sleep 0.1
    done
    ! proc_alive "$pid"
}

# True when a Docker engine answers `docker info` (bounded: a hung socket).
docker_answers() {
    timeout -k 5 20 docker info >/dev/null 2>&1
}

# Stop the dockerd started here (SIGTERM, SIGKILL after the timeout) and make sure the
# containerd it ran ended too: dockerd stops it on a clean exit, but not when killed.
dockerd_stop() {
    local pid comm
    [[ -n $dockerd_pid ]] || return 0
    # Its children now, in case it was stopped before they were recorded.
    mapfile -t -O "${#dockerd_children[@]}" dockerd_children < <(pgrep -P "$dockerd_pid" || true)
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    if ! proc_wait_gone "$dockerd_pid" "$DOCKERD_STOP_TIMEOUT"; then
        echo "dockerd (pid $dockerd_pid) did not stop within ${DOCKERD_STOP_TIMEOUT}s; killing it" >&2
        kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
    wait "$dockerd_pid" 2>/dev/null || true
    for pid in "${dockerd_children[@]}"; do
        # Only a recorded child, and only while that pid still is a containerd.
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        [[ $comm == containerd* ]] || continue
        if ! proc_wait_gone "$pid" 10; then
            kill -TERM "$pid" 2>/dev/null || true
            proc_wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    dockerd_pid=""
    dockerd_children=()
}

dockerd_start() {
    local log=$1 deadline=$((SECONDS + DOCKERD_START_TIMEOUT))
    shift
    dockerd "$@" >"$log" 2>&1 </dev/null &
    dockerd_pid=$!
    while ((SECONDS < deadline)) && proc_alive "$dockerd_pid"; do
        if docker_answers; then
            mapfile -t dockerd_children < <(pgrep -P "$dockerd_pid" || true)
            return 0
        fi
        sleep 0.5
    done
    if proc_alive "$dockerd_pid"; then
        echo "dockerd did not answer \`docker info\` within ${DOCKERD_START_TIMEOUT}s; its log (tail):" >&2
    else
        echo "dockerd exited; its log (tail):" >&2
    fi
    tail -n 40 "$log" | sed 's/^/    /' >&2
    mapfile -t dockerd_children < <(pgrep -P "$dockerd_pid" || true)
    dockerd_stop
    return 1
}
