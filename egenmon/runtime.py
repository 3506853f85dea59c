"""What a running egenmon process holds: settings, the pool and background services.

`egenmon.app` builds the services and sets the fields; nothing looks a service up by
name. The fields are typed by what their readers below the wings need (the protocols
here), so the runtime imports no wing: the UI's sessions live in `web/`, the MQTT
consumer and the pipeline in `ingest/`, and each wing narrows to its own class with a
typed accessor (`egenmon.ingest.service.pipeline_of`, `egenmon.web.sessions.sessions_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from egenmon.domain.principals import Principal
from egenmon.settings import Settings


class Service(Protocol):
    """A background part of the process with an explicit start and stop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SessionResolver(Service, Protocol):
    """The UI's sessions as authentication sees them: a cookie to a Principal."""

    async def principal(self, request: Request) -> Principal | None: ...


class BrokerLink(Service, Protocol):
    """The MQTT consumer as readiness sees it."""

    def is_connected(self) -> bool: ...

    def results_connected(self) -> bool: ...

    async def broker_answers(self, timeout: float) -> bool: ...  # noqa: ASYNC109


class TokenKeys(Service, Protocol):
    """The identity provider's signing keys as the Bearer token check sees them
    (`egenmon.identity.provider.Provider`): cached, fetched again for an unknown kid."""

    async def key(self, kid: str | None) -> Any: ...


@dataclass
class Runtime:
    settings: Settings
    pool: AsyncConnectionPool
    pipeline: Service | None = None  # egenmon.ingest.pipeline.Pipeline, in every process
    sessions: SessionResolver | None = None  # egenmon.web.sessions.Sessions, with HTTP
    mqtt: BrokerLink | None = None  # egenmon.ingest.mqtt.MqttConsumer, with MQTT
    scheduler: Service | None = None  # egenmon.alerts.scheduler.Scheduler
    # egenmon.identity.provider.Provider of EGENMON_OIDC_ISSUER (sign-in), when set
    identity: Service | None = None
    # the keys Bearer tokens of EGENMON_AUTH_ISSUER are checked with (a JWKS URI), when set
    token_keys: TokenKeys | None = None
    exports: Service | None = None  # egenmon.export.jobs.ExportService, with HTTP
    rules: Service | None = None  # egenmon.alerts.instant.RuleWorker, with the scheduler
    alert_events: Service | None = None  # egenmon.alerts.stream.AlertEvents, with HTTP
