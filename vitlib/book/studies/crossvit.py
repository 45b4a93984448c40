"""Chapter 4's experiments: where a CrossViT's computation goes, against what it is a saving, how
vitlib's counts compare with the paper's, and CrossViT against a ViT of equal FLOPs.

The trained comparison uses :func:`vitlib.train.train_conditions`. Everything that counts builds its models on the ``meta`` device (no memory, no arithmetic), so the
paper's models at 240 pixels, or at 720, cost nothing to count. A CrossViT built from a preset at
another ``image_size`` keeps the paper's ratio between its branches
(:func:`vitlib.models.cross_vit.scaled_size`), so every size here is the paper's layout scaled.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import torch

from ...bench import count_flops, count_parameters, part_table
from ...models import presets
from ...models.presets import build_meta
from ...models.cross_vit import CrossViT

__all__ = ["build_meta", "branch_table", "attention_sweep", "growth_slopes", "paper_width_excess",
           "preset_table", "single_scale_configs", "computation_table", "equal_flops_depth"]

BRANCHES = ("small-patch branch", "large-patch branch")


def _sizes(model: CrossViT) -> dict[str, dict]:
    out = {}
    for part, branch in zip(BRANCHES, ("sm", "lg")):
        emb = getattr(model, f"{branch}_embedding").patch_embedding
        (h, w), (ph, pw), (gh, gw) = getattr(model, f"{branch}_image_size"), emb.patch_size, emb.grid
        out[part] = {"image": f"{h} x {w}", "patch": ph if ph == pw else f"{ph} x {pw}", "grid": f"{gh} x {gw}",
                     "image_px": h}
    return out


def branch_table(preset: str = "CrossViT-S", **overrides):
    """One forward pass of a CrossViT preset, per part (small-patch branch, large-patch branch,
    cross-attention), as a DataFrame with a ``part`` column: ``image`` (what the branch sees,
    ``"h x w"`` pixels), ``patch`` (pixels), ``grid`` (patches, ``"h x w"``), ``tokens`` (the
    part's output sequence, class token included; 1 for the cross-attention, which returns one
    class token per call), ``attention_entries``, ``gflops_scores``, ``gflops``, ``flops_share``
    and ``params`` (:func:`vitlib.bench.part_table` on the ``meta`` device; its ``map`` column is
    empty, a CrossViT's parts output token sequences, not feature maps). ``attrs`` holds the
    model's ``config`` and ``image_size``."""
    model = build_meta(preset, **overrides)
    df = part_table(model, model.example_input(1)).reset_index()
    sizes = _sizes(model)
    for column in ("image", "patch", "grid"):
        df[column] = [sizes[p][column] if p in sizes else "" for p in df["part"]]
    df["patch"] = df["patch"].replace("", None)
    df["flops_share"] = df["gflops"] / df["gflops"].sum()
    df.attrs["config"] = dict(model.config)
    df.attrs["image_size"] = model.image_size
    return df


def attention_sweep(preset: str = "CrossViT-S", image_sizes: Sequence[int] = (120, 240, 360, 480, 600, 720),
                    **overrides):
    """:func:`branch_table` of ``preset`` (with ``overrides``, e.g. ``sm_patch_size=6``) at each of
    ``image_sizes``, stacked: one row per size and part, with ``image_size`` (the input's side) and
    ``pixels`` (its area). The default sizes are multiples of 120, at which the large-patch branch's
    copy (14/15 of the side) is a whole number of 16-pixel patches, so both branches' tokens grow
    exactly as the pixels."""
    import pandas as pd

    frames = []
    for size in image_sizes:
        df = branch_table(preset, image_size=size, **overrides)
        df.insert(0, "image_size", size)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["pixels"] = out["image_size"] ** 2
    return out


def growth_slopes(sweep, column: str = "attention_entries") -> dict[str, float]:
    """Per part of an :func:`attention_sweep`, the slope of ``log(column)`` against
    ``log(pixels)`` (least squares): 1 for a cost linear in the tokens, 2 for a quadratic one."""
    import numpy as np

    return {part: float(np.polyfit(np.log(g["pixels"]), np.log(g[column].astype(float)), 1)[0])
            for part, g in sweep.groupby("part", sort=False)}


def paper_width_excess(model: CrossViT) -> dict[str, int]:
    """What vit-pytorch's layout adds to a CrossViT over the paper's: one head size
    (``cross_attn_dim_head``) serves both cross-attentions, so the large branch's class token
    attends to the small branch's patches at an inner width of ``heads * cross_attn_dim_head``
    (the large width), where the paper's (and timm's) works at the small branch's own width.
    Returns ``{"flops": ..., "params": ...}``: the FLOPs (two per multiply-add, one image) and
    parameters of every large-to-small block minus those of the same block at the paper's width.

    Per unit of inner width a block computes the class token's query and output (``2 d_s``
    multiply-adds), the keys and values of the ``N_s + 1`` tokens it attends to (``2 (N_s + 1) d_s``)
    and their scores (``2 (N_s + 1)``), and holds ``4 d_s`` weights (query, key, value, output);
    the tests check this against a FLOP counter run on the blocks themselves."""
    c = model.config
    n = model.sm_embedding.patch_embedding.num_patches
    wider = c["cross_attn_heads"] * c["cross_attn_dim_head"] - c["sm_dim"]
    blocks = c["depth"] * c["cross_attn_depth"]
    per_unit = 2 * c["sm_dim"] + 2 * (n + 1) * c["sm_dim"] + 2 * (n + 1)
    return {"flops": 2 * wider * per_unit * blocks, "params": 4 * c["sm_dim"] * wider * blocks}


@lru_cache(maxsize=None)
def _preset_flops(name: str) -> tuple[int, int]:
    """FLOPs (one image) and parameters of a preset as it is, counted once per process."""
    model = build_meta(name)
    return count_flops(model, model.example_input(1)), count_parameters(model)


def preset_table(names: Sequence[str] | None = None):
    """The paper's CrossViTs as vitlib builds them (at 240 pixels, the large branch at 224), one row
    each: counted ``params_m`` and ``gmacs`` (multiply-adds, billions; FLOPs / 2), ``gmacs_paper_width``
    (the same less :func:`paper_width_excess`), and the paper's ``paper_params_m``, ``paper_gmacs``
    and ``paper_top1`` (CrossViT, Table 3, from :mod:`vitlib.models.presets`)."""
    import pandas as pd

    rows = []
    for name in names or presets.names("cross_vit"):
        flops, params = _preset_flops(name)
        excess = paper_width_excess(build_meta(name))
        paper = presets.get(name)
        rows.append({"model": name, "params_m": params / 1e6,
                     "params_paper_width_m": (params - excess["params"]) / 1e6,
                     "paper_params_m": paper.paper_params_m, "gmacs": flops / 2e9,
                     "gmacs_paper_width": (flops - excess["flops"]) / 2e9, "paper_gmacs": paper.paper_gmacs,
                     "paper_top1": paper.paper_top1})
    return pd.DataFrame(rows)


def single_scale_configs(preset: str = "CrossViT-S") -> dict[str, dict]:
    """The two single-scale ViTs a CrossViT preset is measured against, both with its large
    branch's width, heads, MLP and total depth (``depth * lg_enc_depth`` blocks):
    ``"ViT/<small patch>"``, the small branch's patches at the small branch's image size (what it
    costs to have the fine tokens at full width), and ``"ViT/<large patch>"``, the large branch on
    its own at its image size (the coarse ViT CrossViT extends: for CrossViT-S, DeiT-S)."""
    model = build_meta(preset)
    c = model.config
    common = dict(num_classes=c["num_classes"], dim=c["lg_dim"], depth=c["depth"] * c["lg_enc_depth"],
                  heads=c["lg_enc_heads"], dim_head=c["lg_enc_dim_head"], mlp_dim=c["lg_enc_mlp_dim"])
    out = {}
    for branch in ("sm", "lg"):
        patch = c[f"{branch}_patch_size"]
        out[f"ViT/{patch}"] = dict(common, image_size=getattr(model, f"{branch}_image_size"), patch_size=patch)
    return out


def computation_table(names: Sequence[str] | None = None):
    """For each CrossViT preset, its multiply-adds against the two single-scale ViTs of
    :func:`single_scale_configs`, all counted on the ``meta`` device: one row per preset with
    ``gmacs`` (CrossViT), ``gmacs_fine`` and ``gmacs_coarse`` (the ViTs), and ``vs_fine``,
    ``vs_coarse``: CrossViT's multiply-adds over each ViT's (below 1: CrossViT computes less).
    ``attrs["fine"]`` and ``attrs["coarse"]`` name the two ViTs (``"ViT/12"``, ``"ViT/16"``)."""
    import pandas as pd

    from ...models import ViT

    rows, labels = [], None
    for name in names or presets.names("cross_vit"):
        row = {"model": name, "gmacs": _preset_flops(name)[0] / 2e9}
        configs = single_scale_configs(name)
        labels = list(configs)
        for key, label in zip(("fine", "coarse"), labels):
            with torch.device("meta"):
                vit = ViT(**configs[label]).eval()
            row[f"gmacs_{key}"] = count_flops(vit, vit.example_input(1)) / 2e9
            row[f"tokens_{key}"] = vit.patch_embedding.num_patches + 1
            row[f"params_{key}_m"] = count_parameters(vit) / 1e6
        rows.append(row)
    df = pd.DataFrame(rows)
    df["vs_fine"] = df["gmacs"] / df["gmacs_fine"]
    df["vs_coarse"] = df["gmacs"] / df["gmacs_coarse"]
    df.attrs.update(fine=labels[0], coarse=labels[1])
    return df


def equal_flops_depth(cross_recipe: Mapping, vit_recipe: Mapping, data) -> tuple[int, "object"]:
    """The depth at which a ViT with ``vit_recipe``'s patches and width does the FLOPs per image
    closest to ``cross_recipe``'s CrossViT on ``data``. A ViT's FLOPs are ``a + b * depth`` (every
    block is the same), so two counts give the depth; the depth found and its neighbours are then
    counted. Returns ``(depth, table)``: one row per depth counted (``depth``, ``gflops``,
    ``vs_cross``: its FLOPs over CrossViT's), ``attrs["cross_gflops"]``."""
    import pandas as pd

    from ...train import build_model

    def gflops(name, cfg):
        with torch.device("meta"):
            model = build_model(name, data, **cfg).eval()
        return count_flops(model, model.example_input(1)) / 1e9

    strip = lambda r: {k: v for k, v in r["model"].items() if k != "name"}  # noqa: E731
    cross = gflops(cross_recipe["model"]["name"], strip(cross_recipe))
    counted = {d: gflops("vit", {**strip(vit_recipe), "depth": d}) for d in (1, 2)}
    per_block = counted[2] - counted[1]
    guess = max(1, round((cross - (counted[1] - per_block)) / per_block))
    for d in range(max(1, guess - 1), guess + 2):
        if d not in counted:
            counted[d] = gflops("vit", {**strip(vit_recipe), "depth": d})
    table = pd.DataFrame([{"depth": d, "gflops": g} for d, g in sorted(counted.items())])
    table["vs_cross"] = table["gflops"] / cross
    table.attrs["cross_gflops"] = cross
    depth = int(table.loc[(table["vs_cross"] - 1).abs().idxmin(), "depth"])
    return depth, table
