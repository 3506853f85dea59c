"""Bulk Data `$export` over HTTP (HL7 FHIR Bulk Data Access IG v2), a thin edge.

- Kick-off: `GET /fhir/$export`, `/fhir/Patient/$export`, `/fhir/Group/{id}/$export`
  with `Prefer: respond-async` → 202, `Content-Location: {base}/$export-status/{job}`.
- Status: `GET {base}/$export-status/{job}` → 202 with `X-Progress` and `Retry-After`
  while it runs; 200 with the manifest when done; 500 with an OperationOutcome when it
  failed. `DELETE` the same URL cancels a running job or removes a finished one (202).
- Files: `GET {base}/$export-file/{job}/{Type}.ndjson`, `application/fhir+ndjson`,
  behind the same token (`requiresAccessToken: true`).

Only the client (the token's subject and role) that kicked a job off may poll, fetch or
delete it; anyone else gets 404, as for a job that does not exist.

Research extracts (admin only): `POST /api/v1/research-extracts` with `{"care_unit",
"from", "to", "dates", "format"}` writes one (egenmon.export.research) and answers 201
with its manifest and file URLs, `GET /api/v1/research-extracts/{id}/{name}`; the files
expire like export files.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from egenmon.auth import authenticate
from egenmon.deps import PrincipalDep, get_runtime
from egenmon.domain.principals import AuthError, Principal, roles_allowed
from egenmon.export.bulk import NDJSON, allowed_types, manifest, parse_export
from egenmon.export.jobs import ExportService, export_dir, job_dir
from egenmon.export.research import write_extract
from egenmon.fhir.api import _base, _prefer, fhir_response, fhir_route
from egenmon.fhir.outcome import FhirError, not_found, operation_outcome
from egenmon.store import exports
from egenmon.store.access_log import log_access

__all__ = ["router"]

router = APIRouter(tags=["bulk export"])
Handler = Callable[[Request], Awaitable[Response]]

_RETRY_AFTER_S = 2
_BUSY_RETRY_S = 60


def _service(request: Request) -> ExportService:
    service = get_runtime(request).exports
    if not isinstance(service, ExportService):
        raise FhirError(503, "transient", "bulk export does not run in this process")
    return service


def _unit_filter(principal: Principal) -> uuid.UUID | None:
    """The care unit a principal's export is limited to (None: every patient)."""
    restrict = principal.patient_filter
    if restrict is None:
        return None
    kind, ident = restrict
    if kind == "care_unit":
        return ident
    raise FhirError(403, "forbidden", "bulk export is for systems and care staff, not patients")


async def _kickoff(request: Request, level: str, group: str | None = None) -> Response:
    principal = await authenticate(request)
    runtime = get_runtime(request)
    service = _service(request)
    prefer = _prefer(request)
    if "respond-async" not in prefer:
        raise FhirError(400, "invalid", "$export needs the header Prefer: respond-async")
    unit = _unit_filter(principal)
    group_id: uuid.UUID | None = None
    if group is not None:
        group_id = _group_id(group)
        visible = group_id is not None and (unit is None or unit == group_id)
        row = None
        if visible:
            async with runtime.pool.connection() as conn:
                row = await exports.read_group(conn, group_id)  # type: ignore[arg-type]
        if row is None:
            await log_access(
                runtime.pool,
                principal,
                "export-refused",
                "Group/$export",
                (),
                {"status": 404, "group": str(group_id) if group_id else "(other)"},
            )
            raise not_found(f"Group/{group[:64]} is not known")
        unit = group_id
    req = parse_export(
        list(request.query_params.multi_items()),
        tz=runtime.settings.tz,
        lenient=prefer.get("handling") == "lenient",
    )
    types = allowed_types(principal, req.types)
    if not types:
        raise FhirError(403, "forbidden", "the token's scopes allow no resource type in bulk")
    base = _base(request)
    path = request.url.path.removeprefix("/fhir")
    query = request.url.query
    job = {
        "client": principal.subject,
        "role": principal.role,
        "care_unit_id": principal.care_unit_id,
        "level": level,
        "group_id": group_id,
        "unit_filter": unit,
        "types": list(types),
        "since": req.since,
        "type_filters": req.type_filters,
        "codes": sorted(req.codes) if req.codes is not None else None,
        "request": base + path + (f"?{query}" if query else ""),
    }
    async with runtime.pool.connection() as conn:
        created = await exports.create_job(conn, job, runtime.settings.export_max_jobs)
    if created == "client":
        raise FhirError(
            429,
            "throttled",
            "this client has an export in progress; poll it, or DELETE it, before another",
        )
    if created == "busy":
        error = FhirError(429, "throttled", "the server runs as many exports as it may; retry")
        return fhir_response(error.outcome(), 429, {"Retry-After": str(_BUSY_RETRY_S)})
    assert isinstance(created, uuid.UUID)
    await log_access(
        runtime.pool,
        principal,
        "export-kickoff",
        f"{level}/$export",
        (),
        {"job": str(created), "types": list(types), "group": str(group_id) if group_id else None},
    )
    service.submit(created)
    status_url = f"{base}/$export-status/{created}"
    body = operation_outcome("information", "informational", f"export accepted: {status_url}")
    return fhir_response(body, 202, {"Content-Location": status_url})


