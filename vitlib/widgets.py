"""ipywidgets front-ends over :mod:`vitlib.bench`, and the plots they draw.

Each widget's plot is an ordinary function too, so a chapter can draw the default setting as a
static figure that the HTML book shows without a kernel.
"""
from __future__ import annotations

import torch

from .bench import count_parameters, flops_by_component, part_table
from .models import CrossViT, LeViT, SimpleViT, ViT
from .models.cross_vit import CROSSVIT_CONFIGS
from .models.levit import LEVIT_CONFIGS

__all__ = ["meta_breakdown", "plot_flops_breakdown", "flops_explorer", "flops_split_chart", "measure_config", "plot_against_base",
           "sizing_explorer", "meta_parts", "plot_parts", "levit_stage_explorer", "crossvit_explorer",
           "plot_dropout_sweep", "token_dropout_explorer", "plot_training_curves"]

COMPONENT_COLOURS = {
    "patch embedding": "#8c6d31",
    "attention (projections)": "#6baed6",
    "attention (scores)": "#08519c",
    "mlp": "#fd8d3c",
    "head": "#74c476",
    "other": "#bdbdbd",
}


def meta_breakdown(model_cls=ViT, **config) -> tuple[dict[str, int], int, int]:
    """FLOPs per component for one image, parameter count and token count, computed on the
    ``meta`` device: no memory is allocated and nothing is computed, so any size is instant."""
    with torch.device("meta"):
        model = model_cls(**config)
    h, w = model.patch_embedding.image_size
    x = torch.empty(1, model.patch_embedding.channels, h, w, device="meta")
    tokens = model.patch_embedding.num_patches + (1 if getattr(model, "pool", "mean") == "cls" else 0)
    return flops_by_component(model, x), count_parameters(model), tokens


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


