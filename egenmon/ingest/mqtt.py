"""The MQTT consumer (filled in by the MQTT-ingest issue)."""


def create_consumer(runtime):  # noqa: ANN001, ANN201
    return None
