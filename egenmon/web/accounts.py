"""Local logins: argon2id password hashes, the password rule, and throttling of guesses.

Failures are counted per client address and per (username, address), never per account
alone: five wrong passwords for one name from one address pause that name from that
address for `LOCKOUT` (the clinician at her own desk, or anywhere else, is not locked
out), and an address that keeps failing, whatever names it tries, is answered 429 with
Retry-After for a time that doubles with each further failure (`ADDRESS_FREE` failures
within `WINDOW` first). A paused name answers exactly as a wrong password and an unknown
name do, and unknown names are counted the same way, so no answer tells which usernames
exist. The counters live in the database (`login_throttle`), shared by every process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool

from egenmon.store import login_throttle as throttle
from egenmon.store import users

log = logging.getLogger("egenmon.web")

USER_ROLES = ("clinician", "admin")
LOCALES = ("sv", "en")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is an attack
# Five wrong passwords for one username from one address pause that pair for 15 minutes.
MAX_FAILED_ATTEMPTS = 5
LOCKOUT = dt.timedelta(minutes=15)
# An address may fail this often within WINDOW; each further failure blocks it for twice
# as long as the one before (ADDRESS_FIRST_BLOCK, then 2 s, 4 s, ... ADDRESS_MAX_BLOCK).
ADDRESS_FREE = 20
WINDOW = dt.timedelta(minutes=15)
ADDRESS_FIRST_BLOCK = dt.timedelta(seconds=1)
ADDRESS_MAX_BLOCK = dt.timedelta(minutes=15)

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
    """The outcome of a login attempt. user is set only when ok; retry_after (seconds) is
    set when the address is throttled (the caller answers 429)."""

    ok: bool
    user: dict[str, Any] | None = None
    retry_after: int | None = None


def address_block(failures: int) -> dt.timedelta | None:
    """How long an address is blocked after its `failures`-th failure in a window."""
    over = failures - ADDRESS_FREE
    if over <= 0:
        return None
    return min(ADDRESS_FIRST_BLOCK * 2 ** min(over - 1, 20), ADDRESS_MAX_BLOCK)


def _seconds(left: dt.timedelta) -> int:
    return max(1, math.ceil(left.total_seconds()))


async def authenticate(
    pool: AsyncConnectionPool,
    username: str,
    password: str,
    address: str,
    *,
    max_attempts: int = MAX_FAILED_ATTEMPTS,
    lockout: dt.timedelta = LOCKOUT,
) -> LoginResult:
    """Check a username and password from a client address, counting failures."""
    name = normalise_username(username)[:64]
    async with pool.connection() as conn:
        address_left, pair_left = await throttle.blocked_for(conn, address, name)
        if address_left is not None:
            # Throttled: answered before any hashing, so a flood costs no CPU.
            return LoginResult(ok=False, retry_after=_seconds(address_left))
        user = await users.find_login(conn, name) if name else None
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop. It runs for an
    # unknown name and a paused pair too, so the time taken tells nothing either.
    # A login without a password hash signs in only through the OpenID provider.
    has_password = user is not None and user["password_hash"] is not None
    stored = user["password_hash"] if user is not None and has_password else _dummy_hash()
    good = (
        len(password) <= MAX_PASSWORD
        and await asyncio.to_thread(verify_password, stored, password)
        and has_password
    )
    async with pool.connection() as conn:
        if good and user is not None and pair_left is None:
            new_hash = None
            if hasher().check_needs_rehash(user["password_hash"]):
                new_hash = await asyncio.to_thread(hasher().hash, password)
            await users.record_success(conn, user["user_id"], new_hash)
            await throttle.clear_pair(conn, address, name)
            return LoginResult(ok=True, user=user)
        if pair_left is None:
            # While paused even the right password fails, and is not counted again.
            if await throttle.count_failure(conn, "account", address, name, WINDOW) >= max_attempts:
                await throttle.block(conn, "account", address, name, lockout)
                log.warning(
                    "login paused for a username from one address after %d failures", max_attempts
                )
        failures = await throttle.count_failure(conn, "address", address, "", WINDOW)
        span = address_block(failures)
        if span is not None:
            await throttle.block(conn, "address", address, "", span)
            if failures == ADDRESS_FREE + 1:
                log.warning("login attempts throttled for an address after %d failures", failures)
    return LoginResult(ok=False)


async def forget_old_failures(conn: Any) -> None:
    """Remove counters whose window and block are long over (called with session cleanup)."""
    await throttle.forget_old(conn, WINDOW * 4)


_HSA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,63}$")


def check_hsa_id(hsa_id: str) -> str:
    """An HSA-id as stored (SE + organisation number + '-' + local part); ValueError."""
    value = hsa_id.strip()
    if not _HSA_ID.match(value):
        raise ValueError("--hsa-id must be 2-64 letters, digits and '-' (like SE2321000016-1234)")
    return value


def new_user_fields(
    username: str, password: str | None, role: str, care_unit_id: uuid.UUID | None, locale: str
) -> tuple[str, str | None]:
    """Checked username and password hash for a new login (None: a login that signs in
    only through the OpenID provider); ValueError naming what is wrong."""
    if role not in USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(USER_ROLES)}")
    if role == "clinician" and care_unit_id is None:
        raise ValueError("a clinician needs --care-unit")
    if locale not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}")
    return check_username(username), None if password is None else hash_password(password)
