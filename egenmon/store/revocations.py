"""Which devices are revoked: what the broker must lock out (async, for the service)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def revoked_device_ids(pool: AsyncConnectionPool) -> list[str]:
    """Ids of every revoked device, oldest revocation first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM devices WHERE status = 'revoked' ORDER BY revoked_at, id"
        )
        rows = await cur.fetchall()
    return [r["id"] if isinstance(r, dict) else r[0] for r in rows]
