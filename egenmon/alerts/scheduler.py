"""The rule scheduler (filled in by the alerts issue)."""


def create_scheduler(runtime):  # noqa: ANN001, ANN201
    return None
