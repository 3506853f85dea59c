"""Observation ids and paging cursors: opaque to clients, cheap for the store.

An Observation id is ``<time>-<digest>``: the measurement time as 14 lowercase hex digits
of microseconds since the Unix epoch (zero-padded, so ids sort by time; enough digits
for any time until the year 4253), a hyphen, and the first 16 hex digits (64 bits) of
the SHA-256 of the reading's dedup key. 31 characters, within FHIR's id rule
``[A-Za-z0-9\\-\\.]{1,64}``. It names no patient and no personnummer, is stable for the
life of the row, and lets a read go straight to the one chunk holding ``time``: the
store selects the rows at exactly that time and keeps the one whose dedup key has the
digest (in SQL: ``left(encode(sha256(convert_to(dedup_key, 'UTF8')), 'hex'), 16)``, or
in Python with `dedup_digest`).

A cursor marks a position in a keyset page walk ordered by (time, dedup_key): the
base64url (unpadded) of the compact JSON ``{"v":1,"t":<micros>,"k":<dedup key>}``,
followed by ``.`` and a base64url HMAC-SHA256 tag (first 16 bytes) when a key is given.
The dedup key in it holds a device id and a reading id or time, never a personnummer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import orjson

__all__ = [
    "decode_cursor",
    "dedup_digest",
    "encode_cursor",
    "observation_id",
    "parse_observation_id",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_HEX = 14
_DIGEST_HEX = 16
_MAX_MICROS = 16**_TIME_HEX - 1
_ID_RE = re.compile(r"([0-9a-f]{14})-([0-9a-f]{16})")
_B64_RE = re.compile(r"[A-Za-z0-9_-]+")
_TAG_BYTES = 16
_MAX_TOKEN = 2048
_CURSOR_VERSION = 1


def _micros(time: datetime) -> int:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    delta = time - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    try:
        return EPOCH + timedelta(microseconds=micros)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc


def dedup_digest(dedup_key: str) -> str:
    """The 16 hex digits of SHA-256(dedup key) an Observation id ends with."""
    return hashlib.sha256(dedup_key.encode()).hexdigest()[:_DIGEST_HEX]


def observation_id(time: datetime, dedup_key: str) -> str:
    """The stable FHIR id of the reading measured at `time` with `dedup_key`."""
    micros = _micros(time)
    if not 0 <= micros <= _MAX_MICROS:
        raise ValueError("time out of range for an Observation id")
    return f"{micros:014x}-{dedup_digest(dedup_key)}"


def parse_observation_id(observation_id: str) -> tuple[datetime, str]:
    """(measurement time in UTC, dedup digest) from an id; ValueError when malformed."""
    m = _ID_RE.fullmatch(observation_id)
    if m is None:
        raise ValueError("not an Observation id")
    return _from_micros(int(m.group(1), 16)), m.group(2)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("malformed cursor")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()[:_TAG_BYTES])


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    key = key.encode() if isinstance(key, str) else key
    if not key:
        raise ValueError("an empty cursor key signs nothing")
    return key


def encode_cursor(time: datetime, dedup_key: str, key: bytes | str | None = None) -> str:
    """An opaque URL-safe token for the keyset position (time, dedup_key)."""
    payload = orjson.dumps({"v": _CURSOR_VERSION, "t": _micros(time), "k": dedup_key})
    body = _b64(payload)
    k = _key_bytes(key)
    return body if k is None else f"{body}.{_tag(k, body)}"


def decode_cursor(token: str, key: bytes | str | None = None) -> tuple[datetime, str]:
    """(time in UTC, dedup_key) from a token; ValueError when malformed or tampered with."""
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
        raise ValueError("malformed cursor")
    k = _key_bytes(key)
    if k is None:
        body = token
    else:
        body, dot, tag = token.partition(".")
        if not dot or not hmac.compare_digest(
            tag.encode("ascii", "replace"), _tag(k, body).encode("ascii")
        ):
            raise ValueError("cursor signature does not match")
    try:
        data = orjson.loads(_unb64(body))
    except orjson.JSONDecodeError as exc:
        raise ValueError("malformed cursor") from exc
    if not isinstance(data, dict) or set(data) != {"v", "t", "k"}:
        raise ValueError("malformed cursor")
    micros, dedup_key = data["t"], data["k"]
    if (
        type(data["v"]) is not int
        or data["v"] != _CURSOR_VERSION
        or type(micros) is not int
        or not isinstance(dedup_key, str)
        or not dedup_key
    ):
        raise ValueError("malformed cursor")
    return _from_micros(micros), dedup_key