def _group_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if len(text) == 36 else None
    except ValueError:
        return None


async def kickoff_system(request: Request) -> Response:
    return await _kickoff(request, "system")


async def kickoff_patient(request: Request) -> Response:
    return await _kickoff(request, "patient")


async def kickoff_group(request: Request) -> Response:
    return await _kickoff(request, "group", request.path_params["id"])


async def _own_job(request: Request) -> tuple[Principal, dict[str, Any]]:
    """The job in the path, if the caller kicked it off and it is not cancelled."""
    principal = await authenticate(request)
    job_id = _group_id(request.path_params["job"])
    job = None
    if job_id is not None:
        async with get_runtime(request).pool.connection() as conn:
            job = await exports.get_job(conn, job_id)
    if (
        job is None
        or job["client"] != principal.subject
        or job["role"] != principal.role
        or job["status"] == "cancelled"
    ):
        raise not_found("no such export job for this client")
    return principal, job


async def status(request: Request) -> Response:
    _, job = await _own_job(request)
    state = job["status"]
    if state in ("accepted", "running"):
        progress = job["progress"] or ("queued" if state == "accepted" else "started")
        body = operation_outcome("information", "informational", f"in progress: {progress}")
        return fhir_response(
            body, 202, {"X-Progress": progress[:200], "Retry-After": str(_RETRY_AFTER_S)}
        )
    if state == "failed":
        raise FhirError(500, "exception", job["error"] or "the export failed")
    files = f"{_base(request)}/$export-file/{job['id']}"
    headers = {"Expires": format_datetime(job["expires_at"].astimezone(UTC), usegmt=True)}
    return Response(
        orjson.dumps(manifest(job, files)), 200, media_type="application/json", headers=headers
    )


async def delete(request: Request) -> Response:
    principal, job = await _own_job(request)
    runtime = get_runtime(request)
    async with runtime.pool.connection() as conn:
        await exports.cancel_job(conn, job["id"])
    if job["status"] not in exports.ACTIVE:  # a running job's thread removes its own
        folder = job_dir(export_dir(runtime.settings), job["id"])
        await asyncio.to_thread(shutil.rmtree, folder, True)
    await log_access(
        runtime.pool, principal, "export-delete", "$export", (), {"job": str(job["id"])}
    )
    return Response(status_code=202)


