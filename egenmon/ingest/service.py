"""The ingest pipeline as a service of the process (built and started by egenmon.app)."""

from __future__ import annotations

from egenmon.ingest.pipeline import Pipeline
from egenmon.runtime import Runtime


def pipeline_of(runtime: Runtime) -> Pipeline | None:
    """The process's Pipeline, None before it starts (the Runtime types it as a Service)."""
    pipeline = runtime.pipeline
    return pipeline if isinstance(pipeline, Pipeline) else None
