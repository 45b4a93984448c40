"""The package's shape: dependencies point one way, and no file of the measuring code is long."""
import ast
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


def files(folder: str) -> list[Path]:
    return sorted((VITLIB / folder).rglob("*.py")) if (VITLIB / folder).is_dir() else [VITLIB / folder]


@pytest.mark.parametrize("folder,forbidden", [
    ("bench", ("vitlib.studies", "vitlib.widgets")),
    ("models", ("vitlib.bench", "vitlib.studies", "vitlib.train", "vitlib.widgets")),
    ("layers.py", ("vitlib.bench", "vitlib.studies", "vitlib.train", "vitlib.models", "vitlib.widgets")),
    ("backends.py", ("vitlib.bench", "vitlib.studies", "vitlib.train", "vitlib.models", "vitlib.widgets")),
    ("train", ("vitlib.bench", "vitlib.studies", "vitlib.widgets")),
    ("studies", ("vitlib.widgets",)),
])
def test_dependencies_point_one_way(folder, forbidden):
    for path in files(folder):
        if path == VITLIB / "bench" / "cli.py":
            continue  # the command line loads the studies (by name) to fill its registry of suites
        bad = {m for m in imported_modules(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(VITLIB)} imports {sorted(bad)}"


def test_the_cli_loads_the_studies_by_name_only():
    from vitlib.bench import cli

    assert cli.SUITE_PACKAGES == ("vitlib.studies",)
    assert not {m for m in imported_modules(VITLIB / "bench" / "cli.py") if m.startswith("vitlib.studies")}


@pytest.mark.parametrize("path", sorted(VITLIB.rglob("*.py")), ids=lambda p: str(p.relative_to(VITLIB)))
def test_no_vitlib_file_is_over_500_lines(path):
    """Past about 500 lines a file holds two ideas."""
    assert len(path.read_text().splitlines()) <= 500
