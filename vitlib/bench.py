"""Measure models: parameters, FLOPs, latency, throughput and peak memory, and compare them fairly.

Rules the functions follow, because the book's numbers must be trustworthy:

* timings come from :class:`torch.utils.benchmark.Timer` after warm-up, with ``num_threads`` set
  explicitly (the Timer otherwise runs on one thread), and the figure quoted is the median;
* :func:`compare` measures several models interleaved, round after round, in one process, so that
  a noisy neighbour slows them all alike, and reports each one's ratio to a baseline;
* FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, taught to count the fused
  CPU attention kernel, which it otherwise reports as zero.

Command line: ``python -m vitlib.bench SUITE --json FILE`` runs a suite, prints a table and writes
the suite's figures to FILE as one JSON object (with the run's provenance).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import logging

import torch
import torch.nn.functional as F
from torch import nn

# torch.utils.benchmark imports cpp_extension, which logs a warning about CUDA_HOME on machines
# without a CUDA runtime; it concerns compiling extensions, which vitlib never does.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from .layers import Attention, FeedForward, PatchEmbedding  # noqa: E402
from .models.levit import LeViTAttention, LeViTFeedForward  # noqa: E402

__all__ = [
    "count_parameters",
    "parameters_by_component",
    "count_flops",
    "flops_by_component",
    "attention_entries",
    "part_table",
    "Timing",
    "time_function",
    "measure_inference",
    "measure_train_step",
    "peak_memory",
    "time_interleaved",
    "compare",
    "scaling_sweep",
    "block_time_split",
    "provenance",
    "NAVIT_SIZES",
    "NAVIT_CONFIG",
    "navit_workload",
    "pad_images",
    "navit_token_counts",
    "packing_padding",
    "navit_train_comparison",
    "navit_packed_vs_padded",
    "token_dropout_sweep",
    "SUITES",
    "main",
]

# ---------------------------------------------------------------------------------------------
# Parameters


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as a fixed sin-cos table are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_HEAD_NAMES = ("head", "distill_head", "sm_head", "lg_head", "mlp_head")


def _component_of(model: nn.Module) -> dict[str, str]:
    """Map each module's qualified name to the book's component names."""
    kinds: dict[str, str] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, PatchEmbedding) or name == "stem":  # LeViT's stem is its patch embedding
            kinds[name] = "patch embedding"
        elif isinstance(mod, (Attention, LeViTAttention)):
            kinds[name] = "attention"
        elif isinstance(mod, (FeedForward, LeViTFeedForward)):
            kinds[name] = "mlp"
        elif name in _HEAD_NAMES:
            kinds[name] = "head"
    return kinds


def _owner(name: str, kinds: Mapping[str, str]) -> str | None:
    """The component that ``name`` (a parameter or module path) lies in, if any."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in kinds:
            return prefix
    return None


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """Parameters of the patch embedding, attention, MLP, head, and everything else
    (positions, class token, final norm), summed over layers."""
    kinds = _component_of(model)
    out = {"patch embedding": 0, "positions + cls": 0, "attention": 0, "mlp": 0, "head": 0, "other": 0}
    for name, p in model.named_parameters():
        owner = _owner(name, kinds)
        if owner is not None:
            out[kinds[owner]] += p.numel()
        elif name.split(".")[0] in ("pos_embedding", "cls_token"):
            out["positions + cls"] += p.numel()
        else:
            out["other"] += p.numel()
    return out


# ---------------------------------------------------------------------------------------------
# FLOPs


def _sdpa_forward_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """``q k^T`` and ``attn v``: 2 FLOPs per multiply-add each."""
    *batch, n, d = q_shape
    m, dv = k_shape[-2], v_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n * m * d + 2 * b * n * m * dv


