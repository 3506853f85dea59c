# PostgreSQL 15 + TimescaleDB from Debian alone (scripts/images.sh builds it on the
# debootstrap base): Debian's postgresql-15, and TimescaleDB compiled from Debian's trixie
# source package exactly as scripts/install.sh does on a developer's machine (Apache-2
# part only), through a temporary apt configuration that reuses the image's own Debian
# URI. Used by docker-compose.local.yml in place of timescale/timescaledb.
ARG BASE_IMAGE=egenmon-base:bookworm

FROM ${BASE_IMAGE} AS build
ARG PG_MAJOR=15
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       postgresql-server-dev-${PG_MAJOR} cmake gcc make libssl-dev libkrb5-dev xz-utils \
       >/dev/null
RUN set -eu; \
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list); \
    work=/tmp/timescaledb; \
    mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/apt/sources.list.d" "$work/src"; \
    echo "deb-src $uri trixie main" >"$work/apt/sources.list"; \
    set -- -o "Dir::Etc::SourceList=$work/apt/sources.list" \
       -o "Dir::Etc::SourceParts=$work/apt/sources.list.d" \
       -o "Dir::State::Lists=$work/apt/lists" \
       -o "Dir::Cache::Archives=$work/apt/archives" \
       -o "APT::Sandbox::User=root"; \
    apt-get "$@" update -qq >/dev/null; \
    cd "$work" && apt-get "$@" source --download-only timescaledb >/dev/null; \
    tar -xf "$(ls "$work"/timescaledb_*.orig.tar.* | head -n1)" -C "$work/src" --strip-components=1; \
    cd "$work/src"; \
    PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH" ./bootstrap -DAPACHE_ONLY=ON \
      -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DPG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" >/dev/null; \
    cd build && make -j"$(nproc)" >/dev/null && make install DESTDIR=/out >/dev/null

FROM ${BASE_IMAGE}
ARG PG_MAJOR=15
# The postgres user with the official images' id (999), before the package makes one.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
       --shell /bin/bash postgres \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-common >/dev/null \
    && sed -ri 's/#?(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-${PG_MAJOR} >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY --from=build /out/ /
COPY deploy/db-entrypoint.sh /usr/local/bin/egenmon-db-entrypoint
RUN chmod 0755 /usr/local/bin/egenmon-db-entrypoint

ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown: roll back open transactions, checkpoint, exit (as the official images).
STOPSIGNAL SIGINT
ENTRYPOINT ["egenmon-db-entrypoint"]
CMD ["postgres"]
