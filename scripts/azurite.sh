#!/usr/bin/env bash
# Starts or stops Azurite (the Azure Storage emulator) on loopback for the Azure store tests.
#
#   scripts/azurite.sh start   install azurite 3.x into .tools/azurite if missing, start it, wait for its ports
#   scripts/azurite.sh stop    stop the Azurite this script started
#
# Node is started directly, not through npx: killing an npx PID leaves the server running.
# Blob answers on 127.0.0.1:10000, Queue on :10001, Table on :10002 (account devstoreaccount1).
# After `start`, `export SECMON_AZURITE=1` tells tests/azure_store.rs that Azurite is up.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools/azurite"
entry="$tools/node_modules/azurite/dist/src/azurite.js"
pidfile="$tools/azurite.pid"
logfile="$tools/azurite.log"

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "azurite: already running (pid $(cat "$pidfile"))"
    return 0
  fi
  for port in 10000 10001 10002; do
    if port_open "$port"; then
      echo "azurite: port $port is taken by another process; stop it first" >&2
      exit 1
    fi
  done
  if [[ ! -f "$entry" ]]; then
    command -v npm >/dev/null || { echo "azurite: npm is required (apt-get install nodejs npm)" >&2; exit 1; }
    echo "azurite: installing the npm package azurite 3.x into $tools"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error 'azurite@3' >/dev/null
  fi
  mkdir -p "$tools"
  node "$entry" --silent --inMemoryPersistence --skipApiVersionCheck --disableTelemetry \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 200); do
    if port_open 10000 && port_open 10001; then
      echo "azurite: ready (pid $(cat "$pidfile")): blob http://127.0.0.1:10000, queue http://127.0.0.1:10001"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "azurite: exited during start-up; its log:" >&2
      cat "$logfile" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "azurite: ports did not open within 20 s; its log:" >&2
  cat "$logfile" >&2
  stop
  exit 1
}

stop() {
  if [[ ! -f "$pidfile" ]]; then
    echo "azurite: not started by this script"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
  echo "azurite: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
