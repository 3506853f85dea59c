"""An admin maps a PHD's IEEE 11073 system id to a device registered in egenmon, so that a
gateway's Bundle naming that system id stores its measurements under that device."""

from __future__ import annotations

from typing import Any

import psycopg

from egenmon.fhir.phd import EUI64_SYSTEM, normalise_eui64
from egenmon.store import device_identifiers
from egenmon.store.db import Conflict, NotFound

__all__ = ["PhdRegistryError", "map_system_id"]


class PhdRegistryError(Exception):
    """The mapping cannot be made; the text says why."""


def map_system_id(conn: psycopg.Connection[Any], device_id: str, system_id: str) -> dict[str, str]:
    """Record that the EUI-64 `system_id` is the device `device_id`."""
    value = normalise_eui64(system_id)
    if value is None:
        raise PhdRegistryError(
            f"--system-id: {system_id[:40]!r} is not an EUI-64 (8 bytes in hex, such as "
            "00-1C-05-04-00-00-78-25)"
        )
    try:
        device_identifiers.map_identifier(conn, EUI64_SYSTEM, value, device_id)
    except (NotFound, Conflict) as e:
        raise PhdRegistryError(str(e)) from None
    return {"device": device_id, "system": EUI64_SYSTEM, "system_id": value}
