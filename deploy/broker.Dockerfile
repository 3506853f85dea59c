# Mosquitto 2 from Debian's package (scripts/images.sh builds it on the debootstrap
# base), laid out as docker-compose.yml expects of eclipse-mosquitto:2: the broker user
# has uid 1883 (deploy/compose-init.sh hands it the config volume), the dynamic-security
# plugin is at /usr/lib/mosquitto_dynamic_security.so, and the configuration is the one
# `egenmon broker config` writes into /mosquitto/config. Used by docker-compose.local.yml.
ARG BASE_IMAGE=egenmon-base:bookworm
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid mosquitto --home-dir /var/lib/mosquitto \
       --shell /usr/sbin/nologin mosquitto \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && plugin=$(dpkg -L mosquitto | grep '/mosquitto_dynamic_security\.so$' | head -n1) \
    && test -n "$plugin" \
    && { [ "$plugin" = /usr/lib/mosquitto_dynamic_security.so ] \
         || ln -s "$plugin" /usr/lib/mosquitto_dynamic_security.so; } \
    && install -d -o mosquitto -g mosquitto /mosquitto/config
EXPOSE 1883
# Started as root, mosquitto drops to the mosquitto user once it has read its files.
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
