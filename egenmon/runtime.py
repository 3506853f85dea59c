"""What a running egenmon process holds: settings, the pool and background services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from egenmon.settings import Settings


class Service(Protocol):
    """A background part of the process with an explicit start and stop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    pool: AsyncConnectionPool
    services: dict[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> Any:
        return self.services.get(name)