def file_route(func: Handler) -> Handler:
    """OperationOutcomes for errors, without the FHIR routes' Accept check (a client
    asks for application/fhir+ndjson here)."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        try:
            return await func(request)
        except FhirError as exc:
            return fhir_response(exc.outcome(), exc.status)
        except AuthError:
            raise

    return wrapper


async def download(request: Request) -> Response:
    principal, job = await _own_job(request)
    name = request.path_params["name"]
    if job["status"] != "completed" or name not in {f["name"] for f in job["output"]}:
        raise not_found(f"no file {name[:64]!r} in this export")
    runtime = get_runtime(request)
    path = job_dir(export_dir(runtime.settings), job["id"]) / name
    if not path.is_file():
        raise FhirError(410, "expired", "the file has been removed; kick the export off again")
    await log_access(
        runtime.pool,
        principal,
        "export-download",
        "$export",
        (),
        {"job": str(job["id"]), "file": name},
    )
    return FileResponse(path, media_type=NDJSON)


# Registered before the FHIR router's catch-all (egenmon.app includes this router first).
router.add_api_route("/fhir/$export", fhir_route(kickoff_system), methods=["GET"])
router.add_api_route("/fhir/Patient/$export", fhir_route(kickoff_patient), methods=["GET"])
router.add_api_route("/fhir/Group/{id}/$export", fhir_route(kickoff_group), methods=["GET"])
router.add_api_route("/fhir/$export-status/{job}", fhir_route(status), methods=["GET"])
router.add_api_route("/fhir/$export-status/{job}", fhir_route(delete), methods=["DELETE"])
router.add_api_route("/fhir/$export-file/{job}/{name}", file_route(download), methods=["GET"])


# --- research extracts (admin) ----------------------------------------------------------


class ResearchIn(BaseModel):
    """A research extract: the care unit (id or HSA-id), the period, how dates are
    treated and the file format."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    care_unit: str = Field(min_length=1, max_length=100)
    low: AwareDatetime = Field(alias="from")
    high: AwareDatetime = Field(alias="to")
    dates: Literal["shift", "truncate-day", "keep"] = "shift"
    format: Literal["ndjson", "parquet"] = "ndjson"

    @field_validator("low", "high")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        if not 1900 <= value.year <= 9000:  # shifts and UTC conversion stay in range
            raise ValueError("must be a time between the years 1900 and 9000")
        return value


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def create_research_extract(
    request: Request, body: ResearchIn, principal: PrincipalDep
) -> Any:
    """Write a pseudonymised extract (see egenmon.export.research); its files are
    fetched from the URLs in the answer and expire like bulk export files."""
    roles_allowed(principal, ("admin",))
    runtime = get_runtime(request)
    job_id = uuid.uuid4()
    folder = job_dir(export_dir(runtime.settings), job_id)
    try:
        manifest = await asyncio.to_thread(
            write_extract,
            runtime.settings.require_database(),
            body.care_unit,
            body.low,
            body.high,
            folder,
            dates=body.dates,
            fmt=body.format,
        )
    except ValueError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _json_error(400, str(exc))
    names = [*(f["name"] for f in manifest["files"]), "manifest.json"]
    output = [{"type": "research", "name": n, "count": 0} for n in names]
    async with runtime.pool.connection() as conn:
        await exports.record_research(
            conn,
            job_id,
            client=principal.subject,
            role=principal.role,
            unit=None,
            output=output,
            request=str(request.url.path),
            keep_hours=runtime.settings.export_keep_hours,
        )
    await log_access(
        runtime.pool,
        principal,
        "research-extract",
        "research",
        (),
        {"job": str(job_id), "care_unit": body.care_unit, "patients": manifest["patients"]},
    )
    base = f"/api/v1/research-extracts/{job_id}"
    return JSONResponse(
        {"id": str(job_id), "files": [f"{base}/{n}" for n in names], "manifest": manifest},
        status_code=201,
    )


async def research_file(request: Request, job: str, name: str, principal: PrincipalDep) -> Any:
    roles_allowed(principal, ("admin",))
    runtime = get_runtime(request)
    job_id = _group_id(job)
    row = None
    if job_id is not None:
        async with runtime.pool.connection() as conn:
            row = await exports.get_job(conn, job_id)
    if (
        row is None
        or row["level"] != "research"
        or row["client"] != principal.subject
        or name not in {f["name"] for f in row["output"]}
    ):
        return _json_error(404, "no such research extract file for this client")
    path = job_dir(export_dir(runtime.settings), row["id"]) / name
    if not path.is_file():
        return _json_error(410, "the file has been removed")
    media = "application/json" if name.endswith(".json") else "application/octet-stream"
    if name.endswith(".ndjson"):
        media = "application/x-ndjson"
    return FileResponse(path, media_type=media)


router.add_api_route(
    "/api/v1/research-extracts", create_research_extract, methods=["POST"], status_code=201
)
router.add_api_route("/api/v1/research-extracts/{job}/{name}", research_file, methods=["GET"])