def flops_explorer(image_size: int = 32, patch_size: int = 4, dim: int = 128, depth: int = 4,
                   heads: int = 4, mlp_ratio: int = 2):
    """Sliders over image size, patch size, width and depth; the FLOPs split redraws at once."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    style = {"description_width": "90px"}
    controls = {
        "image_size": w.IntSlider(value=image_size, min=16, max=512, step=16, description="image size", style=style),
        "patch_size": w.Dropdown(options=[2, 4, 8, 16, 32], value=patch_size, description="patch size", style=style),
        "dim": w.IntSlider(value=dim, min=64, max=1024, step=64, description="dim", style=style),
        "depth": w.IntSlider(value=depth, min=1, max=24, description="depth", style=style),
        "model": w.ToggleButtons(options=["ViT", "SimpleViT"], value="ViT", style=style),
    }

    def draw(image_size, patch_size, dim, depth, model):
        if image_size % patch_size:
            print(f"image size {image_size} is not divisible by patch size {patch_size}")
            return
        cls = ViT if model == "ViT" else SimpleViT
        cfg = dict(image_size=image_size, patch_size=patch_size, num_classes=1000, dim=dim, depth=depth,
                   heads=heads, dim_head=dim // heads, mlp_dim=mlp_ratio * dim)
        breakdown, params, tokens = meta_breakdown(cls, **cfg)
        fig, ax = plt.subplots(figsize=(7, 2.8))
        plot_flops_breakdown(ax, breakdown, f"{model}: {tokens} tokens, {params / 1e6:.1f}M parameters, "
                                            f"{sum(breakdown.values()) / 1e9:.2f} GFLOPs")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:3]), w.VBox(list(controls.values())[3:])]), out])


def flops_split_chart(image_sizes, models: dict | None = None, **config):
    """:func:`flops_explorer`'s picture for the HTML book: GFLOPs per component of each model in
    ``models`` (name: class; default ViT and SimpleViT) built with ``config`` at each image size,
    counted on the ``meta`` device when the page is built; a slider over the image size and a
    dropdown over the models switch between them without a kernel (:func:`vitlib.viz.static_chart`)."""
    import plotly.graph_objects as go

    from .viz import static_chart

    models = models or {"ViT": ViT, "SimpleViT": SimpleViT}
    frames, titles = {}, {}
    for name, cls in models.items():
        frames[name] = {}
        for size in image_sizes:
            split, params, tokens = meta_breakdown(cls, image_size=size, **config)
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


def measure_config(model_cls, config: dict, *, batch: int = 16, device: torch.device | str = "cpu",
                   min_run_time: float = 0.2) -> dict:
    """Parameters, forward GFLOPs per image and measured inference latency (median ms per batch)
    of ``model_cls(**config)`` on ``device``."""
    from .bench import count_flops, measure_inference

    model = model_cls(**config).to(device).eval()
    h, w = model.patch_embedding.image_size
    x = torch.randn(batch, model.patch_embedding.channels, h, w, device=device)
    t = measure_inference(model, x, min_run_time=min_run_time)
    return {"params": count_parameters(model), "gflops": count_flops(model, x[:1]) / 1e9, "ms": t.median * 1e3}


def plot_against_base(ax, base: dict, current: dict, title: str = "") -> None:
    """Bars of params, GFLOPs and latency of ``current`` as multiples of ``base``."""
    keys = [("params", "parameters"), ("gflops", "FLOPs"), ("ms", "latency (measured)")]
    ratios = [current[k] / base[k] for k, _ in keys]
    ax.bar([label for _, label in keys], ratios, color=["#74c476", "#fd8d3c", "#08519c"])
    ax.axhline(1.0, color="grey", lw=0.8)
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.2f}x", ha="center", va="bottom")
    ax.set_ylabel("multiple of the base model")
    ax.set_ylim(0, max(ratios + [1.0]) * 1.25)
    ax.set_title(title)


def sizing_explorer(base: dict, *, model_cls=SimpleViT, batch: int = 16, device: torch.device | str = "cpu",
                    min_run_time: float = 0.2):
    """Sliders over dim, depth, heads, MLP width and patch size. Each change builds the model and
    re-measures its latency on ``device`` (a fraction of a second), next to ``base``."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    base_figures = measure_config(model_cls, base, batch=batch, device=device, min_run_time=min_run_time)
    side = base["image_size"] if isinstance(base["image_size"], int) else min(base["image_size"])
    patches = [p for p in (1, 2, 4, 8, 16, 32) if side % p == 0 and p <= side]
    style = {"description_width": "80px"}
    controls = {
        "dim": w.IntSlider(value=base["dim"], min=32, max=512, step=32, description="dim", style=style,
                           continuous_update=False),
        "depth": w.IntSlider(value=base["depth"], min=1, max=12, description="depth", style=style,
                             continuous_update=False),
        "heads": w.IntSlider(value=base["heads"], min=1, max=16, description="heads", style=style,
                             continuous_update=False),
        "mlp_dim": w.IntSlider(value=base["mlp_dim"], min=32, max=2048, step=32, description="mlp_dim",
                               style=style, continuous_update=False),
        "patch_size": w.Dropdown(options=patches, value=base["patch_size"], description="patch size", style=style),
    }

    def draw(**changes):
        config = {**base, **changes}
        if config["dim"] % 4:
            print("dim must be a multiple of 4 for the sin-cos table")
            return
        current = measure_config(model_cls, config, batch=batch, device=device, min_run_time=min_run_time)
        fig, ax = plt.subplots(figsize=(6, 3))
        plot_against_base(ax, base_figures, current,
                          f"{current['params'] / 1e6:.2f}M params, {current['gflops']:.3f} GFLOPs, "
                          f"{current['ms']:.1f} ms per batch of {batch}")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:3]), w.VBox(list(controls.values())[3:])]), out])


