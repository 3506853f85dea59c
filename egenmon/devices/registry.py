"""Registering and revoking devices: database and broker together."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from dataclasses import dataclass

import psycopg

from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.devices.dynsec import BrokerUnavailable, DynsecClient, DynsecError
from egenmon.settings import Settings
from egenmon.store import db, devices, patients


class DeviceError(Exception):
    pass


@dataclass(frozen=True)
class AddedDevice:
    device_id: str
    secret: str
    mqtt: str  # "provisioned" or "not configured"


def default_device_id(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "device"
    return f"{slug}-{secrets.token_hex(4)}"


def add_device(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    patient_id: str,
    model: str,
    since: dt.datetime,
    manufacturer: str | None = None,
    device_id: str | None = None,
    acquisition: str = "prescribed",
) -> AddedDevice:
    """Register a device bound to a patient from `since`, with broker credentials.

    The database row and the broker client are created together: if the broker is
    configured but cannot take the client, nothing is added.
    """
    try:
        patient = patients.get_patient(conn, patient_id)
    except db.NotFound as e:
        raise DeviceError(str(e)) from None
    device_id = device_id or default_device_id(model)
    secret = new_secret()
    try:
        with conn.transaction():
            devices.add_device(
                conn,
                device_id,
                model,
                secret_digest(secret),
                patient_id=uuid.UUID(str(patient["id"])),
                since=since,
                manufacturer=manufacturer,
                acquisition=acquisition,
            )
            mqtt = "not configured"
            if settings.mqtt:
                try:
                    with DynsecClient(settings.mqtt) as dyn:
                        dyn.add_device(device_id, secret, settings.mqtt_topic_prefix)
                except (BrokerUnavailable, DynsecError) as e:
                    raise DeviceError(f"broker: {e}; nothing was added") from None
                mqtt = "provisioned"
    except db.Conflict as e:
        raise DeviceError(str(e)) from None
    return AddedDevice(device_id, secret, mqtt)


def revoke_device(conn: psycopg.Connection, settings: Settings, device_id: str) -> str:
    """Revoke HTTP access in the database and MQTT access in the broker, at once."""
    try:
        devices.revoke_device(conn, device_id)
    except db.NotFound as e:
        raise DeviceError(str(e)) from None
    if not settings.mqtt:
        return "not configured"
    try:
        with DynsecClient(settings.mqtt) as dyn:
            dyn.disable_device(device_id)
    except (BrokerUnavailable, DynsecError) as e:
        # The database says revoked; the service disables it in the broker at start-up.
        return f"pending ({e})"
    return "disabled"
