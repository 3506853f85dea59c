# The egenmon image: the Python package and its `egenmon` command, nothing else.
# The broker and the database come from their own images; see docker-compose.yml.
#
# BASE_IMAGE: python:3.11-slim by default (for a machine with an image registry);
# scripts/images.sh builds it on egenmon-base:bookworm (Debian made with debootstrap),
# where Debian's own Python 3.11 is installed first. Either way egenmon lives in a venv
# at /opt/egenmon, installed with the project's pinned versions (constraints.txt) where
# the repository has that file.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/egenmon/bin:$PATH

# Debian's base has no Python: Debian's 3.11 (python:3.11-slim brings its own).
RUN if ! command -v python3 >/dev/null; then \
        apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           python3 python3-venv >/dev/null \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi \
    && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    && python3 -m venv /opt/egenmon

# A fixed numeric id, so orchestrators can check "not root" without reading /etc/passwd.
RUN groupadd --system --gid 10001 egenmon \
    && useradd --system --uid 10001 --gid egenmon --home-dir /var/lib/egenmon \
       --shell /usr/sbin/nologin egenmon \
    && install -d -o egenmon -g egenmon -m 0755 /var/lib/egenmon /var/lib/egenmon/broker

# Only what the package build needs (README.md is the package's long description), at
# the tested versions of constraints.txt.
WORKDIR /build
COPY pyproject.toml README.md constraints.txt ./
COPY egenmon ./egenmon
# BUILD_CA_CERTS: PEM certificates to trust for this step alone, for a build behind a
# TLS-inspecting proxy (scripts/images.sh passes the build machine's local CAs); they
# stay out of the image's trust store, so egenmon's own connections never trust them.
ARG BUILD_CA_CERTS=""
RUN set -- -c constraints.txt \
    && if [ -n "$BUILD_CA_CERTS" ]; then \
        { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; \
          printf '%s\n' "$BUILD_CA_CERTS"; } >/tmp/build-ca.pem \
        && export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && pip install "$@" . \
    && rm -f /tmp/build-ca.pem \
    && python3 -c 'import uvloop, httptools' \
    && rm -rf /build

# The docker-compose entrypoint: carries the platform's MQTT URL from the broker-config
# step into EGENMON_MQTT_URL (deploy/compose-init.sh explains).
COPY deploy/compose-init.sh /usr/local/bin/egenmon-compose-init
RUN chmod 0755 /usr/local/bin/egenmon-compose-init

WORKDIR /var/lib/egenmon
USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK here: the same image runs one-shot steps (migrate, broker config) and
# consumer-only processes (`serve --no-http`); docker-compose.yml checks /readyz where
# the HTTP API runs. `serve` runs every role (HTTP, MQTT, scheduler) on uvloop.
ENTRYPOINT ["egenmon"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
