"""The chapters' setup cell (device, mode, seeds and versions, in one call), and how vitlib
behaves while a chapter runs to become a page of the HTML book.

Every chapter opens with its title, then the cell that :func:`setup_cell` returns (its input
hidden in the HTML book). In Colab that cell installs vitlib with the kernel's own pip from
:data:`REPOSITORY_URL` (the one place the repository's address is configured; the tests check
that ``_config.yml``, ``pyproject.toml`` and every chapter agree with it, and run the cell's
install in a fresh environment), then calls :func:`setup`, which prints one line.

While the book builds (``make book`` and ``make test`` set ``VITLIB_BOOK_BUILD=1``, see
:func:`building_book`) vitlib shows no progress bars (a tqdm widget saved into a page is a frozen
bar) and :mod:`vitlib.book.viz` charts load the book's own plotly.js.

Mode: ``quick`` (small models, the bundled data set, about a minute a chapter on two CPU cores)
or ``full`` (CIFAR-10, larger models, a GPU). Quick is chosen on CPU, in CI and under the test
suite; full on CUDA. The environment variable ``VITLIB_MODE`` overrides both.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..progress import building_book, progress

__all__ = ["REPOSITORY_URL", "BookSetup", "building_book", "choose_device", "choose_mode", "progress",
           "seed_everything", "setup", "setup_cell", "show_source"]

REPOSITORY_URL = "https://github.com/efficient-vit/efficient-vision-transformers"
MODES = ("quick", "full")


@dataclass(frozen=True)
class BookSetup:
    """What :func:`setup` chose. ``pick(quick=..., full=...)`` selects a value by mode."""

    device: torch.device
    mode: str
    seed: int
    threads: int
    reason: str

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def pick(self, *, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


def choose_device(env: dict | None = None) -> torch.device:
    """``VITLIB_DEVICE`` if set, else CUDA when available, else CPU."""
    env = os.environ if env is None else env
    name = env.get("VITLIB_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"VITLIB_DEVICE={name!r} asks for CUDA, but torch sees no CUDA device")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_mode(device: torch.device, env: dict | None = None) -> tuple[str, str]:
    """Return ``(mode, reason)``. ``VITLIB_MODE`` wins; then CI or the test suite mean quick;
    then CUDA means full and anything else quick."""
    env = os.environ if env is None else env
    forced = env.get("VITLIB_MODE", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"VITLIB_MODE must be one of {MODES}; received {env['VITLIB_MODE']!r}")
        return forced, "VITLIB_MODE"
    if env.get("CI"):
        return "quick", "CI"
    if env.get("VITLIB_UNDER_TEST"):
        return "quick", "test suite"
    if device.type == "cuda":
        return "full", "CUDA device"
    return "quick", f"{device.type} device"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _versions() -> str:
    from .. import __version__

    return f"vitlib {__version__}, torch {torch.__version__}"


def setup(chapter: str | None = None, seed: int = 0, quiet: bool = False) -> BookSetup:
    """Choose device and mode, seed everything, and print what was chosen and why, the threads
    torch uses and the versions; in full mode, where downloaded data go. ``chapter`` (the
    notebook's stem) adds a second line: what the chapter's full mode takes on a T4 and an A100
    (:func:`vitlib.book.fullmode.title_line`)."""
    from .. import smoke

    device = choose_device()
    mode, reason = choose_mode(device)
    seed_everything(seed)
    threads = torch.get_num_threads()
    if chapter:
        smoke.chapter(chapter)
    if not quiet:
        from ..bench import device_name
        from .fullmode import title_line
        from ..locations import data_root

        where = f"{device}: {device_name(device)}" if device.type == "cuda" else f"{device}"
        scale = (", at the smoke scale (full mode's code, a few steps: no figure means anything)"
                 if smoke.active() else "")
        data = f"; data in {data_root()}" if mode == "full" else ""
        print(f"{mode} mode ({reason}){scale} on {where}, {threads} threads, seed {seed}; {_versions()}{data}")
        line = title_line(chapter) if chapter else None
        if line:
            print(line)
    return BookSetup(device=device, mode=mode, seed=seed, threads=threads, reason=reason)


def setup_cell(chapter: str, repository_url: str = REPOSITORY_URL) -> str:
    """Source of chapter ``chapter``'s setup cell (the notebook's stem; the tests keep the chapters
    in sync with it). In Colab, where vitlib is missing, it installs vitlib with the kernel's own
    pip (``%pip``) from ``repository_url``; the requirement is quoted and pins nothing that Colab
    ships."""
    return (
        "# Setup: in Colab, install vitlib (the book's package) from the book's repository;\n"
        "# then choose the device and mode, seed everything, and print the versions.\n"
        "import importlib.util\n"
        "\n"
        f"REPOSITORY = \"{repository_url}\"\n"
        "if importlib.util.find_spec(\"vitlib\") is None:\n"
        "    %pip install -q \"vitlib @ git+{REPOSITORY}\"\n"
        "import vitlib.book\n"
        "\n"
        f"book = vitlib.book.setup(\"{chapter}\")"
    )


#: Characters of code that fit the book's text column; wider listing lines are folded.
LISTING_WIDTH = 88


def fold_line(line: str, width: int = LISTING_WIDTH) -> list[str]:
    """``line`` of Python source folded to at most ``width`` characters where that keeps it
    valid and readable: a comment into several comment lines, a line with an open bracket after
    a comma inside the bracket (continuation aligned under the bracket's first character), and a
    trailing comment onto a line of its own above the code. Anything else is left as it is."""
    import textwrap

    if len(line) <= width:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    stripped = line.strip()
    if stripped.startswith("#"):
        body = stripped.lstrip("#").strip()
        return textwrap.wrap(body, width, initial_indent=indent + "# ", subsequent_indent=indent + "# ")
    code, hash_, comment = line.partition("  # ")
    if hash_:
        return fold_line(indent + "# " + comment.strip(), width) + fold_line(code.rstrip(), width)
    # commas outside strings, inside brackets, that leave a first line within the width:
    # split at the last of the outermost ones, aligning under its bracket
    opens, quote, best = [], None, None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            opens.append(i)
        elif ch in ")]}" and opens:
            opens.pop()
        elif ch == "," and opens and i < width - 1 and line[i + 1: i + 2] == " ":
            if best is None or len(opens) <= best[2]:
                best = (i, opens[-1], len(opens))
    if best is None:
        return [line]
    split, bracket, _ = best
    rest = " " * (bracket + 1) + line[split + 2:]
    if bracket + 1 >= width - 20 or len(rest) >= len(line):
        return [line]
    return [line[: split + 1]] + fold_line(rest, width)


def show_source(obj: Any, start: str | None = None, stop: str | None = None, omit: tuple[str, ...] = ()):
    """vitlib's own source of ``obj`` as a highlighted listing (Markdown holding a Python block,
    which Jupyter and the HTML book highlight), captioned with its file and line numbers.

    ``start`` and ``stop`` cut out the lines that carry an idea: from the first line containing
    ``start`` through the first line after it containing ``stop``. Lines containing any of
    ``omit`` (validation, say) are left out; a run of them becomes one ``# ...`` line."""
    import inspect
    import textwrap
    from pathlib import Path

    from IPython.display import Markdown

    obj = inspect.unwrap(obj)  # a decorated function (torch.no_grad) shows its own source
    lines, first = inspect.getsourcelines(obj)
    a, b = 0, len(lines)
    if start is not None:
        found = [i for i, line in enumerate(lines) if start in line]
        if not found:
            raise ValueError(f"no line of {obj.__qualname__} contains start={start!r}")
        a = found[0]
    if stop is not None:
        found = [i for i in range(a, len(lines)) if stop in lines[i]]
        if not found:
            raise ValueError(f"no line of {obj.__qualname__} after {start!r} contains stop={stop!r}")
        b = found[0] + 1
    kept: list[str] = []
    skipping = False
    for line in lines[a:b]:
        if any(o in line for o in omit):
            if not skipping:
                kept.append(line[: len(line) - len(line.lstrip())] + "# ...\n")
            skipping = True
        else:
            kept.append(line)
            skipping = False
    code = textwrap.dedent("".join(kept)).rstrip() + "\n"
    code = "".join(line + "\n" for raw in code.splitlines() for line in fold_line(raw, LISTING_WIDTH))
    path = Path(inspect.getsourcefile(obj)).resolve()
    root = Path(__file__).resolve().parents[2]
    where = path.relative_to(root) if path.is_relative_to(root) else path.name
    return Markdown(f"`{where}`, lines {first + a}-{first + b - 1}:\n\n```python\n{code}```")
