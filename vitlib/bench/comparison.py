"""Several candidates measured interleaved in one process, one table: models against each other,
settings of one model against each other, attention against the MLP of one block.

Each function builds the callables to time, hands them all to
:func:`~vitlib.bench.timing.time_interleaved` in one call, and tabulates medians beside counted
FLOPs and parameters. A ratio between two candidates is only quoted from one such call.
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Callable, Mapping

import torch
from torch import nn

from .measured import Measured
from ..layers import Attention, FeedForward
from .counting import count_flops, count_parameters, flops_by_component, sequence_length
from .timing import (
    Timing,
    batch_and_device,
    default_threads,
    eval_mode,
    inference_fn,
    peak_memory,
    time_interleaved,
    train_step_fn,
)

__all__ = ["compare", "speedup", "scaling_sweep", "block_time_split", "format_table"]


def compare(
    candidates: Mapping[str, tuple[nn.Module, torch.Tensor]],
    *,
    mode: str = "inference",
    baseline: str | None = None,
    rounds: int = 3,
    min_run_time: float = 0.3,
    num_threads: int | None = None,
    flops: bool = True,
    progress: bool = False,
    warmup: int = 3,
):
    """Measure several models interleaved in one process and return a table (pandas DataFrame).

    ``candidates`` maps a name to ``(model, example_batch)``. In each of ``rounds`` rounds every
    model is timed once (``min_run_time`` seconds of calls), in turn; a model's figure is the
    median over all its calls. ``mode`` is ``"inference"`` or ``"train"`` (one AdamW step on a
    copy of the model). Columns: ``params``, ``gflops`` (per image, forward), ``median_ms``,
    ``iqr_ms``, ``images_per_s``, ``peak_mem_mb`` (CUDA only, else NaN),
    ``time_ratio`` (time over the baseline's, lower is faster) and ``speedup`` (baseline time over
    this time). The baseline is the first candidate unless named. ``warmup`` calls precede each
    model's first timing. Every model is left in the mode it was in.
    """
    import pandas as pd

    if mode not in ("inference", "train"):
        raise ValueError(f"mode must be 'inference' or 'train'; received {mode!r}")
    if not candidates:
        raise ValueError("compare needs at least one candidate; received none")
    names = list(candidates)
    baseline = baseline or names[0]
    if baseline not in candidates:
        raise ValueError(f"baseline must be one of {names}; received {baseline!r}")
    threads = num_threads or default_threads()
    fns = {}
    for name, (model, x) in candidates.items():
        fns[name] = inference_fn(model, x) if mode == "inference" else train_step_fn(model, x)
    inputs = {name: batch_and_device(x) for name, (_, x) in candidates.items()}  # (batch, device)
    cuda = next((device for _, device in inputs.values() if device.type == "cuda"), None)
    with contextlib.ExitStack() as stack:
        if mode == "inference":
            for model, _ in candidates.values():
                stack.enter_context(eval_mode(model))
        times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=threads, warmup=warmup,
                                 device=cuda,
                                 progress=f"timing {len(names)} models ({mode})" if progress else None)
        mems = {name: peak_memory(fns[name], inputs[name][1]) for name in names}
    rows = []
    for name in names:
        model, x = candidates[name]
        t = Timing(times[name], threads, name, batch=inputs[name][0])
        mem = mems[name]
        rows.append({
            "model": name,
            "params": count_parameters(model),
            "gflops": count_flops(model, x[:1]) / 1e9 if flops else float("nan"),
            "median_ms": t.median * 1e3,
            "iqr_ms": t.iqr * 1e3,
            "images_per_s": t.throughput,
            "peak_mem_mb": float("nan") if mem is None else mem / 2**20,
        })
    df = pd.DataFrame(rows).set_index("model")
    speedups = [Measured.ratio(times[baseline], times[name]).value for name in names]
    df["time_ratio"] = [1.0 / s for s in speedups]
    df["speedup"] = speedups
    df.attrs.update(mode=mode, baseline=baseline, rounds=rounds, threads=threads,
                    batch={n: inputs[n][0] for n in names}, device=str(inputs[names[0]][1]),
                    times={n: list(times[n]) for n in names})
    return df


def speedup(table, name: str, baseline: str | None = None) -> Measured:
    """The speed-up of candidate ``name`` over ``baseline`` (default: the table's baseline) in a
    :func:`compare` table, with its spread, from the per-call times of the same interleaved rounds
    (:meth:`vitlib.bench.Measured.ratio`): what a verdict rests on."""
    times = table.attrs.get("times")
    if times is None:
        raise ValueError("speedup needs a table from bench.compare (it keeps the per-call times)")
    baseline = baseline or table.attrs["baseline"]
    for key in (name, baseline):
        if key not in times:
            raise ValueError(f"no candidate {key!r} in the table; it has {list(times)}")
    return Measured.ratio(times[baseline], times[name])


def scaling_sweep(
    model_cls: Callable[..., nn.Module],
    base_config: Mapping,
    settings: list[Mapping],
    *,
    batch: int = 8,
    device: torch.device | str = "cpu",
    rounds: int = 2,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
    progress: bool = False,
):
    """Build ``model_cls(**base_config, **setting)`` for each setting, count its FLOPs per image
    (split as in :func:`~vitlib.bench.flops_by_component`) and time its inference, all settings
    interleaved over ``rounds``.

    Returns a DataFrame with the setting's keys, ``tokens`` (the sequence the first attention
    sees, :func:`~vitlib.bench.sequence_length`), ``params``, the FLOP components, ``gflops`` and
    ``median_ms``, ``iqr_ms`` (per batch of ``batch``) and ``calls`` (timed calls); ``attrs["times"]``
    holds each row's per-call times
    (seconds), for ratios with their spread (:meth:`vitlib.bench.Measured.ratio`)."""
    import pandas as pd

    device = torch.device(device)
    runs = []
    for s in settings:
        model = model_cls(**{**base_config, **s}).to(device).eval()
        x = model.example_input(batch, device)
        runs.append((s, model, x, inference_fn(model, x)))
    times = time_interleaved({i: run[3] for i, run in enumerate(runs)}, rounds=rounds, min_run_time=min_run_time,
                             num_threads=num_threads, warmup=2, device=device,
                             progress=f"timing {len(runs)} settings" if progress else None)
    rows = []
    for i, (s, model, x, _) in enumerate(runs):
        split = flops_by_component(model, x[:1])
        t = Timing(times[i], 0)
        rows.append({**s, "tokens": sequence_length(model, x[:1]), "params": count_parameters(model), **split,
                     "gflops": sum(split.values()) / 1e9, "median_ms": t.median * 1e3, "iqr_ms": t.iqr * 1e3,
                     "calls": len(t.times)})
    df = pd.DataFrame(rows)
    df.attrs["times"] = [list(times[i]) for i in range(len(runs))]  # per-call seconds, by row
    return df


def block_time_split(
    dim: int,
    heads: int,
    dim_head: int,
    mlp_dim: int,
    tokens: list[int],
    *,
    batch: int = 8,
    device: torch.device | str = "cpu",
    rounds: int = 2,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
):
    """Time one :class:`~vitlib.layers.Attention` and one :class:`~vitlib.layers.FeedForward`
    (inference) at each token count, interleaved. Returns a DataFrame with ``tokens``,
    ``attention_ms``, ``mlp_ms`` and ``attention_share`` (of the two)."""
    import pandas as pd

    device = torch.device(device)
    attn = Attention(dim, heads, dim_head).to(device).eval()
    ff = FeedForward(dim, mlp_dim).to(device).eval()
    fns = {}
    for n in tokens:
        x = torch.randn(batch, n, dim, device=device)
        fns[(n, "attention")] = inference_fn(attn, x)
        fns[(n, "mlp")] = inference_fn(ff, x)
    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads, warmup=2,
                             device=device)
    rows = []
    for n in tokens:
        a, m = statistics.median(times[(n, "attention")]) * 1e3, statistics.median(times[(n, "mlp")]) * 1e3
        rows.append({"tokens": n, "attention_ms": a, "mlp_ms": m, "attention_share": a / (a + m)})
    return pd.DataFrame(rows)


def format_table(df) -> str:
    """A :func:`compare` table as text: parameters in millions, times in ms, ratios as ``1.23x``."""
    fmt = {
        "params": lambda v: f"{v / 1e6:.2f}M",
        "gflops": lambda v: f"{v:.3f}",
        "median_ms": lambda v: f"{v:.2f}",
        "iqr_ms": lambda v: f"{v:.2f}",
        "images_per_s": lambda v: f"{v:.1f}",
        "time_ratio": lambda v: f"{v:.2f}",
        "speedup": lambda v: f"{v:.2f}x",
        "peak_mem_mb": lambda v: "-" if v != v else f"{v:.1f}",
    }
    return df.to_string(formatters={k: f for k, f in fmt.items() if k in df.columns})
