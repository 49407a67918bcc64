# shellcheck shell=bash
# Helpers shared by the bench scripts. Source it; it defines functions, and lets their
# Python helpers import bench/benchlib.py (without leaving bytecode behind).

export PYTHONPATH="${BASH_SOURCE[0]%/*}${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1

# bench_daemon_port LOG PID: prints the port the daemon (PID) logged in LOG as
# "listening on http://127.0.0.1:PORT" (or https://), waiting up to 10 s; prints nothing
# when it did not (it exited or took too long).
bench_daemon_port() {
    local log=$1 pid=$2 port="" i
    for ((i = 0; i < 100; i++)); do
        port=$(sed -n 's|.*listening on https\{0,1\}://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" |
            head -n 1)
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    printf '%s' "$port"
}

# bench_wait_health URL PID: waits up to 10 s for GET URL/health to answer 2xx while the
# daemon (PID) lives; returns non-zero when it never did.
bench_wait_health() {
    local url=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        curl -fsS --max-time 1 -o /dev/null "$url/health" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    curl -fsS --max-time 2 -o /dev/null "$url/health"
}
