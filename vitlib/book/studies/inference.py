"""Chapter 7 (attention kernels and precision): vitlib's ViT-S/16 against its peers, and the GPU
benchmark.

* ``python -m vitlib.bench infer``: vitlib's ViT-S/16 (dim 384, depth 12, heads 6, MLP 1536,
  224 px) against vit-pytorch's ``ViT`` and timm's ``vit_small_patch16_224`` (random weights),
  forward in eval mode at batch 1 and 16 and one training step (forward, backward, AdamW) at batch
  16, all interleaved in one process, beside a matrix product of the MLP's first layer's shape
  (``tokens * batch x 384 @ 384 x 1536``), the machine's roofline; and, on a CPU, where each
  model's forward spends its time by kind of work (matrix products, the attention kernel, layer
  norms, GELU, copies and reshapes: :func:`vitlib.bench.time_by_kind`);
* ``python -m vitlib.bench gpu`` (:mod:`vitlib.book.studies.gpu`): every family of the book, eager
  against compiled, float32 against bfloat16, plain attention against SDPA's kernels.

A peer that is not installed is skipped, with the reason in the figures. ``--tiny`` runs a tiny
ViT instead, in seconds (for the tests).
"""
from __future__ import annotations

import contextlib
from importlib import metadata

import torch

from ... import compat
from ...bench import count_flops, eval_mode, inference_fn, time_by_kind, time_interleaved, train_step_fn
from ..claims import Measured
from ...models import ViT, presets
from ...models.state import private_rng

__all__ = ["INFER_PRESET", "TINY_VIT", "BATCHES", "TRAIN_BATCH", "peers", "gemm_fns", "infer_suite", "figure"]

#: The model the suite times, and its tiny stand-in for ``--tiny``.
INFER_PRESET = "ViT-S/16"
TINY_VIT = dict(image_size=32, patch_size=16, num_classes=10, dim=32, depth=2, heads=2, dim_head=16,
                mlp_dim=64)
#: Batch sizes of the figures (``b1``, ``b16``) and of the training step; ``--tiny`` uses 1 and 2.
BATCHES = {"b1": 1, "b16": 16}
TRAIN_BATCH = 16


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def peers(cfg: dict) -> tuple[dict, dict]:
    """vit-pytorch's ``ViT`` and timm's ViT built to ``cfg`` (vitlib's keyword names), random
    weights: ``({name: model}, {name: why it was skipped})``."""
    built, skipped = {}, {}
    try:
        from vit_pytorch import ViT as VitPytorchViT

        built["vit-pytorch"] = VitPytorchViT(**cfg)
    except ImportError:
        skipped["vit-pytorch"] = "vit-pytorch is not installed (pip install vit-pytorch)"
    try:
        import timm

        size = dict(img_size=cfg["image_size"], patch_size=cfg["patch_size"], embed_dim=cfg["dim"],
                    depth=cfg["depth"], num_heads=cfg["heads"], mlp_ratio=cfg["mlp_dim"] / cfg["dim"],
                    num_classes=cfg["num_classes"])
        built["timm"] = timm.create_model("vit_small_patch16_224", pretrained=False, **size)
    except ImportError:
        skipped["timm"] = "timm is not installed (pip install 'timm>=1.0')"
    return built, skipped


def gemm_fns(m: int, k: int, n: int, device: torch.device) -> dict:
    """The matrix product ``(m x k) @ (k x n)`` in float32 on ``device``, as torch's ``mm`` and, on a
    CPU where it runs, oneDNN's (the kernel vitlib's linear layers use there): name -> callable."""
    a = torch.randn(m, k, device=device)
    w = torch.randn(n, k, device=device)
    wt = w.t().contiguous()
    fns = {"gemm (torch.mm)": lambda: torch.mm(a, wt)}
    if device.type == "cpu" and compat.onednn_linear_works():
        op = compat.onednn_linear_op()
        fns["gemm (oneDNN)"] = lambda: op(a, w, None, "none", [], "")
    return fns


def figure(measured: Measured | None, scale: float = 1.0) -> dict:
    """:meth:`Measured.to_dict`, with empty fields for a peer that was not measured."""
    return {"value": None, "low": None, "high": None, "n": 0} if measured is None else measured.to_dict(scale)


def _summary(times: list[float], batch: int) -> dict:
    m = Measured.of_values(times)
    return {"median_ms": m.value * 1e3, "iqr_ms": (m.high - m.low) * 1e3, "runs": m.n,
            "images_per_s": batch / m.value}


def infer_suite(args) -> dict:
    """vitlib's ViT-S/16 against vit-pytorch and timm: inference at batch 1 and 16, a training step
    at batch 16, and the roofline fraction, each ratio with its spread. Seeded by ``args.seed``; the
    caller's random state is left as it was."""
    with private_rng(args.seed, args.device):
        return _infer_suite(args)


