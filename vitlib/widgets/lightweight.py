"""Chapter 2's widgets: a model's size, cost and speed against a base model's."""
from __future__ import annotations

from typing import Mapping

import torch

from ..studies.lightweight import HEADS_MEANING, compare_configs, resolve_config, sizing_config


def plot_against_base(ax, table, title: str = "") -> None:
    """Bars of the variant's parameters, GFLOPs and latency as multiples of the base's, from one
    :func:`~vitlib.studies.lightweight.compare_configs` table (the latency ratio comes from the
    same interleaved rounds)."""
    base, variant = table.loc["base"], table.loc["variant"]
    keys = [("params", "parameters"), ("gflops", "FLOPs"), ("median_ms", "latency (measured)")]
    ratios = [variant[k] / base[k] for k, _ in keys]
    ax.bar([label for _, label in keys], ratios, color=["#74c476", "#fd8d3c", "#08519c"])
    ax.axhline(1.0, color="grey", lw=0.8)
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.2f}x", ha="center", va="bottom")
    ax.set_ylabel("multiple of the base model")
    ax.set_ylim(0, max(ratios + [1.0]) * 1.25)
    ax.set_title(title)


def sizing_explorer(base: str | Mapping, *, family: str | None = None, batch: int = 16,
                    device: torch.device | str = "cpu", rounds: int = 2, min_run_time: float = 0.2):
    """Sliders over dim, depth, heads, MLP width and patch size of ``base`` (a preset name or a
    configuration; ``family`` default: the preset's, or SimpleViT). Each change builds the variant
    and measures it against the base in one interleaved comparison on ``device`` (a second or
    two). Heads split the width: ``dim_head = dim // heads`` (:func:`~vitlib.studies.lightweight.sizing_config`)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    family, base = resolve_config(base, family)
    side = base["image_size"] if isinstance(base["image_size"], int) else min(base["image_size"])
    patches = [p for p in (1, 2, 4, 8, 16, 32) if side % p == 0 and p <= side]
    style = {"description_width": "80px"}
    controls = {
        "dim": w.IntSlider(value=base["dim"], min=32, max=max(512, base["dim"]), step=32, description="dim",
                           style=style, continuous_update=False),
        "depth": w.IntSlider(value=base["depth"], min=1, max=max(12, base["depth"]), description="depth",
                             style=style, continuous_update=False),
        "heads": w.IntSlider(value=base["heads"], min=1, max=16, description="heads", style=style,
                             continuous_update=False),
        "mlp_dim": w.IntSlider(value=base["mlp_dim"], min=32, max=max(2048, base["mlp_dim"]), step=32,
                               description="mlp_dim", style=style, continuous_update=False),
        "patch_size": w.Dropdown(options=patches, value=base["patch_size"], description="patch size", style=style),
    }

    def draw(**values):
        changes = {k: v for k, v in values.items() if v != base[k]}
        if family == "simple_vit" and values["dim"] % 4:
            print("dim must be a multiple of 4 for the sin-cos table")
            return
        try:
            variant = sizing_config(base, **changes)
        except ValueError as err:  # a width that does not split into the heads
            print(err)
            return
        table = compare_configs(base, variant, family=family, batch=batch, device=device, rounds=rounds,
                                min_run_time=min_run_time)
        v = table.loc["variant"]
        fig, ax = plt.subplots(figsize=(6, 3))
        plot_against_base(ax, table, f"{v['params'] / 1e6:.2f}M params, {v['gflops']:.3f} GFLOPs, "
                                     f"{v['median_ms']:.1f} ms per batch of {batch}")
        plt.show()

    out = w.interactive_output(draw, controls)
    note = w.HTML(f"<small>{HEADS_MEANING}; base and variant timed interleaved</small>")
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:3]), w.VBox(list(controls.values())[3:])]), note, out])
