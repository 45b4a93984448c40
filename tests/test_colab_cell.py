"""Colab's path, run for real: the chapters' setup cell in a fresh environment without vitlib.

The cell (:func:`vitlib.book.setup_cell`, pointed at this repository's git history through a
``git+file://`` URL instead of :data:`vitlib.book.REPOSITORY_URL`) runs in IPython, in a new
virtual environment that sees this environment's packages (torch and the rest, as Colab ships
them) but not vitlib. Then every import that a chapter makes is run there.

What passing proves: the cell's ``%pip`` line and its quoting work in IPython and use the
kernel's own interpreter; ``vitlib @ git+URL`` installs from a clone of the committed tree (the
packaging finds every subpackage); vitlib's requirements are met by what is already installed
(pip runs with no package index, so nothing is downloaded and nothing preinstalled, like Colab's
torch, is replaced); and the chapters' imports resolve against that installed copy, not this
checkout. It does not prove that the public address answers, nor Colab's exact versions.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from vitlib.book import setup_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _chapter_imports() -> list[str]:
    """Every top-level import statement of every chapter's code cells, once each."""
    seen: dict[str, None] = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code" or cell.source == setup_cell(path.stem):
                continue
            for node in ast.parse(cell.source).body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    seen[ast.unparse(node)] = None
    return list(seen)


def _environment_without_vitlib(where: Path) -> Path:
    """A new venv whose path ends with a view of this environment's site-packages, minus vitlib
    (its editable-install hook and metadata): the packages are there, vitlib is not."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = where / "site-view"
    view.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("vitlib", "__editable__")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    env = where / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    env_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    Path(env_site, "site-view.pth").write_text(f"{view}\n")
    return python


_RUN = r"""
import importlib.util, json, sys
from IPython.core.interactiveshell import InteractiveShell

assert importlib.util.find_spec("vitlib") is None, "vitlib is importable before the cell ran"
cell, imports = json.loads(sys.stdin.read())
shell = InteractiveShell.instance()
result = shell.run_cell(cell, store_history=False)
assert result.success, f"the setup cell failed: {result.error_in_exec or result.error_before_exec}"
for line in imports:
    assert shell.run_cell(line, store_history=False).success, f"failed: {line}"
import vitlib
print("VITLIB", vitlib.__file__)
"""


@pytest.mark.slow
def test_setup_cell_installs_vitlib_in_a_fresh_environment(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    python = _environment_without_vitlib(tmp_path)
    cell = setup_cell("01_anatomy", repository_url=f"file://{ROOT}")
    assert cell.replace(f"file://{ROOT}", "URL") == setup_cell("01_anatomy", repository_url="URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    # No index: every requirement must already be met, as Colab's preinstalled packages meet them.
    # No build isolation: the build backend (setuptools) comes from the environment, not the index.
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
               VITLIB_MODE="quick", MPLBACKEND="Agg")
    done = subprocess.run([str(python), "-c", _RUN], input=json.dumps([cell, _chapter_imports()]),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = Path(done.stdout.split("VITLIB ", 1)[1].split()[0])
    assert tmp_path / "env" in installed.parents, f"vitlib came from {installed}, not the fresh environment"
    assert "quick mode" in done.stdout  # the setup line
