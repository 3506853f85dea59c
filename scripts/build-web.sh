#!/usr/bin/env bash
# Installs the clinician UI's front-end libraries from the npm registry (exact versions and
# integrity hashes from egenmon/web/package-lock.json) and copies their built files into
# egenmon/web/static/vendor/, from where egenmon serves them itself (never from a CDN).
# Idempotent: does nothing when the vendored files match the lockfile. `--force` rebuilds.
set -euo pipefail

cd "$(dirname "$0")/.."
WEB=egenmon/web
VENDOR=$WEB/static/vendor
STAMP=$VENDOR/.lock-sha256
FILES=(chart.umd.min.js)

log() { printf 'build-web: %s\n' "$*" >&2; }

sum=$(sha256sum "$WEB/package-lock.json" | cut -d' ' -f1)
complete=1
for f in "${FILES[@]}"; do [ -s "$VENDOR/$f" ] || complete=0; done
if [ "${1:-}" != --force ] && [ "$complete" = 1 ] && [ -f "$STAMP" ] \
    && [ "$(cat "$STAMP")" = "$sum" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  log "npm is missing: install it (apt-get install -y npm) or keep the vendored files in $VENDOR"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$WEB/package.json" "$WEB/package-lock.json" "$work/"
log "installing chart.js with npm ci"
# --ignore-scripts: nothing from the registry runs at install time.
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --omit=dev --loglevel=error)

mkdir -p "$VENDOR"
cp "$work/node_modules/chart.js/dist/chart.umd.min.js" "$VENDOR/chart.umd.min.js"
cp "$work/node_modules/chart.js/LICENSE.md" "$VENDOR/chart.js.LICENSE.md"
printf '%s\n' "$sum" > "$STAMP"
log "vendored chart.js $(sed -n 's/^ \* Chart.js v//p' "$VENDOR/chart.umd.min.js" | head -1) into $VENDOR"
