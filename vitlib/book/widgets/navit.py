"""Chapter 5's widgets: token dropout (a live slider, the step-time sweep, whole training runs
over seeds), training curves, and the throughput of packing against padding and resizing."""
from __future__ import annotations

import torch

from ..studies.navit_training import token_dropout_sweep


def plot_dropout_sweep(ax, sweep, title: str = "") -> None:
    """Measured training-step speed-up against ``token_dropout_prob`` (a
    :func:`vitlib.book.studies.navit_training.token_dropout_sweep` table), beside the ideal ``1 / (1 - p)``: the
    factor by which the tokens shrink."""
    import numpy as np

    probs = sweep["token_dropout_prob"].to_numpy(dtype=float)
    fine = np.linspace(0, probs.max(), 50)
    ax.plot(fine, 1 / (1 - fine), ":", color="grey", label="tokens kept: 1 / (1 - p)")
    speed = list(sweep.attrs["speedups"].values())
    ax.errorbar(probs, [m.value for m in speed], fmt="o-", color="#08519c", capsize=3,
                yerr=[[m.value - m.low for m in speed], [m.high - m.value for m in speed]],
                label="training step (measured, IQR)")
    ax.set_xlabel("token_dropout_prob")
    ax.set_ylabel("speed-up over p = 0")
    ax.legend()
    ax.set_title(title)


def dropout_chart(sweep):
    """:func:`plot_dropout_sweep`'s measurements for the HTML book: a slider over the token-dropout
    rates of a :func:`vitlib.book.studies.navit_training.token_dropout_sweep` table (measured when the page was
    built), each showing the tokens a step keeps and its measured time as shares of rate 0's, with
    the time's interquartile spread, without a kernel (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    if len(sweep) < 2:
        raise ValueError("dropout_chart needs a sweep of at least two rates; received "
                         f"{list(sweep['token_dropout_prob'])}")
    tokens = sweep["tokens"].to_numpy(dtype=float) / float(sweep["tokens"].iloc[0])
    frames = {}
    for k, (p, m) in enumerate(sweep.attrs["speedups"].items()):
        time, low, high = 1 / m.value, 1 / m.high, 1 / m.low  # step time as a share of rate 0's
        frames[f"{p:g}"] = [go.Bar(
            x=["tokens per step", "step time (measured)"], y=[tokens[k], time],
            marker_color=["#74c476", "#08519c"], text=[f"{tokens[k]:.0%}", f"{time:.0%}"],
            textposition="outside", error_y=dict(type="data", symmetric=False, array=[0, high - time],
                                                 arrayminus=[0, time - low]),
            hovertemplate="%{y:.0%}<extra></extra>")]
    return static_chart(frames, slider="token_dropout_prob",
                        title=lambda _, p: f"NaViT training step at token_dropout_prob {p}, as a share of rate 0",
                        layout=dict(yaxis=dict(title="share of rate 0", tickformat=".0%", range=[0, 1.35]),
                                    showlegend=False), height=380)


def plot_dropout_runs(axes, runs, title: str = "") -> None:
    """Two panels from a :func:`vitlib.book.studies.navit_training.train_dropout_seeds` table: whole-run wall
    time and final test accuracy against ``token_dropout_prob``, one dot per seed and the median
    over seeds as a line."""
    for ax, column, label in zip(axes, ("wall_s", "accuracy"), ("whole training run (s)", "test accuracy")):
        for seed, g in runs.groupby("seed"):
            ax.plot(g["token_dropout_prob"], g[column], "o", ms=4, alpha=0.6, label=f"seed {seed}")
        med = runs.groupby("token_dropout_prob")[column].median()
        ax.plot(med.index, med.values, "-", color="#08519c", label="median")
        ax.set(xlabel="token_dropout_prob", ylabel=label)
    axes[0].legend(fontsize=7)
    if title:
        axes[0].figure.suptitle(title, fontsize=9)


def plot_throughput(ax, table, title: str = "") -> None:
    """Training images/s of each candidate of a :func:`vitlib.book.studies.navit_training.throughput_table`,
    as bars labelled with the speed-up over the padded ViT."""
    names = list(table.index)
    colours = {"NaViT, packed": "#08519c", "ViT, padded": "#bdbdbd", "ViT, resized": "#74c476"}
    ax.barh(names, table["images_per_s"], color=[colours.get(n, "#fd8d3c") for n in names])
    for i, (rate, speed) in enumerate(zip(table["images_per_s"], table["speedup"])):
        ax.text(rate, i, f" {speed:.2f}x", va="center", fontsize=8)
    ax.set_xlim(0, table["images_per_s"].max() * 1.25)
    ax.invert_yaxis()
    ax.set(xlabel="training images/s (median step)", title=title)


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
