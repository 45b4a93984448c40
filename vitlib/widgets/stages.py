"""Chapters 3 and 4's widgets: the parts of a LeViT or a CrossViT, counted and timed."""
from __future__ import annotations

import torch

from ..bench import part_table
from ..models import presets


def meta_parts(preset: str, **overrides):
    """:func:`vitlib.bench.part_table` of the preset ``preset`` (e.g. ``"LeViT-128S"``) with
    ``overrides`` (e.g. ``image_size=448``), built on the ``meta`` device (instant at any size):
    tokens, attention entries, FLOPs and parameters per part of ``model.parts()``."""
    with torch.device("meta"):
        model = presets.create(preset, **overrides).eval()
    return part_table(model, model.example_input(1))


def plot_parts(axes, df, title: str = "") -> None:
    """Two panels, one bar per part: attention entries per image (log scale; parts without
    attention have none), and GFLOPs per image split into attention scores (dark) and everything
    else (light). Each label carries the tokens the part outputs."""
    import numpy as np
    import pandas as pd

    y = np.arange(len(df))
    labels = [f"{part} ({m or tok})" if not pd.isna(tok) else str(part)
              for part, tok, m in zip(df.index, df["tokens"], df["map"])]
    ax1, ax2 = axes
    entries = df["attention_entries"].to_numpy(dtype=float)
    has = entries > 0
    ax1.barh(y[has], entries[has], color="#08519c")
    ax1.set_xscale("log")
    ax1.set_xlabel("attention entries per image (heads x queries x keys)")
    scores = df["gflops_scores"].to_numpy(dtype=float)
    ax2.barh(y, scores, color="#08519c", label="attention scores")
    ax2.barh(y, df["gflops"].to_numpy(dtype=float) - scores, left=scores, color="#fdae6b", label="everything else")
    ax2.set_xlabel("GFLOPs per image (forward)")
    ax2.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.set_yticks(y)
        ax.set_ylim(len(df) - 0.5, -0.5)
    ax1.set_yticklabels(labels)
    ax2.set_yticklabels([])
    if title:
        ax1.figure.suptitle(title)


def levit_stage_explorer(image_size: int = 224, preset: str = "LeViT-128S"):
    """Image size and LeViT preset; the per-stage tokens, attention entries and FLOPs redraw at once."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    style = {"description_width": "90px"}
    controls = {
        "image_size": w.IntSlider(value=image_size, min=64, max=512, step=32, description="image size", style=style),
        "preset": w.Dropdown(options=presets.names("levit"), value=preset, description="model", style=style),
    }

    def draw(image_size, preset):
        df = meta_parts(preset, image_size=image_size)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        plot_parts(axes, df, f"{preset} at {image_size} px: {df['params'].sum() / 1e6:.1f}M parameters, "
                             f"{df['gflops'].sum():.2f} GFLOPs")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox(list(controls.values())), out])


def crossvit_explorer(image_size: int = 240, preset: str = "CrossViT-S"):
    """Image size, preset and the two patch sizes of a CrossViT; the split between the branches and
    the cross-attention redraws at once."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    style = {"description_width": "90px"}
    controls = {
        "image_size": w.IntSlider(value=image_size, min=48, max=480, step=48, description="image size", style=style),
        "preset": w.Dropdown(options=presets.names("cross_vit"), value=preset, description="model", style=style),
        "sm_patch_size": w.Dropdown(options=[4, 6, 8, 12, 16], value=12, description="small patch", style=style),
        "lg_patch_size": w.Dropdown(options=[8, 12, 16, 24, 48], value=16, description="large patch", style=style),
    }

    def draw(image_size, preset, sm_patch_size, lg_patch_size):
        if image_size % sm_patch_size or image_size % lg_patch_size:
            print(f"image size {image_size} must be divisible by both patch sizes ({sm_patch_size}, {lg_patch_size})")
            return
        df = meta_parts(preset, image_size=image_size, sm_patch_size=sm_patch_size, lg_patch_size=lg_patch_size)
        fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
        plot_parts(axes, df, f"{preset} at {image_size} px, patches {sm_patch_size} and {lg_patch_size}: "
                             f"{df['params'].sum() / 1e6:.1f}M parameters, {df['gflops'].sum():.2f} GFLOPs")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:2]), w.VBox(list(controls.values())[2:])]), out])
