"""pytest plugin: each chapter executes once in ``make test``, under nbval, and the strict book
build renders that same execution.

With ``--executed-book DIR`` (``make test`` passes it to ``pytest --nbval-lax book``):

- every iopub message that nbval reads for a cell also goes to nbclient's message handler (the
  one the book's own execution uses), so outputs, Output-widget contents and widget state are
  recorded exactly as ``jupyter-book build`` would record them (nbval itself keeps no widget
  state);
- at the end, ``DIR`` holds the book's sources (``_toc.yml``, ``book/``), the notebooks as they
  executed, and a ``_config.yml`` that does not execute, for ``jupyter-book build DIR``. A
  notebook with a failed cell is left out, so that build cannot pass on it;
- each chapter's execution time (kernel start to stop) is printed, and written to
  ``DIR/chapter-times.txt``; a chapter over :data:`SLOW_S` seconds in quick mode is named.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

SLOW_S = float(os.environ.get("VITLIB_SLOW_S", 60.0))  # a chapter's quick-mode budget
_state: dict = {}  # one session per process: recorders, seconds and failures per notebook


def pytest_addoption(parser):
    parser.addoption("--executed-book", metavar="DIR", default=None,
                     help="write the notebooks as nbval executed them, with the book's sources and a "
                          "_config.yml that does not execute, to DIR (for jupyter-book build DIR)")


def pytest_configure(config):
    _state.update(recorders={}, seconds={}, failed=set())


def pytest_sessionstart(session):
    out = session.config.getoption("executed_book")
    if out and Path(out).exists():
        shutil.rmtree(out)  # a failed run must not leave an older execution for the build to render


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item.parent, "kernel")


class Recorder:
    """nbclient's ``NotebookClient`` as a bystander: it is given each message nbval reads and
    keeps outputs and widget state in a copy of the notebook; nbval still runs the kernel."""

    def __init__(self, nb: nbformat.NotebookNode, kernel_client):
        from nbclient import NotebookClient

        self.nb = copy.deepcopy(nb)
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        self.client = NotebookClient(self.nb, record_timing=False, store_widget_state=True)
        self.client.kc = kernel_client  # the Output-widget mimic syncs its state back to the kernel
        self.code_cells = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]

    def start(self, cell_num: int) -> None:
        """As nbclient does before each cell: clear its outputs and any pending clear."""
        self.nb.cells[self.code_cells[cell_num]].outputs = []
        self.client.clear_before_next_output = False

    def feed(self, msg: dict, cell_num: int, parent_id: str) -> None:
        from nbclient.exceptions import CellExecutionComplete

        if msg["parent_header"].get("msg_id") != parent_id:
            return
        index = self.code_cells[cell_num]
        try:
            self.client.process_message(msg, self.nb.cells[index], index)
        except CellExecutionComplete:
            pass

    def executed(self) -> nbformat.NotebookNode:
        self.client.set_widgets_metadata()
        # nbval executes without history, so the kernel numbers every cell 1; number them in the
        # order they ran, as a notebook run from the top shows them.
        ran = [self.nb.cells[i] for i in self.code_cells if self.nb.cells[i].execution_count is not None]
        for count, cell in enumerate(ran, start=1):
            cell.execution_count = count
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = count
        return self.nb


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if not (_is_nbval_cell(item) and item.config.getoption("executed_book")):
        yield
        return
    notebook, kernel = item.parent, item.parent.kernel
    recorders = _state["recorders"]
    if notebook.nodeid not in recorders:
        recorders[notebook.nodeid] = (Path(notebook.path), Recorder(notebook.nb, kernel.kc))
    recorder = recorders[notebook.nodeid][1]
    sent: dict = {}
    execute, get_message = kernel.execute_cell_input, notebook.get_kernel_message

    def execute_and_remember(source, allow_stdin=None):
        sent["id"] = execute(source, allow_stdin=allow_stdin)
        return sent["id"]

    def get_and_record(timeout=None, stream="iopub"):
        msg = get_message(timeout=timeout, stream=stream)
        if stream == "iopub" and "id" in sent:
            recorder.feed(msg, item.cell_num, sent["id"])
        return msg

    recorder.start(item.cell_num)
    kernel.execute_cell_input, notebook.get_kernel_message = execute_and_remember, get_and_record
    try:
        yield
    finally:
        del kernel.execute_cell_input, notebook.get_kernel_message


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):  # setup (the kernel starts), call and teardown (it stops) of each cell
        _state["seconds"][path] = _state["seconds"].get(path, 0.0) + report.duration
        if report.failed:
            _state["failed"].add(path)


def stage_book(out: Path, notebooks: dict[Path, nbformat.NotebookNode], root: Path) -> None:
    """Write ``out``: the book's ``_toc.yml`` and ``book/`` (every file but the notebooks), the
    executed ``notebooks`` (path relative to ``root``: notebook), and ``_config.yml`` with
    execution off and its static and extra paths made absolute."""
    shutil.copytree(root / "book", out / "book", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    shutil.copy2(root / "_toc.yml", out / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    sphinx = config.get("sphinx", {}).get("config", {})
    for key in ("html_extra_path", "html_static_path"):
        if key in sphinx:
            sphinx[key] = [str((root / p).resolve()) for p in sphinx[key]]
    (out / "_config.yml").write_text("# The book's _config.yml with execution off: the notebooks beside it are "
                                     "the ones nbval executed.\n" + yaml.safe_dump(config, sort_keys=False))
    for rel, nb in notebooks.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / rel)


def _times_report(state: dict) -> str:
    from vitlib.book import choose_device, choose_mode

    mode = choose_mode(choose_device())[0]
    lines = [f"chapter execution times (nbval, {mode} mode, {os.cpu_count()} CPUs):"]
    for path, seconds in sorted(state["seconds"].items()):
        flag = "  FAILED" if path in state["failed"] else ""
        lines.append(f"  {Path(path).name:<32} {seconds:7.1f} s{flag}")
    slow = [f"{Path(p).name} ({s:.0f} s)" for p, s in sorted(state["seconds"].items()) if s > SLOW_S]
    if mode == "quick":
        lines.append(f"  over {SLOW_S:.0f} s in quick mode: " + (", ".join(slow) if slow else "none"))
    return "\n".join(lines)


def pytest_sessionfinish(session):
    state = _state
    out = session.config.getoption("executed_book")
    if not out or not state["recorders"]:
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = session.config.rootpath
    notebooks = {path.resolve().relative_to(root): recorder.executed()
                 for nodeid, (path, recorder) in state["recorders"].items() if nodeid not in state["failed"]}
    stage_book(out, notebooks, root)
    (out / "chapter-times.txt").write_text(_times_report(state) + "\n")


def pytest_terminal_summary(terminalreporter, config):
    if _state["seconds"]:
        terminalreporter.write_line(_times_report(_state))
