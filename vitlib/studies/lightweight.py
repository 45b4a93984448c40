"""Chapter 2 (lightweight models): sizing a SimpleViT, and time to accuracy.

* :func:`sizing_config`: a configuration with one knob changed, where "heads" always means the
  book's convention (:data:`HEADS_MEANING`): the attention's inner width ``heads * dim_head`` stays
  ``dim``, so ``dim_head = dim // heads``;
* :func:`compare_configs`: a base and a variant measured in one interleaved comparison;
* the ``train`` bench suite: the quick-mode SimpleViT recipe trained on the bundled digits.
"""
from __future__ import annotations

import time
from typing import Mapping

import torch

from ..bench import compare, register_suite
from ..models import MODELS, presets

__all__ = ["HEADS_MEANING", "sizing_config", "resolve_config", "compare_configs", "train_suite"]

#: What "heads" means wherever the book varies it.
HEADS_MEANING = "heads at a fixed inner width: dim_head = dim / heads"


def sizing_config(base: Mapping, **changes) -> dict:
    """``base`` with ``changes``. When ``dim`` or ``heads`` changes and ``dim_head`` is not given,
    ``dim_head`` becomes ``dim // heads`` (:data:`HEADS_MEANING`): more heads split the same
    width, they do not add width. Giving ``dim_head`` explicitly keeps it fixed instead, so the
    inner width ``heads * dim_head`` grows with the heads (the other meaning, named as such).
    Raises ValueError when ``dim`` is not a multiple of ``heads``."""
    cfg = {**base, **changes}
    if ("dim" in changes or "heads" in changes) and "dim_head" not in changes:
        dim, heads = cfg["dim"], cfg["heads"]
        if heads < 1 or dim % heads:
            raise ValueError(f"dim must be a multiple of heads ({HEADS_MEANING}); received dim={dim}, heads={heads}")
        cfg["dim_head"] = dim // heads
    return cfg


def resolve_config(base: str | Mapping, family: str | None = None) -> tuple[str, dict]:
    """``(family, config)`` of a preset name (e.g. ``"SimpleViT-S/16"``) or of a configuration
    dictionary of ``family`` (default ``"simple_vit"``)."""
    if isinstance(base, str):
        preset = presets.get(base)
        return family or preset.family, dict(preset.config)
    if not isinstance(base, Mapping):
        raise TypeError(f"expected a preset name or a configuration dictionary; received {type(base).__name__}")
    family = family or "simple_vit"
    if family not in MODELS:
        raise ValueError(f"family must be one of {sorted(MODELS)}; received {family!r}")
    return family, dict(base)


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
    torch.manual_seed(seed)
    models = {"base": cls(**base_cfg).to(device), "variant": cls(**dict(variant)).to(device)}
    inputs = {name: m.example_input(batch, device) for name, m in models.items()}
    return compare({name: (models[name], inputs[name]) for name in models}, mode="inference", rounds=rounds,
                   min_run_time=min_run_time, num_threads=num_threads, warmup=2)


@register_suite("train")
def train_suite(args) -> dict:
    """Time to accuracy: the book's quick-mode SimpleViT recipe on the bundled digits."""
    from ..train import QUICK_RECIPE, train_recipe

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
