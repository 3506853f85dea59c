"""A small client for Mosquitto's dynamic-security control topic."""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from egenmon.devices.broker import (
    PLATFORM_USER,
    device_acls,
    device_client_id,
    device_role,
    reserved_device_id,
)
from egenmon.settings import MqttUrl

CONTROL = "$CONTROL/dynamic-security/v1"


class BrokerUnavailable(RuntimeError):
    pass


class DynsecError(RuntimeError):
    pass


class DynsecClient:
    """Sends dynamic-security commands as the platform account and waits for replies."""

    def __init__(self, url: MqttUrl, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._reply = threading.Event()
        self._response: dict = {}

    def __enter__(self) -> DynsecClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"egenmon-admin-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            c.tls_set()
        connected = threading.Event()
        result: list = []

        def on_connect(client, userdata, flags, reason_code, properties):
            result.append(reason_code)
            connected.set()

        def on_message(client, userdata, msg):
            self._response = json.loads(msg.payload)
            self._reply.set()

        c.on_connect = on_connect
        c.on_message = on_message
        try:
            c.connect(self.url.host, self.url.port, keepalive=30)
        except OSError as e:
            raise BrokerUnavailable(
                f"broker unreachable at {self.url.host}:{self.url.port}: {e}"
            ) from None
        c.loop_start()
        if not connected.wait(self.timeout) or result[0].is_failure:
            c.loop_stop()
            reason = result[0] if result else "timeout"
            raise BrokerUnavailable(f"broker refused the platform account: {reason}")
        sub = threading.Event()
        c.on_subscribe = lambda *a: sub.set()
        c.subscribe(f"{CONTROL}/response", qos=1)
        sub.wait(self.timeout)
        self._client = c

    def close(self) -> None:
        if self._client:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def run(self, *commands: dict, ok_errors: tuple[str, ...] = ()) -> list[dict]:
        """Send commands; raise DynsecError on an error not listed in ok_errors."""
        if not self._client:
            self.connect()
        assert self._client
        with self._lock:
            self._reply.clear()
            info = self._client.publish(CONTROL, json.dumps({"commands": list(commands)}), qos=1)
            info.wait_for_publish(self.timeout)
            if not self._reply.wait(self.timeout):
                raise BrokerUnavailable("no answer from the broker's dynamic-security plugin")
            responses = self._response.get("responses", [])
        for r in responses:
            err = r.get("error")
            if err and not any(ok in err for ok in ok_errors):
                raise DynsecError(f"{r.get('command')}: {err}")
        return responses

    def add_device(self, device_id: str, secret: str, prefix: str) -> None:
        """A client for the device, bound to its own client id (its device id)."""
        if reserved_device_id(device_id):
            raise DynsecError(
                f"device ids starting with {device_id[:7]!r} are reserved for the platform"
            )
        role = device_role(device_id)
        self.run(
            {"command": "createRole", "rolename": role, "acls": device_acls(prefix, device_id)},
            ok_errors=("already exists",),
        )
        self.run(
            {
                "command": "createClient",
                "username": device_id,
                "password": secret,
                "clientid": device_client_id(device_id),
                "roles": [{"rolename": role}],
            },
        )

    def disable_device(self, device_id: str) -> None:
        """Locks the device out and drops a connected session at once."""
        self.run({"command": "disableClient", "username": device_id}, ok_errors=("not found",))

    def delete_device(self, device_id: str) -> None:
        self.run({"command": "deleteClient", "username": device_id}, ok_errors=("not found",))
        self.run(
            {"command": "deleteRole", "rolename": device_role(device_id)}, ok_errors=("not found",)
        )

    def bind_client_ids(self, chunk: int = 100) -> int:
        """Bind every device client that is not yet bound to its own client id (devices
        added before client ids were bound); returns how many were bound. The plugin
        drops a connection that used another id, and it cannot come back with it."""
        listed = self.run({"command": "listClients", "verbose": True})
        clients = listed[0].get("data", {}).get("clients", [])
        todo = [
            c["username"]
            for c in clients
            if c.get("username")
            and c["username"] != PLATFORM_USER
            and c.get("clientid") != device_client_id(c["username"])
        ]
        for i in range(0, len(todo), chunk):
            self.run(
                *(
                    {"command": "setClientId", "username": u, "clientid": device_client_id(u)}
                    for u in todo[i : i + chunk]
                ),
                ok_errors=("not found",),
            )
        return len(todo)

    def list_clients(self) -> list[str]:
        r = self.run({"command": "listClients", "verbose": False})
        return list(r[0].get("data", {}).get("clients", []))
