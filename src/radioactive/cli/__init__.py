"""The ``radioactive`` command: argument parsing over the public API. Each subcommand lives in its own
module exposing ``add_parser(subparsers)`` (which sets ``func``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ..errors import RadioactiveError

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order --help lists them.
COMMANDS = ("train_marker", "keygen", "mark", "detect", "train", "experiment", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radioactive",
        description="Mark an image dataset with a secret key and test whether a model was trained on it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"cli.{name}"):
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RadioactiveError as exc:
        print(f"radioactive {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
