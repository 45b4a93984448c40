"""The plugin that lets the strict build render nbval's execution (tests/executed_book.py), on a
small book: outputs, Output-widget contents and widget state are kept; a failing notebook is not."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


@pytest.mark.slow
def test_nbval_execution_is_staged_for_the_build(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "intro.md").write_text("# Intro\n")
    (book / "figure.svg").write_text("<svg/>")
    nbformat.write(_notebook(
        "import ipywidgets as w\nw.IntSlider(value=3, description='n')",
        "out = w.Output()\ndisplay(out)\nwith out:\n    print('inside the widget')",
        "print('plain output')",
    ), book / "good.ipynb")
    nbformat.write(_notebook("print('before')", "raise RuntimeError('this chapter fails')"), book / "bad.ipynb")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/good\n")
    (tmp_path / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: force\n"
                                          "sphinx:\n  config:\n    html_extra_path: [_build/offline]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VITLIB_MODE": "quick", "VITLIB_SLOW_S": "0"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.executed_book", "-p", "no:cacheprovider",
                           "--nbval-lax", "book", "--executed-book", "staged", "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # bad.ipynb fails, as it must
    assert "chapter execution times" in done.stdout and "good.ipynb" in done.stdout
    over = next(line for line in done.stdout.splitlines() if "over 0 s in quick mode" in line)
    assert "good.ipynb (" in over, over  # a chapter over its budget is named

    staged = tmp_path / "staged"
    config = yaml.safe_load((staged / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["sphinx"]["config"]["html_extra_path"] == [str(tmp_path / "_build" / "offline")]
    assert (staged / "_toc.yml").is_file() and (staged / "book" / "intro.md").is_file()
    assert (staged / "book" / "figure.svg").is_file()
    assert not (staged / "book" / "bad.ipynb").exists(), "a failed chapter must not reach the build"
    assert "good.ipynb" in (staged / "chapter-times.txt").read_text()

    nb = nbformat.read(staged / "book" / "good.ipynb", as_version=4)
    slider, output, plain = [c for c in nb.cells if c.cell_type == "code"]
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    view = slider.outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert state[view]["model_name"] == "IntSliderModel" and state[view]["state"]["value"] == 3
    # Printed inside the Output widget: in the widget's state, not in the cell's outputs.
    output_view = output.outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    inside = state[output_view]["state"]["outputs"]
    assert [o["text"] for o in inside] == ["inside the widget\n"]
    assert all("inside" not in o.get("text", "") for o in output.outputs)
    assert plain.outputs[0]["text"] == "plain output\n" and plain.execution_count == 3
