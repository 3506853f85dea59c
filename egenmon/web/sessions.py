"""UI sessions: an opaque cookie, its hashed row in the database, and the CSRF token.

A session belongs to a clinician or admin (the UI at /ui/, signed in with a password or
through the OpenID provider) or to a patient (the patient app at /app/, signed in through
the provider with their personnummer): the same cookie, the same CSRF rule, the same
resolver, giving `Principal(role="clinician"|"admin", ...)` or
`Principal(role="patient", patient_id=...)`.

The cookie holds 256 random bits; the database stores only their SHA-256, so a copy of
the sessions table cannot be replayed. A session ends at logout, after `IDLE` without a
request, or `LIFETIME` after login, whichever comes first. Each session has one
synchroniser token (CSRF): every form carries it in a hidden field and every unsafe call
of the JSON API through the session cookie sends it as `X-CSRF-Token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from egenmon.domain.principals import DEFAULT_SCOPES, Principal, parse_scopes
from egenmon.runtime import Runtime
from egenmon.store import sessions
from egenmon.web import accounts

log = logging.getLogger("egenmon.web")

COOKIE = "egenmon_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
# Requests the page makes by itself (the worklist's polling) do not count as activity, so
# an unattended screen still times out.
POLL_HEADER = "x-egenmon-poll"
IDLE = dt.timedelta(minutes=30)
LIFETIME = dt.timedelta(hours=12)
TOUCH_EVERY = dt.timedelta(seconds=60)
CLEANUP_EVERY_S = 600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token with what the request sent."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def is_https(request: Request) -> bool:
    # uvicorn rewrites the scheme from X-Forwarded-Proto of a trusted proxy.
    return request.url.scheme == "https"


def patient_subject(patient_id: uuid.UUID) -> str:
    """A patient's name in the access log and in Principal.subject: the opaque id, never
    the personnummer."""
    return f"patient/{patient_id}"


@dataclass(frozen=True)
class UISession:
    """A signed-in user (user_id set) or patient (patient_id set) as the web sees them."""

    id_sha256: bytes
    user_id: uuid.UUID | None
    username: str
    role: str
    care_unit_id: uuid.UUID | None
    care_unit_name: str | None
    display_name: str | None
    locale: str
    csrf_token: str
    patient_id: uuid.UUID | None = None
    id_token: str | None = None  # the provider's ID token (RP-initiated logout)

    @property
    def is_patient(self) -> bool:
        return self.patient_id is not None

    @property
    def principal(self) -> Principal:
        if self.patient_id is not None:
            return Principal(
                subject=patient_subject(self.patient_id),
                role="patient",
                patient_id=self.patient_id,
                scopes=parse_scopes(DEFAULT_SCOPES["patient"]),
            )
        return Principal(
            subject=self.username,
            role=self.role,
            care_unit_id=self.care_unit_id,
            scopes=parse_scopes(DEFAULT_SCOPES[self.role]),
        )

    @classmethod
    def from_row(cls, id_sha256: bytes, row: dict[str, Any]) -> UISession:
        patient_id = row.get("patient_id")
        if patient_id is not None:
            return cls(
                id_sha256=id_sha256,
                user_id=None,
                username=patient_subject(patient_id),
                role="patient",
                care_unit_id=None,
                care_unit_name=None,
                display_name=row.get("patient_name"),
                locale="sv",
                csrf_token=row["csrf_token"],
                patient_id=patient_id,
                id_token=row.get("id_token"),
            )
        return cls(
            id_sha256=id_sha256,
            user_id=row["user_id"],
            username=row["username"],
            role=row["role"],
            care_unit_id=row["care_unit_id"],
            care_unit_name=row["care_unit_name"],
            display_name=row["display_name"],
            locale=row["locale"],
            csrf_token=row["csrf_token"],
            id_token=row.get("id_token"),
        )


class Sessions:
    """The "sessions" service: resolves the session cookie to a user and a Principal."""

    name = "sessions"

    def __init__(
        self, runtime: Runtime, idle: dt.timedelta = IDLE, lifetime: dt.timedelta = LIFETIME
    ) -> None:
        self.runtime = runtime
        self.idle = idle
        self.lifetime = lifetime
        self._cleanup: asyncio.Task | None = None

    async def start(self) -> None:
        self._cleanup = asyncio.create_task(self._cleanup_loop(), name="session-cleanup")

    async def stop(self) -> None:
        if self._cleanup:
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                async with self.runtime.pool.connection() as conn:
                    await sessions.delete_expired_sessions(conn, self.idle)
                    await accounts.forget_old_failures(conn)
            except Exception:  # a database hiccup must not end the loop
                log.exception("removing expired sessions failed")
            await asyncio.sleep(CLEANUP_EVERY_S)

    async def load(self, request: Request) -> UISession | None:
        """The live session of this request's cookie (once per request), or None."""
        if hasattr(request.state, "ui_session"):
            return request.state.ui_session
        session = None
        cookie = request.cookies.get(COOKIE)
        if cookie and len(cookie) <= 128:
            key = digest(cookie)
            async with self.runtime.pool.connection() as conn:
                row = await sessions.get_session(conn, key, self.idle)
                if row is not None:
                    session = UISession.from_row(key, row)
                    if (
                        request.headers.get(POLL_HEADER) is None
                        and row["now"] - row["last_seen_at"] >= TOUCH_EVERY
                    ):
                        await sessions.touch_session(conn, key)
        request.state.ui_session = session
        return session

    async def principal(self, request: Request) -> Principal | None:
        """For `egenmon.auth.authenticate`: the session's principal, when the request may
        act with it (an unsafe method must carry the session's CSRF token)."""
        session = await self.load(request)
        if session is None:
            return None
        if request.method not in SAFE_METHODS and not tokens_match(
            session.csrf_token, request.headers.get(CSRF_HEADER)
        ):
            return None
        return session.principal

    async def begin(
        self,
        request: Request,
        response: Response,
        user_id: uuid.UUID | None = None,
        *,
        patient_id: uuid.UUID | None = None,
        id_token: str | None = None,
    ) -> None:
        """Start a new session for a user (or a patient) who just logged in, and set its
        cookie. `id_token` is the provider's ID token of an OpenID login.

        Any session the browser had is ended first: a fresh id at every login means an id
        planted before login (session fixation) is worth nothing.
        """
        if (user_id is None) == (patient_id is None):
            raise ValueError("a session belongs to a user or to a patient")
        await self.end(request, response)
        session_id = new_token()
        async with self.runtime.pool.connection() as conn:
            if patient_id is not None:
                await sessions.create_patient_session(
                    conn, digest(session_id), patient_id, self.lifetime, new_token(), id_token
                )
            else:
                assert user_id is not None
                await sessions.create_session(
                    conn, digest(session_id), user_id, self.lifetime, new_token(), id_token
                )
        response.set_cookie(
            COOKIE, session_id, httponly=True, samesite="lax", path="/", secure=is_https(request)
        )

    async def end(self, request: Request, response: Response) -> None:
        """End the request's session (if any) in the database and in the browser."""
        cookie = request.cookies.get(COOKIE)
        if cookie and len(cookie) <= 128:
            async with self.runtime.pool.connection() as conn:
                await sessions.delete_session(conn, digest(cookie))
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request)
        )
        request.state.ui_session = None


def sessions_of(runtime: Runtime) -> Sessions | None:
    """The process's UI sessions, None when it serves no HTTP."""
    sessions = runtime.sessions
    return sessions if isinstance(sessions, Sessions) else None
