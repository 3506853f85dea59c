"""The `login_throttle` table: failed-login counters per address and per (username, address)."""

from __future__ import annotations

import datetime as dt
from typing import Any


async def blocked_for(
    conn: Any, address: str, name: str
) -> tuple[dt.timedelta | None, dt.timedelta | None]:
    """How long the address, and the (name, address) pair, are still blocked."""
    cur = await conn.execute(
        "SELECT kind, blocked_until - now() AS left FROM login_throttle"
        " WHERE address = %s AND ((kind = 'address' AND username = '')"
        "   OR (kind = 'account' AND username = %s)) AND blocked_until > now()",
        (address, name),
    )
    left = {row["kind"]: row["left"] for row in await cur.fetchall()}
    return left.get("address"), left.get("account")


async def count_failure(conn: Any, kind: str, address: str, name: str, window: dt.timedelta) -> int:
    """One more failure for a counter (restarted when its window is over); its count."""
    cur = await conn.execute(
        "INSERT INTO login_throttle AS t (kind, address, username, failures) VALUES"
        " (%(kind)s, %(address)s, %(name)s, 1)"
        " ON CONFLICT (kind, address, username) DO UPDATE SET"
        " failures = CASE WHEN t.first_at < now() - %(window)s AND"
        "   (t.blocked_until IS NULL OR t.blocked_until < now()) THEN 1 ELSE t.failures + 1 END,"
        " first_at = CASE WHEN t.first_at < now() - %(window)s AND"
        "   (t.blocked_until IS NULL OR t.blocked_until < now()) THEN now() ELSE t.first_at END"
        " RETURNING failures",
        {"kind": kind, "address": address, "name": name, "window": window},
    )
    row = await cur.fetchone()
    return int(row["failures"])


async def block(conn: Any, kind: str, address: str, name: str, span: dt.timedelta) -> None:
    """Block a counter for `span`; a paused (name, address) pair starts counting afresh."""
    await conn.execute(
        "UPDATE login_throttle SET blocked_until = now() + %s"
        + (", failures = 0, first_at = now()" if kind == "account" else "")
        + " WHERE kind = %s AND address = %s AND username = %s",
        (span, kind, address, name),
    )


async def clear_pair(conn: Any, address: str, name: str) -> None:
    """A good login from an address forgets that name's failures there."""
    await conn.execute(
        "DELETE FROM login_throttle WHERE kind = 'account' AND address = %s AND username = %s",
        (address, name),
    )


async def forget_old(conn: Any, older_than: dt.timedelta) -> None:
    """Remove counters whose window and block are long over."""
    await conn.execute(
        "DELETE FROM login_throttle WHERE first_at < now() - %s"
        " AND (blocked_until IS NULL OR blocked_until < now())",
        (older_than,),
    )
