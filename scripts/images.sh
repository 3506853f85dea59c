#!/usr/bin/env bash
# Builds egenmon's production images from Debian alone, with no image registry:
#
#   egenmon-base:bookworm   Debian bookworm made with debootstrap from this machine's
#                           configured Debian URI (read from /etc/apt, never hard-coded),
#                           then `docker import`
#   egenmon:local           the Dockerfile on that base (Debian's Python 3.11, a venv,
#                           the pinned versions of constraints.txt where it exists,
#                           an unprivileged user)
#   egenmon-db:local        PostgreSQL 15 + TimescaleDB built from Debian's trixie source
#                           package, as scripts/install.sh builds it (deploy/db.Dockerfile)
#   egenmon-broker:local    Mosquitto from Debian's package (deploy/broker.Dockerfile)
#
# docker-compose.local.yml makes docker-compose.yml use these instead of the official
# images. Needs root (debootstrap) and a running Docker daemon (DOCKER_HOST is honoured).
# Builds run under `nice -n 10` and on the host's network (the machine reaches Debian's
# archive and PyPI; a container on a bridge may not).
#   scripts/images.sh            build what is missing (the base is reused when present)
#   REBUILD_BASE=1 scripts/images.sh   make the base image again
set -euo pipefail

cd "$(dirname "$0")/.."
BASE_IMAGE=${BASE_IMAGE:-egenmon-base:bookworm}
SUITE=bookworm
log() { printf 'images: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, docker)"; exit 1; }
for tool in docker debootstrap; do
  command -v "$tool" >/dev/null || { log "missing $tool: apt-get install docker.io debootstrap"; exit 1; }
done

# debian_uri and security_uri: the archives this machine is configured with.
# shellcheck source=scripts/apt-sources.sh
. scripts/apt-sources.sh

build_base() {
  local uri sec root
  uri=$(debian_uri)
  sec=$(security_uri)
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  log "debootstrap $SUITE (minbase) from the configured Debian URI"
  nice -n 10 debootstrap --variant=minbase --include=ca-certificates,passwd "$SUITE" "$root" "$uri" \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  {
    echo "deb $uri $SUITE main"
    echo "deb $uri $SUITE-updates main"
    [ -z "$sec" ] || echo "deb $sec $SUITE-security main"
  } >"$root/etc/apt/sources.list"
  # As Debian's own container images: no service starts while a package installs.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # Small images: no recommends, no documentation, no apt caches.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/90egenmon-norecommends"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/90egenmon-nodoc"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  log "docker import -> $BASE_IMAGE"
  tar -C "$root" --numeric-owner -c . |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
      --message "debootstrap $SUITE minbase" - "$BASE_IMAGE" >/dev/null
}

# The machine's local certificate authorities (Debian keeps them in
# /usr/local/share/ca-certificates): a build behind a TLS-inspecting proxy needs them to
# reach PyPI. The Dockerfile trusts them for its pip step only.
BUILD_CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)

build() {
  local tag=$1 file=$2
  log "build $tag ($file)"
  nice -n 10 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "BUILD_CA_CERTS=$BUILD_CA_CERTS" \
    -f "$file" -t "$tag" . >"${TMPDIR:-/tmp}/egenmon-build-${tag%%:*}.log" 2>&1 || {
    tail -n 40 "${TMPDIR:-/tmp}/egenmon-build-${tag%%:*}.log" >&2
    log "building $tag failed"
    exit 1
  }
}

if [ "${REBUILD_BASE:-0}" = 1 ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  build_base
fi
build egenmon-db:local deploy/db.Dockerfile
build egenmon-broker:local deploy/broker.Dockerfile
build egenmon:local Dockerfile
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' |
  grep -E '^egenmon(-base|-db|-broker)?:(local|bookworm) ' >&2 || true
