"""Chapter 7's experiments: attention kernels and numeric precision.

* :func:`tiled_attention`: FlashAttention's idea in a few lines of PyTorch (keys and values in
  tiles, a running maximum and sum for the softmax), exact, for reading rather than for speed;
* :func:`kernel_sweep`: one attention layer on the plain path against fused kernels as the
  number of tokens grows, each with its time and the peak memory that one call allocates;
* :func:`backend_speedup`: a whole model on two backends, interleaved;
* :func:`precision_formats`, :func:`precision_comparison`: float32 against bfloat16 and float16
  autocast (what the CPU offers for them: :func:`vitlib.bench.cpu_features`), in time and in how far the logits move;
* :func:`recorded_attention`, :func:`recorded_precision`: the attention sweep and the models'
  precisions as ``make gpu-bench`` recorded them on a GPU (:mod:`vitlib.book.studies.gpu`).
"""
from __future__ import annotations

import torch

from ...backends import attention_backend, autocast, available_attention_backends
from ...bench import peak_memory, time_interleaved
from ...bench.timing import eval_mode, sized_call, train_step_fn
from ..claims import Measured
from ...layers import Attention
from ...models.state import private_rng

__all__ = ["PRECISIONS", "tiled_attention", "scores_bytes", "kernel_sweep", "backend_speedup",
           "precision_formats", "precision_comparison", "recorded_attention",
           "recorded_precision"]

#: Autocast dtype of each precision's name (None: float32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = 64) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``(..., tokens, d)`` tensors without ever holding more
    than ``block`` keys' scores per query: FlashAttention's tiling and online softmax (Dao et al.,
    2022; Rabe and Staats, 2021) in plain PyTorch. Each tile's scores are exponentiated against the
    running maximum; when a later tile raises the maximum, what was summed so far is rescaled by
    ``exp(old max - new max)``. The result equals the plain computation up to rounding."""
    if block < 1:
        raise ValueError(f"block must be a positive number of keys; received {block}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"expected queries and keys of one head size and as many values as keys; "
                         f"received q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    q = q * q.shape[-1] ** -0.5
    top = q.new_full(q.shape[:-1] + (1,), float("-inf"))  # running maximum of each query's scores
    total = q.new_zeros(q.shape[:-1] + (1,))              # running sum of exp(score - top)
    out = q.new_zeros(q.shape[:-1] + v.shape[-1:])         # running sum of exp(score - top) * value
    for start in range(0, k.shape[-2], block):
        scores = q @ k[..., start:start + block, :].transpose(-1, -2)   # (..., queries, block)
        new_top = torch.maximum(top, scores.amax(-1, keepdim=True))
        weights = torch.exp(scores - new_top)
        rescale = torch.exp(top - new_top)                              # earlier tiles, new maximum
        total = total * rescale + weights.sum(-1, keepdim=True)
        out = out * rescale + weights @ v[..., start:start + block, :]
        top = new_top
    return out / total


def scores_bytes(batch: int, heads: int, tokens: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one ``tokens x tokens`` score matrix per head and image: what the plain path
    stores (twice, scores and their softmax, while both are alive) and a fused kernel never does."""
    return batch * heads * tokens * tokens * torch.finfo(dtype).bits // 8


def _layer_call(layer: torch.nn.Module, x: torch.Tensor, backend: str, amp_dtype, train: bool):
    def call(x):
        with attention_backend(backend), autocast(x.device, amp_dtype):
            if not train:
                with torch.inference_mode():
                    return layer(x)
            layer.zero_grad(set_to_none=True)
            layer(x).float().sum().backward()
    return sized_call(call, x)


