"""Chapter 10's widgets: the comparison of every model and deployment path as Pareto plots, a table,
a live dashboard (Jupyter, Colab) and the same dashboard as a static chart for the HTML book.

Each reads a :func:`vitlib.book.studies.synthesis.latency_table` (one row per model and path); the live
dashboard re-measures what is cheap (:data:`LIVE`) when given the
:func:`~vitlib.book.studies.synthesis.same_budget` table the models were trained in.
"""
from __future__ import annotations

import math

from ..studies.choices import pareto_front
from ..studies.synthesis import latency_table

__all__ = ["METRICS", "LIVE", "label", "plot_pareto", "plot_overview", "overview_table", "claims_view",
           "metric_values", "dashboard", "dashboard_chart"]

#: The dashboard's measures, as its controls name them (:func:`metric_values` computes each).
METRICS = ("parameters (M)", "MFLOPs per image", "training time (s)", "latency (ms)", "speed-up over ViT",
           "accuracy (%)")
#: What the live dashboard re-measures when asked: paths that take a second or two per model.
LIVE = ("eager", "int8")
_COLOURS = ("#08519c", "#fd8d3c", "#74c476", "#9e9ac8", "#e6550d", "#636363", "#31a354", "#de2d26")


def label(row) -> str:
    """``"model"`` for eager, ``"model + path"`` otherwise."""
    return row["model"] if row["optimisation"] == "eager" else f"{row['model']} + {row['optimisation']}"


def plot_pareto(ax, df, x: str, y: str, *, labels: str | None = None, xlabel: str = "", ylabel: str = "",
                title: str = "", logx: bool = False) -> None:
    """Every row of ``df`` as a point (``x`` minimised, ``y`` maximised), the rows on the Pareto
    front (:func:`~vitlib.book.studies.choices.pareto_front`) joined by a step line and named
    (``labels``: a column; default: :func:`label`); the others grey and named faintly."""
    front = pareto_front(df, x, y)
    names = df[labels] if labels else df.apply(label, axis=1)
    ok = df[[x, y]].notna().all(axis=1)
    ax.scatter(df.loc[ok & ~front, x], df.loc[ok & ~front, y], color="#bdbdbd", zorder=2, label="dominated")
    best = df[front].sort_values(x)
    ax.step(best[x], best[y], where="post", color="#08519c", lw=1, zorder=1)
    ax.scatter(best[x], best[y], color="#08519c", zorder=3, label="Pareto front")
    for i in df.index[ok]:
        ax.annotate(names[i], (df.loc[i, x], df.loc[i, y]), xytext=(4, 3), textcoords="offset points",
                    fontsize=7, color="black" if front[i] else "#969696")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    ax.legend(fontsize=7, loc="lower right")


def plot_overview(axes, table) -> None:
    """Two Pareto panels of a latency table: test accuracy against latency (every model and path
    that works) and against training time (each model once, in eager)."""
    works = table[table["works"].astype(bool)].copy()
    works["accuracy (%)"] = works["accuracy"].astype(float) * 100
    batch = int(works["batch"].iloc[0])
    plot_pareto(axes[0], works, "ms", "accuracy (%)", ylabel="test accuracy (%)",
                xlabel=f"latency (ms per batch of {batch}, median, {table.attrs.get('threads')} threads)",
                title="accuracy against latency")
    eager = works[works["optimisation"] == "eager"]
    plot_pareto(axes[1], eager, "train_s", "accuracy (%)", ylabel="test accuracy (%)",
                xlabel=f"training time (s, {table.attrs.get('epochs')} epochs, measured)",
                title="accuracy against training time")


def _speed(m) -> str:
    return "–" if m is None or (isinstance(m, float) and math.isnan(m)) else str(m)


def overview_table(table):
    """A latency table as one of the book's tables (:func:`vitlib.book.viz.table`): each model and path's
    accuracy, latency and speed-up over the baseline's eager (parameters, FLOPs and training time
    are the :func:`~vitlib.book.studies.synthesis.same_budget` table's), and why a path fails."""
    from ..viz import table as book_table

    base = table.attrs.get("baseline") or "the baseline"
    shown = table.assign(percent=table["accuracy"].astype(float) * 100,
                         vs=[_speed(m) for m in table["vs_baseline"]],
                         note=[r if isinstance(r, str) else "" for r in table["reason"]])
    columns = {
        "model": ("model", ""), "optimisation": ("optimisation", ""), "percent": ("test accuracy (%)", "{:.1f}"),
        "ms": (f"latency (ms per batch of {table['batch'].iloc[0]})", "{:.2f}"),
        "vs": (f"speed-up over {base}'s eager", "")}
    if shown["note"].astype(bool).any():
        columns["note"] = ("fails because", "")
    return book_table(shown, columns)


