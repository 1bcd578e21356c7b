"""The ``innovwin`` command line: one module per command group in this package.

Every command module exposes ``add_parser(subparsers)``, which registers its parser and
sets ``func``. Bad input (ValueError, FileNotFoundError) becomes one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Module path of each subcommand group, in the order `innovwin --help` lists them.
COMMAND_MODULES = [
    "innovwin.cli.tasks",
    "innovwin.cli.train",
    "innovwin.cli.basins",
    "innovwin.cli.sweep",
]


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
    except (ValueError, FileNotFoundError) as error:
        print(f"innovwin {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"innovwin {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