def _sdpa_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Gradients of both matmuls (two each): twice the forward, as for the unfused path."""
    return 2 * _sdpa_forward_flops(q_shape, k_shape, v_shape)


def _custom_flop_formulas() -> dict:
    ops = torch.ops.aten
    table = {}
    # The CPU kernel behind F.scaled_dot_product_attention, which FlopCounterMode does not know.
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        table[ops._scaled_dot_product_flash_attention_for_cpu] = _sdpa_forward_flops
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        table[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_backward_flops
    return table


def _flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_custom_flop_formulas())


def _run_once(model: nn.Module, inputs, backward: bool) -> None:
    if backward:
        out = model(inputs)
        out.float().sum().backward()
    else:
        with torch.no_grad():
            model(inputs)


def count_flops(model: nn.Module, inputs, backward: bool = False) -> int:
    """FLOPs of one forward pass (and backward with ``backward=True``) on ``inputs``.

    Counts matrix products only (linear layers, convolutions, attention), 2 FLOPs per
    multiply-add; norms, softmax and activations are not counted. Works on ``meta`` tensors too,
    so very large models are counted without computing anything.
    """
    with _flop_counter() as counter:
        _run_once(model, inputs, backward)
    return int(counter.get_total_flops())


def _is_score_op(op) -> bool:
    name = str(op)
    return "attention" in name or name.endswith(".bmm") or name == "aten.bmm"


def flops_by_component(model: nn.Module, inputs, backward: bool = False) -> dict[str, int]:
    """FLOPs split into patch embedding, attention projections (q, k, v, out: linear in tokens),
    attention scores (``q k^T`` and ``attn v``: quadratic in tokens), MLP, head and other."""
    kinds = _component_of(model)
    with _flop_counter() as counter:
        _run_once(model, inputs, backward)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    out = {"patch embedding": 0, "attention (projections)": 0, "attention (scores)": 0, "mlp": 0, "head": 0}
    for name, kind in kinds.items():
        for op, n in counts.get(f"{root}.{name}", {}).items():
            if kind == "attention":
                out["attention (scores)" if _is_score_op(op) else "attention (projections)"] += int(n)
            else:
                out[kind] += int(n)
    out["other"] = int(counter.get_total_flops()) - sum(out.values())
    return out


def attention_entries(model: nn.Module, inputs) -> list[dict]:
    """Every attention layer's size in one forward pass: ``module`` (its name), ``heads``,
    ``queries``, ``keys`` and ``entries = heads * queries * keys`` per image, the number of scores
    it computes. Recorded from the tensors the layers receive and return, not from a formula:
    self-attention in ViT-like models, cross-attention (``context=``) and LeViT's attention on
    feature maps, shrinking attention included."""
    rows: list[dict] = []

    def record(name, mod, args, kwargs, output):
        x = args[0]
        if isinstance(mod, LeViTAttention):  # feature maps (b, c, h, w)
            queries, keys = output.shape[-2] * output.shape[-1], x.shape[-2] * x.shape[-1]
        else:
            queries = x.shape[1]
            context = kwargs.get("context")
            keys = queries if context is None else context.shape[1] + (queries if kwargs.get("kv_include_self") else 0)
        rows.append({"module": name, "heads": mod.heads, "queries": int(queries), "keys": int(keys),
                     "entries": int(mod.heads * queries * keys)})

    hooks = [mod.register_forward_hook(lambda m, a, k, o, name=name: record(name, m, a, k, o), with_kwargs=True)
             for name, mod in model.named_modules() if isinstance(mod, (Attention, LeViTAttention))]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return rows


def part_table(
    model: nn.Module,
    inputs: torch.Tensor,
    parts: Mapping[str, nn.Module | Iterable[nn.Module]],
    *,
    timing: bool = False,
    rounds: int = 3,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
):
    """Split one forward pass of ``model(inputs)`` into named parts (LeViT's stages, CrossViT's
    branches) and return a DataFrame with one row per part.

    ``parts`` maps a label to a submodule or a list of submodules (e.g. ``model.named_stages()``).
    Columns: ``tokens`` (tokens the part outputs: ``h * w`` of a feature map, or the sequence
    length; None for a part that outputs neither, such as a head), ``map`` (``"h x w"`` for feature maps), ``attention_entries`` (scores computed, per
    image, summed over the part's attention layers and heads, see :func:`attention_entries`),
    ``gflops_scores`` (the ``q k^T`` and ``attn v`` products), ``gflops`` (all matrix products of the
    part), ``params``; with ``timing=True`` also ``median_ms`` for the whole batch (each
    single-module part timed alone on the input it received, all parts interleaved; NaN for a
    part made of several modules) and ``time_share``. FLOPs and entries are per image.
    """
    import pandas as pd

    model.eval()
    names = {id(m): n for n, m in model.named_modules()}
    groups = {label: [mods] if isinstance(mods, nn.Module) else list(mods) for label, mods in parts.items()}
    for label, mods in groups.items():
        for m in mods:
            if id(m) not in names:
                raise ValueError(f"part {label!r} holds a module that is not inside the model: {type(m).__name__}")
    seen: dict[int, tuple] = {}  # module -> (its input args, its output shape)

    def keep(mod, args, output):
        seen[id(mod)] = (tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), tuple(output.shape))

    hooks = [m.register_forward_hook(keep) for mods in groups.values() for m in mods]
    try:
        entries = attention_entries(model, inputs[:1])
        with _flop_counter() as counter, torch.no_grad():
            model(inputs[:1])
        with torch.no_grad():
            model(inputs)  # the inputs kept for timing are full batches
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    kinds = _component_of(model)
    rows = []
    for label, mods in groups.items():
        prefixes = [names[id(m)] for m in mods]
        inside = lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)  # noqa: E731
        flops = sum(sum(counts.get(f"{root}.{p}", {}).values()) for p in prefixes)
        scores = sum(int(n) for name, kind in kinds.items() if kind == "attention" and inside(name)
                     for op, n in counts.get(f"{root}.{name}", {}).items() if _is_score_op(op))
        # tokens: the last output in the part that is a sequence (b, n, d) or a map (b, c, h, w)
        shape = next((seen[id(m)][1] for m in reversed(mods) if len(seen[id(m)][1]) in (3, 4)), None)
        rows.append({
            "part": label,
            "tokens": None if shape is None else shape[-2] * shape[-1] if len(shape) == 4 else shape[1],
            "map": f"{shape[-2]} x {shape[-1]}" if shape is not None and len(shape) == 4 else "",
            "attention_entries": sum(r["entries"] for r in entries if inside(r["module"])),
            "gflops_scores": scores / 1e9,
            "gflops": flops / 1e9,
            "params": sum(count_parameters(m) for m in mods),
        })
    df = pd.DataFrame(rows).set_index("part")
    df["tokens"] = df["tokens"].astype("Int64")
    if timing:
        fns = {label: _part_fn(mods[0], seen[id(mods[0])][0]) for label, mods in groups.items() if len(mods) == 1}
        times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads,
                                 warmup=2, device=inputs.device)
        df["median_ms"] = [statistics.median(times[label]) * 1e3 if label in times else float("nan") for label in groups]
        df["time_share"] = df["median_ms"] / df["median_ms"].sum()
        df.attrs.update(batch=int(inputs.shape[0]), rounds=rounds, threads=num_threads or _default_threads())
    return df


def _part_fn(module: nn.Module, args: tuple) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return module(*args)

    return run


# ---------------------------------------------------------------------------------------------
# Time


@dataclass
class Timing:
    """Per-call times in seconds from :func:`time_function`; ``median`` is the figure to quote."""

    times: list[float]
    threads: int
    label: str = ""
    batch: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    @property
    def throughput(self) -> float | None:
        """Items per second at the median, when the batch size is known."""
        return None if self.batch is None else self.batch / self.median

    def __repr__(self) -> str:
        return (f"Timing({self.label or 'fn'}: median {self.median * 1e3:.3f} ms, IQR {self.iqr * 1e3:.3f} ms, "
                f"{len(self.times)} runs, {self.threads} threads)")


def _default_threads() -> int:
    return torch.get_num_threads()


def _synchronised(fn: Callable[[], object], device: torch.device | str | None) -> Callable[[], None]:
    if device is not None and torch.device(device).type == "cuda":
        def run():
            fn()
            torch.cuda.synchronize()
        return run
    return fn


def time_function(
    fn: Callable[[], object],
    *,
    num_threads: int | None = None,
    min_run_time: float = 0.5,
    warmup: int = 3,
    device: torch.device | str | None = None,
    label: str = "",
    batch: int | None = None,
) -> Timing:
    """Time ``fn()`` with :class:`torch.utils.benchmark.Timer` after ``warmup`` calls.

    ``num_threads`` defaults to :func:`torch.get_num_threads` (the Timer's own default is one
    thread). ``blocked_autorange`` runs blocks of calls for at least ``min_run_time`` seconds; the
    per-call times of all blocks are returned. CUDA work is synchronised inside each call.
    """
    threads = num_threads or _default_threads()
    run = _synchronised(fn, device)
    for _ in range(warmup):
        run()
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads, label=label)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(times=list(m.times), threads=threads, label=label, batch=batch)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _inference_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    model.eval()

    def run():
        with torch.inference_mode():
            return model(x)

    return run


def _train_fn(model: nn.Module, x, y: torch.Tensor | None = None, lr: float = 1e-4, **forward_kwargs):
    """One optimisation step (forward, cross-entropy, backward, AdamW) on a private copy of ``model``.

    ``x`` is a batch tensor, or a list of images for models that take one (NaViT); ``forward_kwargs``
    go to every forward call. Without ``y``, random labels are drawn."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    if y is None:
        with torch.no_grad():  # in eval mode: batch norm cannot normalise a batch of one in training mode
            num_classes = model.eval()(x[:1], **forward_kwargs).shape[-1]
        model.train()
        first = x[0] if isinstance(x, (list, tuple)) else x
        y = torch.randint(0, num_classes, (len(x),), device=first.device)

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, **forward_kwargs), y).backward()
        opt.step()

    return run