def claims_view(claims):
    """A :func:`~vitlib.book.results.claims_table` as one of the book's tables: each claim's
    words, what was measured, the verdict (its parts on lines of their own), and where and when:
    measured in this runtime, or recorded elsewhere (the book's record), at which commit."""
    from ...bench import provenance
    from ..viz import table as book_table

    now = str(provenance("cpu").get("commit") or "")

    def where(d, m, t, c, s) -> str:
        text = ", ".join(str(v) for v in (d, m and f"{m} mode", (t or "")[:10]) if v)
        if s == "recorded":
            return f"recorded: {text}" + (f", commit {c[:7]}" if c else "")
        earlier = c and now and c != now  # recorded at another commit than this run's
        return text + (f"; an earlier run, at commit {c[:7]}" if earlier else "") + ("; this runtime" if s else "")

    columns = [claims[c].fillna("") for c in ("device", "mode", "date", "commit", "source")]
    shown = claims.assign(claim=claims["id"] + ": " + claims["claim"], where=[where(*r) for r in zip(*columns)])
    styler = book_table(shown, {"claim": ("claim", ""), "chapter": ("chapter", ""),
                                "measured": ("measured", ""), "verdict": ("verdict", ""),
                                "where": ("where and when", "")})
    return styler.set_properties(**{"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"})


