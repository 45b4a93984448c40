"""Count what a model is made of and what it computes: parameters, FLOPs, attention scores, by part.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, taught to count the fused CPU
attention kernel, which it otherwise reports as zero. Attention sizes come from the tensors that
reach the attention kernel (:class:`~vitlib.layers.record_attention`). Everything here asks the
model what it is (``components()``, ``parts()``); nothing tests a model's class. Counting works on
``meta`` tensors too, so very large models are counted without computing anything.
"""
from __future__ import annotations

import statistics
from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..compat import cpu_flash_attention_ops
from ..layers import record_attention
from ..models.base import owner_of
from .timing import default_threads, eval_mode, outputs, time_interleaved

__all__ = [
    "COMPONENTS",
    "count_parameters",
    "parameters_by_component",
    "count_flops",
    "flops_by_component",
    "attention_entries",
    "sequence_length",
    "part_table",
]

COMPONENTS = ("patch embedding", "positions + tokens", "attention", "mlp", "head", "other")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as a fixed sin-cos table are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _components(model: nn.Module) -> dict[str, str]:
    """The model's own map of names to components (see ``VisionModel.components``)."""
    components = getattr(model, "components", None)
    if components is None:
        raise ValueError(f"measuring by component needs a vitlib model (with .components()); received "
                         f"{type(model).__name__}")
    return components()


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """Parameters of the patch embedding, positions and learned tokens, attention, MLP, head, and
    everything else (norms), summed over layers, as the model files them."""
    kinds = _components(model)
    out = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():
        owner = owner_of(name, kinds)
        out[kinds[owner] if owner is not None else "other"] += p.numel()
    return out


# ----- FLOPs -------------------------------------------------------------------------------------


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
    table = {}
    # The CPU kernel behind F.scaled_dot_product_attention, which FlopCounterMode does not know.
    forward, backward = cpu_flash_attention_ops()
    if forward is not None:
        table[forward] = _sdpa_forward_flops
    if backward is not None:
        table[backward] = _sdpa_backward_flops
    return table


def _flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_custom_flop_formulas())


def _run_once(model: nn.Module, inputs, backward: bool) -> None:
    if backward:
        out = model(inputs)
        sum(o.float().sum() for o in outputs(out)).backward()
    else:
        with torch.no_grad():
            model(inputs)


def count_flops(model: nn.Module, inputs, backward: bool = False) -> int:
    """FLOPs of one forward pass (and backward with ``backward=True``) on ``inputs``.

    Counts matrix products only (linear layers, convolutions, attention), 2 FLOPs per
    multiply-add; norms, softmax and activations are not counted. The model runs in eval mode and
    is left in the mode it was in.
    """
    with _flop_counter() as counter, eval_mode(model):
        _run_once(model, inputs, backward)
    return int(counter.get_total_flops())


def _is_score_op(op) -> bool:
    name = str(op)
    return "attention" in name or name.endswith(".bmm") or name == "aten.bmm"


def flops_by_component(model: nn.Module, inputs, backward: bool = False) -> dict[str, int]:
    """FLOPs split into patch embedding, attention projections (q, k, v, out: linear in tokens),
    attention scores (``q k^T`` and ``attn v``: quadratic in tokens), MLP, head and other."""
    kinds = _components(model)
    with _flop_counter() as counter, eval_mode(model):
        _run_once(model, inputs, backward)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    out = {"patch embedding": 0, "attention (projections)": 0, "attention (scores)": 0, "mlp": 0, "head": 0}
    for name, kind in kinds.items():
        if kind not in ("patch embedding", "attention", "mlp", "head"):
            continue
        for op, n in counts.get(f"{root}.{name}", {}).items():
            if kind == "attention":
                out["attention (scores)" if _is_score_op(op) else "attention (projections)"] += int(n)
            else:
                out[kind] += int(n)
    out["other"] = int(counter.get_total_flops()) - sum(out.values())
    return out


# ----- attention ---------------------------------------------------------------------------------


def attention_entries(model: nn.Module, inputs) -> list[dict]:
    """Every attention computed in one forward pass: ``module`` (the attention module's name),
    ``heads``, ``queries``, ``keys`` and ``entries = heads * queries * keys`` per sequence, the
    number of scores it computes. Recorded from the tensors that reach the attention kernel
    (:class:`~vitlib.layers.record_attention`), not from a formula: self-attention, cross-attention
    and LeViT's attention on feature maps (shrinking attention included) alike."""
    with record_attention(model) as calls, torch.no_grad(), eval_mode(model):
        model(inputs)
    return _entries(calls)


def _entries(calls) -> list[dict]:
    return [{"module": c.module, "heads": c.heads, "queries": c.queries, "keys": c.keys, "entries": c.entries}
            for c in calls]