def _infer_suite(args) -> dict:
    device = torch.device(args.device)
    tiny = bool(getattr(args, "tiny", False))
    cfg = dict(TINY_VIT) if tiny else presets.config(INFER_PRESET)
    batches = {"b1": 1, "b16": 2} if tiny else dict(BATCHES)
    train_batch = 2 if tiny else TRAIN_BATCH
    models = {"vitlib": ViT(**cfg)}
    others, skipped = peers(cfg)
    models.update(others)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    models = {name: m.to(device) for name, m in models.items()}
    tokens = models["vitlib"].patch_embedding.num_patches + 1
    flops1 = {name: count_flops(m, torch.randn(1, 3, *models["vitlib"].image_size, device=device))
              for name, m in models.items()}
    figures: dict = {"model": "tiny ViT" if tiny else INFER_PRESET, "config": cfg, "tiny": tiny,
                     "tokens": tokens, "batches": {**batches, "train": train_batch}, "device": str(device),
                     "peers": {"vit-pytorch": _version("vit-pytorch"), "timm": _version("timm")},
                     "skipped": skipped, "gflops_per_image": {k: v / 1e9 for k, v in flops1.items()},
                     "onednn_linear": device.type == "cpu" and compat.onednn_linear_works(),
                     "inference": {}, "roofline": {}, "train": {}, "breakdown": {}}
    threads = args.threads
    for key, batch in batches.items():
        x = torch.randn(batch, 3, *models["vitlib"].image_size, device=device)
        gemms = gemm_fns(tokens * batch, cfg["dim"], cfg["mlp_dim"], device)
        fns = {name: inference_fn(m, x) for name, m in models.items()} | gemms
        with contextlib.ExitStack() as stack:
            for m in models.values():
                stack.enter_context(eval_mode(m))
            times = time_interleaved(fns, rounds=args.rounds, min_run_time=args.min_run_time,
                                     num_threads=threads, device=device, warmup=1)
        figures["inference"][key] = {name: _summary(t, batch) for name, t in times.items()}
        gemm_flops = 2 * tokens * batch * cfg["dim"] * cfg["mlp_dim"]
        median = {name: Measured.of_values(t).value for name, t in times.items()}
        best = min(gemms, key=median.get)  # the machine's roofline: the fastest product of this shape
        share = flops1["vitlib"] * batch / gemm_flops
        figures["roofline"][key] = {"m": tokens * batch, "k": cfg["dim"], "n": cfg["mlp_dim"], "gemm": best,
                                    "gemm_tflop_s": {g: gemm_flops / median[g] / 1e12 for g in gemms},
                                    "vitlib_fraction": {g: share * Measured.ratio(times[g], times["vitlib"]).value
                                                        for g in gemms}}
        for peer in ("vit-pytorch", "timm"):
            ratio = Measured.ratio(times[peer], times["vitlib"]) if peer in times else None
            figures[f"vitlib_vs_{peer.replace('-', '_')}_{key}"] = figure(ratio)
        # achieved FLOP/s over the GEMM's: (flops / t_model) / (gemm_flops / t_gemm)
        figures[f"vitlib_roofline_fraction_{key}"] = figure(Measured.ratio(times[best], times["vitlib"]), share)
        _print_times(f"inference, batch {batch}", times, threads, device)
        _print_figures(figures, [f"vitlib_vs_vit_pytorch_{key}", f"vitlib_vs_timm_{key}",
                                 f"vitlib_roofline_fraction_{key}"])
    if device.type == "cpu":
        figures["breakdown"] = _breakdown(models, batches["b16"], threads)
    x = torch.randn(train_batch, 3, *models["vitlib"].image_size, device=device)
    steps = {name: train_step_fn(m, x) for name, m in models.items()}  # each on a copy
    times = time_interleaved(steps, rounds=args.rounds, min_run_time=args.min_run_time, num_threads=threads,
                             device=device, warmup=1)
    key = "b16"
    figures["train"][key] = {name: _summary(t, train_batch) for name, t in times.items()}
    for peer in ("vit-pytorch", "timm"):
        ratio = Measured.ratio(times[peer], times["vitlib"]) if peer in times else None
        figures[f"vitlib_vs_{peer.replace('-', '_')}_train_{key}"] = figure(ratio)
    _print_times(f"training step, batch {train_batch}", times, threads, device)
    _print_figures(figures, ["vitlib_vs_vit_pytorch_train_b16", "vitlib_vs_timm_train_b16"])
    return figures


def _breakdown(models: dict, batch: int, threads: int | None) -> dict:
    """Each model's forward at ``batch`` profiled on the CPU and its operators' self time summed by
    kind of work (:func:`vitlib.bench.time_by_kind`): where the time outside the matrix products goes."""
    x = torch.randn(batch, 3, *models["vitlib"].image_size)
    out, previous = {}, torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        for name, m in models.items():
            with eval_mode(m):
                out[name] = time_by_kind(inference_fn(m, x), calls=3, warmup=1)
    finally:
        torch.set_num_threads(previous)
    print(f"\nwhere a forward's time goes, batch {batch} (torch.profiler, operators' self time; shares are "
          "what to read, the profiler adds its own cost to every call):")
    names = list(out)
    print(f"  {'kind of work':22s}" + "".join(f"{n:>14s}" for n in names) + "   vitlib's operators")
    for kind in out["vitlib"]["kinds"]:
        shares = "".join(f"{out[n]['kinds'][kind]['share']:>13.1%} " for n in names)
        print(f"  {kind:22s}{shares}  {', '.join(out['vitlib']['kinds'][kind]['ops'])}")
    print(f"  {'profiled ms per call':22s}" + "".join(f"{out[n]['total_ms']:>14.1f}" for n in names))
    return out


def _print_times(what: str, times: dict, threads, device) -> None:
    print(f"\n{what} ({threads or torch.get_num_threads()} threads, {device}), median ms:")
    for name, t in times.items():
        print(f"  {name:18s} {Measured.of_values(t).value * 1e3:10.2f}  ({len(t)} calls)")


def _print_figures(figures: dict, names: list[str]) -> None:
    for name in names:
        f = figures[name]
        if f["value"] is not None:
            print(f"  {name:32s} {f['value']:.2f} ({f['low']:.2f} to {f['high']:.2f}; IQR, "
                  f"{f['n']} calls a side)")
