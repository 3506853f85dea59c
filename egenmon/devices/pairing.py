"""Pairing a self-bought device (egenköp): a one-time code from the patient app, redeemed
once by the device or its companion app for the device's credentials.

A code is 12 characters from an alphabet without look-alikes (60 bits), shown once and
stored only as its SHA-256 digest (like device secrets, it is random, not a password). It
is valid for 15 minutes and one use; the claim and the device's registration are one
transaction, so a failed registration leaves the code unused. Guessing is limited per
address by the caller (the same counters as sign-in) on top of the code's size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass

from egenmon.devices.registry import DeviceError, add_device
from egenmon.settings import Settings
from egenmon.store import db, pairing

__all__ = [
    "CODE_TTL",
    "PairingError",
    "Paired",
    "code_digest",
    "new_code",
    "normalise_code",
    "redeem",
]

CODE_TTL = dt.timedelta(minutes=15)
CODE_LENGTH = 12
# Crockford's base32 without I, L, O, U: nothing to misread on a phone's screen.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_RE = re.compile(f"[{ALPHABET}]{{{CODE_LENGTH}}}")
MAX_MODEL = 100


class PairingError(Exception):
    """A redemption refused: status 404 (no such code) or 410 (used or expired)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Paired:
    device_id: str
    secret: str
    patient_id: uuid.UUID
    mqtt: str


def new_code() -> str:
    """A fresh code, as the patient app shows it (groups of four: XXXX-XXXX-XXXX)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalise_code(text: object) -> str | None:
    """The code as typed (any case, with or without dashes and spaces), canonical; None
    when it cannot be a code."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    code = re.sub(r"[\s-]", "", text).upper()
    return code if _CODE_RE.fullmatch(code) else None


def code_digest(code: str) -> bytes:
    return hashlib.sha256(code.encode("ascii")).digest()


def check_model(model: object) -> str:
    """A device model as given when a code is created; ValueError naming what is wrong."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model: give the device's model, for example 'Omron M7 Intelli IT'")
    model = model.strip()
    if len(model) > MAX_MODEL or not model.isprintable():
        raise ValueError(f"model: at most {MAX_MODEL} printable characters")
    return model


def redeem(settings: Settings, code: str) -> Paired:
    """Claim the code and register its device, bound to the patient from now, with broker
    credentials like any device (synchronous: the registry's work is)."""
    digest = code_digest(code)
    with db.connect(settings.require_database()) as conn, conn.transaction():
        state, claimed = pairing.claim_code(conn, digest)
        if state == "unknown":
            raise PairingError(404, "unknown pairing code")
        if state == "gone" or claimed is None:
            raise PairingError(410, "this pairing code was used already or has expired")
        patient_id = uuid.UUID(str(claimed["patient_id"]))
        try:
            added = add_device(
                conn,
                settings,
                patient_id=str(patient_id),
                model=claimed["model"],
                since=dt.datetime.now(dt.UTC),
                acquisition="self_bought",
            )
        except DeviceError as e:
            raise PairingError(503, f"the device could not be registered: {e}") from None
        pairing.set_code_device(conn, digest, added.device_id)
    return Paired(added.device_id, added.secret, patient_id, added.mqtt)
