"""Progress bars that never end up frozen in a built page of the book.

While a chapter executes to become an HTML page (``make book``, ``make test``), a tqdm widget would
be saved into the page as a dead progress bar; :func:`progress` gives a disabled bar then, a
widget in Jupyter and text in a terminal otherwise. Training and measuring code use it.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["BOOK_BUILD_ENV", "building_book", "progress"]

BOOK_BUILD_ENV = "VITLIB_BOOK_BUILD"


def building_book(env: dict | None = None) -> bool:
    """True while a chapter runs to become a page of the HTML book: ``VITLIB_BOOK_BUILD`` is set
    (to anything but ``0``), as ``make book`` and ``make test`` do."""
    env = os.environ if env is None else env
    return env.get(BOOK_BUILD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def progress(iterable: Any = None, **kwargs: Any):
    """A tqdm progress bar (same arguments): a widget in Jupyter, text in a terminal, and none
    while the book builds (:func:`building_book`), so no frozen bar is saved into a page."""
    if building_book():
        from tqdm.std import tqdm

        return tqdm(iterable, disable=True, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
