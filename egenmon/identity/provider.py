"""An OpenID provider as egenmon sees it: its discovery document and its signing keys.

The discovery document (`{issuer}/.well-known/openid-configuration`) is fetched once and
kept for `METADATA_TTL`; its `issuer` must be the configured issuer exactly (OpenID
Connect Discovery 1.0, 4.3). The keys (JWKS) are cached and fetched again when a token
names a `kid` the cache does not hold, at most once per `REFRESH_AT_MOST_EVERY`, so a
stream of tokens with made-up key ids cannot turn egenmon into a flood against the
provider. Every fetch has a timeout and a size limit: a slow or hostile provider gives a
clear error, never a stall.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import jwt

from egenmon.settings import Settings

log = logging.getLogger("egenmon.identity")

METADATA_TTL = 3600.0
KEYS_TTL = 3600.0
REFRESH_AT_MOST_EVERY = 30.0
TIMEOUT = httpx.Timeout(5.0)
MAX_DOCUMENT = 512 * 1024
# Algorithms accepted from a provider: asymmetric only (a shared-secret HS256 token from
# "the provider" would be one anyone holding the client secret could forge).
ALGORITHMS = ("RS256", "PS256", "ES256")


class ProviderError(RuntimeError):
    """The provider could not be reached or answered something that is not OpenID."""


class UnknownKey(LookupError):
    """A token names a key the provider does not publish (after a refresh)."""


async def fetch_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A JSON object from `url`, or ProviderError saying what went wrong."""
    try:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as r:
            if r.status_code != 200:
                raise ProviderError(f"{url} answered {r.status_code}")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise ProviderError(f"{url} sent more than {MAX_DOCUMENT} bytes")
    except httpx.HTTPError as e:
        raise ProviderError(f"{url} could not be fetched: {type(e).__name__}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProviderError(f"{url} sent no JSON") from None
    if not isinstance(doc, dict):
        raise ProviderError(f"{url} sent no JSON object")
    return doc


def check_metadata(issuer: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The discovery document if it is one for `issuer`; ProviderError naming the gap."""
    if doc.get("issuer") != issuer:
        raise ProviderError(
            f"the discovery document names issuer {doc.get('issuer')!r}, not {issuer!r}"
        )
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(name)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise ProviderError(f"the discovery document has no {name}")
    return doc


class Provider:
    """Discovery and keys of one provider, shared by the sign-in flow and the Bearer
    token check (`egenmon.runtime.TokenKeys`). `jwks_uri` overrides the discovered one."""

    name = "identity-provider"

    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        client: httpx.AsyncClient | None = None,
        refresh_at_most_every: float = REFRESH_AT_MOST_EVERY,
    ) -> None:
        self.issuer = issuer  # exactly as the tokens' iss must name it
        self._jwks_uri = jwks_uri
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        self.refresh_at_most_every = refresh_at_most_every
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0
        self._last_refresh = -1e9
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing is fetched at start: a provider down at boot must not stop egenmon
        (passwords and egenmon's own tokens still work); the first sign-in fetches."""

    async def stop(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = check_metadata(self.issuer, await fetch_json(self.client, url))
            self._metadata, self._metadata_at = doc, time.monotonic()
        return self._metadata

    async def jwks_uri(self) -> str:
        if self._jwks_uri:
            return self._jwks_uri
        return str((await self.metadata())["jwks_uri"])

    async def _refresh(self) -> None:
        doc = await fetch_json(self.client, await self.jwks_uri())
        keys: dict[str, jwt.PyJWK] = {}
        for entry in doc.get("keys") or []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError:
                continue  # a key type this library cannot use: skipped, not fatal
            keys[str(entry.get("kid", ""))] = key
        self._keys, self._keys_at = keys, time.monotonic()
        log.info("provider keys fetched (%d)", len(keys))

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The signing key named `kid` (the only key when the token names none)."""
        async with self._lock:
            now = time.monotonic()
            if self._keys_at == 0.0 or now - self._keys_at > KEYS_TTL:
                await self._refresh()  # the first fetch, or the cache has aged
            elif not self._find(kid) and now - self._last_refresh >= self.refresh_at_most_every:
                # An unknown kid: the provider may have rotated its keys. Fetched again at
                # most once per refresh_at_most_every, whatever kids tokens make up.
                self._last_refresh = now
                await self._refresh()
            key = self._find(kid)
        if key is None:
            raise UnknownKey(f"the provider publishes no key {kid!r}")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


def identity_services(settings: Settings) -> tuple[Provider | None, Provider | None]:
    """The sign-in provider (EGENMON_OIDC_ISSUER) and the keys of Bearer tokens from the
    region (EGENMON_AUTH_ISSUER with EGENMON_AUTH_JWKS_URI, or the sign-in provider's
    discovered keys when both issuers are the same); one object when they are one."""
    signin = Provider(settings.oidc_issuer) if settings.oidc_issuer else None
    keys: Provider | None = None
    if settings.auth_issuer and settings.auth_audience and not settings.auth_jwks_file:
        if settings.auth_jwks_uri:
            keys = Provider(settings.auth_issuer, jwks_uri=settings.auth_jwks_uri)
        elif signin is not None and settings.auth_issuer == signin.issuer:
            keys = signin
        else:
            keys = Provider(settings.auth_issuer)
    return signin, keys


def provider_of(service: object) -> Provider | None:
    """`Runtime.identity` narrowed to the provider (None when no sign-in is configured)."""
    return service if isinstance(service, Provider) else None
