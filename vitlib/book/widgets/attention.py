"""Chapter 7's plots and controls: an attention layer's time and memory against the number of
tokens, plain against fused, as plots, as a live slider and as a chart for the HTML book."""
from __future__ import annotations

import torch

from ..studies.attention import kernel_sweep

COLOURS = {"plain": "#fd8d3c", "flash": "#08519c", "sdpa": "#08519c", "efficient": "#6baed6",
           "math": "#969696", "cudnn": "#31a354"}


def _colour(backend: str) -> str:
    return COLOURS.get(backend, "#636363")


def plot_kernel_sweep(axes, sweep, title: str = "") -> None:
    """Two panels from a :func:`vitlib.book.studies.attention.kernel_sweep` table: median time per call
    (with its IQR) and the peak memory one call allocates, against tokens, one line per backend,
    log-log; the memory panel also draws one score matrix for all heads, what the plain path
    stores and a fused kernel never does."""
    ax_t, ax_m = axes
    for backend, rows in sweep.groupby("backend", sort=False):
        ax_t.errorbar(rows["tokens"], rows["median_ms"], fmt="o-", capsize=3, color=_colour(backend),
                      yerr=[rows["median_ms"] - rows["q1_ms"], rows["q3_ms"] - rows["median_ms"]], label=backend)
        ax_m.plot(rows["tokens"], rows["peak_mib"], "o-", color=_colour(backend), label=backend)
    first = sweep.drop_duplicates("tokens")
    ax_m.plot(first["tokens"], first["scores_mib"], ":", color="grey", label="one score matrix")
    for ax, label in ((ax_t, "ms per call (median, IQR)"), (ax_m, "peak MiB live during a call")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    if title:
        ax_t.figure.suptitle(title)


def kernel_explorer(*, dim: int = 192, heads: int = 3, dim_head: int = 64, batch: int = 1,
                    backends=("plain", "flash"), device: torch.device | str = "cpu", precision: str = "fp32",
                    tokens=(64, 128, 256, 512, 1024, 2048)):
    """A live control (Jupyter, Colab): pick a number of tokens and measure one attention layer on
    each backend there, at once, on this kernel's device: time (median of at least 5 interleaved
    timings a side) and peak memory, beside one score matrix, in ``precision``."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    slider = widgets.SelectionSlider(options=list(tokens), value=tokens[len(tokens) // 2],
                                     description="tokens", continuous_update=False)
    out = widgets.Output()

    def draw(change=None) -> None:
        n = slider.value
        sweep = kernel_sweep([n], dim=dim, heads=heads, dim_head=dim_head, batch=batch,
                             backends=backends, device=device, precision=precision, rounds=2,
                             min_run_time=0.05)
        with out:
            out.clear_output(wait=True)
            fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(8, 2.8))
            colours = [_colour(b) for b in sweep["backend"]]
            ax_t.bar(sweep["backend"], sweep["median_ms"], color=colours)
            ax_t.set_ylabel("ms per call (median)")
            ax_m.bar(sweep["backend"], sweep["peak_mib"], color=colours)
            ax_m.axhline(sweep["scores_mib"].iloc[0], ls=":", color="grey", label="one score matrix")
            ax_m.set_ylabel("peak MiB")
            ax_m.legend(fontsize=8)
            speed = sweep.attrs["speedups"][n][backends[1]]
            fig.suptitle(f"{n} tokens, batch {batch}: {backends[1]} over {backends[0]} {speed.value:.2f}x")
            fig.tight_layout()
            plt.show()

    slider.observe(draw, names="value")
    draw()
    display(widgets.VBox([slider, out]))


def kernel_chart(sweep):
    """The sweep for the HTML book: a slider over the token counts of a
    :func:`vitlib.book.studies.attention.kernel_sweep` table (measured when the page was built), each
    showing every backend's time and peak memory as shares of the first backend's, with the
    time's spread, without a kernel (:func:`vitlib.book.viz.static_chart`)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    tokens = list(dict.fromkeys(sweep["tokens"]))
    if len(tokens) < 2:
        raise ValueError(f"kernel_chart needs a sweep of at least two token counts; received {tokens}")
    backends = list(dict.fromkeys(sweep["backend"]))
    base_name = backends[0]
    frames = {}
    for n in tokens:
        rows = sweep[sweep["tokens"] == n].set_index("backend")
        base = rows.loc[base_name]
        traces = []
        for b in backends:
            r = rows.loc[b]
            if b == base_name:
                time = low = high = 1.0
            else:
                m = sweep.attrs["speedups"][n][b]  # the time's share is 1 / speed-up
                time, low, high = 1 / m.value, 1 / m.high, 1 / m.low
            mem = r["peak_mib"] / base["peak_mib"]
            traces.append(go.Bar(
                name=b, x=["time per call", "peak memory"], y=[time, mem], marker_color=_colour(b),
                text=[f"{r['median_ms']:.2f} ms", f"{r['peak_mib']:.1f} MiB"], textposition="outside",
                error_y=dict(type="data", symmetric=False, array=[high - time, 0], arrayminus=[time - low, 0]),
                hovertemplate=f"{b}: " + "%{y:.0%} of " + base_name + "<extra></extra>"))
        frames[int(n)] = traces
    top = max(1.0, float((sweep["median_ms"] / sweep.groupby("tokens")["median_ms"].transform("first")).max()))
    return static_chart(frames, slider="tokens",
                        title=lambda _, n: f"One attention layer at {n} tokens, as a share of {base_name}",
                        layout=dict(yaxis=dict(title=f"share of {base_name}", tickformat=".0%",
                                               range=[0, 1.3 * top]), barmode="group",
                                    legend=dict(orientation="h", y=-0.15)), height=400)