def measure_inference(model: nn.Module, x: torch.Tensor, **kwargs) -> Timing:
    """Median latency of ``model(x)`` in eval and inference mode; ``.throughput`` is images/s."""
    kwargs.setdefault("device", x.device)
    return time_function(_inference_fn(model, x), batch=x.shape[0], **kwargs)


def measure_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> Timing:
    """Median time of one training step (forward, loss, backward, AdamW step) on a copy of ``model``."""
    kwargs.setdefault("device", x.device)
    return time_function(_train_fn(model, x, y), batch=x.shape[0], **kwargs)


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> int | None:
    """Peak CUDA memory allocated by ``fn()`` in bytes, above what was allocated before.

    On CPU this returns None: PyTorch's CPU allocator keeps no peak statistic, and the process's
    resident size measures the allocator and the interpreter as much as the model.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# ---------------------------------------------------------------------------------------------
# Comparisons


def time_interleaved(
    fns: Mapping,
    *,
    rounds: int = 3,
    min_run_time: float = 0.3,
    num_threads: int | None = None,
    warmup: int = 3,
    device: torch.device | str | None = None,
    progress: str | None = None,
) -> dict:
    """Time every ``fns[key]()`` in turn, for ``rounds`` rounds, and return each key's per-call
    times. Interleaving means a slow spell of a shared machine hits every candidate alike.
    ``warmup`` calls precede each candidate's first timing; ``progress`` is a progress-bar title."""
    times: dict = {key: [] for key in fns}
    steps: Iterable = [(r, key) for r in range(rounds) for key in fns]
    if progress:
        from .book import progress as tqdm  # a widget in Jupyter, none while the book builds

        steps = tqdm(list(steps), desc=progress, leave=False)
    for r, key in steps:
        t = time_function(fns[key], num_threads=num_threads, min_run_time=min_run_time,
                          warmup=warmup if r == 0 else 1, device=device)
        times[key].extend(t.times)
    return times


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
    ``iqr_ms``, ``images_per_s``, ``peak_mem_mb`` (CUDA only, else NaN), ``time_ratio`` (time over the
    baseline's, lower is faster) and ``speedup`` (baseline time over this time). The baseline is
    the first candidate unless named. ``warmup`` calls precede each model's first timing.
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
    threads = num_threads or _default_threads()
    fns = {}
    for name, (model, x) in candidates.items():
        fns[name] = _inference_fn(model, x) if mode == "inference" else _train_fn(model, x)
    cuda = next((x.device for _, x in candidates.values() if x.device.type == "cuda"), None)
    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=threads, warmup=warmup,
                             device=cuda,
                             progress=f"timing {len(names)} models ({mode})" if progress else None)
    rows = []
    for name in names:
        model, x = candidates[name]
        t = Timing(times[name], threads, name, batch=x.shape[0])
        mem = peak_memory(fns[name], x.device)
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
    df["time_ratio"] = df["median_ms"] / df.loc[baseline, "median_ms"]
    df["speedup"] = 1.0 / df["time_ratio"]
    df.attrs.update(mode=mode, baseline=baseline, rounds=rounds, threads=threads,
                    batch={n: int(candidates[n][1].shape[0]) for n in names},
                    device=str(candidates[names[0]][1].device))
    return df


