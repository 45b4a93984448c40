"""ipywidgets front-ends over :mod:`vitlib.bench` and :mod:`vitlib.studies`, and the plots they draw.

Each widget's plot is an ordinary function too, so a chapter can draw the default setting as a
static figure that the HTML book shows without a kernel. Models come from the presets by name
(:mod:`vitlib.models.presets`) and are asked for their input and parts.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from .bench import count_parameters, flops_by_component, part_table, sequence_length
from .models import MODELS, presets
from .studies.lightweight import HEADS_MEANING, compare_configs, resolve_config, sizing_config
from .studies.navit import token_dropout_sweep

__all__ = ["meta_breakdown", "plot_flops_breakdown", "flops_explorer", "flops_split_chart", "plot_against_base",
           "sizing_explorer", "meta_parts", "plot_parts", "levit_stage_explorer", "crossvit_explorer",
           "plot_dropout_sweep", "token_dropout_explorer", "plot_training_curves",
           "plot_allreduce_sweep", "allreduce_explorer", "plot_condition_curves", "plot_temperature_alpha",
           "distillation_explorer"]

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
    heads stay the preset's (:data:`~vitlib.studies.lightweight.HEADS_MEANING`)."""
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
    a kernel (:func:`vitlib.viz.static_chart`)."""
    import plotly.graph_objects as go

    from .viz import static_chart

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


def plot_dropout_sweep(ax, sweep, title: str = "") -> None:
    """Measured training-step speed-up against ``token_dropout_prob`` (a
    :func:`vitlib.studies.navit.token_dropout_sweep` table), beside the ideal ``1 / (1 - p)``: the
    factor by which the tokens shrink."""
    import numpy as np

    probs = sweep["token_dropout_prob"].to_numpy(dtype=float)
    fine = np.linspace(0, probs.max(), 50)
    ax.plot(fine, 1 / (1 - fine), ":", color="grey", label="tokens kept: 1 / (1 - p)")
    ax.plot(probs, sweep["speedup"], "o-", color="#08519c", label="training step (measured)")
    ax.set_xlabel("token_dropout_prob")
    ax.set_ylabel("speed-up over p = 0")
    ax.legend()
    ax.set_title(title)


def token_dropout_explorer(images, labels, config: dict, *, device: torch.device | str = "cpu",
                           min_run_time: float = 0.1):
    """A slider over NaViT's ``token_dropout_prob``: each change times a training step at that
    probability and at 0 on ``images`` (interleaved, one round) and shows the kept tokens and the
    two times."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    slider = w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="token_dropout_prob",
                           style={"description_width": "130px"}, continuous_update=False)

    def draw(token_dropout_prob):
        p = token_dropout_prob
        sweep = token_dropout_sweep([0.0, p] if p else [0.0], images, labels, config=config, rounds=1,
                                    min_run_time=min_run_time, warmup=1, device=device)
        fig, ax = plt.subplots(figsize=(6, 2.6))
        labels_ = [f"p = {r:g}" for r in sweep["token_dropout_prob"]]
        ax.barh(labels_, sweep["median_ms"], color=["#bdbdbd", "#08519c"][: len(sweep)])
        for i, row in sweep.reset_index(drop=True).iterrows():
            ax.text(row["median_ms"], i, f" {row['median_ms']:.0f} ms, {row['tokens']} tokens", va="center")
        ax.set_xlim(0, sweep["median_ms"].max() * 1.6)
        ax.set_xlabel(f"training step, {len(images)} images (measured)")
        ax.set_title(f"speed-up {sweep['speedup'].iloc[-1]:.2f}x")
        plt.show()

    out = w.interactive_output(draw, {"token_dropout_prob": slider})
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


# ---------------------------------------------------------------------------------------------
# many devices (chapter 9)


def plot_allreduce_sweep(ax, result: dict, marks: dict | None = None, title: str = "") -> None:
    """Measured all-reduce time against buffer size (from :func:`vitlib.studies.scaling.measure_steps`),
    medians with their interquartile range; ``marks`` (``label: bytes``) draws gradient sizes."""
    from .claims import Measured

    sizes = result["sweep"]["bytes"]
    ms = [Measured.of_values([t * 1e3 for t in times]) for times in result["sweep"]["seconds"]]
    mid = [m.value for m in ms]
    ax.errorbar(sizes, mid, yerr=[[m.value - m.low for m in ms], [m.high - m.value for m in ms]],
                fmt="o-", ms=4, capsize=3, color="#08519c",
                label=f"{result['backend']}, {result['processes']} processes (measured)")
    for i, (label, nbytes) in enumerate((marks or {}).items()):
        ax.axvline(nbytes, color="#fd8d3c", lw=0.8, ls=":")
        ax.text(nbytes, 0.98 - 0.08 * (i % 4), f" {label}", transform=ax.get_xaxis_transform(), fontsize=7,
                va="top", color="#a63603")
    ax.set(xscale="log", yscale="log", xlabel="gradient buffer (bytes, float32)", ylabel="ms per all-reduce",
           title=title)
    ax.legend(loc="lower right", fontsize=8)