def metric_values(table, metric: str) -> list[tuple[float | None, float | None, float | None]]:
    """For each row of ``table``, ``metric`` (one of :data:`METRICS`) as ``(value, low, high)``
    (bounds None where the figure is exact); all None for a path that fails."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}; received {metric!r}")
    test_size = table.attrs.get("test_size")
    out = []
    for r in table.to_dict("records"):
        if not r["works"]:
            out.append((None, None, None))
        elif metric == "parameters (M)":
            out.append((r["params"] / 1e6, None, None))
        elif metric == "MFLOPs per image":
            out.append((r["flops"] / 1e6, None, None))
        elif metric == "training time (s)":
            out.append((r["train_s"], None, None))
        elif metric == "latency (ms)":
            out.append((r["ms"], r["ms_low"], r["ms_high"]))
        elif metric == "speed-up over ViT":
            m = r["vs_baseline"]
            out.append((None, None, None) if m is None else (m.value, m.low, m.high))
        else:
            p = float(r["accuracy"])
            half = 2 * math.sqrt(p * (1 - p) / test_size) if test_size else 0.0
            out.append((p * 100, max(0.0, p - half) * 100, min(1.0, p + half) * 100))
    return out


def _bars(rows, metric: str):
    import plotly.graph_objects as go

    values = metric_values(rows, metric)
    ys = [v for v, _, _ in values]
    up = [0 if h is None or v is None else h - v for v, _, h in values]
    down = [0 if lo is None or v is None else v - lo for v, lo, _ in values]
    missing = ["not measured" if r == "not measured" else "fails" for r in rows["reason"]]
    text = [m if v is None else f"{v:.3g}" for v, m in zip(ys, missing)]
    hover = [f"{m}: {r}" if not w else f"{v:.4g}"
             for w, r, m, v in zip(rows["works"], rows["reason"], missing, ys)]
    return [go.Bar(x=list(rows["model"]), y=ys, text=text, textposition="outside",
                   marker_color=[_COLOURS[i % len(_COLOURS)] for i in range(len(rows))],
                   error_y=dict(type="data", symmetric=False, array=up, arrayminus=down),
                   hovertext=hover, hovertemplate="%{hovertext}<extra>%{x}</extra>")]


def dashboard_chart(table):
    """The dashboard for the HTML book (:func:`vitlib.book.viz.static_chart`): a dropdown over the
    optimisations of a latency table, a slider over :data:`METRICS`; one bar per model, with its
    spread (the IQR of latency and speed-up, two standard errors of accuracy), "fails" where the
    path fails. The title, "Dashboard: <metric> of each model with <optimisation>", follows."""
    from ..viz import static_chart

    needed = {"model", "optimisation", "works", "reason", "params", "flops", "train_s", "accuracy", "ms",
              "ms_low", "ms_high", "vs_baseline"}
    if not needed <= set(table.columns):
        raise ValueError(f"dashboard_chart needs a latency_table with columns {sorted(needed)}; missing "
                         f"{sorted(needed - set(table.columns))}")
    models = list(dict.fromkeys(table["model"]))
    frames = {}
    for opt in dict.fromkeys(table["optimisation"]):
        rows = table[table["optimisation"] == opt].set_index("model").reindex(models).reset_index()
        rows["works"] = rows["works"].fillna(False).astype(bool)  # a model the path was not run on
        rows["reason"] = rows["reason"].where(rows["works"] | rows["reason"].notna(), "not measured")
        frames[opt] = {metric.replace("ViT", table.attrs.get("baseline") or "ViT"): _bars(rows, metric)
                       for metric in METRICS}
    return static_chart(frames, dropdown="optimisation", slider="metric",
                        title=lambda opt, metric: f"Dashboard: {metric} of each model with {opt}",
                        layout=dict(showlegend=False, xaxis=dict(type="category"), margin=dict(l=50, r=50),
                                    yaxis=dict(rangemode="tozero"), uniformtext=dict(minsize=8, mode="hide")),
                        height=440)


def dashboard(table, budget=None, *, rounds: int = 2, min_run_time: float = 0.1):
    """The live dashboard: pick models and an optimisation and see parameters, FLOPs, training
    time, latency and accuracy as bars. With ``budget`` (the
    :func:`~vitlib.book.studies.synthesis.same_budget` table of the models), a tick re-measures the
    chosen models' latency now, for the optimisations in :data:`LIVE`, all chosen models
    interleaved; otherwise (and for the others) the figures are ``table``'s, measured when the
    chapter ran."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"]))
    opts = list(dict.fromkeys(table["optimisation"]))
    pick = w.SelectMultiple(options=models, value=tuple(models), description="models",
                            rows=min(len(models), 6))
    path = w.Dropdown(options=opts, value=opts[0], description="optimisation")
    live = w.Checkbox(value=False, description="re-measure latency now", disabled=budget is None)

    def draw(chosen, optimisation, remeasure):
        rows = table[(table["optimisation"] == optimisation) & table["model"].isin(chosen)]
        if not len(rows):
            print("choose at least one model")
            return
        source = "measured when the chapter ran"
        if remeasure and budget is not None and optimisation in LIVE:
            sub = budget[budget["model"].isin(chosen)]
            paths = ("eager",) if optimisation == "eager" else ("eager", optimisation)
            fresh = latency_table(sub, optimisations=paths, accuracy=False, rounds=rounds,
                                  min_run_time=min_run_time, batch=int(rows["batch"].iloc[0]),
                                  baseline=table.attrs.get("baseline") or "ViT")
            fresh = fresh[fresh["optimisation"] == optimisation].set_index("model")
            rows = rows.set_index("model")
            for column in ("ms", "ms_low", "ms_high"):
                rows[column] = fresh[column]
            rows = rows.reset_index()
            source = "latency measured now, the rest when the chapter ran"
        fig, axes = plt.subplots(1, 4, figsize=(11, 1.4 + 0.4 * len(rows)), sharey=True)
        for ax, metric in zip(axes, ("parameters (M)", "MFLOPs per image", "latency (ms)", "accuracy (%)")):
            values = metric_values(rows, metric)
            ys = [0 if v is None else v for v, _, _ in values]
            colours = [_COLOURS[models.index(m) % len(_COLOURS)] for m in rows["model"]]
            ax.barh(list(rows["model"]), ys, color=colours)
            for i, (v, _, _) in enumerate(values):
                ax.text(0 if v is None else v, i, " fails" if v is None else f" {v:.3g}", va="center",
                        fontsize=8)
            ax.set_title(metric, fontsize=9)
            ax.set_xlim(0, max(ys + [1e-9]) * 1.45)
        axes[0].invert_yaxis()
        fig.suptitle(f"{optimisation}, batch {rows['batch'].iloc[0]}: {source}", fontsize=9)
        fig.tight_layout()
        plt.show()

    out = w.interactive_output(draw, {"chosen": pick, "optimisation": path, "remeasure": live})
    return w.VBox([w.HBox([pick, w.VBox([path, live])]), out])
