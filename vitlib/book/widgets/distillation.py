"""Chapter 6's widgets: distilled students and what the teacher teaches."""
from __future__ import annotations

import torch


def plot_condition_curves(ax, results, title: str = "") -> None:
    """Test accuracy after each epoch, mean over seeds, one line per condition of a
    :func:`vitlib.book.studies.distillation.compare_students` table (the band: lowest to highest seed)."""
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
    """A :func:`vitlib.book.studies.distillation.temperature_alpha_grid` table as two panels: test
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
    :func:`vitlib.book.studies.distillation.temperature_alpha_grid` table (results computed before, no
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


def temperature_alpha_chart(grid, teacher_logits=None, class_names=None):
    """:func:`distillation_explorer`'s picture for the HTML book (:func:`vitlib.book.viz.static_chart`):
    a slider over the temperatures of a
    :func:`~vitlib.book.studies.distillation.temperature_alpha_grid` table; at each, the test accuracy
    of the student trained at every alpha (alpha 0: the student alone), and, given one image's
    ``teacher_logits``, the teacher's distribution at that temperature (right panel)."""
    import plotly.graph_objects as go

    from ..viz import static_chart

    temps = sorted(set(grid["temperature"]))
    alone = 100 * float(grid[grid["alpha"] == 0]["accuracy"].iloc[0])
    frames = {}
    for t in temps:
        g = grid[grid["temperature"] == t].sort_values("alpha")
        traces = [go.Bar(x=[f"{a:g}" for a in g["alpha"]], y=list(100 * g["accuracy"]),
                         marker_color=["#bdbdbd" if a == 0 else "#08519c" for a in g["alpha"]],
                         text=[f"{100 * v:.1f}%" for v in g["accuracy"]], textposition="outside",
                         showlegend=False, hovertemplate="alpha %{x}: %{y:.1f}%<extra></extra>")]
        if teacher_logits is not None:
            p = torch.softmax(torch.as_tensor(teacher_logits, dtype=torch.float32) / t, -1).tolist()
            names = [str(c) for c in (class_names or range(len(p)))]
            traces.append(go.Bar(x=names, y=p, xaxis="x2", yaxis="y2", marker_color="#8c6d31",
                                 showlegend=False, hovertemplate="class %{x}: %{y:.3f}<extra></extra>"))
        frames[t] = traces
    top = 100 * float(grid["accuracy"].max())
    layout = dict(xaxis=dict(title="alpha (the teacher's share of the loss)", type="category"),
                  yaxis=dict(title="test accuracy (%)", range=[0, min(100, top * 1.15)]))
    if teacher_logits is not None:
        layout.update(xaxis=dict(layout["xaxis"], domain=[0, 0.55]),
                      xaxis2=dict(title="class", domain=[0.65, 1], anchor="y2", type="category"),
                      yaxis2=dict(title="teacher's probability", range=[0, 1], anchor="x2"))
    size = grid.attrs.get("test_size", "?")
    return static_chart(frames, slider="temperature", layout=layout,
                        title=lambda _, t: f"T = {t:g}: one seed each, {size} test images; "
                                           f"alone {alone:.1f}%")
