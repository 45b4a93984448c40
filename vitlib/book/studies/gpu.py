"""The GPU benchmark, ``make gpu-bench``: every model family of the book, eager against compiled,
float32 against 16-bit autocast (bfloat16 where the GPU computes it natively, float16 on older GPUs
such as a T4: :func:`vitlib.backends.half_precision`), inference and a training step, and one attention layer on the
plain path against SDPA's kernels from 197 to 4096 tokens, each with its peak memory.

``python -m vitlib.bench gpu --json book/results/gpu-bench.json`` on one GPU stays within
:data:`BUDGET_S` seconds of measuring (under 5 minutes in all): the measurements run in order of
importance (eager models, then the attention sweep, then compiled models, most telling first), a
compilation starts only with :data:`COMPILE_RESERVE_S` seconds left, and whatever the budget
leaves out is listed under ``skipped``. Inputs are synthetic (random images, random labels). A
measurement that fails (a kernel refusing its inputs, a compiler error, memory) is listed under
``errors`` and the run goes on.

``--tiny``, and any run on a CPU, measures tiny models in seconds (the tests run it so); there the
compiled rows use dynamo's ``"eager"`` backend, which tests the path, not inductor's speed.
"""
from __future__ import annotations

import os
import time

import torch

from ...backends import attention_backend, autocast, available_attention_backends, half_precision, synchronise
from ...bench import inference_fn, peak_memory, time_interleaved, train_step_fn
from ..claims import Measured
from ...layers import Attention
from ...models import MODELS, presets
from ...models.state import private_rng, seed_rng

__all__ = ["GPU_MODELS", "TINY_MODELS", "ATTENTION_TOKENS", "BUDGET_S", "COMPILE_RESERVE_S", "gpu_suite"]

#: The book's families at a paper's size: (label, family, configuration).
GPU_MODELS = [(name, presets.get(name).family, presets.config(name)) for name in
              ("ViT-B/16", "SimpleViT-S/16", "LeViT-256", "CrossViT-S", "DeiT-S/16-distilled", "ResNet-50")]
GPU_MODELS.insert(4, ("NaViT-B/16", "navit", presets.config("ViT-B/16")))  # NaViT at ViT-B/16's size
_VIT = dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48)
#: A tiny model of every family, for ``--tiny`` and CPUs.
TINY_MODELS = [
    ("ViT", "vit", _VIT), ("SimpleViT", "simple_vit", _VIT),
    ("LeViT", "levit", dict(image_size=32, num_classes=5, dim=(16, 24, 32), depth=1, heads=(2, 3, 4),
                            mlp_mult=2, dim_key=8, dim_value=8)),
    ("CrossViT", "cross_vit", dict(image_size=16, num_classes=5, sm_dim=16, lg_dim=32, sm_patch_size=2,
                                   lg_patch_size=4, sm_enc_heads=2, sm_enc_mlp_dim=32, sm_enc_dim_head=8,
                                   lg_enc_depth=1, lg_enc_heads=2, lg_enc_mlp_dim=64, lg_enc_dim_head=8,
                                   cross_attn_depth=1, cross_attn_heads=2, cross_attn_dim_head=8, depth=1)),
    ("NaViT", "navit", _VIT), ("DistillableViT", "distillable_vit", _VIT),
    ("ResNet", "resnet", dict(image_size=16, num_classes=5, layers=(1, 1), widths=(8, 16))),
]
#: Sequence lengths of the attention sweep (ViT-B/16's attention layer: width 768, 12 heads of 64).
ATTENTION_TOKENS = (197, 576, 1024, 2048, 4096)
ATTENTION_LAYER = dict(dim=768, heads=12, dim_head=64)
ATTENTION_BATCH = 8
#: Seconds of measuring on a GPU (``VITLIB_GPU_BUDGET_S`` overrides), and the least left to start a
#: compilation.
BUDGET_S = float(os.environ.get("VITLIB_GPU_BUDGET_S", 200))
COMPILE_RESERVE_S = 45.0
#: Autocast dtype of each precision (None: float32, no autocast).
AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def half_name(device: torch.device) -> str:
    """``"bf16"`` or ``"fp16"``: the 16-bit autocast this suite measures on ``device``."""
    return "bf16" if half_precision(device) == torch.bfloat16 else "fp16"


def _infer_fn(model, x, device, precision):
    return inference_fn(model, x, amp_dtype=AMP[precision])


def _train_fn(model, x, device, precision, compile_with: str | None = None):
    """One step (forward under autocast, cross-entropy, backward, AdamW) on a copy of ``model``."""
    return train_step_fn(model, x, amp_dtype=AMP[precision], compile_with=compile_with)


