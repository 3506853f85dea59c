# Sourced by scripts/install.sh and scripts/images.sh (callers define log()): the Debian
# archive URIs this machine is configured with, never hard-coded, since mirrors differ.

# apt_uri 0: the main archive's URI; apt_uri 1: the security archive's ('' when none).
apt_uri() {
  local security=$1 uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk -v sec="$security" '/^URIs:/ {for (i = 2; i <= NF; i++)
      if (($i ~ /security/) == sec) {print $i; exit}}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk -v sec="$security" '$1 == "deb" && (($0 ~ /security/) == sec) {
      for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "$uri"
}

debian_uri() {
  local uri
  uri=$(apt_uri 0)
  [ -n "$uri" ] || { log "found no Debian source URI in /etc/apt"; exit 1; }
  echo "$uri"
}

security_uri() {
  apt_uri 1
}
