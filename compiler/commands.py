"""Sub-commands beyond compile/verify: report, bench, demo (registered into the CLI parser)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
