"""Alert severities and their order: the one definition every wing uses (pure).

The store's SQL orders them the same way (`array_position(ARRAY['low','medium','high'],
...)`); a new severity goes here and there together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

__all__ = ["SEVERITIES", "SEVERITY_RANK", "Severity", "worse", "worst"]

Severity = Literal["low", "medium", "high"]
# From the least to the most severe.
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES, start=1)}


def worse(a: Severity | None, b: Severity | None) -> Severity | None:
    """The more severe of two severities; None (no finding) is below low."""
    if a is None:
        return b
    if b is None:
        return a
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def worst(severities: Iterable[Severity | None]) -> Severity | None:
    """The most severe of any number of severities, None when there are none."""
    result: Severity | None = None
    for s in severities:
        result = worse(result, s)
    return result
