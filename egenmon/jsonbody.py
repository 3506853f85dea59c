"""The one JSON parser for everything that comes in: readings (HTTP, MQTT), FHIR, API bodies.

orjson parses, and on top of it two rules a JSON parser does not keep by itself:

- **depth**: at most `MAX_DEPTH` nested objects and arrays. orjson parses up to 1024 levels
  but writes only 254, so a deeper body used to fail later, when it was quarantined or
  answered (a 500 and nothing kept). No FHIR resource or reading needs more than a dozen.
- **duplicate keys**: refused, not "last one wins": `{"value": 400, "value": 72}` must not
  be stored as 72 while the device or its developer believe they sent 400.
- **NUL** (`\u0000`) in a key or a string: PostgreSQL text and jsonb cannot hold it, so
  such a body could never be stored; refused here with a reason that does not repeat it,
  rather than failing a write later (which looked like a database outage).

Both checks run at C speed on the hot path, with one `orjson.dumps` of what was parsed:
wrapped in enough lists that orjson's own nesting limit falls exactly at `MAX_DEPTH`, it
fails when the body is too deep; and a body has a repeated key exactly when it holds more
string literals (unescaped quotes) than that output, where the repeated key was folded
into one. Only a refused body is looked at again, slowly, to say how deep or which key.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "JsonBodyError", "loads", "quote_key"]

MAX_DEPTH = 64

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonBodyError(ValueError):
    """The body is not JSON egenmon takes. The text continues "the body ..." and never
    holds raw input (control characters in a key are escaped, long keys cut short)."""


def _nesting(levels: int) -> list | int:
    value: list | int = 0
    for _ in range(levels):
        value = [value]
    return value


def _orjson_limit() -> int:
    """The deepest nesting orjson writes (254 in the versions we know)."""
    low, high = 1, 4096
    while low < high:
        mid = (low + high + 1) // 2
        try:
            orjson.dumps(_nesting(mid))
            low = mid
        except orjson.JSONEncodeError:
            high = mid - 1
    return low


_WRAP = _orjson_limit() - MAX_DEPTH
assert _WRAP > 0, "orjson writes fewer levels than MAX_DEPTH"


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse `body` as JSON; raise `JsonBodyError` saying why it is refused."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "recursion" in str(e) or "depth limit" in str(e):
            raise _too_deep(raw) from None
        raise JsonBodyError(f"is not JSON: {e}") from None
    if not isinstance(data, dict | list):
        return data  # a scalar has no depth and no keys
    wrapped: Any = data
    for _ in range(_WRAP):
        wrapped = [wrapped]
    try:
        out = orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        raise _too_deep(raw) from None
    if _strings(raw) != _strings(out):
        raise JsonBodyError(
            f"has the key {_duplicate_key(raw)} twice in one object: each key may appear "
            "once, so it is not guessed which value was meant"
        )
    if b"\\u0000" in raw and _has_nul(data):
        raise JsonBodyError(
            "holds a NUL character (\\u0000) in a key or value: no text can be stored with it"
        )
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _strings(raw: bytes) -> int:
    """How many unescaped quotes valid JSON holds: twice its string literals."""
    quotes = raw.count(b'"')
    if b"\\" in raw:  # escapes occur only inside strings: drop \\ first, then count \"
        quotes -= raw.replace(b"\\\\", b"").count(b'\\"')
    return quotes


def _too_deep(raw: bytes) -> JsonBodyError:
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    depth = max(itertools.accumulate(map(_STEP.__getitem__, brackets), initial=0))
    return JsonBodyError(
        f"is nested {depth} levels deep: at most {MAX_DEPTH} levels of objects and arrays"
    )


def _duplicate_key(raw: bytes) -> str:
    """The first key that appears twice in one object, quoted and escaped for a message."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items) and not found:
            seen: set[str] = set()
            for k, _ in items:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)
        return out

    json.loads(raw, object_pairs_hook=pairs)
    return quote_key(found[0] if found else "?")


def quote_key(key: str) -> str:
    """A key from a body, safe to put in a reason: JSON-quoted (control characters and NUL
    escaped, non-ASCII kept) and at most 60 characters."""
    text = key if len(key) <= 60 else key[:57] + "..."
    return json.dumps(text, ensure_ascii=False).replace("\u2028", "\\u2028")
