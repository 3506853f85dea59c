"""Progress bars for long commands, on a terminal only.

tqdm: one small package without dependencies of its own, that draws on standard error and
switches itself off cleanly; rich would bring a whole rendering stack for one bar. A bar is
shown only when standard error is a terminal and the command was not asked for --json, so
pipes, logs, CI and `egenmon dev`'s children (which pass --json) get no control characters.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["bar", "tqdm", "wanted"]


def wanted(json_output: bool = False) -> bool:
    """Show a bar? Only on a terminal, never with --json."""
    return not json_output and sys.stderr.isatty()


def bar(
    total: int | None, desc: str, *, unit: str = "reading", enabled: bool | None = None, **kw: Any
) -> tqdm:
    """A bar of `total` units on standard error; a disabled bar (a no-op) when not wanted."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        leave=True,  # the finished bar stays: what was done, how fast
        file=kw.pop("file", sys.stderr),
        disable=not (wanted() if enabled is None else enabled),
        **kw,
    )
