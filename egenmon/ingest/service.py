"""The ingest pipeline as a service of the process (see egenmon.app SERVICES)."""

from __future__ import annotations

from egenmon.ingest.pipeline import Pipeline
from egenmon.runtime import Runtime


def create_pipeline(runtime: Runtime) -> Pipeline:
    """The Pipeline service, "pipeline": batch writer, device caches, device health."""
    return Pipeline(runtime.settings, runtime.pool)
