"""``python -m vitlib.export CHECKPOINT --to int8|onnx|export|torchscript OUT``.

Reads a checkpoint of :mod:`vitlib.train` (:func:`vitlib.train.load_model`), runs the path on the
model (which measures the artefact against the eager model on a random batch), writes the artefact
to ``OUT`` (suffix ``.safetensors``, ``.onnx``, ``.pt2`` or ``.pt``), loads the written file back
and checks it against eager on a fresh batch, printing one line per step and the figures at the
end. Every error (a file that is no checkpoint, a suffix that does not fit, a path the model cannot
take) ends as one ``error: ...`` line with exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..models.state import private_rng
from .artefacts import SUFFIXES, check_suffix, load, save_artefact
from .paths import PathError, export

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vitlib.export",
                                description="Export a vitlib checkpoint along one deployment path, measured.")
    p.add_argument("checkpoint", type=Path, help="a vitlib training checkpoint (.safetensors)")
    p.add_argument("--to", required=True, choices=list(SUFFIXES), help="the deployment path")
    p.add_argument("out", type=Path, help="the artefact to write: " + ", ".join(
        f"{path} {suffix}" for path, suffix in SUFFIXES.items()))
    p.add_argument("--batch", type=int, default=1, help="images in the batch that is timed (default 1)")
    p.add_argument("--no-convs", action="store_true",
                   help="int8: quantise the linear layers as they are (no BatchNorm folding, 1x1 "
                        "convolutions left in float32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all torch uses)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--min-run-time", type=float, default=0.3,
                   help="seconds of calls per timing (default 0.3)")
    return p


def _step(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (PathError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from ..train import load_model

    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1; received {args.batch}")
    out = check_suffix(args.to, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    _step(f"[1/4] loading {args.checkpoint}")
    model = load_model(args.checkpoint)
    _step(f"      {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{model.image_size[0]}x{model.image_size[1]} px")
    with private_rng(0, model.device):  # the same images every run, the caller's random state untouched
        x, check = model.example_input(args.batch), model.example_input(args.batch + 1)
    options = {"convs": not args.no_convs} if args.to == "int8" else {}
    _step(f"[2/4] building the {args.to} artefact and measuring it against eager (batch {args.batch})")
    result = export(model, args.to, x, rounds=args.rounds, min_run_time=args.min_run_time,
                    num_threads=args.threads, **options)
    _step(f"[3/4] writing {out}")
    save_artefact(args.to, result.artefact, out)
    _step(f"[4/4] loading {out} back and comparing it with eager on a new batch")
    with torch.inference_mode():
        diff = float((load(out, args.threads)(check) - model(check)).abs().max())
    _step(f"      max |logit difference| {diff:.2e} on {len(check)} images; "
          f"{out.stat().st_size / 2**20:.2f} MB written\n")
    print(result)
    return 0
