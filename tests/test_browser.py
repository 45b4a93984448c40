"""The built HTML book in a real browser, offline.

Headless chromium (Debian's package) opens every page of ``_build/html`` from a server on
127.0.0.1 while every other address is blocked, and fails on any page error: a JavaScript
exception, a console error, a failed request, or a request for anything outside the book. It
checks that math was typeset, that saved widgets rendered and that no progress bar was saved,
and it moves a chart's slider and dropdown and reads the new setting from the page. ``make test`` runs it after the strict build
(``pytest tests -m browser``). Without chromium it skips, except under CI, where it fails.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from cdp import Browser, Page, find_chromium

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
IGNORED = ("/favicon.ico",)  # the browser asks for it on its own; the pages do not


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [chapter["file"] for chapter in toc.get("chapters", [])]


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{why} (under CI the browser test never skips)")
    pytest.skip(why)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    executable = find_chromium()
    if executable is None:
        _unavailable("chromium is not installed: `apt-get install chromium` (Debian's package) to run this test")
    if not (HTML / "index.html").is_file():
        _unavailable(f"no built book in {HTML}: `make test` builds it, then runs this test")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(executable)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield browser, f"http://127.0.0.1:{server.server_port}/"
    finally:
        browser.close()
        server.shutdown()


def _problems(page: Page, base: str) -> list[str]:
    """Everything that went wrong on the page, as readable lines."""
    problems, urls = [], {}
    for event in page.events():
        method, params = event["method"], event["params"]
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if not url.startswith((base, "data:", "blob:", "about:")):
                problems.append(f"request outside the book: {url}")
        elif method == "Network.loadingFailed":
            url = urls.get(params["requestId"], "?")
            if not url.endswith(IGNORED):
                problems.append(f"failed request: {url} ({params.get('errorText')})")
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["status"] >= 400 and not response["url"].endswith(IGNORED):
                problems.append(f"HTTP {response['status']}: {response['url']}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            problems.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if not entry.get("url", "").endswith(IGNORED):
                problems.append(f"log error: {entry['text']} {entry.get('url', '')}")
    return problems


def _wait_until_idle(page: Page, timeout: float = 30) -> None:
    """Until every request the page started has finished (fonts and scripts load late)."""
    deadline = time.monotonic() + timeout
    while True:
        started = {e["params"]["requestId"] for e in page.events("Network.requestWillBeSent")}
        ended = {e["params"]["requestId"] for e in page.events()
                 if e["method"] in ("Network.loadingFinished", "Network.loadingFailed")}
        if started <= ended or time.monotonic() > deadline:
            return
        time.sleep(0.2)


_UNTYPESET = """(() => {
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest("pre, code, script, style, textarea, mjx-container")) continue;
    if (/\\\\\\(|\\\\\\[|\\$\\$/.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 60));
  }
  const math = Array.from(document.querySelectorAll("span.math, div.math"));
  return {math: math.length, untypeset: math.filter(e => !e.querySelector("mjx-container")).length, raw: raw};
})()"""


def _open(site, doc: str) -> Page:
    """Open ``doc``, wait for math, widgets and charts, and fail on any problem."""
    browser, base = site
    page = Page(browser)
    page.goto(base + doc + ".html")
    if page.evaluate("document.querySelectorAll('span.math, div.math').length"):
        page.wait_for("window.MathJax && MathJax.startup && MathJax.startup.promise.then(() => true)",
                      what="MathJax to typeset the page")
    views = page.evaluate("document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]')"
                          ".length")
    if views:
        page.wait_for(f"document.querySelectorAll('.widget-subarea > .jupyter-widgets').length >= {views}",
                      what=f"the {views} saved widgets to render")
    charts = page.evaluate("document.querySelectorAll('.vitlib-static-chart').length")
    if charts:
        page.wait_for(f"document.querySelectorAll('.vitlib-static-chart .main-svg').length >= {charts}",
                      what=f"the {charts} charts to draw")
    _wait_until_idle(page)
    page.screenshot(str(SHOTS / (doc.replace("/", "_") + ".png")))
    problems = _problems(page, base)
    assert not problems, f"{doc}:\n" + "\n".join(problems)
    math = page.evaluate(_UNTYPESET)
    assert math["untypeset"] == 0 and not math["raw"], f"{doc}: math left as TeX: {math}"
    bars = page.evaluate("document.querySelectorAll('.widget-hprogress, .widget-vprogress').length")
    assert bars == 0, f"{doc}: {bars} progress-bar widgets were saved into the page"
    return page


@pytest.mark.parametrize("doc", _pages())
def test_page_works_offline(site, doc):
    _open(site, doc).close()


def _centre(page: Page, selector_js: str) -> tuple[float, float]:
    box = page.evaluate(f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
                        "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    return box[0], box[1]


def _choose_another_option(page: Page, chart: str) -> str:
    """Open ``chart``'s dropdown, click an option other than the one shown, and return its label."""
    header = f"{chart}.querySelector('.updatemenu-header').textContent"
    page.click(*_centre(page, f"{chart}.querySelector('.updatemenu-header')"))
    options = page.evaluate(f"Array.from({chart}.querySelectorAll('.updatemenu-dropdown-button'))"
                            ".map(b => b.textContent)")
    other = next(o for o in options if o != page.evaluate(header))
    page.click(*_centre(page, f"Array.from({chart}.querySelectorAll('.updatemenu-dropdown-button'))"
                              f".find(b => b.textContent === {other!r})"))
    return other


