"""Chapter 1's widgets: where a ViT's FLOPs go, by component and image size."""
from __future__ import annotations

import math
from typing import Mapping

import torch

from ...bench import count_parameters, flops_by_component, sequence_length
from ...models import MODELS
from ...models.presets import resolve_config, sizing_config


COMPONENT_COLOURS = {
    "patch embedding": "#8c6d31",
    "attention (projections)": "#6baed6",
    "attention (scores)": "#08519c",
    "mlp": "#fd8d3c",
    "head": "#74c476",
    "other": "#bdbdbd",
}


def meta_breakdown(preset: str | Mapping, *, family: str | None = None,
                   **overrides) -> tuple[dict[str, int], int, int]:
    """FLOPs per component for one image, parameter count and token count of the preset ``preset``
    (e.g. ``"ViT-B/16"``, or a configuration dictionary) with ``overrides``, built as ``family``
    (default: the preset's own), on the ``meta`` device: no memory is allocated and nothing is computed, so any size is instant."""
    family, config = resolve_config(preset, family)
    with torch.device("meta"):
        model = MODELS[family](**{**config, **overrides})
    x = model.example_input(1)
    return flops_by_component(model, x), count_parameters(model), sequence_length(model, x)


def plot_flops_breakdown(ax, breakdown: dict[str, int], title: str = "") -> None:
    """Horizontal bar of GFLOPs per component, the quadratic attention scores in dark blue."""
    names = [k for k in COMPONENT_COLOURS if breakdown.get(k, 0) > 0]
    values = [breakdown[k] / 1e9 for k in names]
    ax.barh(names, values, color=[COMPONENT_COLOURS[k] for k in names])
    ax.invert_yaxis()
    total = sum(breakdown.values())
    for i, (k, v) in enumerate(zip(names, values)):
        ax.text(v, i, f" {100 * breakdown[k] / total:.0f}%", va="center")
    ax.set_xlabel("GFLOPs per image (forward)")
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_title(title)


