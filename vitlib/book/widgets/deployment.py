"""Chapter 8's plots and controls: a served model's latency and throughput against batch size and
threads, eager against INT8 and ONNX Runtime, as plots, a live control and a chart for the HTML
book; and a layer's weights against the INT8 grid they are rounded to."""
from __future__ import annotations

import torch

COLOURS = {"eager": "#636363", "int8": "#31a354", "onnx": "#08519c", "export": "#6baed6",
           "torchscript": "#fd8d3c", "compile": "#756bb1"}


def plot_int8_grid(ax, weight: torch.Tensor, title: str = "") -> None:
    """A histogram of ``weight`` (one linear layer's), with the INT8 grid that dynamic quantisation
    rounds it to (torch's default: one symmetric scale per tensor, ``max |w| / 127.5``) and the
    rounding error's size."""
    w = weight.detach().float().flatten()
    scale = w.abs().max().item() / 127.5
    error = (torch.round(w / scale) * scale - w).abs()
    ax.hist(w.numpy(), bins=120, color="#bdbdbd")
    for k in range(-127, 128, 8):
        ax.axvline(k * scale, color="#31a354", lw=0.4, alpha=0.6)
    ax.set_xlabel("weight value (green: every 8th INT8 level)")
    ax.set_ylabel("weights")
    ax.set_title(title or f"{w.numel():,} weights; INT8 step {scale:.2e}; rounding error at most "
                          f"{error.max().item():.1e}, mean {error.mean().item():.1e}")


def plot_serving(axes, sweep, title: str = "") -> None:
    """Two panels from a :func:`vitlib.book.studies.deployment.serving_sweep` table: median latency and
    throughput against batch size, one colour per path, one line style per thread count."""
    ax_l, ax_t = axes
    styles = ["-", "--", ":", "-."]
    for k, (threads, rows) in enumerate(sweep.groupby("threads")):
        for path, r in rows.groupby("path", sort=False):
            kw = dict(color=COLOURS.get(path, "black"), ls=styles[k % len(styles)], marker="o",
                      label=f"{path}, {threads} thread{'s' if threads > 1 else ''}")
            ax_l.plot(r["batch"], r["median_ms"], **kw)
            ax_t.plot(r["batch"], r["images_per_s"], **kw)
    for ax, label in ((ax_l, "ms per batch (median)"), (ax_t, "images per second")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
    ax_t.legend(fontsize=7)
    if title:
        ax_l.figure.suptitle(title)


def serving_chart(sweep):
    """The sweep for the HTML book: a dropdown over thread counts and a slider over batch sizes of
    a :func:`vitlib.book.studies.deployment.serving_sweep` table (measured when the page was built),
    each showing every path's throughput with its latency as a label, without a kernel
    (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    batches = sorted(set(sweep["batch"]))
    if len(batches) < 2:
        raise ValueError(f"serving_chart needs a sweep of at least two batch sizes; received {batches}")
    frames = {}
    for threads, rows in sweep.groupby("threads"):
        frames[f"{threads}"] = {}
        for b in batches:
            r = rows[rows["batch"] == b]
            frames[f"{threads}"][int(b)] = [go.Bar(
                x=list(r["path"]), y=list(r["images_per_s"]),
                marker_color=[COLOURS.get(p, "black") for p in r["path"]],
                text=[f"{ms:.2f} ms ({s.value:.2f}x)" for ms, s in zip(r["median_ms"], r["speedup"])],
                textposition="outside", hovertemplate="%{y:,.0f} images/s<extra></extra>")]
    top = float(sweep["images_per_s"].max())
    return static_chart(frames, dropdown="threads", slider="batch",
                        title=lambda t, b: f"Serving at batch {b} on {t} thread{'s' if t != '1' else ''}: "
                                           "images per second (label: latency, speed-up over eager)",
                        layout=dict(yaxis=dict(title="images per second", range=[0, 1.3 * top]),
                                    showlegend=False), height=420)


def serving_explorer(model: torch.nn.Module, quantized, onnx, *, batches=(1, 2, 4, 8, 16, 32), threads=None):
    """A live control (Jupyter, Colab): pick a batch size and a thread count and measure eager,
    INT8 and ONNX Runtime there, at once (:func:`vitlib.book.studies.deployment.serving_sweep`)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..studies.deployment import serving_sweep

    threads = list(threads or sorted({1, torch.get_num_threads()}))
    batch = widgets.SelectionSlider(options=list(batches), value=batches[0], description="batch",
                                    continuous_update=False)
    count = widgets.Dropdown(options=threads, value=threads[-1], description="threads")
    out = widgets.Output()

    def draw(change=None) -> None:
        sweep = serving_sweep(model, quantized, onnx, [batch.value], [count.value], rounds=1, min_run_time=0.05)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 2.6))
            ax.bar(sweep["path"], sweep["images_per_s"], color=[COLOURS.get(p, "black") for p in sweep["path"]])
            for i, (ms, s) in enumerate(zip(sweep["median_ms"], sweep["speedup"])):
                ax.text(i, 0, f"{ms:.2f} ms\n{s.value:.2f}x", ha="center", va="bottom", fontsize=8, color="white")
            ax.set_ylabel("images per second")
            ax.set_title(f"batch {batch.value}, {count.value} threads")
            plt.show()

    batch.observe(draw, names="value")
    count.observe(draw, names="value")
    draw()
    display(widgets.VBox([widgets.HBox([batch, count]), out]))
