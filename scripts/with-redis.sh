#!/usr/bin/env bash
# Run a command beside a real Redis server of its own, for the broker tests
# (`make test` runs pytest through it):
#
#     scripts/with-redis.sh .venv/bin/python -m pytest tests
#
# When redis-server is installed, starts it on a free loopback port (no
# persistence), waits until it answers PING (at most 10 s),
# exports LABKIT_TEST_REDIS_URL=redis://127.0.0.1:<port>/0 for the command,
# and stops that server, by the PID it started, when the command ends: passed,
# failed or interrupted. The exit status is the command's. Without
# redis-server the command runs alone and the real-server test cases say they
# were skipped and why (in CI, where .ci/run installs it, they would fail).
set -euo pipefail

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "redis-server is not installed: the real-broker tests are skipped" \
         "(apt-get install redis-server to run them)" >&2
    exec "$@"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$log" 2>&1 &
pid=$!

stop_redis() {
    local status=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    exit "$status"
}
trap stop_redis EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

answers() { [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; }
for _ in $(seq 100); do
    answers && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if ! answers; then
    echo "redis-server did not answer on 127.0.0.1:$port within 10 s; its log:" >&2
    cat "$log" >&2
    exit 1
fi

export LABKIT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
echo "redis-server $(redis-server --version | cut -d' ' -f3) on 127.0.0.1:$port (pid $pid)"
"$@"