def flops_explorer(preset: str = "ViT-B/16", **overrides):
    """Sliders over image size, patch size, width and depth of the preset ``preset`` (with
    ``overrides``), and a switch between ViT and SimpleViT; the FLOPs split redraws at once. The
    heads stay the preset's (:data:`~vitlib.models.presets.HEADS_MEANING`)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    _, base = resolve_config(preset)
    base = sizing_config(base, **overrides)
    heads = base["heads"]
    step = heads * 32 // math.gcd(heads, 32)  # widths that split evenly into the heads
    style = {"description_width": "90px"}
    controls = {
        "image_size": w.IntSlider(value=base["image_size"], min=16, max=512, step=16, description="image size",
                                  style=style),
        "patch_size": w.Dropdown(options=sorted({2, 4, 8, 16, 32, base["patch_size"]}), value=base["patch_size"],
                                 description="patch size", style=style),
        "dim": w.IntSlider(value=base["dim"], min=step, max=max(1024, 2 * base["dim"]) // step * step, step=step,
                           description="dim", style=style),
        "depth": w.IntSlider(value=base["depth"], min=1, max=max(24, base["depth"]), description="depth", style=style),
        "model": w.ToggleButtons(options=["ViT", "SimpleViT"], value="ViT", style=style),
    }
    ratio = base["mlp_dim"] / base["dim"]

    def draw(image_size, patch_size, dim, depth, model):
        if image_size % patch_size:
            print(f"image size {image_size} is not divisible by patch size {patch_size}")
            return
        family = "vit" if model == "ViT" else "simple_vit"
        cfg = sizing_config(base, image_size=image_size, patch_size=patch_size, dim=dim, depth=depth,
                            mlp_dim=round(ratio * dim))
        breakdown, params, tokens = meta_breakdown(cfg, family=family)
        fig, ax = plt.subplots(figsize=(7, 2.8))
        plot_flops_breakdown(ax, breakdown, f"{model}: {tokens} tokens, {params / 1e6:.1f}M parameters, "
                                            f"{sum(breakdown.values()) / 1e9:.2f} GFLOPs")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:3]), w.VBox(list(controls.values())[3:])]), out])


def flops_split_chart(image_sizes, preset: str | Mapping = "ViT-B/16", families=("vit", "simple_vit"),
                      **overrides):
    """:func:`flops_explorer`'s picture for the HTML book: GFLOPs per component of ``preset`` built
    as each of ``families`` at each image size, counted on the ``meta`` device when the page is
    built; a slider over the image size and a dropdown over the models switch between them without
    a kernel (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    frames, titles = {}, {}
    for family in families:
        name = MODELS[family].__name__
        frames[name] = {}
        for size in image_sizes:
            split, params, tokens = meta_breakdown(preset, family=family, image_size=size, **overrides)
            parts = [k for k in COMPONENT_COLOURS if split.get(k, 0) > 0]
            total = sum(split.values())
            frames[name][size] = [go.Bar(
                x=[split[k] / 1e9 for k in parts], y=parts, orientation="h", showlegend=False,
                marker_color=[COMPONENT_COLOURS[k] for k in parts],
                text=[f"{100 * split[k] / total:.0f}%" for k in parts], textposition="outside",
                hovertemplate="%{y}: %{x:.2f} GFLOPs<extra></extra>")]
            titles[name, size] = (f"{name} at {size} px: {tokens} tokens, {params / 1e6:.1f}M parameters, "
                                  f"{total / 1e9:.1f} GFLOPs")
    top = max(max(t[0].x) for by_size in frames.values() for t in by_size.values())
    return static_chart(frames, slider="image size", dropdown="model", title=lambda m, s: titles[m, s],
                        layout=dict(xaxis=dict(title="GFLOPs per image (forward)", range=[0, top * 1.15]),
                                    yaxis=dict(autorange="reversed")))


def plot_scaling(df, title: str = "", batch: int | None = None):
    """Two panels from a :func:`vitlib.book.studies.anatomy.with_gflops` table: counted FLOPs per image
    stacked into the parts linear in the tokens and the quadratic scores, and measured latency on
    log-log axes, with lines of slope 1 and 2 through the largest setting (where the asymptote
    lives), so the measured curve's slope can be read against them."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax1.stackplot(df["tokens"], df["linear GFLOPs"], df["scores GFLOPs"],
                  labels=["linear in n (projections, MLP, embedding, head)", "attention scores (n²)"],
                  colors=[COMPONENT_COLOURS["mlp"], COMPONENT_COLOURS["attention (scores)"]])
    ax1.set(xlabel="tokens n", ylabel="GFLOPs per image", title="FLOPs (counted)")
    ax1.legend(loc="upper left", fontsize=8)
    n, ms = df["tokens"], df["median_ms"]
    ax2.loglog(n, ms, "o-", label="measured")
    scale = n / n.iloc[-1]
    ax2.loglog(n, ms.iloc[-1] * scale, "--", color="grey", label="slope 1 (linear in n)")
    ax2.loglog(n, ms.iloc[-1] * scale ** 2, ":", color="grey", label="slope 2 (quadratic in n)")
    ax2.set_ylim(ms.min() / 3, ms.max() * 2)
    unit = f"ms per batch of {batch}" if batch else "ms per batch"
    ax2.set(xlabel="tokens n", ylabel=unit, title="latency (measured, median)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def plot_time_against_flops(df, title: str = ""):
    """Attention's share of one block (attention and MLP) in measured time and in counted FLOPs,
    against the number of tokens; columns ``tokens``, ``attention_share`` and ``flops_share``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.0))
    ax.semilogx(df["tokens"], df["attention_share"], "o-", label="share of time (measured)")
    ax.semilogx(df["tokens"], df["flops_share"], "s--", label="share of FLOPs (counted)")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(ylim=(0, 1), xlabel="tokens n", ylabel="attention / (attention + MLP)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