def kernel_sweep(tokens, *, dim: int = 192, heads: int = 3, dim_head: int = 64, batch: int = 1,
                 backends=("plain", "flash"), device: torch.device | str = "cpu",
                 precision: str = "fp32", train: bool = False, rounds: int = 3,
                 min_run_time: float = 0.1, num_threads: int | None = None, seed: int = 0):
    """One :class:`vitlib.layers.Attention` layer (width ``dim``, ``heads`` heads of ``dim_head``)
    on each backend at each token count: median time per call and its IQR (timed interleaved,
    at least 5 calls a side), the peak memory one call allocates (CUDA's allocator; on a CPU, the
    profiler's record of PyTorch's allocations), and the size of one score matrix for all heads.

    Returns a table with a row per (tokens, backend); ``attrs["speedups"]`` maps each token count
    to each fused backend's :class:`~vitlib.book.claims.Measured` speed-up over the first backend.
    A backend that does not run on ``device`` in ``precision`` raises ValueError at once."""
    import pandas as pd

    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; received {precision!r}")
    amp_dtype = PRECISIONS[precision]
    runs = available_attention_backends(device, amp_dtype or torch.float32, dim_head)
    missing = [b for b in backends if b not in runs]
    if missing:
        raise ValueError(f"backends {missing} do not run on {device.type} in {precision}; "
                         f"these do: {list(runs)}")
    if len(backends) < 2:
        raise ValueError(f"kernel_sweep compares backends: give at least two; received {list(backends)}")
    tokens = [int(n) for n in tokens]
    if not tokens or min(tokens) < 1:
        raise ValueError(f"tokens must be positive counts; received {tokens}")
    with private_rng(seed, device):  # the same layer and inputs for the same seed; the caller's state kept
        layer = Attention(dim=dim, heads=heads, dim_head=dim_head).to(device)
        inputs = {n: torch.randn(batch, n, dim, device=device) for n in tokens}
    layer.train(train)
    rows, speedups = [], {}
    for n in tokens:
        x = inputs[n]
        fns = {b: _layer_call(layer, x, b, amp_dtype, train) for b in backends}
        times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads,
                                 device=device, warmup=1)
        base = backends[0]
        speedups[n] = {b: Measured.ratio(times[base], times[b]) for b in backends[1:]}
        for b in backends:
            m = Measured.of_values(times[b])
            mem = peak_memory(fns[b], device, cpu=True)
            rows.append({"tokens": n, "backend": b, "median_ms": m.value * 1e3, "q1_ms": m.low * 1e3,
                         "q3_ms": m.high * 1e3, "iqr_ms": (m.high - m.low) * 1e3, "calls": m.n,
                         "peak_mib": float("nan") if mem is None else mem / 2**20,
                         "scores_mib": scores_bytes(batch, heads, n, amp_dtype or torch.float32) / 2**20})
    table = pd.DataFrame(rows)
    table.attrs.update(speedups=speedups, batch=batch, layer=dict(dim=dim, heads=heads, dim_head=dim_head),
                       device=str(device), precision=precision, mode="train" if train else "inference")
    return table


def backend_speedup(model: torch.nn.Module, x: torch.Tensor, backends=("plain", "flash"), *,
                    precision: str = "fp32", train: bool = False, rounds: int = 3, min_run_time: float = 0.2,
                    num_threads: int | None = None):
    """``model(x)`` on each backend (under autocast to ``precision``), interleaved: in inference,
    or with ``train=True`` a whole training step (forward, loss, backward, AdamW) on a copy of the
    model. Returns the per-call times of each, and the :class:`~vitlib.book.claims.Measured` speed-up of
    the second backend over the first."""
    if len(backends) != 2:
        raise ValueError(f"expected two backends, the baseline first; received {list(backends)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; received {precision!r}")

    def call(backend):
        if train:
            step = train_step_fn(model, x, amp_dtype=PRECISIONS[precision])

            def run():
                with attention_backend(backend):
                    return step()
            run.__dict__.update(vars(step))  # the smoke scale's sizes, if any
            return run

        def infer(x):
            with attention_backend(backend), torch.inference_mode(), autocast(x.device, PRECISIONS[precision]):
                return model(x)
        return sized_call(infer, x)

    with eval_mode(model):
        times = time_interleaved({b: call(b) for b in backends}, rounds=rounds, min_run_time=min_run_time,
                                 num_threads=num_threads, device=x.device)
    return times, Measured.ratio(times[backends[0]], times[backends[1]])