def meta_parts(model_cls, image_size: int, channels: int = 3, **config):
    """:func:`vitlib.bench.part_table` of ``model_cls(image_size=..., **config)`` on the ``meta``
    device (instant at any size): tokens, attention entries, FLOPs and parameters per part
    (``model.named_stages()`` for LeViT, ``model.named_parts()`` for CrossViT)."""
    with torch.device("meta"):
        model = model_cls(image_size=image_size, channels=channels, **config).eval()
    parts = model.named_stages() if hasattr(model, "named_stages") else model.named_parts()
    x = torch.empty(1, channels, image_size, image_size, device="meta")
    return part_table(model, x, parts)


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
        "preset": w.Dropdown(options=list(LEVIT_CONFIGS), value=preset, description="model", style=style),
    }

    def draw(image_size, preset):
        df = meta_parts(LeViT, image_size, num_classes=1000, mlp_mult=2, **LEVIT_CONFIGS[preset])
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
        "preset": w.Dropdown(options=list(CROSSVIT_CONFIGS), value=preset, description="model", style=style),
        "sm_patch_size": w.Dropdown(options=[4, 6, 8, 12, 16], value=12, description="small patch", style=style),
        "lg_patch_size": w.Dropdown(options=[8, 12, 16, 24, 48], value=16, description="large patch", style=style),
    }

    def draw(image_size, preset, sm_patch_size, lg_patch_size):
        if image_size % sm_patch_size or image_size % lg_patch_size:
            print(f"image size {image_size} must be divisible by both patch sizes ({sm_patch_size}, {lg_patch_size})")
            return
        config = {**CROSSVIT_CONFIGS[preset], "sm_patch_size": sm_patch_size, "lg_patch_size": lg_patch_size}
        df = meta_parts(CrossViT, image_size, num_classes=1000, **config)
        fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
        plot_parts(axes, df, f"{preset} at {image_size} px, patches {sm_patch_size} and {lg_patch_size}: "
                             f"{df['params'].sum() / 1e6:.1f}M parameters, {df['gflops'].sum():.2f} GFLOPs")
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:2]), w.VBox(list(controls.values())[2:])]), out])


def plot_dropout_sweep(ax, sweep, title: str = "") -> None:
    """Measured training-step speed-up against the token-dropout rate (a
    :func:`vitlib.bench.token_dropout_sweep` table), beside the ideal ``1 / (1 - rate)``: the
    factor by which the tokens shrink."""
    import numpy as np

    rates = sweep["rate"].to_numpy(dtype=float)
    fine = np.linspace(0, rates.max(), 50)
    ax.plot(fine, 1 / (1 - fine), ":", color="grey", label="tokens kept: 1 / (1 - rate)")
    ax.plot(rates, sweep["speedup"], "o-", color="#08519c", label="training step (measured)")
    ax.set_xlabel("token dropout rate")
    ax.set_ylabel("speed-up over rate 0")
    ax.legend()
    ax.set_title(title)


def token_dropout_explorer(images, labels, config: dict, *, device: torch.device | str = "cpu",
                           min_run_time: float = 0.1):
    """A slider over NaViT's token-dropout rate: each change times a training step at that rate
    and at rate 0 on ``images`` (interleaved, one round) and shows the kept tokens and the two times."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .bench import token_dropout_sweep

    slider = w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="dropout rate",
                           style={"description_width": "90px"}, continuous_update=False)

    def draw(rate):
        sweep = token_dropout_sweep([0.0, rate] if rate else [0.0], images, labels, config=config, rounds=1,
                                    min_run_time=min_run_time, warmup=1, device=device)
        fig, ax = plt.subplots(figsize=(6, 2.6))
        labels_ = [f"rate {r:g}" for r in sweep["rate"]]
        ax.barh(labels_, sweep["median_ms"], color=["#bdbdbd", "#08519c"][: len(sweep)])
        for i, row in sweep.reset_index(drop=True).iterrows():
            ax.text(row["median_ms"], i, f" {row['median_ms']:.0f} ms, {row['tokens']} tokens", va="center")
        ax.set_xlim(0, sweep["median_ms"].max() * 1.6)
        ax.set_xlabel(f"training step, {len(images)} images (measured)")
        ax.set_title(f"speed-up {sweep['speedup'].iloc[-1]:.2f}x")
        plt.show()

    out = w.interactive_output(draw, {"rate": slider})
    return w.VBox([slider, out])


def plot_training_curves(ax, histories: dict, title: str = "") -> None:
    """Test accuracy against measured training time, one line per ``label: History`` (from
    :func:`vitlib.train.fit`): the picture of "accuracy under the same budget"."""
    for label, history in histories.items():
        h = history.frame()
        ax.plot(h["wall_s"], h["test_acc"], "o-", ms=3, label=str(label))
    ax.set(xlabel="training time (s, measured)", ylabel="test accuracy", title=title)
    ax.set_ylim(top=1.0)
    ax.legend()
