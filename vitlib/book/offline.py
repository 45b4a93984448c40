"""The HTML book's scripts, served from the book itself so that it works offline.

``python -m vitlib.book.offline DIR`` (run by ``make book`` and ``make test``) writes, under
``DIR/_static/offline/`` (a folder name no theme uses):

- require.js and the ipywidgets 8 embed manager (``@jupyter-widgets/html-manager``) with its
  fonts, which myst-nb loads on the pages that hold saved widget state;
- MathJax 3, which Sphinx loads on the pages that hold math;
- plotly.js, which the charts of :mod:`vitlib.book.viz` load.

The first two come from the npm registry (``npm pack``, at the versions pinned here); plotly.js is
the file that the installed ``plotly`` package ships, so the charts and the library that built
them agree. ``_config.yml`` lists ``DIR`` in ``html_extra_path``, so Sphinx copies it into the book
without adding its scripts to every page.

This module is also the Sphinx extension that wires them in (``_config.yml``: ``extra_extensions``):
it points ``mathjax_path`` and myst-nb's ``nb_ipywidgets_js`` at the files named by
:data:`ASSETS`, stops the build early with the command to run when they are missing, and removes
the duplicated inline scripts that Sphinx 7.4 writes into every page (one of them declares a
``const`` twice, a page error).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

__all__ = ["NPM_PACKAGES", "ASSETS", "PLOTLY_JS", "assemble"]

NPM_PACKAGES = {"requirejs": "2.3.8", "@jupyter-widgets/html-manager": "1.0.15", "mathjax": "3.2.2"}

#: Scripts the pages load, relative to the book's ``_static`` folder (Sphinx's form for local
#: scripts): the widget assets' location, require.js, the embed manager, MathJax, plotly.js.
ASSETS = {
    "require": "offline/require.js",
    "widgets_config": "offline/widgets-config.js",
    "embed": "offline/html-manager/embed-amd.js",
    "mathjax": "offline/mathjax/tex-mml-chtml.js",
    "plotly": "offline/plotly.min.js",
}
PLOTLY_JS = "_static/" + ASSETS["plotly"]  # relative to the book's root

# Loaded after require.js and before the embed manager, on pages with widgets. (1) Each module in
# the manager (base, controls, the manager itself...) finds its fonts beside the URL that
# require.js gives it: map all of them to the manager's folder here.
# (2) ipywidgets' controls typeset their descriptions through MathJax 2's MathJax.Hub.Queue when
# a MathJax is on the page; the book's MathJax is 3, so give it that one call.
_WIDGETS_CONFIG_JS = """(function () {
  var here = new URL(".", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = here + "html-manager/";
  window.requirejs.config({paths: {"@jupyter-widgets": here + "html-manager",
                                   "@jupyter-widgets/html-manager/dist": here + "html-manager"}});
  window.addEventListener("load", function () {
    var mj = window.MathJax;
    if (mj && mj.typesetPromise && !mj.Hub) {
      mj.Hub = {Queue: function (job) { return mj.typesetPromise([job[2]]); }};
    }
  });
})();
"""

# What each npm package contributes: (path inside the package, path under _static/offline/).
_FROM_NPM = {
    "requirejs": [("require.js", "require.js")],
    "@jupyter-widgets/html-manager": [("dist/embed-amd.js", "html-manager/embed-amd.js"),
                                      ("dist/*.woff2", "html-manager/"), ("dist/*.woff", "html-manager/"),
                                      ("dist/*.ttf", "html-manager/"), ("dist/*.eot", "html-manager/"),
                                      ("dist/*.svg", "html-manager/"), ("package.json", "html-manager/")],
    # MathJax loads its fonts, TeX extensions (autoload) and menu parts relative to itself.
    "mathjax": [("es5/tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"), ("es5/input", "mathjax/input"),
                ("es5/output/chtml", "mathjax/output/chtml"), ("es5/a11y", "mathjax/a11y"),
                ("es5/ui", "mathjax/ui"), ("es5/sre", "mathjax/sre"), ("LICENSE", "mathjax/LICENSE")],
}


def _npm_pack(packages: dict[str, str], into: Path) -> dict[str, Path]:
    """Download each package's tarball (no dependencies, no install scripts) and unpack it."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch the book's scripts (Debian: apt-get install npm)")
    specs = [f"{name}@{version}" for name, version in packages.items()]
    done = subprocess.run([npm, "pack", "--silent", "--pack-destination", str(into), *specs],
                          check=True, capture_output=True, text=True)
    tarballs = [into / line.strip() for line in done.stdout.splitlines() if line.strip()]
    if len(tarballs) != len(specs):
        raise RuntimeError(f"npm pack returned {tarballs} for {specs}")
    unpacked = {}
    for name, tarball in zip(packages, tarballs):
        target = into / tarball.stem
        with tarfile.open(tarball) as tar:
            tar.extractall(target, filter="data")
        unpacked[name] = target / "package"
    return unpacked


def _copy(source: Path, pattern: str, vendor: Path, where: str) -> None:
    """Copy ``source/pattern`` to ``vendor/where``; a ``where`` ending in ``/`` is a folder that
    receives every match under its own name."""
    matches = sorted(source.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"{pattern!r} is not in {source}")
    for match in matches:
        dest = vendor / where / match.name if where.endswith("/") else vendor / where
        dest.parent.mkdir(parents=True, exist_ok=True)
        if match.is_dir():
            shutil.copytree(match, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(match, dest)


def plotly_js_source() -> Path:
    """The ``plotly.min.js`` that the installed ``plotly`` package ships."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"the plotly package at {path.parent.parent} ships no plotly.min.js")
    return path


def assemble(out: str | Path) -> Path:
    """Write every script the book's pages load under ``out/_static/offline/`` and return ``out``."""
    out = Path(out)
    vendor = out / "_static" / "offline"
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = _npm_pack(NPM_PACKAGES, Path(tmp))
        for name, items in _FROM_NPM.items():
            for inside, where in items:
                _copy(unpacked[name], inside, vendor, where)
    (vendor / PurePosixPath(ASSETS["widgets_config"]).name).write_text(_WIDGETS_CONFIG_JS)
    shutil.copy2(plotly_js_source(), vendor / PurePosixPath(ASSETS["plotly"]).name)
    missing = [a for a in ASSETS.values() if not (out / "_static" / a).is_file()]
    if missing:
        raise RuntimeError(f"assets missing after assembly: {missing}")
    return out


def _configure(app, config) -> None:
    """Point MathJax and the widget embed manager at the book's copies; fail early without them."""
    config.mathjax_path = ASSETS["mathjax"]
    config.nb_ipywidgets_js = {ASSETS[k]: {} for k in ("require", "widgets_config", "embed")}
    roots = [Path(app.confdir, p) for p in config.html_extra_path]
    missing = [a for a in ASSETS.values() if not any((r / "_static" / a).is_file() for r in roots)]
    if missing:
        from sphinx.errors import ConfigError

        raise ConfigError(f"the book's scripts {missing} are in no html_extra_path folder {[str(r) for r in roots]}: "
                          "run `python -m vitlib.book.offline _build/offline` (make book and make test do)")


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    # Sphinx 7.4 adds an inline script registered after the builder starts twice (once with
    # filename None, once with ''), so a `const` in it is declared twice: keep the first of each.
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for js in scripts:
            key = (js.filename or "", tuple(sorted(js.attributes.items()))) if hasattr(js, "attributes") else js
            if key not in seen:
                seen.add(key)
                unique.append(js)
        scripts[:] = unique


def setup(app) -> dict:
    """Sphinx extension (see the module's doc)."""
    app.connect("config-inited", _configure)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder listed in _config.yml's html_extra_path")
    out = assemble(parser.parse_args(argv).out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"book scripts: {out}/_static/offline ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