def _attention_fn(layer, x, device, precision, backend, mode):
    def run():
        with attention_backend(backend), autocast(device, AMP[precision]):
            if mode == "inference":
                with torch.inference_mode():
                    return layer(x)
            layer.zero_grad(set_to_none=True)
            layer(x).float().sum().backward()
    return run


class _Run:
    """The budget, the skipped and failed measurements, and the timing settings of one suite run."""

    def __init__(self, args, device: torch.device, budget_s: float) -> None:
        self.args, self.device = args, device
        self.half = half_name(device)
        self.precisions = ("fp32", self.half)
        self.deadline = time.monotonic() + budget_s
        self.skipped: list[str] = []
        self.errors: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def first_calls(self, fns: dict, what: dict) -> tuple[dict, dict]:
        """Call each candidate once (the compilation, for compiled ones): the candidates that ran,
        and the seconds each took. A failure goes to ``errors``."""
        ok, seconds = {}, {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            try:
                fn()
                synchronise(self.device)
            except Exception as err:  # noqa: BLE001  (a kernel, the compiler, memory: noted, the run goes on)
                self.errors.append({**what, "candidate": name, "error": f"{type(err).__name__}: "
                                    f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"})
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            ok[name], seconds[name] = fn, time.perf_counter() - t0
        return ok, seconds

    def time(self, fns: dict, batch: int) -> dict:
        """Median, spread and peak memory of each candidate, timed interleaved."""
        if not fns:
            return {}
        times = time_interleaved(fns, rounds=self.args.rounds, min_run_time=self.args.min_run_time,
                                 num_threads=self.args.threads, device=self.device, warmup=1)
        out = {}
        for name, t in times.items():
            m = Measured.of_values(t)
            mem = peak_memory(fns[name], self.device)
            out[name] = {"median_ms": m.value * 1e3, "iqr_ms": (m.high - m.low) * 1e3, "runs": m.n,
                         "images_per_s": batch / m.value, "peak_mem_mb": None if mem is None else mem / 2**20,
                         "times": t}
        return out


def _row(base: dict, result: dict) -> dict:
    return {**base, **{k: v for k, v in result.items() if k != "times"}}


def _eager_models(run: _Run, models: dict, inputs: dict) -> list[dict]:
    rows = []
    for label, (family, model) in models.items():
        x = inputs[label]
        for mode in ("inference", "train"):
            what = {"model": label, "mode": mode}
            if run.left() <= 0:
                run.skipped.append(f"{label} {mode} (eager): time budget")
                continue
            make = _infer_fn if mode == "inference" else _train_fn
            fns, _ = run.first_calls({p: make(model, x, run.device, p) for p in run.precisions}, what)
            for precision, result in run.time(fns, len(x)).items():
                rows.append(_row({"model": label, "family": family, "mode": mode, "precision": precision,
                                  "compiled": False, "batch": len(x)}, result))
    return rows


def _attention_sweep(run: _Run, tiny: bool) -> list[dict]:
    layer_cfg = dict(dim=32, heads=2, dim_head=16) if tiny else ATTENTION_LAYER
    batch = 2 if tiny else ATTENTION_BATCH
    tokens_list = (17, 65) if tiny else ATTENTION_TOKENS
    seed_rng(0, run.device)  # gpu_suite's private stream: the caller's random state is not touched
    layer = Attention(**layer_cfg).to(run.device)
    rows = []
    for precision in (run.half, "fp32"):
        dtype = AMP[precision] or torch.float32
        names = [b for b in available_attention_backends(run.device, dtype, layer_cfg["dim_head"])
                 if b not in ("sdpa", "math")]  # plain against each fused kernel
        for tokens in tokens_list:
            x = torch.randn(batch, tokens, layer_cfg["dim"], device=run.device)
            for mode in ("inference", "train"):
                what = {"attention": tokens, "precision": precision, "mode": mode}
                if run.left() <= 0:
                    run.skipped.append(f"attention {tokens} tokens {precision} {mode}: time budget")
                    continue
                fns, _ = run.first_calls({b: _attention_fn(layer, x, run.device, precision, b, mode)
                                          for b in names}, what)
                results = run.time(fns, batch)
                for backend, result in results.items():
                    vs = (Measured.ratio(results["plain"]["times"], result["times"]) if "plain" in results
                          else None)
                    rows.append(_row({"tokens": tokens, "backend": backend, "precision": precision,
                                      "mode": mode, "batch": batch, "vs_plain": None if vs is None else vs.to_dict()}, result))
    return rows


def _compiled_models(run: _Run, models: dict, inputs: dict, jobs: list, backend: str) -> list[dict]:
    rows = []
    for label, mode, precision in jobs:
        family, model = models[label]
        x = inputs[label]
        what = {"model": label, "mode": mode, "precision": precision, "compiled": True}
        if run.left() < COMPILE_RESERVE_S * (run.device.type == "cuda"):
            run.skipped.append(f"{label} {mode} {precision} (compiled): time budget")
            continue
        torch.compiler.reset()  # a fresh cache: no recompilation limit reached across models
        if mode == "inference":
            compiled = torch.compile(model, backend=backend)
            fns = {"eager": _infer_fn(model, x, run.device, precision),
                   "compiled": _infer_fn(compiled, x, run.device, precision)}
        else:
            fns = {"eager": _train_fn(model, x, run.device, precision),
                   "compiled": _train_fn(model, x, run.device, precision, compile_with=backend)}
        fns, seconds = run.first_calls(fns, what)
        results = run.time(fns, len(x))
        if "compiled" in results:
            eager = results.get("eager")
            vs = None if eager is None else Measured.ratio(eager["times"], results["compiled"]["times"])
            rows.append(_row({"model": label, "family": family, "mode": mode, "precision": precision,
                              "compiled": True, "batch": len(x), "compile_s": seconds["compiled"],
                              "vs_eager": None if vs is None else vs.to_dict()}, results["compiled"]))
    return rows


def gpu_suite(args) -> dict:
    """The book's models and attention on one GPU (see :mod:`vitlib.book.studies.gpu`). Seeded by
    ``args.seed``; the caller's random state is left as it was."""
    with private_rng(args.seed, args.device):
        return _gpu_suite(args)


def _gpu_suite(args) -> dict:
    start = time.monotonic()
    device = torch.device(args.device)
    tiny = bool(getattr(args, "tiny", False)) or device.type != "cuda"
    cuda = device.type == "cuda"
    backend = "inductor" if cuda else "eager"
    table = TINY_MODELS if tiny else GPU_MODELS
    batch = 2 if tiny else args.batch
    models = {label: (family, MODELS[family](**cfg).to(device)) for label, family, cfg in table}
    inputs = {label: model.example_input(batch, device) for label, (_, model) in models.items()}
    run = _Run(args, device, BUDGET_S if device.type == "cuda" else 1e9)
    labels = list(models)
    if tiny:
        jobs = [(labels[0], "inference", "fp32"), (labels[0], "train", "fp32")]
    else:  # the most telling first: ViT-B/16, then every family's inference, then training
        first = labels[0]
        half = run.half
        jobs = [(first, "inference", half), (first, "train", half), (first, "inference", "fp32")]
        jobs += [(label, "inference", half) for label in labels[1:]]
        jobs += [(first, "train", "fp32")] + [(label, "train", half) for label in labels[1:]]
    rows = _eager_models(run, models, inputs)
    attention_rows = _attention_sweep(run, tiny)
    rows += _compiled_models(run, models, inputs, jobs, backend)
    figures = {
        "tiny": tiny, "device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "compile_backend": backend, "half_precision": run.half, "batch": batch, "budget_s": BUDGET_S if device.type == "cuda" else None,
        "params": {label: sum(p.numel() for p in model.parameters()) for label, (_, model) in models.items()},
        "models": rows, "attention": attention_rows, "skipped": run.skipped, "errors": run.errors,
        "wall_s": time.monotonic() - start,
    }
    _print(figures)
    return figures


def _print(figures: dict) -> None:
    print(f"\nmodels ({figures['device']}, batch {figures['batch']}): median ms, peak MiB")
    for r in figures["models"]:
        mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:9.0f}"
        extra = f"  compiled ({r['compile_s']:.0f} s to compile)" if r["compiled"] else ""
        print(f"  {r['model']:20s} {r['mode']:9s} {r['precision']:4s} {r['median_ms']:9.2f} {mem}{extra}")
    print("\nattention layer: median ms, peak MiB")
    for r in figures["attention"]:
        mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:9.0f}"
        print(f"  {r['tokens']:5d} tokens {r['backend']:9s} {r['precision']:4s} {r['mode']:9s} "
              f"{r['median_ms']:9.2f} {mem}")
    for item in figures["skipped"]:
        print(f"skipped: {item}")
    for err in figures["errors"]:
        print(f"error: {err}")
    print(f"\n{figures['wall_s']:.0f} s in all")
