"""Where vitlib reads and writes files: the same rules from a source checkout and from an installed
copy (``%pip install`` in Colab), and never inside ``site-packages``.

* :func:`checkout`: the source checkout vitlib runs from (``pyproject.toml`` and ``book/`` beside
  the package), or None for an installed copy.
* :func:`data_root`: downloaded data sets (CIFAR-10): ``$VITLIB_DATA``; else the checkout's
  ``data/``; else the user's cache folder (``$XDG_CACHE_HOME/vitlib``, default ``~/.cache/vitlib``).
* :func:`recorded_dir`: the book's recorded results (committed in ``book/results/``, shipped in the
  package as ``vitlib/recorded/``), read-only for a reader.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "checkout", "data_root", "recorded_dir"]

DATA_ENV = "VITLIB_DATA"
_PACKAGE = Path(__file__).resolve().parent


def checkout() -> Path | None:
    """The root of the source checkout vitlib runs from, or None for an installed copy."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "book").is_dir() else None


def data_root(env: dict | None = None) -> Path:
    """Where downloaded data sets go: ``$VITLIB_DATA``, else the checkout's ``data/``, else the
    user's cache folder (``$XDG_CACHE_HOME/vitlib`` or ``~/.cache/vitlib``)."""
    env = os.environ if env is None else env
    if env.get(DATA_ENV):
        return Path(env[DATA_ENV]).expanduser()
    root = checkout()
    if root is not None:
        return root / "data"
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(cache).expanduser() / "vitlib"


def recorded_dir() -> Path:
    """The book's recorded results: ``book/results/`` of a checkout, or the copy an installed vitlib
    ships (``vitlib/recorded/``, mapped from ``book/results/`` by ``pyproject.toml``)."""
    root = checkout()
    return root / "book" / "results" if root is not None else _PACKAGE / "recorded"
