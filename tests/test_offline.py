"""The book's own scripts (vitlib.book.offline): where the Sphinx extension points the pages, the clear
error when they were not fetched, and the duplicated inline scripts it drops. Fetching them
(npm) runs in `make test` before the build; the browser test checks that every page finds them."""
from pathlib import Path
from types import SimpleNamespace

import pytest
from sphinx.builders.html._assets import _JavaScript
from sphinx.errors import ConfigError

from vitlib.book import offline


def _app_and_config(root: Path, extra: list[str]):
    return SimpleNamespace(confdir=str(root)), SimpleNamespace(html_extra_path=extra, mathjax_path=None,
                                                               nb_ipywidgets_js=None)


def test_pages_load_the_books_copies(tmp_path):
    for asset in offline.ASSETS.values():
        (tmp_path / "assets" / "_static" / asset).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "assets" / "_static" / asset).write_text("")
    app, config = _app_and_config(tmp_path, ["assets"])
    offline._configure(app, config)
    assert config.mathjax_path == offline.ASSETS["mathjax"]
    # require.js first, then its settings for the embed manager, then the manager.
    assert list(config.nb_ipywidgets_js) == [offline.ASSETS[k] for k in ("require", "widgets_config", "embed")]
    assert all("://" not in path for path in [config.mathjax_path, *config.nb_ipywidgets_js])
    assert offline.PLOTLY_JS == "_static/" + offline.ASSETS["plotly"]


def test_missing_scripts_stop_the_build_with_the_command_to_run(tmp_path):
    app, config = _app_and_config(tmp_path, ["_build/offline"])
    with pytest.raises(ConfigError, match=r"run `python -m vitlib.book.offline _build/offline`"):
        offline._configure(app, config)


def test_duplicated_inline_scripts_are_dropped():
    body = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=body), _JavaScript("_static/b.js"),
               _JavaScript("", body=body), _JavaScript("", body="var other = 1")]
    context = {"script_files": scripts}
    offline._drop_duplicate_scripts(None, "page", "page.html", context, None)
    assert [(js.filename, js.attributes.get("body")) for js in context["script_files"]] == [
        ("_static/a.js", None), (None, body), ("_static/b.js", None), ("", "var other = 1")]


def test_plotly_js_comes_from_the_installed_package():
    import plotly

    source = offline.plotly_js_source()
    assert Path(plotly.__file__).parent in source.parents and source.stat().st_size > 1_000_000
