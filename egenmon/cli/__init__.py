"""The `egenmon` command (entry point `egenmon.cli:main`): the parser in `main.py`, one
module per topic, shared helpers in `common.py`."""

from egenmon.cli.main import main

__all__ = ["main"]
