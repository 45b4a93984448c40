"""Charts that move without a kernel (vitlib.book.viz): the HTML carries every setting's data and the
controls that switch between them; the browser test (tests/test_browser.py) moves them."""
import json
import re

import plotly.graph_objects as go
import pytest

from vitlib.book.offline import PLOTLY_JS
from vitlib.book.viz import static_chart
from vitlib.book.widgets import COMPONENT_COLOURS, flops_split_chart, meta_breakdown


def _spec(html: str) -> dict:
    """The figure a chart's HTML carries, as the page's script reads it."""
    return json.loads(re.search(r'<script type="application/json" id="[^"]+-spec">(.*?)</script>', html, re.S)[1])


def _bars(option: str, size: int) -> list:
    return [go.Bar(x=[size, size * 10 + len(option)], y=["a", "b"], name=f"{option}@{size}")]


FRAMES = {option: {size: _bars(option, size) for size in (224, 320, 448)} for option in ("ViT", "SimpleViT")}


def test_chart_holds_every_frame_and_the_controls_that_show_each():
    chart = static_chart(FRAMES, slider="image size", dropdown="model", title=lambda o, v: f"{o} at {v} px")
    spec = _spec(chart.to_html())
    data, layout = spec["data"], spec["layout"]
    names = [t["name"] for t in data]
    assert names == [f"{o}@{s}" for o in FRAMES for s in FRAMES[o]]
    assert data[names.index("SimpleViT@448")]["x"] == [448, 4489]
    assert [t["visible"] for t in data] == [True] + [False] * 5  # the first setting is shown first

    sliders = layout["sliders"]
    assert [s["visible"] for s in sliders] == [True, False]  # one slider per model, the first showing
    for option, slider in zip(FRAMES, sliders):
        assert slider["currentvalue"]["prefix"] == "image size: "
        assert [step["label"] for step in slider["steps"]] == ["224", "320", "448"]
        for step, size in zip(slider["steps"], FRAMES[option]):
            shown = [n for n, v in zip(names, step["args"][0]["visible"]) if v]
            assert shown == [f"{option}@{size}"] and step["args"][1]["title.text"] == f"{option} at {size} px"

    buttons = layout["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["model: ViT", "model: SimpleViT"]
    second = buttons[1]["args"]
    assert [n for n, v in zip(names, second[0]["visible"]) if v] == ["SimpleViT@224"]
    assert second[1]["sliders[0].visible"] is False and second[1]["sliders[1].visible"] is True
    assert layout["title"]["text"] == "ViT at 224 px"


def test_one_control_alone_and_the_first_setting():
    only_slider = _spec(static_chart(FRAMES["ViT"], slider="size", value=320).to_html())
    assert len(only_slider["layout"]["sliders"]) == 1 and not only_slider["layout"].get("updatemenus")
    assert only_slider["layout"]["sliders"][0]["active"] == 1
    assert [t["visible"] for t in only_slider["data"]] == [False, True, False]
    only_menu = _spec(static_chart({o: FRAMES[o][224] for o in FRAMES}, dropdown="model", option="SimpleViT").to_html())
    assert not only_menu["layout"].get("sliders") and only_menu["layout"]["updatemenus"][0]["active"] == 1
    assert [t["visible"] for t in only_menu["data"]] == [False, True]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="needs a slider, a dropdown or both"):
        static_chart(FRAMES)
    with pytest.raises(TypeError, match=r"frames\['ViT'\]: with a slider and a dropdown, expected"):
        static_chart({"ViT": _bars("ViT", 1)}, slider="s", dropdown="d")
    with pytest.raises(TypeError, match=r"frames\[224\]: expected a non-empty list of plotly traces"):
        static_chart({224: go.Bar(x=[1])}, slider="s")
    with pytest.raises(TypeError, match="expected plotly traces"):
        static_chart({224: [[1, 2]]}, slider="s")
    with pytest.raises(ValueError, match="option 'LeViT' is not among"):
        static_chart(FRAMES, slider="s", dropdown="d", option="LeViT")
    with pytest.raises(ValueError, match="value 999 is not among"):
        static_chart(FRAMES, slider="s", dropdown="d", value=999)
    with pytest.raises(ValueError, match="plotly_js must be 'book', 'inline' or 'cdn'; received 'xml'"):
        static_chart(FRAMES["ViT"], slider="s").to_html("xml")


def test_html_loads_the_books_plotly_while_building_and_carries_it_otherwise(monkeypatch):
    chart = static_chart({1: [go.Bar(x=[1], name="</script><b>")]}, slider="s")
    book = chart.to_html("book")
    assert PLOTLY_JS in book and "plotly.js v" not in book and len(book) < 20_000
    assert "</script><b>" not in book and _spec(book)["data"][0]["name"] == "</script><b>"
    inline = chart.to_html("inline")
    assert "plotly.js v" in inline and len(inline) > 1_000_000
    monkeypatch.setenv("VITLIB_BOOK_BUILD", "1")
    assert chart._repr_html_().count("plotly.js v") == 0
    monkeypatch.setenv("VITLIB_BOOK_BUILD", "0")
    assert chart._repr_html_().count("plotly.js v") == 1


def test_flops_split_chart_counts_each_setting():
    config = dict(patch_size=16, num_classes=10, dim=64, depth=2, heads=2, dim_head=32, mlp_dim=128)
    config = dict(config, image_size=32)
    chart = flops_split_chart([32, 64], preset=config)
    assert chart.options == ["ViT", "SimpleViT"] and chart.values == {"ViT": [32, 64], "SimpleViT": [32, 64]}
    spec = _spec(chart.to_html())
    split, params, tokens = meta_breakdown(config, family="simple_vit", image_size=64)
    last = spec["layout"]["sliders"][1]["steps"][1]
    assert last["args"][1]["title.text"] == (f"SimpleViT at 64 px: {tokens} tokens, {params / 1e6:.1f}M parameters, "
                                             f"{sum(split.values()) / 1e9:.1f} GFLOPs")
    bar = next(t for t, shown in zip(spec["data"], last["args"][0]["visible"]) if shown)
    assert bar["y"] == [k for k in COMPONENT_COLOURS if split.get(k, 0) > 0]
    assert bar["x"] == pytest.approx([split[k] / 1e9 for k in bar["y"]])
    assert meta_breakdown(config, family="vit", image_size=32)[2] == 5  # 4 patches and a class token


def test_table_has_headers_with_units_and_right_aligned_numbers():
    import pandas as pd

    from vitlib.book.viz import table

    df = pd.DataFrame({"model": ["ViT", "SimpleViT"], "median_ms": [1.2345, 2.5], "params": [1234567, 89]})
    html = table(df, {"model": ("model", ""), "median_ms": ("median (ms)", "{:.2f}"),
                      "params": ("parameters", "{:,}")}).to_html()
    assert "median (ms)" in html and "1.23" in html and "1,234,567" in html and "median_ms" not in html
    assert "text-align: right" in html and ">0<" not in html  # the 0..n index is hidden
    shown = table(df.set_index("model"), {"params": ("parameters", "{:,}")}, index="model").to_html()
    assert "SimpleViT" in shown and "median" not in shown
    with pytest.raises(ValueError, match=r"no column \['flops'\]"):
        table(df, {"flops": ("GFLOPs", "{:.1f}")})
