"""The one place that reads the environment: every EGENMON_ variable, validated."""

from __future__ import annotations

from functools import cached_property
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev"}
# The one time zone (EGENMON_TIMEZONE, contract default): local days, "morning" and
# "evening", and FHIR dates without an offset. Code takes `Settings.tz`; this default is
# named nowhere else (tests/test_architecture.py checks).
DEFAULT_TIMEZONE = "Europe/Stockholm"


class SettingsError(Exception):
    """A bad configuration value; the message names the variable."""


class MqttUrl:
    """A parsed `mqtt://user:pass@host:port` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("names no host")
        self.url = url
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:  # never show the password
        return f"MqttUrl({self.host}:{self.port}, user={self.username!r})"


class Settings(BaseSettings):
    """egenmon's configuration, from EGENMON_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="EGENMON_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="libpq URL of PostgreSQL with TimescaleDB"
    )
    mqtt_url: str | None = Field(default=None, description="mqtt://user:pass@host:port")
    mqtt_topic_prefix: str = "egenmon/v1"
    # The consumer's MQTT client id (its persistent session); default: from the host name.
    mqtt_client_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    timezone: str = DEFAULT_TIMEZONE
    log_level: str = "INFO"
    # Signing key for access tokens (HS256) and paging cursors; refused if a placeholder
    # outside development.
    auth_secret: str | None = None
    # Production: also accept RS256/ES256 tokens from this issuer, verified with its keys,
    # whose `aud` names this audience (all three are needed; without them only egenmon's
    # own HS256 tokens are accepted).
    auth_issuer: str | None = None
    auth_jwks_file: str | None = None
    auth_audience: str | None = Field(default=None, min_length=1)
    token_ttl_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    # Lifetime of the access tokens egenmon's SMART token endpoint issues to apps and
    # backend services (short: they carry no refresh token).
    smart_token_ttl_seconds: int = Field(default=300, ge=60, le=3600)
    # The URL clients reach egenmon at (https://egenmon.region.example): the base of every
    # absolute link egenmon writes (FHIR Bundle links, fullUrl, Location). Unset: the
    # request's own address, which production accepts only for a loopback Host.
    public_url: str | None = None
    environment: str = "production"
    pool_min: int = Field(default=2, ge=1, le=100)
    pool_max: int = Field(default=10, ge=1, le=200)
    # Batch writer: flush when this many rows wait, or after this many milliseconds.
    batch_max_rows: int = Field(default=5000, ge=1, le=100_000)
    batch_max_delay_ms: float = Field(default=10.0, ge=0, le=1000)
    scheduler_interval_s: float = Field(default=60.0, gt=0, le=3600)
    retention_days: int = Field(default=3650, ge=1)
    webhook_secret: str | None = None
    # Sign-in through the region's OpenID provider (issue 14). Unset issuer: no OpenID
    # sign-in (local passwords only). The client authenticates with the secret, or with a
    # private-key JWT signed by the key in EGENMON_OIDC_PRIVATE_KEY_FILE (PEM, RS256/ES256).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_private_key_file: str | None = None
    oidc_scopes: str = "openid profile"
    # The ID token claims that carry the user's HSA-id and the care unit's HSA-id (staff)
    # and the personnummer (citizens).
    oidc_claim_hsa_id: str = "employeeHsaId"
    oidc_claim_care_unit: str = "healthCareUnitHsaId"
    oidc_claim_personnummer: str = "https://id.oidc.se/claim/personalIdentityNumber"
    # The assurance levels from lowest to highest, and the lowest accepted (a login whose
    # `acr` is below it, or not in the list, is refused).
    oidc_acr_levels: str = (
        "http://id.elegnamnden.se/loa/1.0/loa1 http://id.elegnamnden.se/loa/1.0/loa2"
        " http://id.elegnamnden.se/loa/1.0/loa3 http://id.elegnamnden.se/loa/1.0/loa4"
    )
    oidc_acr_required: str = "http://id.elegnamnden.se/loa/1.0/loa3"
    # false: no local password logins (everyone signs in through the provider).
    local_accounts: bool = True
    # The provider's keys for Bearer tokens (default: its discovery document's jwks_uri).
    auth_jwks_uri: str | None = None
    # Bulk $export: where the NDJSON files are written (directories 0700, files 0600),
    # how many jobs may run at once (one per client), how long finished files are kept.
    export_dir: str = Field(default=".egenmon/exports", min_length=1)
    export_max_jobs: int = Field(default=2, ge=1, le=32)
    export_keep_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # Threshold and NEWS2 judged as readings commit (off: the scan alone, as before).
    instant_rules: bool = True

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v is not None and not (
            v.startswith("postgresql://") or v.startswith("postgres://") or "=" in v
        ):
            raise ValueError("must be a libpq URL (postgresql://...) or key=value string")
        return v

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be a plain URL (no user, query or fragment)")
        return v.rstrip("/")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str | None) -> str | None:
        if v is not None:
            MqttUrl(v)
        return v

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "#+$"):
            raise ValueError("must be a topic path without wildcards or leading/trailing /")
        return v

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, v: str) -> str:
        level = v.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, v: str) -> str:
        if v not in ("production", "development", "test"):
            raise ValueError("must be production, development or test")
        return v

    @model_validator(mode="after")
    def _check_identity_provider(self) -> Settings:
        keys = self.auth_jwks_file or self.auth_jwks_uri or self.oidc_issuer
        if (self.auth_issuer or self.auth_jwks_file or self.auth_jwks_uri) and not (
            self.auth_issuer and keys and self.auth_audience
        ):
            raise ValueError(
                "EGENMON_AUTH_ISSUER, EGENMON_AUTH_JWKS_FILE (or EGENMON_AUTH_JWKS_URI, or "
                "the keys of EGENMON_OIDC_ISSUER) and EGENMON_AUTH_AUDIENCE go together "
                "(identity-provider tokens are checked against all three)"
            )
        return self

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
        if not self.oidc_issuer:
            return self
        parts = urlsplit(self.oidc_issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("EGENMON_OIDC_ISSUER: must be an https:// URL")
        if not self.oidc_client_id:
            raise ValueError("EGENMON_OIDC_CLIENT_ID: needed with EGENMON_OIDC_ISSUER")
        if not (self.oidc_client_secret or self.oidc_private_key_file):
            raise ValueError(
                "EGENMON_OIDC_CLIENT_SECRET or EGENMON_OIDC_PRIVATE_KEY_FILE: one is needed "
                "with EGENMON_OIDC_ISSUER (the client's credential at the token endpoint)"
            )
        if "openid" not in self.oidc_scopes.split():
            raise ValueError("EGENMON_OIDC_SCOPES: must include openid")
        if self.oidc_acr_required not in self.oidc_acr_levels.split():
            raise ValueError("EGENMON_OIDC_ACR_REQUIRED: must be one of EGENMON_OIDC_ACR_LEVELS")
        return self

    @property
    def oidc(self) -> bool:
        """Whether sign-in through an OpenID provider is configured."""
        return bool(self.oidc_issuer)

    @cached_property
    def mqtt(self) -> MqttUrl | None:
        return MqttUrl(self.mqtt_url) if self.mqtt_url else None

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def production(self) -> bool:
        """Production unless EGENMON_ENVIRONMENT says development (`egenmon dev`) or test."""
        return self.environment == "production"

    def check_secrets(self) -> None:
        """Refuse a missing or placeholder secret in production (development and test may
        run on a key of their own; `egenmon dev` makes a random one)."""
        if not self.production:
            return
        problems = []
        if _weak(self.auth_secret):
            problems.append(
                "EGENMON_AUTH_SECRET: set a random value of at least 32 characters "
                "(it signs access tokens)"
            )
        if self.webhook_secret is not None and _weak(self.webhook_secret):
            problems.append(
                "EGENMON_WEBHOOK_SECRET: set a random value of at least 32 characters, or "
                "leave it unset (it signs webhook calls)"
            )
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def signing_secret(self) -> str:
        """The token signing key; placeholders are refused outside development and test."""
        if self.production and _weak(self.auth_secret):
            self.check_secrets()
        return self.auth_secret or "egenmon-development-only-signing-key-000"

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("EGENMON_DATABASE_URL: not set (a libpq URL is needed)")
        return self.database_url


def _weak(secret: str | None) -> bool:
    return secret is None or secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32


def load_settings(*, secrets_required: bool = True, **overrides: object) -> Settings:
    """Read the environment; a bad value raises SettingsError naming the variable.

    In production a missing or placeholder secret is refused here, at start-up, not at
    the first token. `secrets_required=False` is for the commands that sign nothing
    (`egenmon dev`, `bench`, `broker config`: see egenmon/cli/common.py).
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule over several variables names them itself
                problems.append(msg)
                continue
            field = str(err["loc"][0])
            problems.append(f"EGENMON_{field.upper()}: {msg}")
        raise SettingsError("; ".join(problems)) from None
    if secrets_required:
        settings.check_secrets()
    return settings
