"""Bring the broker in line with the database when the consumer (re)connects.

`egenmon device revoke` disables the device in the broker at once, but if the broker was
unreachable then, the database says revoked while the broker still lets the device in
("pending"). The consumer runs `disable_revoked` at every connect, so the lockout takes
effect as soon as the broker is back. `ensure_platform_acls` adds ACLs that a broker
configured by an older `egenmon broker config` lacks (the dynamic-security file is kept
across reruns, so new platform rights would otherwise never arrive).
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from egenmon.devices.broker import PLATFORM_USER, platform_acls
from egenmon.devices.dynsec import BrokerUnavailable, DynsecClient
from egenmon.settings import MqttUrl
from egenmon.store.devices import revoked_device_ids

log = logging.getLogger("egenmon.reconcile")

CHUNK = 100  # dynamic-security commands per control message
# How long to wait for a reply the plugin drops by disconnecting us.
KICKED_WAIT_S = 0.5
SHARE_GROUP = "egenmon"


def required_platform_acls(prefix: str) -> list[dict]:
    """The platform role's ACLs, including the consumer's shared subscription."""
    acls = list(platform_acls(prefix))
    share = {
        "acltype": "subscribePattern",
        "topic": f"$share/{SHARE_GROUP}/{prefix}/devices/+/readings",
        "allow": True,
    }
    if not any(a["acltype"] == share["acltype"] and a["topic"] == share["topic"] for a in acls):
        acls.append(share)
    return acls


def missing_acls(current: list[dict], required: list[dict]) -> list[dict]:
    have = {(a["acltype"], a["topic"], bool(a.get("allow"))) for a in current}
    return [a for a in required if (a["acltype"], a["topic"], bool(a["allow"])) not in have]


def ensure_platform_acls(url: MqttUrl, prefix: str, timeout: float = 5.0) -> int:
    """Add the platform role's missing ACLs; returns how many were added.

    The plugin disconnects every client of a role whose ACLs change (so they pick up the
    new rights), this one included: the reply is lost, so the result is checked afresh.
    """
    with DynsecClient(url, timeout=timeout) as dyn:
        role = dyn.run({"command": "getRole", "rolename": "platform"})
        current = role[0].get("data", {}).get("role", {}).get("acls", [])
        missing = missing_acls(current, required_platform_acls(prefix))
        if not missing:
            return 0
        log.warning("adding %d missing ACLs to the broker's platform role", len(missing))
        dyn.timeout = KICKED_WAIT_S
        try:
            dyn.run(
                *({"command": "addRoleACL", "rolename": "platform", **a} for a in missing),
                ok_errors=("already exists",),
            )
        except BrokerUnavailable:
            pass  # the plugin dropped us on purpose; see above
    with DynsecClient(url, timeout=timeout) as dyn:
        role = dyn.run({"command": "getRole", "rolename": "platform"})
        current = role[0].get("data", {}).get("role", {}).get("acls", [])
        still = missing_acls(current, required_platform_acls(prefix))
    if still:
        raise BrokerUnavailable(f"the broker did not take {len(still)} platform ACLs")
    return len(missing)


def disable_clients(url: MqttUrl, device_ids: list[str], timeout: float = 5.0) -> int:
    """Disable in the broker each listed device not disabled there yet; returns how many."""
    if not device_ids:
        return 0
    with DynsecClient(url, timeout=timeout) as dyn:
        listed = dyn.run({"command": "listClients", "verbose": True})
        clients = listed[0].get("data", {}).get("clients", [])
        enabled = {
            c["username"]
            for c in clients
            if not c.get("disabled") and c.get("username") != PLATFORM_USER
        }
        todo = [d for d in device_ids if d in enabled]
        for i in range(0, len(todo), CHUNK):
            dyn.run(
                *({"command": "disableClient", "username": d} for d in todo[i : i + CHUNK]),
                ok_errors=("not found",),
            )
    return len(todo)


async def disable_revoked(pool: AsyncConnectionPool, url: MqttUrl) -> int:
    """Disable in the broker every device the database says is revoked."""
    revoked = await revoked_device_ids(pool)
    done = await asyncio.to_thread(disable_clients, url, revoked)
    if done:
        log.warning("disabled %d revoked devices the broker still let in", done)
    return done
