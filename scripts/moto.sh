#!/usr/bin/env bash
# A local AWS emulator (moto in server mode) for the S3 + SQS store tests.
#
#   scripts/moto.sh start   installs moto[server] into .tools/venv-moto if missing, starts moto_server on
#                           127.0.0.1 (port $MOTO_PORT, or a free one), waits until it answers, and prints
#                           `export SECMON_MOTO=http://127.0.0.1:PORT` for the caller to eval
#   scripts/moto.sh stop    stops the server started by `start` (by its recorded PID)
#
# State lives in .tools/moto/ (pid, port, log). The tests read SECMON_MOTO.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv-moto"
state="$root/.tools/moto"
# Pinned so that a moto release that changes conditional-write behaviour is an explicit upgrade.
moto_version="${MOTO_VERSION:-5.2.5}"

log() { echo "moto.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

install() {
    if [[ -x "$venv/bin/moto_server" ]] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
        return
    fi
    log "installing moto[server]==$moto_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version"
}

start() {
    mkdir -p "$state"
    if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        log "already running (pid $(cat "$state/pid"))"
        echo "export SECMON_MOTO=http://127.0.0.1:$(cat "$state/port")"
        return
    fi
    install
    local port="${MOTO_PORT:-$(free_port)}"
    # The server is started directly (not through a wrapper) so the recorded PID is the server's own.
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/log" 2>&1 &
    echo $! >"$state/pid"
    echo "$port" >"$state/port"
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
            log "listening on 127.0.0.1:$port (pid $(cat "$state/pid"))"
            echo "export SECMON_MOTO=http://127.0.0.1:$port"
            return
        fi
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            log "moto_server exited; its log:"
            cat "$state/log" >&2
            exit 1
        fi
        sleep 0.2
    done
    log "moto_server did not answer within 20 s; its log:"
    cat "$state/log" >&2
    stop
    exit 1
}

stop() {
    if [[ -f "$state/pid" ]]; then
        local pid
        pid="$(cat "$state/pid")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$state/pid" "$state/port"
        log "stopped"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
