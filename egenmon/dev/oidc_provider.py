"""A local OpenID provider (npm `oidc-provider`, run by `tools/oidc/provider.mjs`) for
`egenmon dev` and the suite: a real provider with discovery, PKCE, signed ID tokens and
RP-initiated logout, holding demo accounts. Never used in production.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egenmon.dev.cluster import free_port

TOOLS = Path(__file__).resolve().parent.parent.parent / "tools" / "oidc"
LAUNCHER = TOOLS / "provider.mjs"
LOA = "http://id.elegnamnden.se/loa/1.0/loa"
HSA_CLAIM = "employeeHsaId"
UNIT_CLAIM = "healthCareUnitHsaId"
PNR_CLAIM = "https://id.oidc.se/claim/personalIdentityNumber"
CLIENT_ID = "egenmon"
# The paths egenmon registers at the provider (any loopback port: a native client, RFC 8252).
REDIRECT_PATH = "/login/callback"
POST_LOGOUT_PATHS = ("/login?bye=1", "/app/login?bye=1")


class ProviderError(RuntimeError):
    pass


def installed() -> bool:
    return shutil.which("node") is not None and (TOOLS / "node_modules" / "oidc-provider").is_dir()


def loopback_client(client_id: str, **metadata: Any) -> dict[str, Any]:
    """Client metadata like egenmon's own (native, loopback redirects on any port)."""
    return {
        "client_id": client_id,
        "application_type": "native",
        "redirect_uris": [f"http://127.0.0.1{REDIRECT_PATH}"],
        "post_logout_redirect_uris": [f"http://127.0.0.1{p}" for p in POST_LOGOUT_PATHS],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        **metadata,
    }


def account(
    password: str,
    *,
    acr: str = LOA + "3",
    hsa_id: str | None = None,
    care_unit_hsa_id: str | None = None,
    personnummer: str | None = None,
    name: str | None = None,
    tamper: str | None = None,
) -> dict[str, Any]:
    """An account of the provider: the claims its sign-ins carry at assurance level acr."""
    claims: dict[str, Any] = {}
    if name:
        claims["name"] = name
    if hsa_id:
        claims[HSA_CLAIM] = hsa_id
    if care_unit_hsa_id:
        claims[UNIT_CLAIM] = care_unit_hsa_id
    if personnummer:
        claims[PNR_CLAIM] = personnummer
    out: dict[str, Any] = {"password": password, "acr": acr, "claims": claims}
    if tamper:
        out["tamper"] = tamper
    return out


@dataclass
class LocalProvider:
    """The provider process on a free loopback port; `start()` returns once it answers."""

    workdir: Path
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # More clients (oidc-provider client metadata), e.g. one with private_key_jwt.
    extra_clients: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings_env(self) -> dict[str, str]:
        """The EGENMON_ variables that make egenmon its relying party."""
        return {
            "EGENMON_OIDC_ISSUER": self.issuer,
            "EGENMON_OIDC_CLIENT_ID": CLIENT_ID,
            "EGENMON_OIDC_CLIENT_SECRET": self.client_secret,
            "EGENMON_OIDC_SCOPES": "openid profile hsa personnummer",
        }

    def config(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "port": self.port,
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": self.client_secret,
                    "application_type": "native",
                    "redirect_uris": [f"http://127.0.0.1{REDIRECT_PATH}"],
                    "post_logout_redirect_uris": [
                        f"http://127.0.0.1{p}" for p in POST_LOGOUT_PATHS
                    ],
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                },
                *self.extra_clients,
            ],
            "acr_values": [LOA + str(n) for n in (1, 2, 3, 4)],
            "claims": {"hsa": [HSA_CLAIM, UNIT_CLAIM], "personnummer": [PNR_CLAIM]},
            "accounts": self.accounts,
        }

    def start(self, timeout: float = 30.0) -> None:
        if not installed():
            raise ProviderError(
                "the local OpenID provider is not installed: run scripts/install.sh "
                "(needs node and npm)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # its configuration holds the demo passwords
        self.port = self.port or free_port()
        path = self.workdir / "oidc-provider.json"
        path.write_text(json.dumps(self.config()))
        os.chmod(path, 0o600)
        log = open(self.workdir / "oidc-provider.log", "wb")
        self.proc = subprocess.Popen(
            ["node", str(LAUNCHER), str(path)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=TOOLS,
        )
        log.close()
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("listening"):
            self.stop()
            text = (self.workdir / "oidc-provider.log").read_text(errors="replace")[-2000:]
            raise ProviderError(f"the OpenID provider did not start: {text}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


# --- `egenmon dev`: the provider with demo accounts ---------------------------------------

DEMO_STAFF_HSA = "SE2321000016-D001"
DEMO_LOGINS_FILE = "oidc-demo-login.json"


def demo_provider(
    state: Path, *, unit_hsa: str, patient_pnr: str, clinician_name: str
) -> LocalProvider:
    """The provider of `egenmon dev`: the demo clinician (HSA-id DEMO_STAFF_HSA at the demo
    care unit), the same clinician at a too-low assurance level, and the demo patient
    Tolvan; one random password, made once and kept (mode 0600) in `state`."""
    path = state / DEMO_LOGINS_FILE
    if path.exists():
        password = json.loads(path.read_text())["password"]
    else:
        password = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"password": password}, f)
    staff = {"hsa_id": DEMO_STAFF_HSA, "care_unit_hsa_id": unit_hsa, "name": clinician_name}
    return LocalProvider(
        state / "oidc",
        accounts={
            "sjukskoterska": account(password, **staff),
            "sjukskoterska-loa2": account(password, acr=LOA + "2", **staff),
            "tolvan": account(password, personnummer=patient_pnr, name="Tolvan Tolvansson"),
        },
    )


def demo_lines(provider: LocalProvider, port: int) -> list[str]:
    """What `egenmon dev` prints about the provider: where, and the demo logins."""
    password = next(iter(provider.accounts.values()))["password"]
    return [
        f"OpenID provider (local, oidc-provider): {provider.issuer}",
        f"  clinician: http://127.0.0.1:{port}/login -> 'Logga in med SITHS eID' -> "
        f"sjukskoterska / {password} (sjukskoterska-loa2: refused, assurance level too low)",
        f"  patient: http://127.0.0.1:{port}/app/login -> tolvan / {password}",
    ]
