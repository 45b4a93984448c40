"""Chapter 2 (lightweight models): sizing a SimpleViT, and time to accuracy.

* :func:`compare_configs`: a base and a variant measured in one interleaved comparison;
* :func:`knob_sweep`: one knob at a time, every setting and the base timed in ONE interleaved run,
  so that each ratio to the base comes from the same rounds;
* :func:`profile_train_step`: where a training step's time goes, operator by operator
  (``torch.profiler``);
* :func:`one_more_token`: what one more token (a class token) costs each layer at a small size;
* the ``train`` bench suite: the quick-mode SimpleViT recipe trained on the bundled digits.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch

from ...bench import compare, scaling_sweep
from ...bench.profiling import operator_times
from ...bench.timing import eval_mode, inference_fn, time_interleaved, train_step_fn
from ..claims import Measured
from ...models import MODELS
from ...models.presets import resolve_config
from ...models.state import private_rng

__all__ = ["DROPOUT_OPS", "compare_configs", "knob_sweep", "one_more_token", "profile_train_step", "train_suite"]

#: The operators that draw dropout masks in a training step on CPU (the multiplications that
#: apply the masks are counted with all other multiplications).
DROPOUT_OPS = ("aten::bernoulli_", "aten::native_dropout", "aten::native_dropout_backward")

def compare_configs(
    base: str | Mapping,
    variant: Mapping,
    *,
    family: str | None = None,
    batch: int = 16,
    device: torch.device | str = "cpu",
    rounds: int = 3,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
    seed: int = 0,
):
    """Parameters, forward GFLOPs per image and inference latency of ``base`` (a preset name or a
    configuration) and ``variant`` (a full configuration of the same family), measured in ONE
    interleaved :func:`~vitlib.bench.compare` on the same input: a DataFrame indexed ``"base"``
    and ``"variant"`` with compare's columns (``time_ratio`` is the variant's latency over the
    base's, from the same rounds)."""
    family, base_cfg = resolve_config(base, family)
    cls = MODELS[family]
    device = torch.device(device)
    with private_rng(seed, device):  # the same weights and images for the same seed; the caller's state kept
        models = {"base": cls(**base_cfg).to(device), "variant": cls(**dict(variant)).to(device)}
        inputs = {name: m.example_input(batch, device) for name, m in models.items()}
    return compare({name: (models[name], inputs[name]) for name in models}, mode="inference", rounds=rounds,
                   min_run_time=min_run_time, num_threads=num_threads, warmup=2)


def knob_sweep(model_cls, base: Mapping, knobs: Mapping[str, Sequence[Mapping]], *, batch: int = 16,
               device: torch.device | str = "cpu", rounds: int = 2, min_run_time: float = 0.15,
               num_threads: int | None = None):
    """Change one knob at a time from ``base``: ``knobs`` maps a knob's name to the settings to
    try (each a dict of changes, e.g. ``{"depth": 8}``). The base and every setting are built and
    timed (inference) in ONE interleaved :func:`~vitlib.bench.scaling_sweep`, so each ratio to
    the base comes from the same rounds.

    Returns a DataFrame with ``knob``, ``value`` (the knob's value in that setting), ``params``,
    ``gflops``, ``median_ms``, the same three divided by the base's (``params_x``,
    ``gflops_x``, ``time_x``), the spread of ``time_x`` (``time_x_low``, ``time_x_high``, from
    the interquartile ranges of both sides), ``calls`` (timed calls of the side with fewer) and
    ``is_base``. The base's measurement comes first, with knob
    ``"base"``, and is repeated once under every knob at the base's value of that knob, so that
    each knob's rows draw a whole curve."""
    import pandas as pd

    labels, settings = [("base", None)], [{}]
    for knob, changes in knobs.items():
        for change in changes:
            if knob not in change:
                raise ValueError(f"each setting of knob {knob!r} must change {knob!r}; received {dict(change)}")
            labels.append((knob, change[knob]))
            settings.append(dict(change))
    df = scaling_sweep(model_cls, dict(base), settings, batch=batch, device=device, rounds=rounds,
                       min_run_time=min_run_time, num_threads=num_threads)
    out = pd.DataFrame({"knob": [k for k, _ in labels], "value": [v for _, v in labels],
                        "params": df["params"], "gflops": df["gflops"], "median_ms": df["median_ms"]})
    for col, rel in (("params", "params_x"), ("gflops", "gflops_x")):
        out[rel] = out[col] / out.loc[0, col]
    times = df.attrs["times"]
    spread = [Measured.ratio(t, times[0]) for t in times]  # this setting's time over the base's
    out["time_x"] = [m.value for m in spread]
    out["time_x_low"] = [m.low for m in spread]
    out["time_x_high"] = [m.high for m in spread]
    out["calls"] = [m.n for m in spread]  # timed calls of the smaller side
    out["is_base"] = [k == "base" for k, _ in labels]
    repeats = [{**out.iloc[0].to_dict(), "knob": knob, "value": base[knob]} for knob in knobs if knob in base]
    out = pd.concat([out, pd.DataFrame(repeats)], ignore_index=True)
    out.attrs.update(base=dict(base), batch=batch, device=str(device))
    return out


