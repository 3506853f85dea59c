"""Mosquitto configuration that egenmon expects, and per-device rights in the broker.

Mosquitto's dynamic-security plugin holds the accounts and ACLs. egenmon writes its
initial file (an administrative platform account, no anonymous access) and then adds,
disables and deletes device clients over `$CONTROL/dynamic-security/v1` while the broker
runs: a new device can connect at once, and disabling a client drops its connection at
once, without a restart (the classic acl_file reloads only on SIGHUP and keeps sessions).
Debian's mosquitto 2.0.11 does not substitute %u/%c in role ACLs, so every device gets its
own role with literal topics.

Client ids: every device's client is bound to one client id, its device id (the plugin's
`clientid`), so that no device can connect under another client's id: taking an id kicks
whoever holds it and, with a clean session, wipes that client's persistent session, and
the platform's consumer keeps the readings of every device in its session. The platform
account is not bound (it runs several consumers and admin connections), and device ids
that start with `egenmon` are refused, so no device can be bound to one of its ids.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

PLATFORM_USER = "egenmon"
PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


class BrokerConfigError(RuntimeError):
    pass


def find_plugin() -> str:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise BrokerConfigError(
        "mosquitto_dynamic_security.so not found; install mosquitto (2.0 or newer) or pass "
        "--plugin PATH"
    )


def dynsec_password(password: str, salt: bytes | None = None, iterations: int = 101) -> dict:
    """A password entry as the dynamic-security plugin stores it (PBKDF2-SHA512)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def platform_acls(prefix: str) -> list[dict]:
    control = "$CONTROL/dynamic-security/#"
    return [
        {"acltype": "subscribePattern", "topic": f"{prefix}/devices/+/readings", "allow": True},
        # Mosquitto checks a shared subscription against its full $share/... filter.
        {
            "acltype": "subscribePattern",
            "topic": f"$share/egenmon/{prefix}/devices/+/readings",
            "allow": True,
        },
        {"acltype": "publishClientReceive", "topic": f"{prefix}/devices/+/readings", "allow": True},
        # Vendor payloads, mapped by templates (issue 17): the same rights as readings.
        {"acltype": "subscribePattern", "topic": f"{prefix}/devices/+/payloads", "allow": True},
        {
            "acltype": "subscribePattern",
            "topic": f"$share/egenmon/{prefix}/devices/+/payloads",
            "allow": True,
        },
        {"acltype": "publishClientReceive", "topic": f"{prefix}/devices/+/payloads", "allow": True},
        {"acltype": "publishClientSend", "topic": f"{prefix}/devices/+/results", "allow": True},
        {"acltype": "publishClientSend", "topic": control, "allow": True},
        {"acltype": "publishClientReceive", "topic": control, "allow": True},
        {"acltype": "subscribePattern", "topic": control, "allow": True},
        {"acltype": "subscribePattern", "topic": "$SYS/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": True},
    ]


def device_acls(prefix: str, device_id: str) -> list[dict]:
    own = f"{prefix}/devices/{device_id}"
    return [
        {"acltype": "publishClientSend", "topic": f"{own}/readings", "allow": True},
        {"acltype": "publishClientSend", "topic": f"{own}/payloads", "allow": True},
        {"acltype": "subscribePattern", "topic": f"{own}/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": f"{own}/#", "allow": True},
    ]


def device_role(device_id: str) -> str:
    return f"device:{device_id}"


# Client ids of the platform account start with this; no device id may.
RESERVED_PREFIX = "egenmon"


def device_client_id(device_id: str) -> str:
    """The one MQTT client id a device may connect with: its device id."""
    return device_id


def reserved_device_id(device_id: str) -> bool:
    return device_id.lower().startswith(RESERVED_PREFIX)


def bind_client_ids(dynsec: dict) -> int:
    """Bind every device client of a dynamic-security document to its own client id (a
    file from before client ids were bound); returns how many were changed."""
    changed = 0
    for client in dynsec.get("clients", []):
        username = client.get("username")
        if not username or username == PLATFORM_USER:
            continue
        if client.get("clientid") != device_client_id(username):
            client["clientid"] = device_client_id(username)
            changed += 1
    return changed


@dataclass(frozen=True)
class BrokerConfig:
    conf: Path
    mqtt_url: str


def write_config(
    out: Path,
    *,
    port: int = 1883,
    host: str = "localhost",
    bind: str | None = None,
    prefix: str = "egenmon/v1",
    plugin: str | None = None,
    mount_dir: str | None = None,
    user: str | None = None,
    log_file: bool = False,
) -> BrokerConfig:
    """Write `out/mosquitto.conf` and the files it needs; idempotent.

    An existing dynamic-security.json (with the devices added since) and the platform
    password are kept, so rerunning never locks devices out. `mount_dir` is where the broker
    sees `out` (for a container); `host` is how egenmon reaches the broker.
    """
    out.mkdir(parents=True, exist_ok=True)
    seen_as = mount_dir.rstrip("/") if mount_dir else str(out.absolute())
    secret_file = out / "platform.secret"
    dynsec_file = out / "dynamic-security.json"
    if secret_file.exists() and dynsec_file.exists():
        password = secret_file.read_text().strip()
        # Devices added before client ids were bound: bind them now. (A running broker
        # keeps its own copy; the consumer binds them there over the control topic.)
        dynsec = json.loads(dynsec_file.read_text())
        if bind_client_ids(dynsec):
            _write_private(dynsec_file, json.dumps(dynsec, indent=2))
    else:
        password = secrets.token_urlsafe(24)
        _write_private(secret_file, password + "\n")
        dynsec = {
            "clients": [
                {
                    "username": PLATFORM_USER,
                    "textName": "egenmon platform",
                    **dynsec_password(password),
                    "roles": [{"rolename": "platform"}],
                }
            ],
            "roles": [{"rolename": "platform", "acls": platform_acls(prefix)}],
            "groups": [],
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": False,
                "subscribe": False,
                "unsubscribe": True,
            },
        }
        _write_private(dynsec_file, json.dumps(dynsec, indent=2))
    (out / "data").mkdir(exist_ok=True)
    listener = f"listener {port} {bind}" if bind else f"listener {port}"
    lines = [
        "# Written by `egenmon broker config`; rerun it rather than editing by hand.",
        "per_listener_settings false",
        listener,
        "allow_anonymous false",
        f"plugin {plugin or find_plugin()}",
        f"plugin_opt_config_file {seen_as}/dynamic-security.json",
        "persistence true",
        f"persistence_location {seen_as}/data/",
        # Save the in-memory store every 2 s so an unclean broker stop loses little.
        "autosave_interval 2",
        # The platform's persistent session buffers readings while egenmon is down.
        "max_queued_messages 1000000",
        "max_inflight_messages 1000",
        "max_packet_size 2097152",
        "set_tcp_nodelay true",
    ]
    if log_file:
        lines.append(f"log_dest file {seen_as}/mosquitto.log")
    else:
        lines.append("log_dest stderr")
    lines.append("log_type error")
    lines.append("log_type warning")
    if user:
        lines.append(f"user {user}")
    conf = out / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return BrokerConfig(conf=conf, mqtt_url=f"mqtt://{PLATFORM_USER}:{password}@{host}:{port}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
