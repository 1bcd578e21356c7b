"""``innovwin train``: one run, with a flag for every RunConfig field, grouped as the config is.

Precedence: defaults < ``--config FILE.toml`` < ``--set key=value`` < named flags (``--steps 500``).
"""
from __future__ import annotations

import argparse
import dataclasses

from innovwin import config as config_module
from innovwin import objectives
from innovwin.cli import set_items, subcommand
from innovwin.config import RunConfig

# Fields whose values are a closed set, listed as the flag's metavar ({dit,gpt}); the config refuses others in one
# line with the nearest name (argparse's choices would print the whole usage).
CHOICES = {"arch": objectives.names, "dtype": lambda: config_module.DTYPES, "until": lambda: config_module.UNTIL}


def add_parser(subparsers) -> None:
    parser = subcommand(
        subparsers, "train", run, "train one model and measure its two clocks (the main job)",
        "Train one DiT or GPT run, evaluate it on a log-spaced schedule, extract tau_rule and tau_mem. With no "
        "flags: a small CPU run that crosses both clocks in a few minutes. Running the same command again resumes "
        "the run.")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read fields from a TOML file ([group] tables, or name = value lines)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<arch>-<task>-N<N>-<key>)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="set any config field by its dotted or bare name, e.g. --set optim.ema=0.999 "
                             "(repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="overwrite a directory that holds a different run")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for torch (default 1: small models run about as fast on one thread, and "
                             "several threads stall badly when other processes share the cores)")
    defaults = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    for group, names in config_module.GROUPS.items():
        flags = parser.add_argument_group(f"[{group}]")
        for name in names:
            flags.add_argument(f"--{name.replace('_', '-')}", dest=f"field_{name}", **field_flag(name, defaults[name]))


def field_flag(name: str, default) -> dict:
    """argparse keywords of one field's flag: its meaning (config.HELP), dotted name, default and values."""
    shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
    keywords = {"help": f"{config_module.HELP[name]} [{config_module.DOTTED[name]}, default: {shown}]"}
    keywords["metavar"] = ("{" + ",".join(CHOICES[name]()) + "}" if name in CHOICES
                           else config_module.FIELD_TYPES[name].__name__.upper())
    return keywords


def config_from_args(args) -> RunConfig:
    config = RunConfig.from_toml(args.config) if args.config else RunConfig()
    values = {}
    for name, text in set_items(args.set).items():
        values[config_module.canonical_name(name)] = config_module.parse_value(name, text)
    for name, text in vars(args).items():
        if name.startswith("field_") and text is not None:
            values[name[len("field_"):]] = config_module.parse_value(name[len("field_"):], text)
    return config.override(**values)


def run(args: argparse.Namespace) -> int:
    import torch

    from innovwin.analysis import clocks
    from innovwin.train import until
    from innovwin.train.driver import train

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    summary = train(config_from_args(args), args.out, quiet=args.quiet, force=args.force)
    timing = summary["timing"]
    print(clocks.describe(summary))
    print(until.describe(summary))
    print(f"run       {summary['out_dir']}  ({timing['wall_s']:.0f} s, {timing['steps_per_s']:.0f} steps/s, "
          f"{100 * timing['eval_share']:.0f}% in evaluation)")
    print("files     metrics.jsonl (one row per evaluation), summary.json (clocks, window), loss.jsonl, log.txt, "
          "provenance.json, snapshots/ (weights), evals/ (per-sample arrays)")
    print(f"next      innovwin report {summary['out_dir']} --out REPORT_DIR")
    return 0