#: The CPU flags (Linux's ``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on Arm) of instructions
#: that compute in bfloat16 or float16.
def precision_formats():
    """float32, bfloat16 and float16 side by side, from :func:`torch.finfo`: bits of exponent and
    of mantissa, the largest number, the smallest normal one, and the gap above 1."""
    import pandas as pd

    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        info = torch.finfo(dtype)
        mantissa = round(-torch.log2(torch.tensor(info.eps, dtype=torch.float64)).item())
        rows.append({"format": name, "bits": info.bits, "exponent": info.bits - 1 - mantissa,
                     "mantissa": mantissa, "max": info.max, "smallest_normal": info.tiny, "eps": info.eps})
    return pd.DataFrame(rows)


def precision_comparison(model: torch.nn.Module, x: torch.Tensor, precisions=("fp32", "bf16", "fp16"), *,
                         rounds: int = 3, min_run_time: float = 0.2, num_threads: int | None = None):
    """``model(x)`` in inference under autocast to each precision (the first is the baseline,
    float32 by default), timed interleaved: median, IQR and calls, the speed-up over the baseline
    (``attrs["speedups"]``, :class:`~vitlib.book.claims.Measured`), and how far the logits move from the
    baseline's (largest absolute difference; share of images whose top class stays)."""
    import pandas as pd

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or len(precisions) < 2:
        raise ValueError(f"expected two or more of {list(PRECISIONS)}, the baseline first; received "
                         f"{list(precisions)}")

    def call(precision):
        def run():
            with torch.inference_mode(), autocast(x.device, PRECISIONS[precision]):
                return model(x)
        return run

    fns = {p: call(p) for p in precisions}
    with eval_mode(model):
        outs = {p: fn().float() for p, fn in fns.items()}
        times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=num_threads,
                                 device=x.device)
    base = precisions[0]
    speedups = {p: Measured.ratio(times[base], times[p]) for p in precisions[1:]}
    rows = []
    for p in precisions:
        m = Measured.of_values(times[p])
        rows.append({"precision": p, "median_ms": m.value * 1e3, "iqr_ms": (m.high - m.low) * 1e3,
                     "calls": m.n, "speedup": speedups.get(p, Measured.exact(1.0, "x")),
                     "max_abs_diff": (outs[p] - outs[base]).abs().max().item(),
                     "top1_same": (outs[p].argmax(-1) == outs[base].argmax(-1)).float().mean().item()})
    table = pd.DataFrame(rows)
    table.attrs.update(speedups=speedups, times=times, logit_scale=outs[base].abs().max().item())
    return table


def recorded_attention(results: dict | None):
    """The attention sweep of a recorded GPU run (``make gpu-record`` or ``make gpu-bench``) (:func:`vitlib.book.results.recorded_gpu_results`)
    as a table, one row per tokens, backend, precision and mode, with the speed-up over the plain
    path; None when nothing was recorded or the run has no sweep."""
    import pandas as pd

    rows = (results or {}).get("attention") or []
    if not rows:
        return None
    table = pd.DataFrame([{k: r.get(k) for k in ("tokens", "backend", "precision", "mode", "batch",
                                                  "median_ms", "iqr_ms", "peak_mem_mb")}
                          | {f"vs_plain{end}": (r.get("vs_plain") or {}).get(key)
                             for end, key in (("", "value"), ("_low", "low"), ("_high", "high"))}
                          for r in rows])
    return table.sort_values(["mode", "precision", "tokens", "backend"], ignore_index=True)


def recorded_precision(results: dict | None):
    """Each model's eager 16-bit time (bfloat16, or float16 on a GPU without native bfloat16, as the
    run measured: column ``half``) against its float32 time in a recorded GPU run, for inference
    and training: one row per model and mode; None when nothing was recorded."""
    import pandas as pd

    rows = [r for r in (results or {}).get("models") or [] if not r.get("compiled")]
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["mode"]), {})[r["precision"]] = r
    out = []
    for (model, mode), p in by.items():
        half = next((h for h in ("bf16", "fp16") if h in p), None)
        if "fp32" in p and half:
            out.append({"model": model, "mode": mode, "half": half, "fp32_ms": p["fp32"]["median_ms"],
                        "half_ms": p[half]["median_ms"], "speedup": p["fp32"]["median_ms"] / p[half]["median_ms"],
                        "fp32_mib": p["fp32"].get("peak_mem_mb"), "half_mib": p[half].get("peak_mem_mb")})
    return pd.DataFrame(out) if out else None
