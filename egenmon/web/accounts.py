"""Local logins: argon2id password hashes, the password rule, and lockout after failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool

from egenmon.store import web as store

log = logging.getLogger("egenmon.web")

USER_ROLES = ("clinician", "admin")
LOCALES = ("sv", "en")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is an attack
# Five wrong passwords in a row lock the login for 15 minutes (the counter restarts then).
MAX_FAILED_ATTEMPTS = 5
LOCKOUT = dt.timedelta(minutes=15)

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's RFC 9106 low-memory defaults (t=3, m=64 MiB, p=4)."""
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against for unknown usernames, so that a wrong name takes as long as a
    # wrong password and response times do not tell which usernames exist.
    return hasher().hash("egenmon-no-such-user")


def normalise_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str:
    """The username in its stored form; ValueError naming what is wrong."""
    name = normalise_username(username)
    if not _USERNAME.match(name):
        raise ValueError(
            "username must be 2-64 characters: letters a-z, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    """The password if it is acceptable; ValueError naming what is wrong."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password must have at most {MAX_PASSWORD} characters")
    if password != password.strip():
        raise ValueError("the password must not begin or end with white space")
    return password


def hash_password(password: str) -> str:
    return hasher().hash(check_password(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt. user is set only when ok."""

    ok: bool
    locked: bool = False
    user: dict[str, Any] | None = None


async def authenticate(
    pool: AsyncConnectionPool,
    username: str,
    password: str,
    *,
    max_attempts: int = MAX_FAILED_ATTEMPTS,
    lockout: dt.timedelta = LOCKOUT,
) -> LoginResult:
    """Check a username and password, counting failures and honouring a lockout."""
    name = normalise_username(username)
    if not name or len(password) > MAX_PASSWORD:
        return LoginResult(ok=False)
    async with pool.connection() as conn:
        user = await store.find_login(conn, name)
    stored = user["password_hash"] if user else _dummy_hash()
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    good = await asyncio.to_thread(verify_password, stored, password)
    if user is None:
        return LoginResult(ok=False)
    if user["locked_until"] is not None and user["locked_until"] > user["now"]:
        # While locked even the right password is refused, and not counted.
        return LoginResult(ok=False, locked=True)
    async with pool.connection() as conn:
        if not good:
            locked_until = await store.record_failure(conn, user["user_id"], max_attempts, lockout)
            locked = locked_until is not None and locked_until > user["now"]
            if locked:
                log.warning("login %s locked after %d failed attempts", name, max_attempts)
            return LoginResult(ok=False, locked=locked)
        new_hash = None
        if hasher().check_needs_rehash(user["password_hash"]):
            new_hash = await asyncio.to_thread(hasher().hash, password)
        await store.record_success(conn, user["user_id"], new_hash)
    return LoginResult(ok=True, user=user)


def new_user_fields(
    username: str, password: str, role: str, care_unit_id: uuid.UUID | None, locale: str
) -> tuple[str, str]:
    """Checked username and password hash for a new login; ValueError naming what is wrong."""
    if role not in USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(USER_ROLES)}")
    if role == "clinician" and care_unit_id is None:
        raise ValueError("a clinician needs --care-unit")
    if locale not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}")
    return check_username(username), hash_password(password)
