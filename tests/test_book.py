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


def test_setup_seeds_and_reports_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # CI's own variable would name "CI" as the reason
    monkeypatch.delenv("VITLIB_MODE", raising=False)
    monkeypatch.setenv("VITLIB_UNDER_TEST", "1")
    first = book.setup(seed=3)
    a = torch.rand(3)
    book.setup(seed=3, quiet=True)
    assert torch.equal(a, torch.rand(3))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    assert out.startswith("quick mode (test suite)") and f"torch {torch.__version__}" in out and "threads" in out
    assert first.quick and first.pick(quick=1, full=2) == 1


@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("0", False), ("false", False),
                                            ("1", True), ("yes", True)])
def test_building_book_reads_the_environment(value, expected):
    env = {} if value is None else {"VITLIB_BOOK_BUILD": value}
    assert book.building_book(env) is expected


def test_no_progress_bar_while_the_book_builds(monkeypatch):
    monkeypatch.setenv("VITLIB_BOOK_BUILD", "1")
    assert book.progress(range(3)).disable is True
    assert list(book.progress(range(3))) == [0, 1, 2]
    monkeypatch.setenv("VITLIB_BOOK_BUILD", "0")
    bar = book.progress(range(3))
    assert not bar.disable and type(bar).__module__.startswith("tqdm")
    bar.close()


def test_setup_cell_installs_with_the_kernels_pip_and_pins_nothing():
    cell = book.setup_cell("02_lightweight_models")
    assert f'REPOSITORY = "{book.REPOSITORY_URL}"' in cell
    code = [ln.strip() for ln in cell.splitlines() if not ln.lstrip().startswith("#")]
    pip = [ln for ln in code if "install" in ln]
    assert pip == ['%pip install -q "vitlib @ git+{REPOSITORY}"'], pip  # the kernel's pip, quoted
    assert not re.search(r"torch|numpy|[=<>]=|[<>]", " ".join(pip)), "the install pins nothing"
    assert not any("subprocess" in ln or "!pip" in ln for ln in code)
    assert cell.rstrip().endswith('book = vitlib.book.setup("02_lightweight_models")')
    assert book.setup_cell("x", "file:///x") == book.setup_cell("x").replace(book.REPOSITORY_URL, "file:///x")


def test_setup_says_under_the_title_what_full_mode_takes(capsys, monkeypatch):
    from vitlib.book import fullmode

    monkeypatch.setenv("VITLIB_UNDER_TEST", "1")
    monkeypatch.delenv("VITLIB_SMOKE", raising=False)
    entry = {"gpus": {"T4": {"total_s": 11.2 * 60, "peak_bytes": 3.3 * 2**30, "assumed": True},
                      "A100": {"total_s": 150.0, "peak_bytes": 3.3 * 2**30, "assumed": True}}}
    monkeypatch.setattr(fullmode, "recorded_estimate", lambda chapter: entry if chapter == "02_x" else None)
    book.setup("02_x")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("quick mode")
    assert "about 11 min on a T4 and 2 min on an A100" in lines[1]
    assert "at most 3.3 GiB of GPU memory" in lines[1]
    assert "an assumed 30% of a T4's 65 TFLOP/s and an assumed 25% of an A100's 312 TFLOP/s" in lines[1]
    book.setup("03_y")
    assert len(capsys.readouterr().out.splitlines()) == 1  # nothing recorded: nothing claimed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_opens_with_its_title_then_the_hidden_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; commit notebooks cleared"
    title = nb.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith("# "), f"{path.name}: first cell is not its title"
    setup = nb.cells[1]
    assert setup.cell_type == "code" and setup.source == book.setup_cell(path.stem), \
        f"{path.name}: the cell after the title differs from vitlib.book.setup_cell({path.stem!r})"
    assert "hide-input" in setup.metadata.get("tags", []), f"{path.name}: the setup cell's input is not hidden"
    others = [i for i, c in enumerate(code[1:], start=1) if "vitlib.book.setup(" in c.source]
    assert not others, f"{path.name}: code cells {others} call setup again"


#: The width of the book's text column, in characters of code: a wider line scrolls sideways.
CODE_WIDTH = 88


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_code_line_is_wider_than_the_page(path):
    nb = nbformat.read(path, as_version=4)
    wide = [(i, len(line)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > CODE_WIDTH]
    assert not wide, f"{path.name}: (cell, width) of code lines wider than {CODE_WIDTH}: {wide}"


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
    ours = book.REPOSITORY_URL.split("://")[1]
    # Links to other projects (vit-pytorch, timm) are references; any link to a repository of
    # this book's name must be the configured one.
    for path in [ROOT / "README.md", *NOTEBOOKS]:
        for url in re.findall(r"github\.com/[\w.-]+/[\w.-]+", path.read_text()):
            if url.rsplit("/", 1)[1] == ours.rsplit("/", 1)[1] or "efficient-vit" in url:
                assert url == ours, f"{path.name} points at {url}"


def test_book_config_serves_its_scripts_from_the_book():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "vitlib.book.offline" in config["sphinx"]["extra_extensions"]
    makefile = (ROOT / "Makefile").read_text()
    folder = re.search(r"^OFFLINE := (\S+)$", makefile, re.M)[1]
    assert config["sphinx"]["config"]["html_extra_path"] == [folder]
    assert "cdn" not in (ROOT / "_config.yml").read_text().lower()


def test_book_config_executes_and_excludes_the_package():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in ("force", "auto", "cache")
    assert config["execute"]["timeout"] > 0 and config["only_build_toc_files"] is True
    assert {"vitlib/*", "tests/*", "data/*", "README.md"} <= set(config["exclude_patterns"])
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def test_requirements_txt_adds_the_book_tooling_and_repeats_no_library_requirement():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!\[ ]", d)[0] for d in project["project"]["dependencies"]}
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    tooling = {re.split(r"[<>=!\[ ]", ln)[0] for ln in lines if ln}
    assert {"jupyter-book", "ipykernel", "ipywidgets"} <= tooling
    assert tooling & names == {"ipywidgets"}, "requirements.txt repeats a library requirement"
    assert "-e ." in (ROOT / "Makefile").read_text()  # make installs vitlib's own requirements with it
