"""FHIR JSON's primitive types, checked strictly before fhir.resources sees a resource.

fhir.resources (on pydantic) coerces: ``"value": "72"`` becomes the decimal 72,
``"issued": 12345`` a time, ``"valueBoolean": "true"`` true, ``"valueInteger": 1.5`` or
``true`` an integer. FHIR's JSON format (http://hl7.org/fhir/R4/json.html) does not:
a boolean is JSON true or false, integer, positiveInt and unsignedInt are JSON integers,
a decimal is a JSON number, and every other primitive is a JSON string; null stands only
in the arrays of a repeating primitive's ``_element``, and an object or array is never
empty. `primitive_errors` walks the parsed JSON along the fhir.resources R4B model of the
resource and returns each place where that is not so, as a FHIRPath-like location and a
reason; the model's own validation (formats, cardinality, unknown elements) comes after.

Pure: plain JSON in, (location, reason) pairs out; the models are read, never built.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

__all__ = ["primitive_errors"]

_INTEGERS = frozenset({"Integer", "PositiveInt", "UnsignedInt", "Integer64"})
_NOT_FHIR = frozenset({"fhir_comments"})  # accepted by fhir.resources, not by FHIR
_MAX_DEPTH = 40


class _Kind(typing.NamedTuple):
    """What one element holds: a primitive (`primitive` its FHIR type name) or a complex
    type (`model`, the fhir.resources class; None for any resource), repeating or not."""

    primitive: str | None
    model: Any
    many: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The element type of an annotation and whether it repeats (Optional, List unwrapped)."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006  typing's List as the models use it
            many = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, many


def _kind(annotation: Any) -> _Kind | None:
    inner, many = _unwrap(annotation)
    if inner is bool:
        return _Kind("Boolean", None, many)
    metadata = getattr(inner, "__metadata__", None)
    if metadata:  # Annotated[str, Code()], Annotated[Decimal, Decimal()], ...
        return _Kind(type(metadata[0]).__name__, None, many)
    name = getattr(inner, "__name__", "")
    if name.endswith("Type") and name != "Type":
        if name == "ResourceType":
            return _Kind(None, None, many)
        try:
            return _Kind(None, get_fhir_model_class(name[: -len("Type")]), many)
        except (KeyError, ValueError):
            return None
    return None


@functools.cache
def _elements(model: Any) -> dict[str, _Kind]:
    """The JSON names of a model's elements and what each holds (`_x` names excluded)."""
    out: dict[str, _Kind] = {}
    for name, field in model.model_fields.items():
        if name.endswith("__ext") or name in _NOT_FHIR:
            continue
        kind = _kind(field.annotation)
        if kind is not None:
            out[field.alias or name] = kind
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _primitive(kind: str, value: Any) -> str | None:
    """Why `value` is not the JSON form of FHIR primitive `kind`, or None when it is."""
    if kind == "Boolean":
        ok, want = isinstance(value, bool), "JSON true or false"
    elif kind in _INTEGERS:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a JSON integer"
    elif kind == "Decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        want = "a JSON number"
    else:
        ok, want = isinstance(value, str), "a JSON string"
    if ok:
        return None
    article = "an" if kind[0] in "AEIOU" else "a"
    return f"{article} {kind[0].lower() + kind[1:]} must be {want}, not {_json_type(value)}"


def _resource_model(value: Any) -> Any:
    kind = value.get("resourceType") if isinstance(value, Mapping) else None
    if not isinstance(kind, str):
        return None
    try:
        return get_fhir_model_class(kind)
    except (KeyError, ValueError):
        return None


def _walk(model: Any, value: Any, path: str, depth: int) -> Iterator[tuple[str, str]]:
    if not isinstance(value, Mapping):
        yield path, f"must be a JSON object, not {_json_type(value)}"
        return
    if not value:
        yield path, "an empty object is not allowed"
        return
    if depth > _MAX_DEPTH:
        yield path, f"nested deeper than {_MAX_DEPTH} levels"
        return
    elements = _elements(model)
    for key, item in value.items():
        if key.startswith("_") and key[1:] in elements:
            yield from _primitive_extension(key, item, elements[key[1:]], f"{path}.{key}", depth)
            continue
        kind = elements.get(key)
        if kind is None:
            continue  # unknown elements are the model's to refuse, with their names
        where = f"{path}.{key}"
        if item is None:
            yield where, "null is not allowed (leave the element out)"
        elif kind.many:
            if not isinstance(item, list):
                yield where, f"must be a JSON array, not {_json_type(item)}"
            elif not item:
                yield where, "an empty array is not allowed (leave the element out)"
            else:
                for i, member in enumerate(item):
                    yield from _one(kind, member, f"{where}[{i}]", depth)
        else:
            if isinstance(item, list):
                yield where, "must not be an array (the element does not repeat)"
            else:
                yield from _one(kind, item, where, depth)


def _one(kind: _Kind, value: Any, where: str, depth: int) -> Iterator[tuple[str, str]]:
    if value is None:
        yield where, "null is not allowed"
    elif kind.primitive is not None:
        reason = _primitive(kind.primitive, value)
        if reason is not None:
            yield where, reason
        elif value == "":
            yield where, "an empty string is not allowed (leave the element out)"
    elif kind.model is None:  # a contained resource: its own resourceType says its model
        model = _resource_model(value)
        if model is None:
            yield where, "a resource with a known resourceType is needed"
        else:
            yield from _walk(model, value, where, depth + 1)
    else:
        yield from _walk(kind.model, value, where, depth + 1)


def _primitive_extension(
    key: str, value: Any, kind: _Kind, where: str, depth: int
) -> Iterator[tuple[str, str]]:
    """`_x`: an Element (id, extension) beside primitive `x`; for a repeating `x`, an
    array of Elements or nulls."""
    element = get_fhir_model_class("Element")
    if kind.primitive is None:
        yield where, f"{key} is only for primitive elements"
    elif kind.many:
        if not isinstance(value, list) or not value:
            yield where, "must be a non-empty JSON array (of objects or nulls)"
            return
        for i, member in enumerate(value):
            if member is not None:
                yield from _walk(element, member, f"{where}[{i}]", depth + 1)
    elif value is None:
        yield where, "null is not allowed"
    else:
        yield from _walk(element, value, where, depth + 1)


def primitive_errors(resource: Mapping[str, Any], limit: int = 20) -> list[tuple[str, str]]:
    """Where `resource` (parsed FHIR JSON with a resourceType) breaks FHIR JSON's types:
    up to `limit` (location, reason) pairs, locations like ``Observation.note[0].text``."""
    model = _resource_model(resource)
    if model is None:
        return [("resourceType", "a known FHIR resource type is needed")]
    out: list[tuple[str, str]] = []
    for error in _walk(model, resource, str(resource["resourceType"]), 0):
        out.append(error)
        if len(out) >= limit:
            break
    return out