def sequence_length(model: nn.Module, inputs) -> int:
    """Tokens the model's first attention attends over for ``inputs``: for a ViT the patches plus
    its class token, for a SimpleViT the patches. Recorded, not computed from a configuration."""
    calls = attention_entries(model, inputs)
    if not calls:
        raise ValueError(f"{type(model).__name__} computed no attention on this input; it has no sequence length")
    return calls[0]["keys"]


# ----- parts -------------------------------------------------------------------------------------


def part_table(
    model: nn.Module,
    inputs: torch.Tensor,
    parts: Mapping[str, Iterable[str]] | None = None,
    *,
    timing: bool = False,
    rounds: int = 3,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
):
    """Split one forward pass of ``model(inputs)`` into named parts (LeViT's stages, CrossViT's
    branches) and return a DataFrame with one row per part.

    ``parts`` maps a label to qualified names of submodules or parameters; by default the model's
    own :meth:`~vitlib.models.VisionModel.parts`. Columns: ``tokens`` (tokens the part outputs:
    ``h * w`` of a feature map, or the sequence length; None for a part that outputs neither, such
    as a head), ``map`` (``"h x w"`` for feature maps), ``attention_entries`` (scores computed, per
    image, summed over the part's attention layers and heads, see :func:`attention_entries`),
    ``gflops_scores`` (the ``q k^T`` and ``attn v`` products), ``gflops`` (all matrix products of the
    part), ``params``; with ``timing=True`` also ``median_ms`` for the whole batch (each part made of
    one module timed alone on the input it received in the full model, all parts interleaved; NaN
    for other parts) and ``time_share``. FLOPs and entries are per image. The model runs in eval
    mode and is left in the mode it was in.
    """
    import pandas as pd

    parts = model.parts() if parts is None else parts
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    groups = {label: list(names) for label, names in parts.items()}
    for label, names in groups.items():
        for name in names:
            if name not in modules and name not in params:
                raise ValueError(f"part {label!r} names {name!r}, which is neither a submodule nor a parameter of "
                                 f"{type(model).__name__}")
    seen: dict[str, tuple] = {}  # module name -> (its input args, its output shape)

    def keep(name, args, output):
        seen[name] = (tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), tuple(output.shape))

    hooks = [modules[n].register_forward_hook(lambda m, a, o, n=n: keep(n, a, o))
             for names in groups.values() for n in names if n in modules]
    try:
        # one forward pass records the attention calls and counts the FLOPs
        with record_attention(model) as calls, _flop_counter() as counter, torch.no_grad(), eval_mode(model):
            model(inputs[:1])
        entries = _entries(calls)
        if timing:
            with torch.no_grad(), eval_mode(model):
                model(inputs)  # the inputs kept for timing are full batches
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    kinds = _components(model)
    rows = []
    for label, names in groups.items():
        inside = lambda name: owner_of(name, names) is not None  # noqa: E731
        flops = sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in names if n in modules)
        scores = sum(int(n) for name, kind in kinds.items() if kind == "attention" and inside(name)
                     for op, n in counts.get(f"{root}.{name}", {}).items() if _is_score_op(op))
        # tokens: the last output in the part that is a sequence (b, n, d) or a map (b, c, h, w)
        shape = next((seen[n][1] for n in reversed(names) if n in seen and len(seen[n][1]) in (3, 4)), None)
        rows.append({
            "part": label,
            "tokens": None if shape is None else shape[-2] * shape[-1] if len(shape) == 4 else shape[1],
            "map": f"{shape[-2]} x {shape[-1]}" if shape is not None and len(shape) == 4 else "",
            "attention_entries": sum(r["entries"] for r in entries if inside(r["module"])),
            "gflops_scores": scores / 1e9,
            "gflops": flops / 1e9,
            "params": sum(p.numel() for name, p in params.items() if inside(name)),
        })
    df = pd.DataFrame(rows).set_index("part")
    df["tokens"] = df["tokens"].astype("Int64")
    if timing:
        fns = {label: _part_fn(modules[names[0]], seen[names[0]][0]) for label, names in groups.items()
               if len(names) == 1 and names[0] in seen}
        with eval_mode(model):
            times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads,
                                     warmup=2, device=inputs.device)
        df["median_ms"] = [statistics.median(times[label]) * 1e3 if label in times else float("nan")
                           for label in groups]
        df["time_share"] = df["median_ms"] / df["median_ms"].sum()
        df.attrs.update(batch=int(inputs.shape[0]), rounds=rounds, threads=num_threads or default_threads())
    return df


def _part_fn(module: nn.Module, args: tuple) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return module(*args)

    return run


def meta_parts(preset: str, **overrides):
    """:func:`part_table` of the preset ``preset`` (e.g. ``"LeViT-128S"``) with ``overrides`` (e.g.
    ``image_size=448``), built on the ``meta`` device (:func:`vitlib.models.presets.build_meta`,
    instant at any size): tokens, attention entries, FLOPs and parameters per part of
    ``model.parts()``."""
    from ..models.presets import build_meta

    model = build_meta(preset, **overrides)
    return part_table(model, model.example_input(1))
