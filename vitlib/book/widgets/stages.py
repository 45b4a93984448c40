"""Chapters 3 and 4's widgets: the parts of a LeViT or a CrossViT, counted and timed."""
from __future__ import annotations

from ...bench import meta_parts, part_table  # noqa: F401  (meta_parts re-exported)
from ...models import presets
from ...models.presets import build_meta


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


def levit_parts_chart(image_sizes, names=None):
    """:func:`levit_stage_explorer`'s picture for the HTML book: GFLOPs per part of each LeViT
    preset in ``names`` (default: all) at each of ``image_sizes`` (dark: attention scores, light:
    the rest), counted on the ``meta`` device when the page is built; a slider over the image size
    and a dropdown over the presets switch between them without a kernel
    (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    frames, titles, top = {}, {}, 0.0
    for name in names or presets.names("levit"):
        frames[name] = {}
        for size in image_sizes:
            df = meta_parts(name, image_size=size)
            parts = list(df.index)
            scores = df["gflops_scores"].to_numpy(dtype=float)
            rest = df["gflops"].to_numpy(dtype=float) - scores
            frames[name][size] = [
                go.Bar(y=parts, x=scores, orientation="h", name="attention scores", marker_color="#08519c",
                       hovertemplate="%{y}: %{x:.4f} GFLOPs of scores<extra></extra>"),
                go.Bar(y=parts, x=rest, orientation="h", name="everything else", marker_color="#fdae6b",
                       hovertemplate="%{y}: %{x:.4f} GFLOPs of the rest<extra></extra>")]
            top = max(top, float(df["gflops"].max()))
            titles[name, size] = (f"{name} at {size} px: {int(df.loc['stem', 'tokens'])} tokens after the stem, "
                                  f"{df['gflops'].sum():.2f} GFLOPs")
    return static_chart(frames, slider="image size", dropdown="model", title=lambda m, s: titles[m, s],
                        layout=dict(barmode="stack", xaxis=dict(title="GFLOPs per image (forward)"),
                                    yaxis=dict(autorange="reversed"), legend=dict(orientation="h", y=-0.3)))


def _crossvit_title(model, df, preset: str) -> str:
    (sh, _), (lh, _) = model.sm_image_size, model.lg_image_size
    sp = model.sm_embedding.patch_embedding.patch_size[0]
    lp = model.lg_embedding.patch_embedding.patch_size[0]
    return (f"{preset} at {model.image_size[0]} px: small branch {sp}-px patches of {sh} px, large branch "
            f"{lp}-px patches of {lh} px; {df['params'].sum() / 1e6:.1f}M parameters, {df['gflops'].sum():.2f} GFLOPs")


def crossvit_explorer(image_size: int = 240, preset: str = "CrossViT-S"):
    """Image size, preset and the two patch sizes of a CrossViT; the split between the branches and
    the cross-attention redraws at once (counted on the ``meta`` device). The large-patch branch
    follows the image at the paper's ratio (:func:`vitlib.models.cross_vit.scaled_size`), rounded
    to whole patches of the chosen size; a setting the model refuses is reported, not raised."""
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
        try:
            model = build_meta(preset, image_size=image_size, sm_patch_size=sm_patch_size,
                               lg_patch_size=lg_patch_size)
        except ValueError as err:
            print(f"{preset} cannot be built so: {err}")
            return
        df = part_table(model, model.example_input(1))
        fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
        plot_parts(axes, df, _crossvit_title(model, df, preset))
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox([w.VBox(list(controls.values())[:2]), w.VBox(list(controls.values())[2:])]), out])


def crossvit_split_chart(sweeps, preset: str = "CrossViT-S", image_size: int = 240):
    """:func:`crossvit_explorer`'s picture for the HTML book: GFLOPs per part of a CrossViT (small-
    patch branch, large-patch branch, cross-attention; dark: attention scores, light: the rest), from
    ``sweeps``, a mapping of the small patch size to an :func:`vitlib.book.studies.crossvit.attention_sweep`
    of ``preset`` with that patch size, counted when the page is built. A slider over the image size
    and a dropdown over the small patch size switch between them without a kernel
    (:func:`vitlib.book.viz.static_chart`); the chart opens at ``image_size`` where the first sweep has
    it."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    frames, titles, top = {}, {}, 0.0
    for patch, sweep in sweeps.items():
        frames[patch] = {}
        for size, df in sweep.groupby("image_size", sort=True):
            parts, total = df["part"].tolist(), df["gflops"].sum()
            frames[patch][int(size)] = [
                go.Bar(x=df["gflops_scores"].tolist(), y=parts, orientation="h", name="attention scores",
                       marker_color="#08519c", showlegend=False,
                       hovertemplate="%{y}: %{x:.3f} GFLOPs of scores<extra></extra>"),
                go.Bar(x=(df["gflops"] - df["gflops_scores"]).tolist(), y=parts, orientation="h",
                       name="everything else", marker_color="#fdae6b", showlegend=False,
                       text=[f"{100 * g / total:.0f}%" for g in df["gflops"]], textposition="outside",
                       hovertemplate="%{y}: %{x:.3f} GFLOPs besides scores<extra></extra>")]
            sm, lg = (df.set_index("part").loc[p] for p in ("small-patch branch", "large-patch branch"))
            titles[patch, int(size)] = (
                f"{preset} at {int(size)} px: {sm['patch']}-px patches of {sm['image']} px ({sm['grid']}) and "
                f"{lg['patch']}-px patches of {lg['image']} px ({lg['grid']}); {total:.2f} GFLOPs")
            top = max(top, float(df["gflops"].max()))
    first = frames[next(iter(frames))]
    return static_chart(frames, slider="image size", dropdown="small patch", title=lambda p, s: titles[p, s],
                        value=image_size if image_size in first else None,
                        layout=dict(barmode="stack", xaxis=dict(title="GFLOPs per image (forward; dark: attention "
                                                                      "scores)", range=[0, top * 1.15]),
                                    yaxis=dict(autorange="reversed"), title=dict(font=dict(size=11))))


def plot_growth(sweep, slopes: dict, title: str = ""):
    """Two log-log panels from a :func:`vitlib.book.studies.crossvit.attention_sweep`: each part's
    attention entries and its GFLOPs against the image's pixels, each divided by its value at the
    largest size, so that every part ends at 1 there; the grey lines of slope 1 (linear in the
    tokens) and 2 (quadratic) pass through that point, where the asymptote lives. ``slopes`` maps
    ``(column, part)`` to the fitted slope shown in the legend."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    big = sweep["pixels"].max()
    px = np.array(sorted(sweep["pixels"].unique()), dtype=float)
    sides = np.sqrt(px).round().astype(int)
    for ax, column, label in zip(axes, ("attention_entries", "gflops"), ("attention entries", "GFLOPs")):
        for k, ls in ((1, ":"), (2, "--")):
            ax.plot(px, (px / big) ** k, color="#969696", ls=ls, lw=2.5, zorder=1, label=f"slope {k}")
        for part, g in sweep.groupby("part", sort=False):
            y = g[column].to_numpy(dtype=float)
            ax.plot(g["pixels"], y / y[-1], "o-", ms=3, lw=1.2, zorder=2,
                    label=f"{part}: slope {slopes[column, part]:.2f}")
        ax.set(xscale="log", yscale="log", xlabel="image (pixels, side squared)",
               ylabel=f"{label} / value at {sides[-1]} px", title=label)
        ax.set_xticks(px, [f"{s}²" for s in sides])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
