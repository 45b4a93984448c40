"""Where a call's time goes, operator by operator (``torch.profiler`` on the CPU).

* :func:`operator_times`: each operator's self time and number of calls, per call of a function;
* :func:`time_by_kind`: the same summed into the kinds of work of a vision transformer (:data:`KINDS`:
  matrix products, the attention kernel, layer norms, GELU, copies and reshapes, convolutions, the
  rest), with the operators that make each kind.

The profiler adds its own cost to every operator call, so read shares and counts, not absolute
times: a model's wall-clock time comes from :func:`vitlib.bench.time_function`.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["KINDS", "OPERATOR_NAMESPACES", "operator_times", "time_by_kind"]

#: The namespaces of the operators that do the work: torch's own, oneDNN's and the quantised ones.
OPERATOR_NAMESPACES = frozenset({"aten", "mkldnn", "quantized", "onednn"})

#: The kinds of work of a vision transformer's forward pass, each the operators (names without their
#: namespace) that do it; an operator in none of them counts as "other" (additions, multiplications,
#: means and the rest of the element-wise work).
KINDS: dict[str, frozenset[str]] = {
    "matrix products": frozenset({"addmm", "mm", "bmm", "baddbmm", "matmul", "linear", "_linear_pointwise"}),
    "attention kernel": frozenset({"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                                   "_scaled_dot_product_attention_math", "softmax", "_softmax", "_safe_softmax"}),
    "layer norm": frozenset({"layer_norm", "native_layer_norm"}),
    "GELU": frozenset({"gelu"}),
    "copies and reshapes": frozenset({"copy_", "contiguous", "clone", "cat", "unbind", "chunk", "split",
                                      "split_with_sizes", "permute", "transpose", "view", "reshape", "expand",
                                      "_unsafe_view", "as_strided", "select", "slice", "t", "unsqueeze", "flatten",
                                      "empty", "empty_like", "empty_strided", "_to_copy", "to", "detach", "alias",
                                      "resolve_conj", "resolve_neg", "squeeze", "stack", "narrow", "unflatten",
                                      "movedim", "unfold"}),
    "convolution": frozenset({"conv2d", "convolution", "_convolution", "mkldnn_convolution"}),
}


def operator_times(fn: Callable[[], object], *, calls: int = 3, warmup: int = 1) -> tuple[list[dict], int]:
    """Profile ``calls`` calls of ``fn`` (after ``warmup`` unprofiled ones) and return
    ``(operators, calls)``: one row per operator (``op``, its full name; ``calls`` and ``self_ms``
    per call of ``fn``), slowest first. Only operators count (:data:`OPERATOR_NAMESPACES`), never
    the ranges that autograd and the profiler record around them, so the self times add up without
    counting anything twice."""
    from torch.profiler import ProfilerActivity, profile

    if calls < 1:
        raise ValueError(f"calls must be at least 1; received {calls}")
    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    rows = [{"op": e.key, "calls": e.count / calls, "self_ms": e.self_cpu_time_total / calls / 1e3}
            for e in prof.key_averages() if e.key.split("::", 1)[0] in OPERATOR_NAMESPACES]
    return sorted(rows, key=lambda r: -r["self_ms"]), calls


def _kind(op: str) -> str:
    name = op.split("::", 1)[-1].split(".", 1)[0]
    return next((kind for kind, names in KINDS.items() if name in names), "other")


def time_by_kind(fn: Callable[[], object], *, calls: int = 3, warmup: int = 1, top: int = 3) -> dict:
    """:func:`operator_times` of ``fn`` summed by kind of work (:data:`KINDS`): ``{"total_ms": the
    profiled operators' self time per call, "kinds": {kind: {"ms", "share", "ops": the ``top``
    operators of that kind by self time}}}``, kinds in :data:`KINDS` order, then "other"."""
    rows, _ = operator_times(fn, calls=calls, warmup=warmup)
    total = sum(r["self_ms"] for r in rows)
    kinds = {kind: {"ms": 0.0, "share": 0.0, "ops": []} for kind in [*KINDS, "other"]}
    for r in rows:
        k = kinds[_kind(r["op"])]
        k["ms"] += r["self_ms"]
        if len(k["ops"]) < top:
            k["ops"].append(r["op"])
    for k in kinds.values():
        k["share"] = k["ms"] / total if total else 0.0
    return {"total_ms": total, "kinds": kinds}