def allreduce_explorer(result: dict, names: list[str] | None = None):
    """Pick a model and a number of processes: its gradient size (exact), what a ring all-reduce
    sends per process per step (2 (N - 1) / N of the gradient), and the time that would take at
    the bandwidth measured here for the largest buffer (an estimate, labelled as one)."""
    import ipywidgets as w

    from .claims import Measured
    from .studies.scaling import gradient_bytes

    names = names or presets.names()
    sizes = dict(zip(result["sweep"]["bytes"], result["sweep"]["seconds"]))
    largest, m = max(sizes), result["processes"]
    # bytes each process sent per second in the measured ring: 2 (m - 1) / m of the buffer per call
    bandwidth = 2 * (m - 1) / m * largest / Measured.of_values(sizes[largest]).value
    model = w.Dropdown(options=names, value=names[0], description="model")
    procs = w.IntSlider(value=2, min=2, max=64, description="processes")

    def show(name: str, n: int) -> None:
        grad = gradient_bytes(name)
        sent = 2 * (n - 1) / n * grad
        print(f"{name}: {grad / 4 / 1e6:.1f}M parameters, {grad / 1e6:.1f} MB of float32 gradients per step")
        print(f"ring all-reduce over {n} processes: each sends and receives {sent / 1e6:.1f} MB per step")
        print(f"estimate at the {bandwidth / 1e6:.0f} MB/s per process measured here for {largest / 1e6:.0f} MB "
              f"buffers ({result['backend']}): {sent / bandwidth * 1e3:.0f} ms per step, to hide behind the backward "
              "pass")

    return w.VBox([w.HBox([model, procs]), w.interactive_output(show, {"name": model, "n": procs})])


# ----- distillation (chapter 6) -----------------------------------------------------------------


def plot_condition_curves(ax, results, title: str = "") -> None:
    """Test accuracy after each epoch, mean over seeds, one line per condition of a
    :func:`vitlib.studies.distillation.compare_students` table (the band: lowest to highest seed)."""
    import numpy as np

    histories = results.attrs["histories"]
    for name in dict.fromkeys(results["condition"]):
        runs = [h.frame()["test_acc"].to_numpy() for (c, _), h in histories.items() if c == name]
        acc = 100 * np.vstack(runs)
        epochs = np.arange(1, acc.shape[1] + 1)
        line, = ax.plot(epochs, acc.mean(0), "o-", ms=3, label=name)
        ax.fill_between(epochs, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    ax.legend()


def plot_temperature_alpha(axes, grid, teacher_logits=None, class_names=None) -> None:
    """A :func:`vitlib.studies.distillation.temperature_alpha_grid` table as two panels: test
    accuracy against alpha, one line per temperature (alpha 0: the student alone); and, given one
    image's ``teacher_logits``, the teacher's softened distribution at each temperature."""
    import numpy as np

    ax = axes[0]
    for t, g in grid.groupby("temperature"):
        g = g.sort_values("alpha")
        ax.plot(g["alpha"], 100 * g["accuracy"], "o-", label=f"T = {t:g}")
    ax.set(xlabel="alpha (the teacher's share of the loss)", ylabel="test accuracy (%)",
           title=f"one seed each, {grid.attrs.get('test_size', '?')} test images")
    ax.legend()
    if teacher_logits is not None and len(axes) > 1:
        ax = axes[1]
        k = len(teacher_logits)
        temps = sorted(set(grid["temperature"]))
        width = 0.8 / len(temps)
        for i, t in enumerate(temps):
            p = torch.softmax(torch.as_tensor(teacher_logits, dtype=torch.float32) / t, -1).numpy()
            ax.bar(np.arange(k) + (i - (len(temps) - 1) / 2) * width, p, width, label=f"T = {t:g}")
        ax.set_xticks(range(k), class_names or range(k))
        ax.set(xlabel="class", ylabel="teacher's probability", title="what the student is taught, one image")
        ax.legend()


def distillation_explorer(grid, teacher_logits, class_names=None):
    """Sliders over the temperatures and alphas of a
    :func:`vitlib.studies.distillation.temperature_alpha_grid` table (results computed before, no
    training): the student's accuracy and agreement with the teacher at that setting against the
    student alone, and the teacher's distribution for one image at that temperature."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    import numpy as np

    temps = sorted(set(grid["temperature"]))
    alphas = sorted(set(grid["alpha"]))
    style = {"description_width": "90px"}
    t_slider = w.SelectionSlider(options=temps, value=temps[len(temps) // 2], description="temperature",
                                 style=style)
    a_slider = w.SelectionSlider(options=alphas, value=alphas[len(alphas) // 2], description="alpha", style=style)
    alone = grid[grid["alpha"] == 0].iloc[0]

    def draw(temperature, alpha):
        row = grid[(grid["temperature"] == temperature) & (grid["alpha"] == alpha)].iloc[0]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8))
        names = ["accuracy", "agreement"]
        x = np.arange(2)
        left.bar(x - 0.2, [100 * alone[n] for n in names], 0.4, color="#bdbdbd", label="alone")
        left.bar(x + 0.2, [100 * row[n] for n in names], 0.4, color="#08519c", label=f"T={temperature:g}, "
                                                                                       f"alpha={alpha:g}")
        left.set_xticks(x, ["test accuracy", "agreement with teacher"])
        low = 100 * min(alone[names].min(), row[names].min())
        left.set_ylim(max(0, low - 10), 100)
        left.set_ylabel("%")
        left.legend(fontsize=7)
        p = torch.softmax(torch.as_tensor(teacher_logits, dtype=torch.float32) / temperature, -1).numpy()
        right.bar(range(len(p)), p, color="#8c6d31")
        right.set_xticks(range(len(p)), class_names or range(len(p)))
        right.set(ylim=(0, 1), title=f"teacher's distribution at T = {temperature:g}")
        plt.show()

    out = w.interactive_output(draw, {"temperature": t_slider, "alpha": a_slider})
    return w.VBox([w.HBox([t_slider, a_slider]), out])
