#!/usr/bin/env bash
# `make compose-check`: the production shape, run on this machine from Debian alone.
#
#   1. installs what it needs: Debian's docker.io (20.10), docker-compose (1.29) and
#      debootstrap; the project's .venv (scripts/install.sh, for the driving client)
#   2. uses the Docker daemon that answers (DOCKER_HOST or the default socket), or else
#      starts dockerd with its own data root and socket, and stops it at the end
#   3. builds the images (scripts/images.sh: debootstrap base, egenmon, PostgreSQL 15 +
#      TimescaleDB, Mosquitto)
#   4. drives the stack from the host (scripts/compose_check.py): up, /readyz, admin
#      commands through `compose run`, readings over HTTP and MQTT with the MQTT result,
#      a FHIR search, an alert from the scheduler, down + up with the data kept, a
#      backup and restore of the db and mosquitto volumes, down -v
#
# Why docker-compose 1.29 from Debian: it is a signed Debian package like every other
# piece here (no version drift from PyPI), it talks to the Docker daemon, and it supports
# what docker-compose.yml uses (depends_on conditions service_healthy and
# service_completed_successfully, healthchecks with start_period). podman-compose drives
# podman, not Docker, and does not wait on those conditions.
#
# Data root of a daemon it starts: EGENMON_DOCKER_ROOT (default /var/lib/egenmon-docker);
# it is kept, so the next run reuses the base image and the build cache.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { printf 'compose-check: %s\n' "$*" >&2; }
started=$(date +%s)

[ "$(id -u)" -eq 0 ] || { log "needs root (dockerd, debootstrap): run it as root"; exit 1; }

missing=()
for p in docker.io docker-compose debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
INSTALL_BROWSER=0 bash scripts/install.sh
# Debian's client and daemon (20.10) go together; another docker earlier in PATH may not.
export PATH=/usr/bin:$PATH

DOCKERD_PID=""
RUN_DIR=/run/egenmon-docker
stop_dockerd() {
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    log "stopping the dockerd it started (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID"
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID"
    # dockerd leaves its default network namespace mounted.
    if grep -q " $RUN_DIR/exec/netns/default " /proc/mounts; then
      umount "$RUN_DIR/exec/netns/default" || true
    fi
  fi
  return 0
}
trap stop_dockerd EXIT
trap 'exit 130' INT TERM

if ! docker info >/dev/null 2>&1; then
  if [ -S "$RUN_DIR/docker.sock" ] && DOCKER_HOST="unix://$RUN_DIR/docker.sock" docker info >/dev/null 2>&1; then
    log "using the dockerd already running on $RUN_DIR/docker.sock"
  else
    root=${EGENMON_DOCKER_ROOT:-/var/lib/egenmon-docker}
    mkdir -p "$root" "$RUN_DIR"
    log "starting dockerd (data root $root, socket $RUN_DIR/docker.sock)"
    dockerd --data-root "$root" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
      -H "unix://$RUN_DIR/docker.sock" --storage-driver overlay2 >"$RUN_DIR/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
  fi
  export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -n 20 "$RUN_DIR/dockerd.log" >&2; log "dockerd did not start"; exit 1; }
fi

build_started=$(date +%s)
bash scripts/images.sh
log "images built in $(($(date +%s) - build_started)) s ($(($(date +%s) - started)) s since the start)"

.venv/bin/python scripts/compose_check.py
log "passed in $(($(date +%s) - started)) s"
