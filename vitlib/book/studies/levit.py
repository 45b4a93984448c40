"""Chapter 3 (LeViT): what the stem is, how attention grows stage by stage, and where the FLOPs go.

* :func:`affine_deviation`: how far a LeViT stem is from one affine map (vit-pytorch's stem, with
  nothing between its convolutions, is one);
* :func:`stem_share`: the stem's share of a preset's FLOPs with the paper's stem widths and with
  vit-pytorch's;
* :func:`attention_sweep`: attention scores per stage as the image grows, with the log-log slope
  of each stage against the number of tokens after the stem;
* :func:`preset_table`: the paper's LeViTs (and a ViT-B/16) counted beside the paper's figures.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...bench import attention_entries, count_flops, count_parameters, meta_parts, part_table
from ...models import ViT, presets
from ...models.presets import build_meta
from ...models.levit import VIT_PYTORCH_STEM_WIDTHS
from ...models.state import private_rng

__all__ = ["STAGES", "affine_deviation", "stem_share", "attention_sweep", "preset_table"]

#: The parts of a three-stage LeViT that hold attention, in order.
STAGES = ("stage 1", "shrink 1->2", "stage 2", "shrink 2->3", "stage 3")


def affine_deviation(stem_activation: bool, preset: str = "LeViT-128S", image_size: int = 64,
                     seed: int = 0) -> float:
    """How far a LeViT stem (in eval mode) is from an affine map ``f``: the largest
    ``|f(a) + f(b) - f(0) - f(a + b)|`` over random images ``a, b``, relative to ``max |f(a + b)|``.
    Zero (to rounding) for a stack of convolutions with nothing between them."""
    with private_rng(seed):  # the same stem and images for the same seed; the caller's random state kept
        stem = presets.create(preset, image_size=image_size, stem_activation=stem_activation).stem.eval()
        a, b = torch.randn(2, 3, image_size, image_size), torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        lhs = stem(a) + stem(b) - stem(torch.zeros_like(a))
        rhs = stem(a + b)
    return float((lhs - rhs).abs().max() / rhs.abs().max())


def stem_share(preset: str = "LeViT-128S", image_size: int = 224):
    """The stem's FLOPs and their share of the whole forward pass of ``preset``, with the paper's
    stem widths (``D/8, D/4, D/2``, vitlib's default) and with vit-pytorch's fixed 32, 64, 128:
    a DataFrame with ``stem`` (a description), ``widths``, ``stem_gflops``, ``gflops`` and
    ``share``."""
    import pandas as pd

    rows = []
    for label, widths in (("paper (vitlib's default)", None), ("vit-pytorch", VIT_PYTORCH_STEM_WIDTHS)):
        model = build_meta(preset, image_size=image_size, **({} if widths is None else {"stem_widths": widths}))
        df = part_table(model, model.example_input(1))
        rows.append({"stem": label, "widths": ", ".join(str(w) for w in model.stem_widths),
                     "stem_gflops": float(df.loc["stem", "gflops"]), "gflops": float(df["gflops"].sum()),
                     "share": float(df.loc["stem", "gflops"] / df["gflops"].sum())})
    return pd.DataFrame(rows)


def attention_sweep(sizes: Sequence[int], preset: str = "LeViT-128S", vit_preset: str = "ViT-B/16"):
    """Attention scores per image (heads x queries x keys, summed over a part's layers) of each
    attention-holding part of ``preset`` and of all of ``vit_preset``'s layers, at each image size,
    counted on the ``meta`` device. Returns ``(sweep, slopes)``: a DataFrame with ``image``,
    ``n`` (tokens after the stem, ``(image / 16)^2``), ``part`` and ``entries``, and each part's
    least-squares slope of ``log(entries)`` against ``log(n)`` (1: linear, 2: quadratic)."""
    import pandas as pd

    if len(sizes) < 2:
        raise ValueError(f"attention_sweep needs at least two image sizes for a slope; received {list(sizes)}")
    rows = []
    vit_name = f"{vit_preset} (all layers)"
    for size in sizes:
        df = meta_parts(preset, image_size=size)
        n = int(df.loc["stem", "tokens"])
        for part in STAGES:
            rows.append({"image": size, "n": n, "part": part, "entries": int(df.loc[part, "attention_entries"])})
        with torch.device("meta"):
            vit = ViT(**{**presets.config(vit_preset), "image_size": size})
        entries = sum(r["entries"] for r in attention_entries(vit, vit.example_input(1, "meta")))
        rows.append({"image": size, "n": n, "part": vit_name, "entries": entries})
    sweep = pd.DataFrame(rows)
    slopes = {part: float(np.polyfit(np.log(g["n"]), np.log(g["entries"]), 1)[0])
              for part, g in sweep.groupby("part", sort=False)}
    return sweep, slopes


def preset_table(names: Sequence[str] | None = None, extra: Sequence[str] = ("ViT-B/16",)):
    """Each LeViT preset (default: all) and ``extra`` presets counted at 224 px on the ``meta``
    device beside the paper's figures: ``model``, ``params_m``, ``params_distill_m`` (a LeViT with
    its distillation head, as the paper counts it; NaN for other families), ``paper_params_m``, ``gmacs``
    (multiply-adds: counted FLOPs / 2), ``paper_gmacs`` and ``paper_top1`` (ImageNet-1k, %)."""
    import pandas as pd

    rows = []
    for name in [*(names or presets.names("levit")), *extra]:
        p = presets.get(name)
        model = build_meta(name)
        flops = count_flops(model, model.example_input(1))
        distill = float("nan")
        if p.family == "levit":  # the paper counts the distillation head beside the classifier
            distill = count_parameters(build_meta(name, num_distill_classes=1000)) / 1e6
        rows.append({"model": name, "params_m": count_parameters(model) / 1e6, "params_distill_m": distill,
                     "paper_params_m": p.paper_params_m, "gmacs": flops / 2e9, "paper_gmacs": p.paper_gmacs,
                     "paper_top1": p.paper_top1})
    return pd.DataFrame(rows)
