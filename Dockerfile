# The egenmon image: the Python package and its `egenmon` command, nothing else.
# The broker (eclipse-mosquitto, with its dynamic-security plugin) and the database
# (timescale/timescaledb) come from their own official images; see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

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
RUN pip install . -c constraints.txt && rm -rf /build

# The docker-compose entrypoint: carries the platform's MQTT URL from the broker-config
# step into EGENMON_MQTT_URL (deploy/compose-init.sh explains).
COPY deploy/compose-init.sh /usr/local/bin/egenmon-compose-init
RUN chmod 0755 /usr/local/bin/egenmon-compose-init

WORKDIR /var/lib/egenmon
USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK here: the same image runs one-shot steps (migrate, broker config) and
# consumer-only processes (`serve --no-http`); docker-compose.yml checks /readyz where
# the HTTP API runs.
ENTRYPOINT ["egenmon"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
