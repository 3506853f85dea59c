"""The `egenmon` command (entry point `egenmon.cli:main`, and `python -m egenmon`): the
parser in `parser.py`, one module per topic, shared helpers in `common.py`.

`main` imports the parser when called, so that importing one command module (or
`common`) does not load every other command through this package."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run one `egenmon` command; returns the exit code."""
    from egenmon.cli.parser import main as run

    return run(argv)