def test_chapter_one_has_math_widgets_and_a_chart_that_moves(site):
    page = _open(site, "book/01_anatomy")
    assert page.evaluate("document.querySelectorAll('mjx-container').length") > 0, "no typeset math"
    assert page.evaluate("document.querySelectorAll('.widget-slider').length") > 0, "no rendered slider widget"
    assert page.evaluate("document.querySelectorAll('.widget-output img').length") > 0, \
        "the explorer's Output widget shows no saved figure"
    chart = "document.querySelector('.vitlib-static-chart')"
    title = f"{chart}.querySelector('.gtitle').textContent"
    current = f"{chart}.querySelector('.slider-group > text.slider-label').textContent"
    labels = page.evaluate(f"Array.from({chart}.querySelectorAll('.slider-label-group')).map(g => g.textContent)")
    first_title = page.evaluate(title)
    assert page.evaluate(current).endswith(labels[0]) and f"at {labels[0]} px" in first_title

    # Slider: press on the rail under a later label; the title and the current value follow.
    target = labels[-2]
    x, _ = _centre(page, f"Array.from({chart}.querySelectorAll('.slider-label-group')).find(g => g.textContent === '{target}')")
    _, y = _centre(page, f"{chart}.querySelector('.slider-rail-touch-rect')")
    page.click(x, y)
    page.wait_for(f"{current}.endsWith('{target}')", timeout=10, what=f"the slider to reach {target}")
    # Plotly moves the slider's label before it redraws the title; wait for both.
    page.wait_for(f"{title}.includes('at {target} px')", timeout=10, what=f"the title to name {target} px")
    moved = page.evaluate(title)
    assert f"at {target} px" in moved and moved.split(" at ")[0] == first_title.split(" at ")[0], moved

    # Dropdown: open it and pick the other series; the title names it.
    page.click(*_centre(page, f"{chart}.querySelector('.updatemenu-header')"))
    options = page.evaluate(f"Array.from({chart}.querySelectorAll('.updatemenu-dropdown-button'))"
                            ".map(b => b.textContent)")
    other = next(o for o in options if o != page.evaluate(f"{chart}.querySelector('.updatemenu-header').textContent"))
    page.click(*_centre(page, f"Array.from({chart}.querySelectorAll('.updatemenu-dropdown-button'))"
                              f".find(b => b.textContent === {other!r})"))
    name = other.split(": ", 1)[1]
    page.wait_for(f"{title}.startsWith({name + ' at '!r})", timeout=10, what=f"the chart to show {name}")
    page.screenshot(str(SHOTS / "book_01_anatomy-chart-moved.png"))
    problems = _problems(page, site[1])
    assert not problems, "\n".join(problems)
    page.close()