def scaling_sweep(
    model_cls,
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
    (split as in :func:`flops_by_component`) and time its inference, interleaved over ``rounds``.

    Returns a DataFrame with the setting's keys, ``tokens``, the FLOP components, ``gflops`` and
    ``median_ms`` (per batch of ``batch``)."""
    import pandas as pd

    device = torch.device(device)
    runs = []
    for s in settings:
        cfg = {**base_config, **s}
        model = model_cls(**cfg).to(device).eval()
        h, w = model.patch_embedding.image_size
        x = torch.randn(batch, model.patch_embedding.channels, h, w, device=device)
        runs.append((s, model, x, _inference_fn(model, x)))
    times = time_interleaved({i: run[3] for i, run in enumerate(runs)}, rounds=rounds, min_run_time=min_run_time,
                             num_threads=num_threads, warmup=2, device=device,
                             progress=f"timing {len(runs)} settings" if progress else None)
    rows = []
    for i, (s, model, x, _) in enumerate(runs):
        split = flops_by_component(model, x[:1])
        tokens = model.patch_embedding.num_patches + (1 if getattr(model, "pool", "mean") == "cls" else 0)
        rows.append({**s, "tokens": tokens, "params": count_parameters(model), **split, "gflops": sum(split.values()) / 1e9,
                     "median_ms": statistics.median(times[i]) * 1e3})
    return pd.DataFrame(rows)


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
        fns[(n, "attention")] = _inference_fn(attn, x)
        fns[(n, "mlp")] = _inference_fn(ff, x)
    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads, warmup=2,
                             device=device)
    rows = []
    for n in tokens:
        a, m = statistics.median(times[(n, "attention")]) * 1e3, statistics.median(times[(n, "mlp")]) * 1e3
        rows.append({"tokens": n, "attention_ms": a, "mlp_ms": m, "attention_share": a / (a + m)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Provenance and command line


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs)"


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(device: torch.device | str = "cpu", threads: int | None = None) -> dict:
    """Where and with what a measurement was made: device, versions, date, commit, threads."""
    from . import __version__

    device = torch.device(device)
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = None
    return {
        "device": str(device),
        "device_name": _device_name(device),
        "threads": threads or _default_threads(),
        "torch": torch.__version__,
        "torchvision": tv,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "vitlib": __version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }


def _format_table(df) -> str:
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


def _suite_anatomy(args) -> dict:
    """ViT against SimpleViT at the book's chapter-1 configuration: inference and training."""
    from .models import SimpleViT, ViT

    device = torch.device(args.device)
    cfg = dict(image_size=32, patch_size=4, num_classes=10, dim=128, depth=4, heads=4, dim_head=32, mlp_dim=256)
    torch.manual_seed(0)
    models = {"ViT": ViT(**cfg).to(device), "SimpleViT": SimpleViT(**cfg).to(device)}
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    figures: dict = {"config": cfg, "batch": args.batch}
    for mode in ("inference", "train"):
        df = compare({k: (m, x) for k, m in models.items()}, mode=mode, rounds=args.rounds,
                     min_run_time=args.min_run_time, num_threads=args.threads)
        print(f"\n{mode} (batch {args.batch}, median of {args.rounds} interleaved rounds, "
              f"{df.attrs['threads']} threads, {device})")
        print(_format_table(df))
        figures[mode] = df.reset_index().to_dict(orient="records")
        figures[f"simple_vit_{mode}_speedup"] = float(df.loc["SimpleViT", "speedup"])
    figures["params"] = {k: count_parameters(m) for k, m in models.items()}
    return figures


def _suite_train(args) -> dict:
    """Time to accuracy: the book's quick-mode SimpleViT recipe on the bundled digits."""
    import time

    from .train import QUICK_RECIPE, train_recipe

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


# ---------------------------------------------------------------------------------------------
# NaViT: mixed resolutions packed into sequences, and token dropout

#: Image sizes (height, width) of the NaViT workload: squares and both orientations, 64 to 224 pixels.
NAVIT_SIZES = ((64, 64), (96, 160), (128, 128), (160, 96), (224, 160), (224, 224))
#: The model the NaViT suite trains: ViT-Tiny's width and heads, six layers, 16-pixel patches.
NAVIT_CONFIG = dict(patch_size=16, num_classes=10, dim=192, depth=6, heads=3, dim_head=64, mlp_dim=768)


def navit_workload(
    num_images: int = 32,
    sizes=NAVIT_SIZES,
    *,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``num_images`` random images, each of a size drawn uniformly from ``sizes`` (ints or
    ``(height, width)`` pairs), and random labels; reproducible from ``seed``."""
    from .layers import pair

    sizes = [pair(s, "size") for s in sizes]
    if not sizes or num_images < 1:
        raise ValueError(f"navit_workload needs at least one size and one image; received sizes={sizes!r}, "
                         f"num_images={num_images!r}")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(sizes), (num_images,), generator=gen).tolist()
    images = [torch.randn(channels, *sizes[i], generator=gen) for i in picks]
    return images, torch.randint(num_classes, (num_images,), generator=gen)


def pad_images(images: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack ``(c, h, w)`` images into one ``(n, c, H, W)`` batch, zero-padded at the bottom and
    right to ``size`` (default: the largest height and width among them)."""
    h = max(img.shape[-2] for img in images) if size is None else size[0]
    w = max(img.shape[-1] for img in images) if size is None else size[1]
    out = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    for i, img in enumerate(images):
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out


def navit_token_counts(images: list[torch.Tensor], patch_size: int, token_dropout: float = 0.0) -> list[int]:
    """Tokens per image at ``patch_size``, after token dropout at rate ``token_dropout`` (NaViT's rule:
    ``max(1, int(n * (1 - rate)))``)."""
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    return [max(1, int(n * (1.0 - token_dropout))) for n in counts]


def packing_padding(lengths: list[int], max_lens: Iterable[int | None] = (None,)) -> list[dict]:
    """Padding fraction of first-fit-decreasing packing (vitlib's NaViT) and of in-order greedy
    packing (vit-pytorch's) for each maximum sequence length (None: the longest length). One
    row per length: ``max_len``, ``sequences_ours``, ``sequences_greedy``, ``padding_ours``,
    ``padding_greedy``."""
    from .models.na_vit import pack_greedy, pack_sequences, padding_fraction

    rows = []
    for max_len in max_lens:
        max_len = max(lengths) if max_len is None else max_len
        ours, greedy = pack_sequences(lengths, max_len), pack_greedy(lengths, max_len)
        rows.append({"max_len": max_len, "sequences_ours": len(ours), "sequences_greedy": len(greedy),
                     "padding_ours": padding_fraction(lengths, ours),
                     "padding_greedy": padding_fraction(lengths, greedy)})
    return rows


def _timing_summary(times: list[float], images: int, threads: int) -> dict:
    t = Timing(times, threads=threads, batch=images)
    return {"median_s": t.median, "iqr_s": t.iqr, "runs": len(times), "images_per_s": t.throughput}


def navit_train_comparison(
    images: list[torch.Tensor],
    labels: torch.Tensor,
    *,
    config: Mapping = NAVIT_CONFIG,
    token_dropout: Iterable[float] = (0.0,),
    padded_vit: bool = True,
    vit_pytorch: bool = False,
    rounds: int = 3,
    min_run_time: float = 0.5,
    num_threads: int | None = None,
    warmup: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Time training steps (forward, cross-entropy, backward, AdamW) on the same mixed-resolution
    images, interleaved: vitlib's :class:`~vitlib.models.NaViT` once per token-dropout rate, and
    optionally a vitlib :class:`~vitlib.models.ViT` of the same width and depth on the images
    zero-padded to the largest height and width (``"vit padded"``), and vit-pytorch's NaViT
    (``"vit-pytorch navit"``, no token dropout; skipped with a reason if vit-pytorch is missing).

    Each NaViT packs first-fit decreasing into sequences as long as its longest image (after
    token dropout): attention costs ``L^2`` per sequence of length ``L``, so longer sequences only
    add masked work. vit-pytorch's NaViT packs greedily to the same length as vitlib's at rate 0.

    Returns ``timings`` (per candidate: ``median_s``, ``iqr_s``, ``runs``, ``images_per_s``),
    ``tokens`` (real tokens per step), ``group_max_seq_len`` (per NaViT), ``vit_pytorch_skipped``
    (None, or why) and the settings. Models and images go to ``device``.
    """
    from .models import NaViT, ViT

    device = torch.device(device)
    images = [img.to(device) for img in images]
    labels = labels.to(device)
    threads = num_threads or _default_threads()
    cfg = {**NAVIT_CONFIG, **config}
    patch = cfg["patch_size"]
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    side = max(height, width)  # positions for any orientation up to the largest side
    channels = images[0].shape[0]
    fns: dict[str, Callable[[], None]] = {}
    tokens: dict[str, int] = {}
    seq_lens: dict[str, int] = {}
    for rate in token_dropout:
        name = f"navit (token dropout {rate:g})"
        torch.manual_seed(seed)  # the same weights at every rate
        model = NaViT(image_size=side, channels=channels, token_dropout_prob=float(rate) if rate else None, **cfg)
        model = model.to(device)
        counts = navit_token_counts(images, patch, float(rate))
        seq_lens[name] = max(counts)
        tokens[name] = sum(counts)
        fns[name] = _train_fn(model, images, labels, group_images=True, group_max_seq_len=max(counts))
    if padded_vit:
        vit = ViT(image_size=(height, width), channels=channels, **cfg).to(device)
        batch = pad_images(images, (height, width))
        fns["vit padded"] = _train_fn(vit, batch, labels)
        tokens["vit padded"] = len(images) * ((height // patch) * (width // patch) + 1)
    skipped = None
    if vit_pytorch:
        try:
            from vit_pytorch.na_vit import NaViT as VPNaViT
        except ImportError as err:
            skipped = f"vit-pytorch is not installed ({err})"
        else:
            vp = VPNaViT(image_size=side, channels=channels, **cfg).to(device)
            counts = navit_token_counts(images, patch)
            fns["vit-pytorch navit"] = _train_fn(vp, images, labels, group_images=True,
                                                      group_max_seq_len=max(counts))
            seq_lens["vit-pytorch navit"] = max(counts)
            tokens["vit-pytorch navit"] = sum(counts)
    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=threads, warmup=warmup,
                             device=device, progress=f"timing {len(fns)} training steps" if progress else None)
    return {
        "timings": {name: _timing_summary(t, len(images), threads) for name, t in times.items()},
        "tokens": tokens,
        "group_max_seq_len": seq_lens,
        "vit_pytorch_skipped": skipped,
        "images": len(images),
        "sizes": sorted({tuple(img.shape[-2:]) for img in images}),
        "config": cfg,
        "threads": threads,
        "rounds": rounds,
        "device": str(device),
    }


def _speed_ratio(timings: Mapping[str, dict], fast: str, slow: str) -> float | None:
    """Images/s of ``fast`` over images/s of ``slow`` (the same images): slow median over fast median."""
    if fast not in timings or slow not in timings:
        return None
    return timings[slow]["median_s"] / timings[fast]["median_s"]


def navit_packed_vs_padded(images: list[torch.Tensor], labels: torch.Tensor, *, vit_pytorch: bool = True,
                           **kwargs) -> dict:
    """Training speed of packed NaViT over a ViT trained on the same images padded to the largest
    size (images/s over images/s), for vitlib's NaViT and vit-pytorch's, measured interleaved.

    Returns ``packed_vs_padded``, ``vit_pytorch_packed_vs_padded`` (None with ``vit_pytorch_skipped``
    saying why, when vit-pytorch is missing or not asked for) and :func:`navit_train_comparison`'s
    result under ``comparison``. ``kwargs`` go to :func:`navit_train_comparison`."""
    res = navit_train_comparison(images, labels, token_dropout=(0.0,), padded_vit=True, vit_pytorch=vit_pytorch,
                                 **kwargs)
    t = res["timings"]
    return {
        "packed_vs_padded": _speed_ratio(t, "navit (token dropout 0)", "vit padded"),
        "vit_pytorch_packed_vs_padded": _speed_ratio(t, "vit-pytorch navit", "vit padded"),
        "vit_pytorch_skipped": res["vit_pytorch_skipped"] or (None if vit_pytorch else "not requested"),
        "comparison": res,
    }


def token_dropout_sweep(rates: Iterable[float], images: list[torch.Tensor], labels: torch.Tensor, **kwargs):
    """NaViT training-step time at each token-dropout rate, interleaved (see
    :func:`navit_train_comparison`, which ``kwargs`` go to). Returns a DataFrame with ``rate``,
    ``tokens`` (kept per step), ``group_max_seq_len``, ``median_ms``, ``iqr_ms``, ``images_per_s``
    and ``speedup`` (the first rate's time over this rate's)."""
    import pandas as pd

    rates = [float(r) for r in rates]
    if not rates:
        raise ValueError("token_dropout_sweep needs at least one rate; received none")
    res = navit_train_comparison(images, labels, token_dropout=rates, padded_vit=False, vit_pytorch=False, **kwargs)
    rows = []
    for rate in rates:
        name = f"navit (token dropout {rate:g})"
        t = res["timings"][name]
        rows.append({"rate": rate, "tokens": res["tokens"][name], "group_max_seq_len": res["group_max_seq_len"][name],
                     "median_ms": t["median_s"] * 1e3, "iqr_ms": t["iqr_s"] * 1e3, "images_per_s": t["images_per_s"]})
    df = pd.DataFrame(rows)
    df["speedup"] = df["median_ms"].iloc[0] / df["median_ms"]
    df.attrs.update(threads=res["threads"], rounds=res["rounds"], images=res["images"], config=res["config"])
    return df


def _suite_navit(args) -> dict:
    """NaViT training on mixed resolutions: packed against padded, token dropout, packing quality."""
    images, labels = navit_workload(args.batch, seed=args.seed)
    res = navit_train_comparison(images, labels, token_dropout=(0.0, 0.5), padded_vit=True, vit_pytorch=True,
                                 rounds=args.rounds, min_run_time=args.min_run_time, num_threads=args.threads,
                                 seed=args.seed, device=args.device, progress=True)
    t = res["timings"]
    counts = navit_token_counts(images, NAVIT_CONFIG["patch_size"])
    padding = packing_padding(counts, (None, 256, 512, 2048))
    figures = {
        "packed_vs_padded": _speed_ratio(t, "navit (token dropout 0)", "vit padded"),
        "dropout50_step_speedup": _speed_ratio(t, "navit (token dropout 0.5)", "navit (token dropout 0)"),
        "padding_fraction_ours": padding[0]["padding_ours"],
        "padding_fraction_greedy": padding[0]["padding_greedy"],
        "vit_pytorch_packed_vs_padded": _speed_ratio(t, "vit-pytorch navit", "vit padded"),
        "vit_pytorch_skipped": res["vit_pytorch_skipped"],
        "packing": padding,
        **res,
    }
    print(f"NaViT training on {res['images']} images of sizes {res['sizes']}, {res['threads']} threads, "
          f"median of {args.rounds} interleaved rounds, {args.device}")
    for name, row in t.items():
        print(f"  {name:28s} {row['median_s'] * 1e3:9.1f} ms/step (IQR {row['iqr_s'] * 1e3:.1f})  "
              f"{row['images_per_s']:7.1f} images/s  {res['tokens'][name]} tokens")
    for key in ("packed_vs_padded", "dropout50_step_speedup", "vit_pytorch_packed_vs_padded",
                "padding_fraction_ours", "padding_fraction_greedy"):
        value = figures[key]
        print(f"  {key:30s} " + ("-" if value is None else f"{value:.3f}"))
    return figures


SUITES: dict[str, Callable[[argparse.Namespace], dict]] = {"anatomy": _suite_anatomy, "train": _suite_train,
                                                         "navit": _suite_navit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES), help="which benchmark suite to run")
    parser.add_argument("--json", type=Path, help="write the suite's figures to this file as one JSON object")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all torch uses)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of calls per timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = SUITES[args.suite](args)
    result = {"suite": args.suite, **figures, "provenance": provenance(args.device, args.threads)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    from vitlib.bench import main as _main  # the imported module, so suites registered there count

    sys.exit(_main())