def profile_train_step(model: torch.nn.Module, x: torch.Tensor, *, steps: int = 5, warmup: int = 2,
                       top: int = 8):
    """Profile ``steps`` training steps (forward, cross-entropy, backward, AdamW, on a copy of
    ``model``) with ``torch.profiler`` on the CPU, after ``warmup`` steps.

    Returns a DataFrame of the ``top`` operators by self time: ``op``, ``calls`` (per step),
    ``self_ms`` (per step) and ``share`` (of all operators' self time). ``attrs`` holds
    ``ops_per_step`` (every operator call, nested ones included), ``self_ms_per_step``,
    ``us_per_op`` (mean self time of one operator call), ``dropout_share`` and ``dropout_ms`` (the
    share and the milliseconds per step of :data:`DROPOUT_OPS`, whether or not they make the top)
    and ``fused_attention`` (whether a fused attention kernel ran). The operators' times come from
    :func:`vitlib.bench.profiling.operator_times`; the profiler adds its own overhead to every
    call, so read shares and counts, not absolute times."""
    import pandas as pd

    if steps < 1:
        raise ValueError(f"steps must be at least 1; received {steps}")
    step = train_step_fn(model, x)
    rows, _ = operator_times(step, calls=steps, warmup=warmup)
    total = sum(r["self_ms"] for r in rows)
    calls = sum(r["calls"] for r in rows)
    df = pd.DataFrame([{**r, "share": r["self_ms"] / total} for r in rows])
    fused = any(("flash" in r["op"] or "efficient_attention" in r["op"]) and "backward" not in r["op"] for r in rows)
    masks = df["op"].isin(DROPOUT_OPS)
    dropout, dropout_ms = float(df.loc[masks, "share"].sum()), float(df.loc[masks, "self_ms"].sum())
    top_df = df.head(top).reset_index(drop=True)
    top_df.attrs.update(fused_attention=fused, ops_per_step=calls, self_ms_per_step=total,
                        us_per_op=total * 1e3 / calls, dropout_share=dropout, dropout_ms=dropout_ms, steps=steps)
    return top_df


def one_more_token(dim: int, heads: int, dim_head: int, mlp_dim: int, tokens: int, *, batch: int = 64,
                   device: torch.device | str = "cpu", rounds: int = 3, min_run_time: float = 0.1,
                   num_threads: int | None = None) -> dict:
    """Time one :class:`~vitlib.layers.Attention` and one :class:`~vitlib.layers.FeedForward`
    (inference) at ``tokens`` and at ``tokens + 1`` tokens, all four interleaved, and return
    ``{"attention": Measured, "mlp": Measured}``: the time at ``tokens + 1`` over the time at
    ``tokens`` (above 1: the extra token costs that much more). Compare with the FLOP ratios,
    ``((n + 1) / n) ** 2`` for the scores and ``(n + 1) / n`` for everything else."""
    from ...layers import Attention, FeedForward

    if tokens < 1:
        raise ValueError(f"tokens must be at least 1; received {tokens}")
    device = torch.device(device)
    layers = {"attention": Attention(dim, heads, dim_head).to(device), "mlp": FeedForward(dim, mlp_dim).to(device)}
    fns = {(part, n): inference_fn(layer, torch.randn(batch, n, dim, device=device))
           for part, layer in layers.items() for n in (tokens, tokens + 1)}
    with eval_mode(layers["attention"]), eval_mode(layers["mlp"]):
        times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads,
                                 device=device)
    return {part: Measured.ratio(times[(part, tokens + 1)], times[(part, tokens)]) for part in layers}


def train_suite(args) -> dict:
    """Time to accuracy: the book's quick-mode SimpleViT recipe on the bundled digits."""
    from ...train import QUICK_RECIPE, train_recipe

    t0 = time.perf_counter()
    model, history, data = train_recipe(QUICK_RECIPE, seed=args.seed, device=args.device, progress=False)
    wall = time.perf_counter() - t0
    reached = [r["wall_s"] for r in history if r.get("test_acc", 0.0) >= 0.98]
    figures = {
        "accuracy": history.final["test_acc"],
        "wall_s": wall,
        "train_wall_s": history.final["wall_s"],
        "time_to_0.98_s": reached[0] if reached else None,
        "model": type(model).__name__,
        "model_config": model.config,
        "dataset": data.name,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "recipe": QUICK_RECIPE,
        "seed": args.seed,
    }
    print(f"{figures['model']} on {data.name} ({len(data.train)} train / {len(data.test)} test images), "
          f"{QUICK_RECIPE['fit']['epochs']} epochs, {torch.get_num_threads()} threads, {args.device}")
    print(f"test accuracy {figures['accuracy']:.4f}; wall time {wall:.1f} s "
          f"(data loading included; training and evaluation {figures['train_wall_s']:.1f} s); "
          f"first epoch at >= 0.98: " + (f"{reached[0]:.1f} s" if reached else "never"))
    return figures
