"""Registering SMART clients (`egenmon client add|list|remove`): what a registration
must hold, checked before it is stored."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

import psycopg

from egenmon.domain.principals import Scope
from egenmon.identity.smart import LAUNCH_SCOPES, check_jwks
from egenmon.store import clients

__all__ = ["add_client", "list_clients", "remove_client"]


def _https_or_loopback(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL: {url!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(f"{what} must use https (http only on localhost): {url!r}")
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} may hold no fragment or user: {url!r}")


def _origin(url: str) -> str:
    _https_or_loopback(url, "--origin")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"--origin is scheme://host[:port], without a path: {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def add_client(
    conn: psycopg.Connection,
    *,
    name: str,
    scopes: list[str],
    jwks: Any = None,
    jwks_uri: str | None = None,
    redirect_uris: list[str] | None = None,
    origins: list[str] | None = None,
    launch_uri: str | None = None,
) -> dict[str, Any]:
    """Register a client; returns its id and what it may do. A ValueError says what is
    wrong with the registration."""
    if not name.strip():
        raise ValueError("--name must not be empty")
    if jwks is not None and jwks_uri is not None:
        raise ValueError("give --jwks or --jwks-uri, not both")
    keys = check_jwks(jwks) if jwks is not None else None
    if jwks_uri is not None:
        _https_or_loopback(jwks_uri, "--jwks-uri")
    if not scopes:
        raise ValueError("give at least one --scope")
    for s in scopes:
        if s not in LAUNCH_SCOPES and Scope.parse(s) is None:
            raise ValueError(f"not a SMART scope: {s!r}")
    redirects = list(dict.fromkeys(redirect_uris or []))
    for uri in redirects:
        _https_or_loopback(uri, "--redirect-uri")
    confidential = keys is not None or jwks_uri is not None
    if not confidential and not redirects:
        raise ValueError("a backend client needs --jwks or --jwks-uri; an app --redirect-uri")
    if any(s.startswith("system/") for s in scopes) and not confidential:
        raise ValueError("system/ scopes need a client with keys (--jwks or --jwks-uri)")
    allowed_origins = list(dict.fromkeys(_origin(o) for o in origins or []))
    if launch_uri is not None:
        _https_or_loopback(launch_uri, "--launch-uri")
        if not redirects:
            raise ValueError("--launch-uri is for apps: give their --redirect-uri too")
    client_id = f"{_slug(name)}-{secrets.token_hex(4)}"
    clients.add_client(
        conn,
        client_id=client_id,
        name=name.strip(),
        scopes=scopes,
        jwks={"keys": keys} if keys is not None else None,
        jwks_uri=jwks_uri,
        redirect_uris=redirects,
        origins=allowed_origins,
        launch_uri=launch_uri,
    )
    return {
        "client_id": client_id,
        "name": name.strip(),
        "type": "confidential" if confidential else "public",
        "scopes": scopes,
        "redirect_uris": redirects,
        "origins": allowed_origins,
        "launch_uri": launch_uri,
    }


def _slug(name: str) -> str:
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower()).strip("-")
    return "-".join(p for p in slug.split("-") if p)[:32] or "client"


def list_clients(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return [
        {
            "client_id": row["id"],
            "name": row["name"],
            "type": "public" if row["jwks"] is None and row["jwks_uri"] is None else "confidential",
            "scopes": row["scopes"],
            "redirect_uris": row["redirect_uris"],
            "origins": row["origins"],
            "jwks_uri": row["jwks_uri"],
            "launch_uri": row["launch_uri"],
            "created_at": row["created_at"].isoformat(),
        }
        for row in clients.list_clients(conn)
    ]


def remove_client(conn: psycopg.Connection, client_id: str) -> None:
    clients.remove_client(conn, client_id)
