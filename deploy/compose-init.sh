#!/bin/sh
# Entrypoint of the egenmon image under docker-compose (see docker-compose.yml).
#
#   egenmon-compose-init broker config ARGS...
#       The one-shot broker-config service, as root: runs `egenmon broker config ARGS
#       --json`, keeps the platform's MQTT URL (it holds the platform's broker password)
#       in a file only the egenmon user can read, and hands the broker's folder to the
#       mosquitto user of the eclipse-mosquitto image (uid 1883), whose dynamic-security
#       plugin rewrites its JSON file when devices are added. The password is never printed.
#
#   egenmon-compose-init ARGS...
#       Any other command: where EGENMON_MQTT_URL is not already set, exports it from that
#       file, then runs `egenmon ARGS`. egenmon itself is configured only through EGENMON_
#       variables; this script only carries one of them from the file into the environment.
#
# MQTT_URL_FILE moves the file (for the test suite); docker-compose.yml does not set it.
set -eu

url_file=${MQTT_URL_FILE:-/var/lib/egenmon/broker/mqtt_url}
broker_uid=1883
say() { echo "egenmon-compose-init: $*" >&2; }

if [ "${1:-}" = broker ] && [ "${2:-}" = config ]; then
    if [ "$(id -u)" != 0 ]; then
        say "broker config runs as root here (it hands the files to uid $broker_uid)"
        exit 1
    fi
    result=$(egenmon "$@" --json)
    # Two lines: the folder written, then the URL (token_urlsafe passwords hold no newline).
    parsed=$(printf '%s' "$result" | python3 -c '
import json, os, sys
r = json.load(sys.stdin)
print(os.path.dirname(r["conf"]))
print(r["mqtt_url"])')
    out=$(printf '%s\n' "$parsed" | sed -n 1p)
    url=$(printf '%s\n' "$parsed" | sed -n 2p)
    mkdir -p "$(dirname "$url_file")"
    umask 077
    printf '%s\n' "$url" >"$url_file.tmp"
    chown egenmon:egenmon "$url_file.tmp"
    chmod 0400 "$url_file.tmp"
    mv -f "$url_file.tmp" "$url_file"
    chown -R "$broker_uid:$broker_uid" "$out"
    say "wrote $out/mosquitto.conf; the platform's MQTT URL is kept in $url_file"
    exit 0
fi

if [ -z "${EGENMON_MQTT_URL:-}" ]; then
    unset EGENMON_MQTT_URL
    if [ ! -r "$url_file" ]; then
        say "EGENMON_MQTT_URL is not set and $url_file is missing or unreadable:"
        say "run the broker-config service first (docker compose up does), or set EGENMON_MQTT_URL"
        exit 1
    fi
    EGENMON_MQTT_URL=$(cat "$url_file")
    export EGENMON_MQTT_URL
fi
exec egenmon "$@"
