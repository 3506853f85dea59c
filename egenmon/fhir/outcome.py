"""OperationOutcome and the error every FHIR route raises to answer with one.

Issue codes are from http://hl7.org/fhir/issue-type (R4). Status conventions follow the
FHIR RESTful API page: 400 when a request or resource cannot be parsed or fails basic
FHIR validation, 422 when it is valid FHIR that egenmon cannot hold (business rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "FhirError",
    "bad_request",
    "conflict",
    "forbidden",
    "internal_error",
    "not_found",
    "operation_outcome",
    "precondition_failed",
    "unauthorized",
    "unprocessable",
]

SEVERITIES = frozenset({"fatal", "error", "warning", "information"})


def _expressions(expression: str | Sequence[str] | None) -> list[str] | None:
    if expression is None:
        return None
    if isinstance(expression, str):
        return [expression]
    return [str(e) for e in expression] or None


def operation_outcome(
    severity: str,
    code: str,
    diagnostics: str,
    expression: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown OperationOutcome severity {severity!r}")
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    exprs = _expressions(expression)
    if exprs:
        issue["expression"] = exprs
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirError(Exception):
    """An error a FHIR route answers with `status` and an OperationOutcome."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | Sequence[str] | None = None,
        severity: str = "error",
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = _expressions(expression)
        self.severity = severity

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.severity, self.code, self.diagnostics, self.expression)

    def __repr__(self) -> str:
        return f"FhirError({self.status}, {self.code!r}, {self.diagnostics!r})"


def bad_request(diagnostics: str, expression: str | Sequence[str] | None = None) -> FhirError:
    return FhirError(400, "invalid", diagnostics, expression)


def unauthorized(diagnostics: str = "authentication required") -> FhirError:
    return FhirError(401, "login", diagnostics)


def forbidden(diagnostics: str = "not allowed") -> FhirError:
    return FhirError(403, "forbidden", diagnostics)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, "not-found", diagnostics)


def conflict(diagnostics: str) -> FhirError:
    return FhirError(409, "conflict", diagnostics)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError(412, "conflict", diagnostics)


def unprocessable(diagnostics: str, expression: str | Sequence[str] | None = None) -> FhirError:
    return FhirError(422, "processing", diagnostics, expression)


def internal_error(diagnostics: str = "internal error") -> FhirError:
    return FhirError(500, "exception", diagnostics)
