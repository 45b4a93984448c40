"""Chapter 2's widgets: a model's size, cost and speed against a base model's."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from ...models.presets import HEADS_MEANING, resolve_config, sizing_config
from ..studies.lightweight import compare_configs


def plot_against_base(ax, table, title: str = "") -> None:
    """Bars of the variant's parameters, GFLOPs and latency as multiples of the base's, from one
    :func:`~vitlib.book.studies.lightweight.compare_configs` table (the latency ratio comes from the
    same interleaved rounds)."""
    from ..claims import Measured

    base, variant = table.loc["base"], table.loc["variant"]
    times = table.attrs["times"]
    latency = Measured.ratio(times["variant"], times["base"])  # variant's time over the base's
    keys = [("params", "parameters"), ("gflops", "FLOPs"),
            ("median_ms", f"latency (measured,\nIQR, {latency.n} calls)")]
    ratios = [variant["params"] / base["params"], variant["gflops"] / base["gflops"], latency.value]
    ax.bar([label for _, label in keys], ratios, color=["#74c476", "#fd8d3c", "#08519c"])
    ax.errorbar([2], [latency.value], yerr=[[latency.value - latency.low], [latency.high - latency.value]],
                fmt="none", ecolor="black", capsize=4)
    ax.axhline(1.0, color="grey", lw=0.8)
    for i, r in enumerate(ratios):
        ax.text(i + 0.08, r, f"{r:.2f}x", ha="left" if i == 2 else "center", va="bottom")
    ax.set_ylabel("multiple of the base model")
    ax.set_ylim(0, max(ratios + [latency.high, 1.0]) * 1.25)
    ax.set_title(title)


def sizing_explorer(base: str | Mapping, *, family: str | None = None, batch: int = 16,
                    device: torch.device | str = "cpu", rounds: int = 2, min_run_time: float = 0.2):
    """Sliders over dim, depth, heads, MLP width and patch size of ``base`` (a preset name or a
    configuration; ``family`` default: the preset's, or SimpleViT). Each change builds the variant
    and measures it against the base in one interleaved comparison on ``device`` (a second or
    two). Heads split the width: ``dim_head = dim // heads`` (:func:`~vitlib.models.presets.sizing_config`)."""
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


def plot_posemb_similarity(grid: int = 8, dim: int = 64, points=((0, 0), (3, 4), (7, 2))):
    """SimpleViT's fixed 2-D sine-cosine positions: for a few patches of a ``grid`` x ``grid``
    image, the cosine similarity of that patch's position vector (``dim`` values) to every other
    patch's. Returns the figure."""
    import matplotlib.pyplot as plt

    from ...layers import posemb_sincos_2d

    pe = posemb_sincos_2d(grid, grid, dim)
    pe = pe / pe.norm(dim=1, keepdim=True)
    for r, c in points:
        if not (0 <= r < grid and 0 <= c < grid):
            raise ValueError(f"points must lie on the {grid}x{grid} grid; received ({r}, {c})")
    sims = [(pe @ pe[r * grid + c]).view(grid, grid) for r, c in points]
    low = math.floor(10 * min(float(sim.min()) for sim in sims)) / 10  # the colours span the values
    fig, axes = plt.subplots(1, len(points), figsize=(2.6 * len(points), 2.8))
    for ax, (r, c), sim in zip(axes, points, sims):
        im = ax.imshow(sim, cmap="viridis", vmin=low, vmax=1)
        ax.plot(c, r, "r+", ms=12)
        ax.set_title(f"patch (row {r}, column {c})", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="cosine similarity")
    fig.suptitle(f"Fixed sine-cosine positions, {grid}x{grid} patches, width {dim}", fontsize=10)
    return fig


def plot_knobs(sweep, title: str = ""):
    """One panel per knob of a :func:`~vitlib.book.studies.lightweight.knob_sweep` table: parameters,
    FLOPs and measured latency as multiples of the base model's (log scales). Returns the
    figure."""
    import matplotlib.pyplot as plt

    knobs = [k for k in dict.fromkeys(sweep["knob"]) if k != "base"]
    base = sweep.attrs.get("base", {})
    fig, axes = plt.subplots(1, len(knobs), figsize=(2.3 * len(knobs), 2.9), sharey=True)
    for ax, knob in zip(axes, knobs):
        rows = sweep[sweep["knob"] == knob].sort_values("value")
        xs = list(rows["value"])
        for col, label, style in (("params_x", "parameters", "o-"), ("gflops_x", "FLOPs", "s--")):
            ax.plot(xs, rows[col], style, label=label)
        err = [rows["time_x"] - rows["time_x_low"], rows["time_x_high"] - rows["time_x"]]
        ax.errorbar(xs, rows["time_x"], yerr=err, fmt="^-", capsize=2, label="latency (measured, IQR)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.axhline(1, color="grey", lw=0.5)
        if knob in base:
            ax.axvline(base[knob], color="grey", lw=0.5, ls=":")
        ax.set_yscale("log", base=2)
        ax.set_xlabel({"heads": "heads (width fixed)", "dim": "width (MLP scaled with it)"}.get(
            knob, knob.replace("_", " ")))
    axes[0].set_ylabel("multiple of the base")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_seed_curves(ax, results, title: str = "") -> None:
    """Test accuracy per epoch of each condition of a
    :func:`~vitlib.train.train_seeds` table: the mean over seeds as a line, the
    range over seeds shaded."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    histories = results.attrs["histories"]
    for name in dict.fromkeys(results["condition"]):
        curves = [h for (n, _), h in histories.items() if n == name]
        epochs = curves[0]["epoch"].to_numpy()
        acc = np.stack([h["test_acc"].to_numpy() for h in curves])
        seeds = f"{len(curves)} seed" + ("s" if len(curves) != 1 else "")
        line, = ax.plot(epochs, acc.mean(0), label=f"{name} ({seeds})")
        ax.fill_between(epochs, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.legend()
    ax.set_title(title, fontsize=10)


def knob_chart(sweep):
    """:func:`plot_knobs`'s picture for the HTML book: a dropdown over the knobs of a
    :func:`~vitlib.book.studies.lightweight.knob_sweep` table (measured when the page was built), each
    showing parameters, FLOPs and latency as multiples of the base's, without a kernel
    (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    knobs = [k for k in dict.fromkeys(sweep["knob"]) if k != "base"]
    if not knobs:
        raise ValueError("knob_chart needs a knob_sweep table with at least one knob; received only the base")
    frames = {}
    for knob in knobs:
        rows = sweep[sweep["knob"] == knob].sort_values("value")
        xs = [f"{v:g}" for v in rows["value"]]
        frames[knob] = [go.Scatter(x=xs, y=list(rows[col]), mode="lines+markers", name=label,
                                   line=dict(dash=dash), hovertemplate="%{y:.2f}x<extra>" + label + "</extra>")
                        for col, label, dash in (("params_x", "parameters", "solid"), ("gflops_x", "FLOPs", "dash"))]
        frames[knob].append(go.Scatter(
            x=xs, y=list(rows["time_x"]), mode="lines+markers", name="latency (measured, IQR)", line=dict(dash="dot"),
            error_y=dict(type="data", symmetric=False, array=list(rows["time_x_high"] - rows["time_x"]),
                         arrayminus=list(rows["time_x"] - rows["time_x_low"])),
            hovertemplate="%{y:.2f}x<extra>latency</extra>"))
    top = float(sweep[["params_x", "gflops_x", "time_x_high"]].max().max())
    low = float(sweep[["params_x", "gflops_x", "time_x_low"]].min().min())
    return static_chart(frames, dropdown="knob", title=lambda k, _: f"One knob at a time: {k.replace('_', ' ')}",
                        layout=dict(yaxis=dict(title="multiple of the base", type="log",
                                               range=[np.log10(low / 1.3), np.log10(top * 1.3)]),
                                    xaxis=dict(title="value of the knob", type="category"),
                                    legend=dict(orientation="h", y=-0.25)), height=380)