def test_chapter_two_knob_chart_switches_knobs_without_a_kernel(site):
    page = _open(site, "book/02_lightweight_models")
    chart = "document.querySelector('.vitlib-static-chart')"
    title = f"{chart}.querySelector('.gtitle').textContent"
    assert page.evaluate(title).startswith("One knob at a time: "), page.evaluate(title)
    other = _choose_another_option(page, chart)
    knob = other.split(": ", 1)[1].replace("_", " ")
    page.wait_for(f"{title}.endsWith({knob!r})", timeout=10, what=f"the chart to show the knob {knob}")
    problems = _problems(page, site[1])
    assert not problems, "\n".join(problems)
    page.close()


@pytest.mark.parametrize("doc, prefix, shows", [
    ("book/05_navit", "NaViT training step at", "token_dropout_prob {},"),
    ("book/07_attention_and_precision", "One attention layer at", "at {} tokens"),
    ("book/08_deployment", "Serving at batch", "at batch {} on"),
])
def test_a_charts_slider_moves_without_a_kernel(site, doc, prefix, shows):
    page = _open(site, doc)
    chart = "Array.from(document.querySelectorAll('.vitlib-static-chart')).find(c => " \
            f"c.querySelector('.gtitle').textContent.startsWith('{prefix}'))"
    title = f"{chart}.querySelector('.gtitle').textContent"
    current = f"{chart}.querySelector('.slider-group > text.slider-label').textContent"
    labels = page.evaluate(f"Array.from({chart}.querySelectorAll('.slider-label-group')).map(g => g.textContent)")
    assert len(labels) >= 2 and shows.format(labels[0]) in page.evaluate(title)
    target = labels[-1]
    x, _ = _centre(page, f"Array.from({chart}.querySelectorAll('.slider-label-group'))"
                         f".find(g => g.textContent === '{target}')")
    _, y = _centre(page, f"{chart}.querySelector('.slider-rail-touch-rect')")
    page.click(x, y)
    page.wait_for(f"{current}.endsWith('{target}')", timeout=10, what=f"the slider to reach {target}")
    # The label moves before the title is redrawn; a title that never follows times out here.
    page.wait_for(f"{title}.includes({shows.format(target)!r})", timeout=10,
                  what=f"the title to show {shows.format(target)!r}")
    problems = _problems(page, site[1])
    assert not problems, "\n".join(problems)
    page.close()


def test_chapter_ten_dashboard_chart_switches_without_a_kernel(site):
    page = _open(site, "book/10_putting_it_together")
    chart = "Array.from(document.querySelectorAll('.vitlib-static-chart')).find(c => " \
            "c.querySelector('.gtitle').textContent.startsWith('Dashboard: '))"
    title = f"{chart}.querySelector('.gtitle').textContent"
    assert page.evaluate(f"Boolean({chart})"), "no chart titled 'Dashboard: ...' on the page"
    other = _choose_another_option(page, chart)
    optimisation = other.split(": ", 1)[1]
    page.wait_for(f"{title}.endsWith({f'with {optimisation}'!r})", timeout=10,
                  what=f"the dashboard to show {optimisation}")
    current = f"{chart}.querySelector('.slider-group > text.slider-label').textContent"
    labels = page.evaluate(f"Array.from({chart}.querySelectorAll('.slider-label-group')).map(g => g.textContent)")
    assert len(labels) >= 2 and page.evaluate(title).startswith(f"Dashboard: {labels[0]} ")
    target = labels[-1]
    x, _ = _centre(page, f"Array.from({chart}.querySelectorAll('.slider-label-group'))"
                         f".find(g => g.textContent === {target!r})")
    _, y = _centre(page, f"{chart}.querySelector('.slider-rail-touch-rect')")
    page.click(x, y)
    page.wait_for(f"{current}.endsWith({target!r})", timeout=10, what=f"the slider to reach {target}")
    expected = f"Dashboard: {target} of each model with {optimisation}"
    page.wait_for(f"{title} === {expected!r}", timeout=10, what=f"the title to read {expected!r}")
    problems = _problems(page, site[1])
    assert not problems, "\n".join(problems)
    page.close()
