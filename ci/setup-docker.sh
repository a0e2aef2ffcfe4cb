#!/usr/bin/env bash
# Docker engine for CI on a bare Debian host.
#
#   ci/setup-docker.sh start   install docker.io + debootstrap from Debian when absent, start dockerd
#                              in the background if no daemon answers, and wait until it does
#   ci/setup-docker.sh stop    stop the daemon, but only if `start` started it (see owners below)
#
# State (pid, owner, log) lives in $ROCM_FP8_DOCKER_STATE (default /tmp/rocm-fp8-dockerd). The pid file
# exists only when this script started the daemon, so `stop` never touches an engine someone else
# (systemd, another tool) started.  Owners: a caller that sets ROCM_FP8_DOCKER_OWNER (run-tests.sh sets
# a name unique to its run) has its name recorded when its `start` starts dockerd, and its `stop` stops
# only a daemon recorded under that same name; a daemon it merely found running (say, the one
# build-images.sh left up) is left alone.  A plain `stop` (no owner set, as typed by hand) stops any
# daemon this script started.
set -euo pipefail

STATE="${ROCM_FP8_DOCKER_STATE:-/tmp/rocm-fp8-dockerd}"
PIDFILE="$STATE/dockerd.pid"
OWNERFILE="$STATE/owner"
OWNER="${ROCM_FP8_DOCKER_OWNER:-}"
LOG="$STATE/dockerd.log"
WAIT_S="${ROCM_FP8_DOCKER_WAIT_S:-60}"

say() { echo "[setup-docker] $*"; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root to $1 (run with sudo)"; exit 1
    fi
}

daemon_up() { docker info >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        need_root "install ${missing[*]}"
        say "installing ${missing[*]} from Debian packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates
    fi
}

start() {
    install_packages
    if daemon_up; then
        if [ -n "$OWNER" ]; then
            say "a Docker daemon is already running; using it (this caller did not start it, so its stop leaves it running)"
        else
            say "a Docker daemon is already running; using it"
        fi
        return 0
    fi
    need_root "start dockerd"
    mkdir -p "$STATE"
    say "starting dockerd (log: $LOG)"
    # setsid: the daemon outlives this shell and gets its own process group.
    setsid dockerd >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    echo "${OWNER:-manual}" >"$OWNERFILE"
    for _ in $(seq "$WAIT_S"); do
        if daemon_up; then
            say "dockerd is up (pid $(cat "$PIDFILE"))"
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            say "dockerd exited; last lines of $LOG:"; tail -n 20 "$LOG" || true
            rm -f "$PIDFILE" "$OWNERFILE"; exit 1
        fi
        sleep 1
    done
    say "dockerd did not answer within ${WAIT_S}s; last lines of $LOG:"; tail -n 20 "$LOG" || true
    exit 1
}

stop() {
    if [ ! -f "$PIDFILE" ]; then
        say "this script did not start a daemon; nothing to stop"
        return 0
    fi
    local pid started_by
    pid="$(cat "$PIDFILE")"
    started_by="$(cat "$OWNERFILE" 2>/dev/null || echo unknown)"
    if [ -n "$OWNER" ] && [ "$OWNER" != "$started_by" ]; then
        say "dockerd (pid $pid) was started by '$started_by', not by this caller ('$OWNER'); leaving it running"
        return 0
    fi
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
            kill -KILL "$pid" || true
        fi
    fi
    rm -f "$PIDFILE" "$OWNERFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
