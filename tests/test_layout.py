"""The package's shape: the library's dependencies point one way and never into the book's runtime
(vitlib.book), `import vitlib` stays light, and no file is long."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

VITLIB = Path(__file__).resolve().parents[1] / "vitlib"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the vitlib modules that ``path`` imports (relative imports resolved)."""
    package = ["vitlib", *path.relative_to(VITLIB).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("vitlib")}


#: What each part of the library may import from the rest of vitlib (its own modules aside). A new
#: module must be entered here; the book's runtime (vitlib.book) is in no entry: the library never
#: imports it.
LIBRARY = {
    "__init__": {"layers", "models", "distill"},
    "compat": set(),
    "progress": set(),
    "locations": set(),
    "fuse": set(),
    "backends": {"compat", "smoke"},
    "layers": {"backends", "compat"},
    "models": {"backends", "compat", "fuse", "layers"},
    "convert": {"layers", "models"},
    "smoke": {"bench"},
    "data": {"layers", "locations", "smoke"},
    "train": {"backends", "compat", "data", "distill", "layers", "models", "progress", "smoke"},
    "bench": {"__version__", "backends", "compat", "layers", "locations", "models", "progress", "smoke", "train"},
    "distill": {"backends", "bench", "compat", "data", "models", "train"},
    "export": {"backends", "bench", "compat", "data", "fuse", "models", "progress", "smoke", "train"},
}
LIBRARY_FILES = sorted(p for p in VITLIB.rglob("*.py") if p.relative_to(VITLIB).parts[0] != "book")
BOOK_FILES = sorted((VITLIB / "book").rglob("*.py"))


def part(path: Path) -> str:
    return path.relative_to(VITLIB).parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(VITLIB)))
def test_the_library_imports_down_its_layers_and_never_the_book(path):
    assert part(path) in LIBRARY, f"{path.relative_to(VITLIB)}: a new part of the library; enter it in LIBRARY"
    used = {m.split(".")[1] for m in imported_modules(path) if "." in m} - {part(path)}
    assert "book" not in used, f"{path.relative_to(VITLIB)} imports the book's runtime"
    assert used <= LIBRARY[part(path)], f"{path.relative_to(VITLIB)} imports {sorted(used - LIBRARY[part(path)])}"


@pytest.mark.parametrize("path", BOOK_FILES, ids=lambda p: str(p.relative_to(VITLIB)))
def test_the_studies_never_import_the_widgets(path):
    """The book's runtime: widgets draw what the studies measure, never the other way round."""
    if "studies" in path.relative_to(VITLIB).parts:
        bad = {m for m in imported_modules(path) if m.startswith("vitlib.book.widgets")}
        assert not bad, f"{path.relative_to(VITLIB)} imports {sorted(bad)}"


def test_the_cli_loads_the_studies_by_name_only():
    from vitlib.bench import cli

    assert cli.SUITE_PACKAGES == ("vitlib.book.studies",)
    assert not {m for m in imported_modules(VITLIB / "bench" / "cli.py") if m.startswith("vitlib.book")}


def test_every_suite_is_registered_by_name_in_one_place():
    from vitlib.bench import load_suites
    from vitlib.book import studies

    assert set(load_suites()) == set(studies.SUITES)
    for path in sorted((VITLIB / "book" / "studies").glob("*.py")):
        assert path.name == "__init__.py" or "register_suite" not in path.read_text(), path.name


@pytest.mark.slow
def test_import_vitlib_loads_neither_the_book_nor_the_training_stack():
    code = ("import sys, vitlib; print(' '.join(sorted(m for m in sys.modules if m.startswith('vitlib'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=VITLIB.parent).stdout.split())
    assert "vitlib.models" in loaded
    assert not {m for m in loaded if m.startswith(("vitlib.book", "vitlib.train", "vitlib.bench", "vitlib.distill",
                                                  "vitlib.export", "vitlib.data"))}, sorted(loaded)


@pytest.mark.parametrize("path", sorted(VITLIB.rglob("*.py")), ids=lambda p: str(p.relative_to(VITLIB)))
def test_no_vitlib_file_is_over_500_lines(path):
    """Past about 500 lines a file holds two ideas."""
    assert len(path.read_text().splitlines()) <= 500
