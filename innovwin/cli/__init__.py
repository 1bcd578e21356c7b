"""The ``innovwin`` command line: one module per command group in this package.

Every command module exposes ``add_parser(subparsers)``, which registers its parser and
sets ``func``. Bad input (ValueError) and what the machine refuses (an OSError: a full disk, a read-only or
missing path, a file where a directory should be; a SQLite error; memory) become one line on stderr, naming
the path where there is one, and exit 2: this is the one place they are turned into messages.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

OUT_OF_MEMORY = ("can't allocate memory", "out of memory")  # what torch's CPU and CUDA allocators say

# Module path of each subcommand group, in the order `innovwin --help` lists them.
COMMAND_MODULES = [
    "innovwin.cli.tasks",
    "innovwin.cli.train",
    "innovwin.cli.refine",
    "innovwin.cli.basins",
    "innovwin.cli.sweep",
    "innovwin.cli.runs",
    "innovwin.cli.predict",
]


def subcommand(subparsers, name: str, func, summary: str, description: str) -> argparse.ArgumentParser:
    """Register command ``name``: ``summary`` in `innovwin --help`, ``description`` in its own, ``func(args)``
    runs it."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.set_defaults(func=func)
    return parser


def set_items(items: list[str]) -> dict[str, str]:
    """``--set FIELD=VALUE`` items (train's, predict's) as field name -> value text, in order; the caller checks
    the names and parses the values."""
    found = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        found[name.strip()] = text.strip()
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="innovwin",
        description="Measure when generative models learn rules (tau_rule) and start to copy (tau_mem).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, OSError, sqlite3.Error, MemoryError, RuntimeError) as error:
        message = one_line(error)
        if message is None:
            raise
        print(f"innovwin {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"innovwin {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def one_line(error: BaseException) -> str | None:
    """The user's message for an error that is not a bug, or None (a bug keeps its traceback)."""
    if isinstance(error, OSError) and error.strerror:
        paths = " -> ".join(os.fspath(p) for p in (error.filename, error.filename2) if p is not None)
        return f"{paths}: {error.strerror}" if paths else error.strerror
    if isinstance(error, sqlite3.Error):  # the store adds its path as a note (innovwin.store.runstore)
        return "; ".join([f"SQLite: {error}", *getattr(error, "__notes__", [])])
    # torch's allocators raise RuntimeError (CPU) or its subclass OutOfMemoryError (CUDA); any other is a bug
    out_of_memory = isinstance(error, RuntimeError) and any(text in str(error) for text in OUT_OF_MEMORY)
    if isinstance(error, MemoryError) or out_of_memory:
        return "out of memory: ask for less (a smaller batch, fewer samples, a smaller model)"
    return None if isinstance(error, RuntimeError) else str(error)


if __name__ == "__main__":
    sys.exit(main())
