"""The command line ``python -m vitlib.bench SUITE --json FILE`` and its registry of suites.

A suite is a function ``suite(args) -> dict`` registered under a name with :func:`register_suite`;
it prints what it measured and returns its figures. The studies (:mod:`vitlib.book.studies`, one module
per chapter) register theirs; :func:`load_suites` imports them, which is the only place where the
measuring package reaches into the studies. ``main`` runs one suite and writes its figures, with
the run's provenance, to the JSON file.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Callable

import torch

from .provenance import provenance

__all__ = ["SUITES", "register_suite", "load_suites", "main"]

Suite = Callable[[argparse.Namespace], dict]

#: Every registered suite by name (filled when the studies are imported: :func:`load_suites`).
SUITES: dict[str, Suite] = {}

#: The packages whose import registers suites.
SUITE_PACKAGES = ("vitlib.book.studies",)


def register_suite(name: str) -> Callable[[Suite], Suite]:
    """Decorator: register ``suite(args) -> dict`` as ``python -m vitlib.bench NAME``. ``args`` has
    ``device``, ``threads``, ``batch``, ``rounds``, ``min_run_time``, ``seed`` and ``tiny`` (run a
    tiny setting in seconds, for tests; suites that have none ignore it). A name taken by another
    function raises ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a suite's name must be a non-empty string; received {name!r}")

    def register(fn: Suite) -> Suite:
        old = SUITES.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"suite {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        SUITES[name] = fn
        return fn

    return register


def load_suites() -> dict[str, Suite]:
    """Import the studies so that their suites are registered, and return :data:`SUITES`."""
    for package in SUITE_PACKAGES:
        importlib.import_module(package)
    return SUITES


def main(argv: list[str] | None = None) -> int:
    """Run one suite, print its table and write its figures (and provenance) as one JSON object."""
    suites = load_suites()
    parser = argparse.ArgumentParser(prog="python -m vitlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(suites), help="which benchmark suite to run")
    parser.add_argument("--json", type=Path, help="write the suite's figures to this file as one JSON object")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all torch uses)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of calls per timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny setting that runs in seconds (the suites that have one)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = suites[args.suite](args)
    result = {"suite": args.suite, **figures, "provenance": provenance(args.device, args.threads)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0
