#!/usr/bin/env bash
# Installs what `make run` and `make test` need, idempotently; fast when all is present.
#   system: PostgreSQL 15 server, TimescaleDB (built from Debian's source package),
#           Mosquitto, Chromium for the browser tests
#   python: .venv with egenmon installed editable, with its test extras, at the tested
#           versions of constraints.txt
# As root it installs with apt; as another user it uses sudo where it can, and otherwise
# stops naming what is missing and the command that installs it.
set -euo pipefail

cd "$(dirname "$0")/.."
PG_MAJOR=${PG_MAJOR:-15}
PG_LIBDIR=/usr/lib/postgresql/$PG_MAJOR/lib
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
APT_PACKAGES=(postgresql-$PG_MAJOR mosquitto mosquitto-clients)
BUILD_PACKAGES=(postgresql-server-dev-$PG_MAJOR cmake gcc make libssl-dev libkrb5-dev)
BROWSER_PACKAGES=(chromium)

log() { printf 'install: %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    SUDO=(none)
  fi
fi

as_root() {
  if [ "${SUDO[0]:-}" = none ]; then
    log "needs root for: $*"
    log "run as root, or install first: sudo $*"
    exit 1
  fi
  "${SUDO[@]}" "$@"
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

APT_UPDATED=0
apt_install() {
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "${SUDO[0]:-}" = none ]; then
    log "missing Debian packages: $(echo $missing)"
    log "install them with: sudo apt-get install -y $(echo $missing)"
    exit 1
  fi
  log "apt-get install $(echo $missing)"
  if [ $APT_UPDATED -eq 0 ]; then
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# debian_uri: the Debian archive URI this machine is configured with.
# shellcheck source=scripts/apt-sources.sh
. scripts/apt-sources.sh

build_timescaledb() {
  apt_install "${BUILD_PACKAGES[@]}"
  local work uri orig
  work=$(mktemp -d)
  uri=$(debian_uri)
  log "building TimescaleDB from Debian's source package (trixie)"
  mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/apt/sources.list.d"
  echo "deb-src $uri trixie main" >"$work/apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache::Archives=$work/apt/archives"
    -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -qq >/dev/null
  (cd "$work" && apt-get "${opts[@]}" source --download-only timescaledb >/dev/null)
  orig=$(ls "$work"/timescaledb_*.orig.tar.* | head -n1)
  mkdir "$work/src"
  tar -xf "$orig" -C "$work/src" --strip-components=1
  (
    cd "$work/src"
    PATH="$PG_BINDIR:$PATH" ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="$PG_BINDIR/pg_config" >/dev/null
    cd build
    make -j"$(nproc)" >/dev/null 2>"$work/build.err" || { cat "$work/build.err" >&2; exit 1; }
    as_root make install >/dev/null 2>&1
  )
  rm -rf "$work"
  log "TimescaleDB installed into $PG_LIBDIR"
}

install_system() {
  apt_install "${APT_PACKAGES[@]}"
  if ! ls "$PG_LIBDIR"/timescaledb*.so >/dev/null 2>&1; then
    if [ "${SUDO[0]:-}" = none ]; then
      log "TimescaleDB is missing from $PG_LIBDIR; run 'sudo scripts/install.sh' once"
      exit 1
    fi
    build_timescaledb
  fi
  if [ "${INSTALL_BROWSER:-1}" = 1 ]; then
    apt_install "${BROWSER_PACKAGES[@]}"
  fi
}

install_python() {
  local stamp=.venv/.egenmon-installed sum
  # The stamp covers the constraints too: a new tested version reinstalls.
  sum=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    return 0
  fi
  local py=${PYTHON:-python3.11}
  command -v "$py" >/dev/null || py=python3
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { log "needs Python 3.11 or newer ($py is older)"; exit 1; }
  if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "creating .venv and installing egenmon (editable, with test extras)"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
  echo "$sum" >"$stamp"
}

# The local OpenID provider of the tests and `egenmon dev` (tools/oidc: npm oidc-provider
# at the exact versions of its package.json; no lock file is kept in the repository).
install_oidc_provider() {
  local dir=tools/oidc stamp=tools/oidc/node_modules/.egenmon-installed sum
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  sum=$(sha256sum "$dir/package.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    return 0
  fi
  log "installing the local OpenID provider (npm, $dir)"
  (cd "$dir" && npm install --no-package-lock --ignore-scripts --no-audit --no-fund \
    --omit=dev --loglevel=error >/dev/null)
  echo "$sum" >"$stamp"
}

install_system
install_python
if [ "${INSTALL_OIDC:-1}" = 1 ]; then
  install_oidc_provider
fi
