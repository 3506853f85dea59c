"""Commands of this part (filled in by its issue)."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
