"""FHIR R4 routes under /fhir: thin edges over `reads` and `ingest`.

The routes are registered from `egenmon.fhir.capability.RESOURCES`, the same table the
CapabilityStatement is made from, so /fhir/metadata lists exactly what is routed. Every
route but /fhir/metadata authenticates; errors are OperationOutcomes (FhirError here,
AuthError by the app's handler).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from egenmon.auth import authenticate, bearer
from egenmon.deps import get_runtime
from egenmon.domain.principals import AuthError
from egenmon.fhir import groups, ingest, reads
from egenmon.fhir.capability import RESOURCES, capability_statement
from egenmon.fhir.http import not_modified, validator_headers, validators
from egenmon.fhir.outcome import FhirError, bad_request, not_found, operation_outcome
from egenmon.identity import smart
from egenmon.ingest.service import pipeline_of
from egenmon.ingest.writer import WriteError
from egenmon.limits import FHIR_BODY, BodyTooLarge
from egenmon.runtime import Runtime

__all__ = ["FHIR_JSON", "MAX_BODY", "public_base", "router"]

log = logging.getLogger("egenmon.fhir")

FHIR_JSON = "application/fhir+json"
MAX_BODY = FHIR_BODY
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")

router = APIRouter(tags=["fhir"])
Handler = Callable[[Request], Awaitable[Response]]


def fhir_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _outcome_response(exc: FhirError) -> Response:
    return fhir_response(exc.outcome(), exc.status)


def fhir_route(func: Handler) -> Handler:
    """Answer a FhirError (or an unexpected failure) with an OperationOutcome."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        try:
            _check_format(request)
            return await func(request)
        except FhirError as exc:
            return _outcome_response(exc)
        except AuthError:
            raise
        except BodyTooLarge as exc:  # counted while it streamed in (egenmon.limits)
            return _outcome_response(FhirError(413, "too-costly", exc.args[0]))
        except WriteError:
            return _outcome_response(
                FhirError(503, "transient", "the store is unavailable; try again")
            )
        except Exception as exc:  # noqa: BLE001  a FHIR OperationOutcome, never a stack
            # The type only: a message could hold values from the request.
            log.error("FHIR %s %s failed: %s", request.method, func.__name__, type(exc).__name__)
            return _outcome_response(FhirError(500, "exception", "internal error"))

    return wrapper


