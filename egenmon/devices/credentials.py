"""Device secrets: random, shown once, stored only as a digest, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    """A 256-bit random secret, URL-safe (it is a Bearer token and an MQTT password)."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> bytes:
    # The secret is 256 random bits, not a guessable password: a fast digest is enough
    # and keeps authentication off the hot path's profile.
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, digest: bytes) -> bool:
    return hmac.compare_digest(secret_digest(secret), digest)
