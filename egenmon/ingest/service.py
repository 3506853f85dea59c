"""The ingest pipeline service (filled in by the HTTP-ingest issue)."""


def create_pipeline(runtime):  # noqa: ANN001, ANN201
    return None