def _check_format(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.split(";")[0].strip() not in _FORMATS:
        raise FhirError(406, "not-supported", f"_format: only JSON is served, not {fmt!r}")
    accept = request.headers.get("accept", "")
    if accept and not any(
        part.split(";")[0].strip() in (*_JSON_TYPES, "*/*", "application/*")
        for part in accept.split(",")
    ):
        raise FhirError(406, "not-supported", "Accept: only application/fhir+json is served")


def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


def _base(request: Request) -> str:
    """The absolute FHIR base of links: EGENMON_PUBLIC_URL, never a client's Host header
    in production (there, without the setting, only a loopback Host is taken as is)."""
    settings = _runtime(request).settings
    if settings.public_url:
        return settings.public_url + "/fhir"
    if settings.environment == "production" and not _loopback(request.url.hostname or ""):
        raise FhirError(
            400,
            "not-supported",
            "this server's public URL is not configured (EGENMON_PUBLIC_URL); "
            "links cannot be made for the Host asked for",
        )
    return str(request.base_url).rstrip("/") + "/fhir"


def public_base(request: Request) -> str:
    """The absolute FHIR base URL (see `_base`), for the SMART routes."""
    return _base(request)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _prefer(request: Request) -> dict[str, str]:
    prefs = {}
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = value.strip().strip('"').lower()
    return prefs


async def _context(request: Request, resource: str) -> reads.Context:
    """The read context; paging cursors are signed for `resource`'s searches only, so a
    cursor taken to another resource's search is refused as not valid (a 400), not run."""
    principal = await authenticate(request)
    runtime = _runtime(request)
    settings = runtime.settings
    return reads.Context(
        pool=runtime.pool,
        principal=principal,
        base=_base(request),
        tz=settings.tz,
        cursor_key=hashlib.sha256(
            reads.cursor_key(settings.signing_secret) + b"\x00" + resource.encode()
        ).digest(),
        lenient=_prefer(request).get("handling") == "lenient",
    )


async def _body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise FhirError(413, "too-costly", f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise FhirError(413, "too-costly", f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
    return body


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _search_params(request: Request) -> list[tuple[str, str]]:
    """The search as (name, value) pairs: the query string, plus a POST _search form body."""
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        body = await _body(request)
        if body.strip():
            if _content_type(request) != "application/x-www-form-urlencoded":
                raise FhirError(
                    415,
                    "not-supported",
                    "a _search body must be application/x-www-form-urlencoded",
                )
            try:
                text = body.decode()
            except UnicodeDecodeError:
                raise bad_request("the _search body is not UTF-8") from None
            params += parse_qsl(text, keep_blank_values=True)
    return params


# --- handlers, by resource type and interaction ---------------------------------------


async def metadata(request: Request) -> Response:
    timezone = _runtime(request).settings.timezone
    return fhir_response(capability_statement(_base(request), _STARTED, timezone))


async def smart_configuration(request: Request) -> Response:
    """The SMART configuration (SMART App Launch 2.x), also served at the root."""
    root = _base(request).removesuffix("/fhir")
    return Response(
        orjson.dumps(smart.smart_configuration(root)),
        media_type="application/json",
        headers={"Cache-Control": "max-age=300"},
    )


# What each resource's read and search call; Flag and Task share the alert functions.
_READ: dict[str, Any] = {
    "Observation": reads.read_observation,
    "Patient": reads.read_patient,
    "Device": reads.read_device,
    "Flag": lambda ctx, ident: reads.read_alert(ctx, "Flag", ident),
    "Task": lambda ctx, ident: reads.read_alert(ctx, "Task", ident),
    "AuditEvent": reads.read_audit_event,
    "Group": groups.read_group,
}
_SEARCH: dict[str, Any] = {
    "Observation": reads.search_observations,
    "Patient": reads.search_patients,
    "Device": reads.search_devices,
    "Flag": lambda ctx, params: reads.search_alerts(ctx, "Flag", params),
    "Task": lambda ctx, params: reads.search_alerts(ctx, "Task", params),
    "AuditEvent": reads.search_audit_events,
    "Group": groups.search_groups,
}


_REFUSED = (403, 404)


def _reader(resource: str) -> Handler:
    async def read(request: Request) -> Response:
        ctx = await _context(request, resource)
        ident = request.path_params["id"]
        try:
            found = await _READ[resource](ctx, ident)
            etag, modified = validators(found)
            headers = validator_headers(etag, modified)
            if not_modified(request.headers, etag, modified):
                return Response(status_code=304, headers=headers)
            return fhir_response(found, headers=headers)
        except (AuthError, FhirError) as exc:
            if exc.status in _REFUSED:  # refused and unknown look alike; both are logged
                await reads.log_refused(
                    ctx,
                    "read",
                    resource,
                    exc.status,
                    _reason(exc),
                    ident=ident,
                    patients=_read_patient(resource, ident),
                )
            raise

    read.__name__ = f"read_{resource.lower()}"
    return read


def _searcher(resource: str) -> Handler:
    async def search(request: Request) -> Response:
        ctx = await _context(request, resource)
        params = await _search_params(request)
        try:
            return fhir_response(await _SEARCH[resource](ctx, params))
        except (AuthError, FhirError) as exc:
            if exc.status in _REFUSED:
                await reads.log_refused(
                    ctx,
                    "search",
                    resource,
                    exc.status,
                    _reason(exc),
                    params=params,
                    patients=_named(exc),
                )
            raise

    search.__name__ = f"search_{resource.lower()}"
    return search


def _read_patient(resource: str, ident: str) -> list:
    """The patient a refused Patient read asked about, for the access log (and so for
    the AuditEvents of that patient's log follow-up)."""
    if resource != "Patient":
        return []
    try:
        return [uuid.UUID(ident)] if len(ident) == 36 else []
    except ValueError:
        return []


def _reason(exc: AuthError | FhirError) -> str:
    return "forbidden" if exc.status == 403 else "not found or not visible"


def _named(exc: AuthError | FhirError) -> list:
    """The patient a refused search asked about, for the access log."""
    return [exc.patient_id] if isinstance(exc, reads.PatientRefused) else []


def _ingest_context(request: Request, principal: object) -> ingest.IngestContext:
    runtime = _runtime(request)
    pipeline = pipeline_of(runtime)
    if pipeline is None:
        raise FhirError(503, "transient", "FHIR ingest is not running in this process")
    return ingest.IngestContext(runtime.pool, pipeline, principal, _base(request))  # type: ignore[arg-type]


def _check_json(request: Request) -> None:
    if _content_type(request) not in _JSON_TYPES:
        raise FhirError(
            415, "not-supported", "the body must be application/fhir+json or application/json"
        )


def _creator(resource: str) -> Handler:
    async def create(request: Request) -> Response:
        principal = await authenticate(request)
        _check_json(request)
        ctx = _ingest_context(request, principal)
        body = await _body(request)
        status, resource_out, headers = await ingest.create_observation(
            ctx, body, request.headers.get("if-none-exist")
        )
        etag, modified = validators(resource_out)
        headers = {**headers, **validator_headers(etag, modified)}
        wanted = _prefer(request).get("return")
        if wanted == "minimal":
            return Response(status_code=status, headers=headers)
        if wanted == "operationoutcome":
            done = "created" if status == 201 else "already stored (If-None-Exist or a duplicate)"
            outcome = operation_outcome("information", "informational", f"{resource}: {done}")
            return fhir_response(outcome, status, headers)
        return fhir_response(resource_out, status, headers)

    create.__name__ = f"create_{resource.lower()}"
    return create


async def lastn(request: Request) -> Response:
    ctx = await _context(request, "Observation/$lastn")
    params = await _search_params(request)
    try:
        return fhir_response(await reads.lastn(ctx, params))
    except (AuthError, FhirError) as exc:
        if exc.status in _REFUSED:
            await reads.log_refused(
                ctx,
                "search",
                "Observation/$lastn",
                exc.status,
                _reason(exc),
                params=params,
                patients=_named(exc),
            )
        raise


async def system_bundle(request: Request) -> Response:
    token = bearer(request)
    if token is not None and "." not in token:
        # Not a JWT but a device secret: a PHD gateway posting its Bundle (egenmon.fhir.phd).
        return fhir_response(await _gateway_bundle(request, token))
    ctx = _ingest_context(request, await authenticate(request))
    _check_json(request)
    body = await _body(request)
    return fhir_response(await ingest.process_bundle(ctx, body))


async def _gateway_bundle(request: Request, secret: str) -> dict:
    runtime = _runtime(request)
    pipeline = pipeline_of(runtime)
    if pipeline is None:
        raise FhirError(503, "transient", "FHIR ingest is not running in this process")
    creds = await pipeline.credentials(secret)
    if creds is None or not creds.active:
        raise AuthError(401, "the device secret is not valid or the device is revoked")
    _check_json(request)
    body = await _body(request)
    try:
        ctx = await ingest.gateway_context(runtime.pool, pipeline, creds.device_id, _base(request))
    except AuthError as exc:  # bound to no patient now: kept, to replay once it is
        await pipeline.quarantine(
            source="phd", reason=exc.message, raw=body, device_id=creds.device_id
        )
        raise
    return await ingest.process_bundle(ctx, body)


async def unknown(request: Request) -> Response:
    """A resource path served with other methods is a 405 with Allow; anything else,
    and the base itself (no system-level search or history), a 404."""
    path = request.url.path
    allowed = _allowed_methods(path) if path.rstrip("/") != "/fhir" else []
    if allowed:
        error = FhirError(
            405,
            "not-supported",
            f"{request.method} is not supported on this path (allowed: {', '.join(allowed)})",
        )
        return fhir_response(error.outcome(), 405, {"Allow": ", ".join(allowed)})
    raise not_found(f"{request.method} {request.url.path}: no such FHIR interaction here")


def _allowed_methods(path: str) -> list[str]:
    methods: set[str] = set()
    for route in router.routes:
        if not isinstance(route, APIRoute) or route.path == "/fhir/{rest:path}":
            continue
        if route.path_regex.match(path):
            methods |= route.methods or set()
    return sorted(methods)


_OPERATIONS: dict[tuple[str, str], Handler] = {("Observation", "lastn"): lastn}
_FACTORIES: dict[str, Callable[[str], Handler]] = {
    "read": _reader,
    "search-type": _searcher,
    "create": _creator,
}


def _register() -> None:
    """Routes for exactly what `RESOURCES` lists (operations before reads: /$lastn)."""
    router.add_api_route("/fhir/metadata", fhir_route(metadata), methods=["GET"])
    router.add_api_route(
        "/fhir/.well-known/smart-configuration", fhir_route(smart_configuration), methods=["GET"]
    )
    for spec in RESOURCES:
        for op in spec.operations:
            handler = fhir_route(_OPERATIONS[(spec.type, op.name)])
            for method in ("GET", "POST"):  # one route each: one OpenAPI operation id each
                router.add_api_route(
                    f"/fhir/{spec.type}/${op.name}",
                    handler,
                    methods=[method],
                    operation_id=f"{op.name}_{spec.type.lower()}_{method.lower()}",
                )
        for interaction in spec.interactions:
            handler = fhir_route(_FACTORIES[interaction](spec.type))
            if interaction == "read":
                router.add_api_route(f"/fhir/{spec.type}/{{id}}", handler, methods=["GET"])
            elif interaction == "search-type":
                router.add_api_route(f"/fhir/{spec.type}", handler, methods=["GET"])
                router.add_api_route(f"/fhir/{spec.type}/_search", handler, methods=["POST"])
            else:
                router.add_api_route(f"/fhir/{spec.type}", handler, methods=["POST"])
    router.add_api_route("/fhir", fhir_route(system_bundle), methods=["POST"])
    router.add_api_route(
        "/fhir/", fhir_route(system_bundle), methods=["POST"], include_in_schema=False
    )
    # Anything else under /fhir is an OperationOutcome too, not the framework's JSON.
    router.add_api_route(
        "/fhir", fhir_route(unknown), methods=["GET", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )  # fmt: skip
    router.add_api_route(
        "/fhir/{rest:path}",
        fhir_route(unknown),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )


_register()
