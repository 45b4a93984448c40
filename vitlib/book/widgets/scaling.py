"""Chapter 9's widgets: the cost of an all-reduce against the size of a model."""
from __future__ import annotations

from ...models import presets


def plot_allreduce_sweep(ax, result: dict, marks: dict | None = None, title: str = "") -> None:
    """Measured all-reduce time against buffer size (from :func:`vitlib.book.studies.scaling.measure_steps`),
    medians with their interquartile range; ``marks`` (``label: bytes``) draws gradient sizes."""
    from ..claims import Measured

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

    from ..claims import Measured
    from ..studies.scaling import gradient_bytes

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
