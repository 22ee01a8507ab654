"""The ``dtrain`` command.

dtrain --version      print the version
dtrain info           versions of Python, numpy and the optional backends, and devices
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtrain`` command."""
    import dtrain

    parser = argparse.ArgumentParser(
        prog="dtrain",
        description="dtrain: distributed data-parallel training with a PyTorch-shaped API.",
    )
    parser.add_argument("--version", action="version", version=f"dtrain {dtrain.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "info",
        help="print versions, optional backends and devices (paste it into bug reports)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dtrain`` command; returns the exit code."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        from dtrain.launch.info import render

        print(render())
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
