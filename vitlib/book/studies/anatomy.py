"""Chapter 1 (anatomy of a ViT): ViT against SimpleViT at the chapter's small configuration.

The ``anatomy`` bench suite times both models, interleaved, in inference and in a training step.
"""
from __future__ import annotations

import torch

from ...backends import synchronise
from ...bench import compare, count_parameters, format_table
from ...models import MODELS
from ...models.state import private_rng

__all__ = ["ANATOMY_CONFIG", "LINEAR_PARTS", "anatomy_suite", "block_flops", "crossover_tokens",
           "first_calls", "growth_exponent", "repeated_comparison", "with_gflops"]

#: The small ViT of chapter 1 in quick mode (and of the anatomy suite): 32-pixel images cut into
#: 4-pixel patches (64 tokens), width 128, four layers of four heads.
ANATOMY_CONFIG = dict(image_size=32, patch_size=4, num_classes=10, dim=128, depth=4, heads=4, dim_head=32,
                      mlp_dim=256)


def anatomy_suite(args) -> dict:
    """ViT against SimpleViT at the book's chapter-1 configuration: inference and training. Seeded;
    the caller's random state is left as it was."""
    with private_rng(0, args.device):
        return _anatomy_suite(args)


def _anatomy_suite(args) -> dict:
    device = torch.device(args.device)
    cfg = dict(ANATOMY_CONFIG)
    models = {"ViT": MODELS["vit"](**cfg).to(device), "SimpleViT": MODELS["simple_vit"](**cfg).to(device)}
    x = models["ViT"].example_input(args.batch, device)
    figures: dict = {"config": cfg, "batch": args.batch}
    for mode in ("inference", "train"):
        df = compare({k: (m, x) for k, m in models.items()}, mode=mode, rounds=args.rounds,
                     min_run_time=args.min_run_time, num_threads=args.threads)
        print(f"\n{mode} (batch {args.batch}, median of {args.rounds} interleaved rounds, "
              f"{df.attrs['threads']} threads, {device})")
        print(format_table(df))
        figures[mode] = df.reset_index().to_dict(orient="records")
        figures[f"simple_vit_{mode}_speedup"] = float(df.loc["SimpleViT", "speedup"])
    figures["params"] = {k: count_parameters(m) for k, m in models.items()}
    return figures


#: The parts of a ViT whose FLOPs grow linearly with the number of tokens (all but the scores).
LINEAR_PARTS = ("patch embedding", "attention (projections)", "mlp", "head")


def block_flops(n: int, dim: int, inner: int, mlp_dim: int) -> dict[str, int]:
    """FLOPs of one transformer block on ``n`` tokens, a multiply-add counted as two: the
    attention projections (``W_qkv``, ``W_o``), the scores (``QK^T`` and ``AV``) and the MLP."""
    return {"attention (projections)": 2 * n * dim * 3 * inner + 2 * n * inner * dim,
            "attention (scores)": 4 * n * n * inner, "mlp": 4 * n * dim * mlp_dim}


def crossover_tokens(dim: int, inner: int, mlp_dim: int) -> float:
    """The token count above which a block's attention scores cost more FLOPs than its linear
    layers: ``4 n^2 inner > n (8 dim inner + 4 dim mlp_dim)``, so ``n > 2 dim + dim mlp_dim / inner``
    (``6 dim`` for the usual ``inner = dim``, ``mlp_dim = 4 dim``)."""
    return 2 * dim + dim * mlp_dim / inner


def with_gflops(df):
    """A :func:`vitlib.bench.scaling_sweep` table with ``linear GFLOPs`` (the parts linear in the
    number of tokens) and ``scores GFLOPs`` (the quadratic attention scores) added."""
    df = df.copy()
    df["linear GFLOPs"] = df[[p for p in LINEAR_PARTS if p in df]].sum(axis=1) / 1e9
    df["scores GFLOPs"] = df["attention (scores)"] / 1e9
    return df


def growth_exponent(df, column: str) -> float:
    """The exponent ``k`` in ``column ~ tokens^k``, fitted between the two largest settings."""
    import math

    a, b = df.iloc[-2], df.iloc[-1]
    return math.log(b[column] / a[column]) / math.log(b["tokens"] / a["tokens"])


def first_calls(model, x, calls: int = 12) -> list[float]:
    """Milliseconds of each of the first ``calls`` inference calls of ``model`` on ``x``, timed
    one by one with nothing run before (CUDA synchronised): what warm-up is for."""
    import time

    out = []
    with torch.inference_mode():
        for _ in range(calls):
            t0 = time.perf_counter()
            model(x)
            synchronise(x.device)
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def repeated_comparison(candidates: dict, repeats: int = 5, min_run_time: float = 0.2):
    """``repeats`` short interleaved comparisons of two models (one round each), one row per
    repeat: each model's median ms and their ratio (second over first). Shows how much absolute
    times and the ratio wander between repeats on this machine."""
    import pandas as pd

    first, second = list(candidates)
    rows = []
    for i in range(repeats):
        df = compare(candidates, mode="inference", rounds=1, min_run_time=min_run_time, flops=False)
        rows.append({"repeat": i + 1, first: df.loc[first, "median_ms"], second: df.loc[second, "median_ms"],
                     "ratio": df.loc[second, "time_ratio"]})
    return pd.DataFrame(rows)
