"""The book's wiring: mode choice, the chapters' setup cell, configuration that must agree."""
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import torch
import yaml

from vitlib import book

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def test_there_are_chapters():
    assert NOTEBOOKS, "book/ holds no notebook"


@pytest.mark.parametrize("env,device,expected", [
    ({}, "cpu", "quick"),
    ({}, "cuda", "full"),
    ({"CI": "true"}, "cuda", "quick"),
    ({"VITLIB_UNDER_TEST": "1"}, "cuda", "quick"),
    ({"VITLIB_MODE": "full", "CI": "true"}, "cpu", "full"),
    ({"VITLIB_MODE": " Quick "}, "cuda", "quick"),
])
def test_choose_mode(env, device, expected):
    assert book.choose_mode(torch.device(device), env)[0] == expected


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match=r"VITLIB_MODE must be one of \('quick', 'full'\); received 'fast'"):
        book.choose_mode(torch.device("cpu"), {"VITLIB_MODE": "fast"})


def test_setup_seeds_and_reports(capsys):
    first = book.setup(seed=3)
    a = torch.rand(3)
    book.setup(seed=3, quiet=True)
    assert torch.equal(a, torch.rand(3))
    out = capsys.readouterr().out
    assert "mode:   quick" in out and f"torch {torch.__version__}" in out and first.quick
    assert first.pick(quick=1, full=2) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_starts_with_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; commit notebooks cleared"
    assert code[0].source == book.setup_cell(), f"{path.name}: first cell differs from vitlib.book.setup_cell()"


def test_every_chapter_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {toc["root"]} | {c["file"] for c in toc.get("chapters", [])}
    missing = [p.name for p in NOTEBOOKS if f"book/{p.stem}" not in files]
    assert not missing, f"not in _toc.yml: {missing}"


def test_repository_url_is_configured_in_one_place():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == book.REPOSITORY_URL
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["urls"]["Repository"] == book.REPOSITORY_URL
    for path in [ROOT / "README.md", *NOTEBOOKS]:
        for url in re.findall(r"github\.com/[\w.-]+/[\w.-]+", path.read_text()):
            assert url == book.REPOSITORY_URL.split("://")[1], f"{path.name} points at {url}"


def test_book_config_executes_and_excludes_the_package():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in ("force", "auto", "cache")
    assert config["execute"]["timeout"] > 0 and config["only_build_toc_files"] is True
    assert {"vitlib/*", "tests/*", "data/*", "README.md"} <= set(config["exclude_patterns"])
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def test_library_requirements_are_in_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = {ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()}
    assert set(project["project"]["dependencies"]) <= lines
