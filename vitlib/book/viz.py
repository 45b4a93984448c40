"""Charts whose controls work without a kernel: in the HTML book, in Jupyter and in Colab.

A live ipywidgets explorer recomputes when a reader moves it, which needs a running kernel; the
HTML book has none. :func:`static_chart` takes results computed when the page is built, one set
of plotly traces per setting, and returns a :class:`StaticChart`: a plotly figure whose slider
(over a swept value) and dropdown (over series, such as models) switch between those settings in
the browser.

:func:`table` formats a DataFrame the way every table of the book looks: words and units as
headers, right-aligned numbers with stated precision, padding, no bare 0..n index.

A :class:`StaticChart` displays as HTML (``text/html``, which a strict book build accepts). While
the book builds (:func:`vitlib.book.building_book`) that HTML loads the book's own copy of
plotly.js (:data:`vitlib.book.offline.PLOTLY_JS`), so the page fetches nothing from elsewhere. In Colab
(:func:`in_colab`), where each output is a page of its own and the book's files are not there, it
is plotly's own HTML, which loads plotly.js from plotly's CDN as Colab's plotly renderer does;
anywhere else (Jupyter) it carries the installed plotly package's plotly.js inline.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..progress import building_book
from .offline import PLOTLY_JS

__all__ = ["StaticChart", "in_colab", "static_chart", "table"]

_counter = itertools.count()

# Loads plotly.js once per page and draws the chart. In the built book, the page's root is in
# <html data-content_root> (Sphinx); require.js (on pages with widgets) loads plotly.js itself,
# since a UMD plotly.js loaded beside require.js would register as an anonymous AMD module.
_LOADER = """(function () {
  var el = document.getElementById(%(id)s);
  var spec = JSON.parse(document.getElementById(%(id)s + "-spec").textContent);
  function draw(Plotly) { Plotly.newPlot(el, spec.data, spec.layout, spec.config); }
  function fail(why) { el.textContent = "This chart needs plotly.js: " + why; }
  if (window.Plotly) { draw(window.Plotly); return; }
  var root = document.documentElement.getAttribute("data-content_root");
  if (root === null) { fail("run the cell in Jupyter, or read the chart in the built book"); return; }
  var src = new URL(root + %(path)s, document.baseURI).href;
  if (!window.vitlibPlotly) {
    window.vitlibPlotly = new Promise(function (resolve, reject) {
      if (window.requirejs && window.define && window.define.amd) {
        window.requirejs([src], function (P) { resolve(P || window.Plotly); }, reject);
      } else {
        var s = document.createElement("script");
        s.src = src;
        s.onload = function () { resolve(window.Plotly); };
        s.onerror = function () { reject(new Error("cannot load " + src)); };
        document.head.appendChild(s);
      }
    });
  }
  window.vitlibPlotly.then(draw, function (e) { fail(e.message || String(e)); });
})();"""


def in_colab() -> bool:
    """True inside a Colab runtime (its ``google.colab`` module is loaded)."""
    import sys

    return "google.colab" in sys.modules


class StaticChart:
    """A plotly figure with its settings baked in; displays as HTML (see the module's doc).

    ``figure`` is the :class:`plotly.graph_objects.Figure` (``figure.show()`` works too);
    ``options`` and ``values`` are the dropdown's and the slider's settings, in order."""

    def __init__(self, figure, options: list, values: dict, height: int):
        self.figure = figure
        self.options = options
        self.values = values
        self.height = height

    def __repr__(self) -> str:
        counts = ", ".join(f"{o!r}: {len(v)} values" for o, v in self.values.items())
        return f"StaticChart({counts})"

    def to_html(self, plotly_js: str = "book") -> str:
        """The chart as an HTML fragment. ``plotly_js``: ``"book"`` loads the built book's
        plotly.js; ``"inline"`` carries the installed package's plotly.js in the fragment;
        ``"cdn"`` is plotly's own HTML, loading plotly.js from plotly's CDN (Colab)."""
        if plotly_js not in ("book", "inline", "cdn"):
            raise ValueError(f"plotly_js must be 'book', 'inline' or 'cdn'; received {plotly_js!r}")
        if plotly_js == "cdn":
            return self.figure.to_html(full_html=False, include_plotlyjs="cdn",
                                       config={"displaylogo": False, "responsive": True},
                                       default_height=f"{self.height}px")
        from plotly.utils import PlotlyJSONEncoder

        figure = self.figure.to_plotly_json()
        spec = json.dumps({"data": figure["data"], "layout": figure["layout"],
                           "config": {"displaylogo": False, "responsive": True}},
                          cls=PlotlyJSONEncoder, separators=(",", ":"))
        spec = spec.replace("</", "<\\/")  # a "</script>" inside the data must not end the script
        digest = hashlib.sha1(spec.encode()).hexdigest()[:10]
        chart_id = f"vitlib-chart-{digest}-{next(_counter)}"
        parts = []
        if plotly_js == "inline":
            from .offline import plotly_js_source

            # Hide define/module/exports: plotly.js then sets window.Plotly whatever the page loaded.
            parts.append("<script>(function (define, module, exports) {\n"
                         f"{plotly_js_source().read_text(encoding='utf-8')}\n}}).call(window);</script>")
        parts += [
            f'<div id="{chart_id}" class="vitlib-static-chart" style="width:100%;height:{self.height}px"></div>',
            f'<script type="application/json" id="{chart_id}-spec">{spec}</script>',
            "<script>" + _LOADER % {"id": json.dumps(chart_id), "path": json.dumps(PLOTLY_JS)} + "</script>",
        ]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html("book" if building_book() else "cdn" if in_colab() else "inline")


def _traces(traces: Any, where: str) -> list:
    from plotly.basedatatypes import BaseTraceType

    if isinstance(traces, (str, bytes, Mapping)) or not isinstance(traces, Sequence) or not traces:
        raise TypeError(f"{where}: expected a non-empty list of plotly traces; received {traces!r:.80}")
    for t in traces:
        if not isinstance(t, (dict, BaseTraceType)):
            raise TypeError(f"{where}: expected plotly traces (go.Bar(...), dict(type=...)); received {t!r:.80}")
    return list(traces)


def static_chart(
    frames: Mapping,
    *,
    slider: str | None = None,
    dropdown: str | None = None,
    title: str | Callable[[Any, Any], str] = "",
    layout: Mapping | None = None,
    option: Any = None,
    value: Any = None,
    height: int = 420,
) -> StaticChart:
    """A plotly chart that switches between precomputed settings with a slider and/or a dropdown.

    ``frames`` maps each setting to its list of traces (``go.Bar(...)`` or trace dicts):

    - slider only: ``{value: traces}``;
    - dropdown only: ``{option: traces}``;
    - both: ``{option: {value: traces}}`` (each option may sweep its own values).

    ``slider`` and ``dropdown`` name the two controls (``"image size"``, ``"model"``); ``title``
    is a string or ``title(option, value)``, redrawn with each setting; ``layout`` is merged into
    the figure's layout (fix an axis range there, so that settings compare at a glance);
    ``option`` and ``value`` choose the setting shown first (default: the first of each).
    Choosing another option moves the slider back to that option's first shown value.
    """
    import plotly.graph_objects as go

    if slider is None and dropdown is None:
        raise ValueError("static_chart needs a slider, a dropdown or both: name them with slider=/dropdown=")
    if not isinstance(frames, Mapping) or not frames:
        raise TypeError(f"frames: expected a non-empty mapping of settings to traces; received {frames!r:.80}")
    if dropdown is None:
        table = {None: frames}
    elif slider is None:
        table = {o: {None: t} for o, t in frames.items()}
    else:
        table = dict(frames)
        for o, by_value in table.items():
            if not isinstance(by_value, Mapping) or not by_value:
                raise TypeError(f"frames[{o!r}]: with a slider and a dropdown, expected a non-empty mapping "
                                f"{{value: traces}}; received {by_value!r:.80}")
    if option is not None and option not in table:
        raise ValueError(f"option {option!r} is not among the dropdown's {list(table)}")
    first_option = option if option is not None else next(iter(table))
    if value is not None and value not in table[first_option]:
        raise ValueError(f"value {value!r} is not among the slider's {list(table[first_option])} "
                         f"for option {first_option!r}")

    def title_of(o, v) -> str:
        return title(o, v) if callable(title) else title

    fig = go.Figure()
    positions: dict[tuple[int, int], list[int]] = {}
    for k, (o, by_value) in enumerate(table.items()):
        for j, (v, traces) in enumerate(by_value.items()):
            where = "frames" + "".join(f"[{x!r}]" for x in (o, v) if x is not None)
            start = len(fig.data)
            for t in _traces(traces, where):
                fig.add_trace(t)
            positions[(k, j)] = list(range(start, len(fig.data)))
    n = len(fig.data)

    def visible(k: int, j: int) -> list[bool]:
        shown = set(positions[(k, j)])
        return [i in shown for i in range(n)]

    options, values = list(table), {o: list(by_value) for o, by_value in table.items()}
    k0 = options.index(first_option)
    start = {o: (values[o].index(value) if value is not None and k == k0 else 0) for k, o in enumerate(options)}
    sliders = []
    if slider is not None:
        for k, o in enumerate(options):
            steps = [dict(method="update", label=str(v),
                          args=[{"visible": visible(k, j)}, {"title.text": title_of(o, v)}])
                     for j, v in enumerate(values[o])]
            sliders.append(dict(steps=steps, active=start[o], visible=k == k0,
                                currentvalue=dict(prefix=f"{slider}: "), pad=dict(t=50)))
    menus = []
    if dropdown is not None:
        buttons = []
        for k, o in enumerate(options):
            j = start[o] if k == k0 else 0
            relayout = {"title.text": title_of(o, values[o][j])}
            for i in range(len(sliders)):
                relayout[f"sliders[{i}].visible"] = i == k
            if sliders:
                relayout[f"sliders[{k}].active"] = j
            buttons.append(dict(method="update", label=f"{dropdown}: {o}", args=[{"visible": visible(k, j)}, relayout]))
        menus.append(dict(type="dropdown", buttons=buttons, active=k0, x=1, xanchor="right", y=1.02,
                          yanchor="bottom", showactive=True))
    j0 = start[first_option]
    for i, shown in enumerate(visible(k0, j0)):
        fig.data[i].visible = shown
    fig.update_layout(title=dict(text=title_of(first_option, values[first_option][j0]), x=0, xanchor="left"),
                      sliders=sliders, updatemenus=menus, height=height, margin=dict(t=90, l=10, r=10),
                      template="plotly_white")
    if layout:
        fig.update_layout(**layout)
    return StaticChart(fig, options, values, height)


def table(df, columns: Mapping[str, tuple[str, str]] | None = None, *, index: str | None = None,
          caption: str = ""):
    """``df`` as one of the book's tables (a pandas Styler).

    ``columns`` maps each column to show, in order, to ``(header, format)``: the header in words
    with its unit (``"median (ms)"``) and a format string (``"{:.2f}"``, ``"{:,}"``, ``"{:.1%}"``,
    or ``""`` for text). Without ``columns`` every column is shown as it is. Numbers are
    right-aligned, text left-aligned, missing values shown as a dash. A default 0..n index is
    hidden; any other index is shown, headed ``index`` when given.
    """
    import pandas as pd

    columns = dict(columns) if columns is not None else {c: (str(c), "") for c in df.columns}
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"table: no column {missing} in the data; it has {list(df.columns)}")
    shown = df[list(columns)].rename(columns={c: header for c, (header, _) in columns.items()})
    if index is not None:
        shown = shown.rename_axis(index)
    formats = {header: fmt for header, fmt in columns.values() if fmt}
    styler = shown.style.format(formats, na_rep="–")
    numeric = [header for c, (header, _) in columns.items() if pd.api.types.is_numeric_dtype(df[c])]
    text = [header for header in shown.columns if header not in numeric]
    styler = styler.set_properties(subset=numeric, **{"text-align": "right"})
    styler = styler.set_properties(subset=text, **{"text-align": "left"})
    styler = styler.set_table_styles([
        {"selector": "th", "props": "padding: 3px 8px; text-align: right; vertical-align: bottom;"},
        {"selector": "td", "props": "padding: 3px 8px;"},
        {"selector": "th.row_heading", "props": "text-align: left;"},
    ])
    if isinstance(df.index, pd.RangeIndex) and index is None:
        styler = styler.hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    return styler
