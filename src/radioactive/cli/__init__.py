"""The ``radioactive`` command: argument parsing over the public API. Each subcommand lives in its own
module exposing ``add_parser(subparsers)`` (which sets ``func``).

Exit status: 0 success; 2 a usage error or a failure caused by the input (a :class:`RadioactiveError`, or an
``OSError`` on a path the user gave), reported as one paragraph on stderr, ``radioactive COMMAND: error:
...``, never a traceback; 130 interrupted; 1 an unexpected exception (a bug: traceback and how to report it).
``--debug`` (or ``RADIOACTIVE_DEBUG=1``) re-raises instead, for developers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings

from ..errors import RadioactiveError

__all__ = ["main", "build_parser", "EXIT_USAGE", "EXIT_BUG", "EXIT_INTERRUPTED"]

# Subcommand modules, in the order --help lists them.
COMMANDS = ("train_marker", "keygen", "mark", "detect", "train", "references", "experiment", "demo", "plan")

EXIT_USAGE = 2  # bad arguments or input: the user can fix it (as argparse, whose usage errors exit 2)
EXIT_BUG = 1  # an exception radioactive did not expect
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class _UsageError(Exception):
    """argparse's complaint about the command line, raised instead of printing the usage and exiting."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors reach :func:`main` (one line and exit 2, like every other input
    error) instead of printing the whole usage block. Subparsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="radioactive",
        description="Mark an image dataset with a secret key and test whether a model was trained on it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="let errors raise with their traceback (developers; also RADIOACTIVE_DEBUG=1)")
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


def _fail(prog: str, message: str) -> int:
    """Print ``PROG: error: MESSAGE`` as one paragraph (whitespace runs collapsed) and return exit status 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _describe(exc: BaseException) -> str:
    """The user-facing text of an input error: a typed error's message, or an OSError's reason and path."""
    if isinstance(exc, RadioactiveError):
        # OSError-based errors built as (errno, message) would print "[Errno N] message".
        return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is None:
            return f"{reason}; check the paths given on the command line and their permissions"
        # A rename or link names (source, destination): the destination is the path the user gave (the source
        # is a temporary file or an input already read).
        where = exc.filename if exc.filename2 is None else exc.filename2
        return f"{os.fsdecode(where)!r}: {reason}; check the path and its permissions"
    # Out of memory (MemoryError, torch.cuda.OutOfMemoryError): the input's size, not a bug.
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"out of memory ({first}); lower --batch-size, use smaller images, or use a machine with more memory"


def _is_input_error(exc: BaseException) -> bool:
    return isinstance(exc, RadioactiveError | OSError | MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit status (see the module)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except _UsageError as exc:
        return _fail(exc.prog, f"{exc}; see '{exc.prog} --help'")
    prog = f"radioactive {args.command}" if args.command else "radioactive"
    if extra:
        return _fail(prog, f"unrecognized arguments: {' '.join(extra)}; see '{prog} --help'")
    debug = args.debug or os.environ.get("RADIOACTIVE_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        if _is_input_error(exc):
            return _fail(prog, _describe(exc))
        traceback.print_exc()
        from .. import __version__

        print(f"{prog}: internal error: {type(exc).__name__}: {exc}. This is a bug in radioactive {__version__}, "
              "not a problem with your input; please report it with the command line, the traceback above and "
              "the output of 'pip freeze' (rerun with --debug to debug it in place).", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
