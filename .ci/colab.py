#!/usr/bin/env python3
"""The book as a reader in Colab gets it, checked on this machine: ``make colab-check`` and
``make full-rehearsal`` (both run by ``.ci/run`` after ``make test``).

``venv``: a fresh virtual environment pinned to Colab's GPU runtime (``.ci/colab/pip-freeze.gpu.txt``:
every package the freeze lists keeps the freeze's version; torch, torchvision and their CUDA
packages stay this machine's, since Colab's would download several GB on every run), then vitlib
installed the way the chapters' setup cell installs it: ``pip install "vitlib @ git+..."`` of the
committed tree, non-editable. It fails when installing vitlib would change a package the freeze
pins, or when a pinned package is not at the freeze's version.

``check``: every chapter executed in quick mode from an empty folder of its own outside the
checkout (each Colab notebook gets its own runtime), with ``google.colab`` loaded as in Colab; then
every live control the chapter displayed is moved, one at a time, and must redraw its output
without an error. It fails when a chapter fails, when a control does not move, or when a widget is
not an ipywidgets 7 core model (what Colab's front end renders).

``rehearse``: every chapter executed in full mode at the smoke scale (``VITLIB_SMOKE=1``: every
loop a few steps, every timing one call, every data set a few hundred images; the same code paths)
on a CIFAR-10 archive generated in the real format, from the installed copy, offline. It writes what
each chapter's full mode would do (:mod:`vitlib.book.fullmode`) to ``WORK/full-mode.json`` and fails
when a chapter's full mode would not fit a free T4 (20 minutes, 15 GB). ``--record`` also writes
it to ``book/results/full-mode.json``, which the chapters quote under their titles.

The ``venv`` step runs on this machine's Python with the standard library alone; ``execute`` runs
inside that environment (nbclient, as Colab ships it, drives the kernel).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FREEZE = ROOT / ".ci" / "colab" / "pip-freeze.gpu.txt"
#: Installed from this machine's disk, not the freeze (Colab's CUDA builds are several GB).
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
_OURS = re.compile(r"^(torch|torchvision|torchaudio|torchcodec|torchdata|torchao|torchtune|torchsummary|triton|"
                   r"nvidia-.*|cuda-.*)$")
#: What the chapters touch, installed at the freeze's versions before vitlib (everything else vitlib
#: needs is held to the freeze by constraints).
TOUCHED = ["ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "ipython", "ipykernel", "notebook",
           "jupyter_client", "jupyter_core", "traitlets", "tornado", "pyzmq", "nbclient", "nbformat",
           "plotly", "numpy", "matplotlib", "matplotlib-inline", "pandas", "scikit-learn", "scipy", "tqdm",
           "einops", "safetensors", "pillow"]
#: ipywidgets 7's model modules: what Colab's front end renders.
WIDGET_MODULES = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: Path = FREEZE) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of the freeze."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$", line.strip())
        if m:
            pins[canonical(m[1])] = m[2]
    return pins


def constraints(pins: dict[str, str]) -> list[str]:
    """pip constraints: the freeze's pins, less torch's family (installed from this machine)."""
    return [f"{n}=={v}" for n, v in sorted(pins.items()) if not _OURS.match(n) and "+" not in v]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def installed(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         check=True, capture_output=True, text=True).stdout
    return {canonical(p["name"]): p["version"] for p in json.loads(out)}


# Run in the new environment: torch's and torchvision's requirements (and theirs) that refuse the
# version the freeze pins, as {name: [requirement, pinned]}.
_TORCH_NEEDS = r"""
import json, re, sys
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
pins, found, todo, seen = json.loads(sys.argv[1]), {}, ["torch", "torchvision"], set()
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        continue
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canon(req.name)
        todo.append(key)
        pinned = pins.get(key)
        if pinned and "+" not in pinned and not req.specifier.contains(pinned, prereleases=True):
            found[key] = [str(req), pinned]
print(json.dumps(found))
"""


def cmd_venv(args) -> None:
    work = Path(args.work).resolve()
    venv, python = work / "venv", work / "venv" / "bin" / "python"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    ok = work / "venv.ok"
    if args.reuse and ok.is_file() and ok.read_text().strip() == head:
        print(f"colab venv: reusing {venv}, checked with vitlib at {head[:12]}")
        return
    if venv.exists():
        shutil.rmtree(venv)
    work.mkdir(parents=True, exist_ok=True)
    (work / "venv.ok").unlink(missing_ok=True)
    pins = read_freeze()
    t0 = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)])
    # Colab's own pip (the setup cell's %pip), then torch from this machine's disk.
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"pip=={pins['pip']}"])
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *TORCH])
    # This machine's torch is newer than Colab's: where its own requirements refuse the version
    # Colab ships with its older torch, that package follows torch here.
    follows = json.loads(subprocess.run([str(python), "-c", _TORCH_NEEDS, json.dumps(pins)], check=True,
                                        capture_output=True, text=True).stdout)
    for name, (need, shipped) in follows.items():
        if not _OURS.match(name):
            print(f"colab venv: {name} follows this machine's torch ({need}; Colab ships {shipped} with its torch)")
        pins.pop(name)
    (work / "follows-torch.json").write_text(json.dumps(follows, indent=1))
    cons = work / "constraints.txt"
    cons.write_text("\n".join(constraints(pins)) + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(cons)]
    missing = [n for n in TOUCHED if canonical(n) not in pins]
    if missing:
        sys.exit(f"colab-check: the freeze has no version of {missing}")
    run(pip + [f"{n}=={pins[canonical(n)]}" for n in TOUCHED] + TORCH)
    before = installed(python)
    # As the setup cell does: `%pip install "vitlib @ git+REPOSITORY"`, here the committed tree.
    try:
        run(pip + [f"vitlib @ git+file://localhost{ROOT}@{head}"])
    except subprocess.CalledProcessError:
        sys.exit("colab-check: vitlib cannot be installed without changing a package Colab ships at the "
                 "version above (pip's message says which); widen vitlib's requirement in pyproject.toml")
    after = installed(python)
    changed = {n: (before[n], after.get(n)) for n in before if after.get(n) != before[n]}
    off = {n: (pins[n], v) for n, v in after.items() if n in pins and not _OURS.match(n) and v != pins[n]}
    if changed or off:
        sys.exit(f"colab-check: installing vitlib changed {changed}; not at Colab's version {off}")
    added = sorted(n for n in set(after) - set(before) - {"vitlib"} if n not in pins)
    location = subprocess.run([str(python), "-c", "import vitlib, pathlib; print(pathlib.Path(vitlib.__file__).parent)"],
                              cwd=work, check=True, capture_output=True, text=True).stdout.strip()
    if "site-packages" not in location or not (Path(location) / "recorded").is_dir():
        sys.exit(f"colab-check: vitlib is not an installed copy with its record: {location}")
    print(f"colab venv ready in {time.monotonic() - t0:.0f} s: vitlib at {head[:12]} from {location}; nothing "
          f"Colab ships changed; added (Colab lacks them): {', '.join(added) or 'nothing'}")
    (work / "venv.ok").write_text(head + "\n")


# --------------------------------------------------------------------------------------------------
# executing the chapters (inside the venv)

_PROBE = r'''
import json as _json
import ipywidgets as _W
from ipywidgets.widgets import widget as _widget_module

def _vitlib_widgets():
    found = getattr(_widget_module, "_instances", None)
    return found if found is not None else _W.Widget.widgets

def _vitlib_walk(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _vitlib_walk(c)

_VITLIB_PASSIVE = ("Output", "HTML", "HTMLMath", "Label", "Valid", "IntProgress", "FloatProgress", "Image")

def _vitlib_plan(roots):
    live = _vitlib_widgets()
    plan = []
    for model_id in roots:
        root = live.get(model_id)
        if root is None:
            continue
        ws = list(_vitlib_walk(root))
        plan.append({"root": model_id,
                     "outputs": [w.model_id for w in ws if type(w).__name__ == "Output"],
                     "controls": [w.model_id for w in ws if isinstance(w, _W.ValueWidget)
                                  and type(w).__name__ not in _VITLIB_PASSIVE
                                  and not getattr(w, "disabled", False)]})
    print(_json.dumps(plan))

_vitlib_before = {}

def _vitlib_restore(model_id):
    _vitlib_widgets()[model_id].value = _vitlib_before.pop(model_id)

def _vitlib_move(model_id):
    w = _vitlib_widgets()[model_id]
    before = _vitlib_before[model_id] = w.value
    if isinstance(w, _W.SelectMultiple):
        n = len(w.options)
        w.index = tuple(w.index[:-1]) if len(w.index) > 1 else tuple(sorted({*w.index, (max(w.index, default=-1) + 1) % n}))
    elif hasattr(w, "index") and getattr(w, "options", None):
        w.index = (w.index + 1) % len(w.options)
    elif isinstance(w, _W.Checkbox) or isinstance(w, _W.ToggleButton):
        w.value = not w.value
    elif hasattr(w, "max") and hasattr(w, "step"):
        step = w.step or 1
        w.value = w.value + step if w.value + step <= w.max else w.value - step
    else:
        raise TypeError(f"cannot move a {type(w).__name__}")
    print(_json.dumps({"control": type(w).__name__, "description": getattr(w, "description", ""),
                       "from": repr(before), "to": repr(w.value)}))
'''


def _outputs_of(client, model_ids: list[str]) -> str:
    return json.dumps([client.widget_state.get(m, {}).get("outputs", []) for m in model_ids], sort_keys=True)


def _widget_problems(client, nb) -> list[str]:
    problems = []
    for model_id, state in client.widget_state.items():
        module, version = state.get("_model_module"), str(state.get("_model_module_version", ""))
        if module not in WIDGET_MODULES or not version.startswith("1."):
            problems.append(f"widget {state.get('_model_name')} is {module} {version}, not an ipywidgets 7 "
                            "core model")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view and view.get("model_id") not in client.widget_state:
                problems.append(f"a displayed widget {view.get('model_id')} has no model state")
    return problems


def _execute_one(path: Path, mode: str, probe: bool, env: dict, out_dir: Path, verbose: bool = False) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.output_widget import OutputWidget

    nb = nbformat.read(path, as_version=4)
    folder = Path(tempfile.mkdtemp(prefix=f"colab-{path.stem}-"))  # an empty folder of its own

    class RecordingOutput(OutputWidget):
        """nbclient's Output-widget mimic, without sending the outputs back to the kernel: a send on
        the shell channel while nbclient awaits the cell's reply on it hung now and then, and this
        check reads nbclient's own copy of each Output widget's contents."""

        def sync_state(self) -> None:
            pass

    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}},
                            store_widget_state=True, allow_errors=False)
    client.widget_registry["@jupyter-widgets/output"]["OutputModel"] = RecordingOutput
    t0 = time.monotonic()
    result = {"chapter": path.stem, "mode": mode, "problems": [], "moved": []}
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with client.setup_kernel(cwd=str(folder)):
            chapter_cells = len(nb.cells)

            def run_extra(source: str):  # a cell of the check's own, run in the chapter's kernel
                cell = nbformat.v4.new_code_cell(source)
                nb.cells.append(cell)  # nbclient addresses outputs by the cell's index
                client.execute_cell(cell, len(nb.cells) - 1)
                return cell

            where = run_extra("import sys, vitlib, pathlib\n"
                              "print(sys.executable, pathlib.Path(vitlib.__file__).parent)")
            del nb.cells[chapter_cells:]
            result["where"] = where.outputs[0]["text"].strip()
            if not result["where"].startswith(sys.executable):
                raise RuntimeError(f"the kernel is not this environment's: {result['where']}")
            for index, cell in enumerate(nb.cells[:chapter_cells]):
                client.execute_cell(cell, index)
            result["seconds"] = time.monotonic() - t0
            if probe:
                roots = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
                         for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                         if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
                extra = run_extra(_PROBE + f"\n_vitlib_plan({roots!r})")
                plan = json.loads(extra.outputs[-1]["text"])
                if verbose:
                    print(f"  explorers: {plan}", flush=True)
                for item in plan:
                    for control in item["controls"]:
                        before = _outputs_of(client, item["outputs"])
                        if verbose:
                            print(f"  moving {control} of {item['root']}", flush=True)
                        move = run_extra(f"_vitlib_move({control!r})")  # the redraw runs within the cell
                        after = _outputs_of(client, item["outputs"])
                        what = json.loads(move.outputs[-1]["text"]) if move.outputs else {"control": control}
                        if verbose:
                            print(f"  moved {what}", flush=True)
                        errors = [o for outs in json.loads(after) for o in outs if o.get("output_type") == "error"]
                        if errors:
                            result["problems"].append(f"moving {what} raised {errors[0].get('ename')}: "
                                                      f"{errors[0].get('evalue')}")
                        elif after == before:
                            result["problems"].append(f"moving {what} redrew nothing")
                        else:
                            result["moved"].append(what)
                        run_extra(f"_vitlib_restore({control!r})")  # each control moves from the chapter's state
                result["explorers"] = sum(1 for item in plan if item["controls"])
                if not result["explorers"]:
                    result["problems"].append("the chapter displayed no live control to move")
                del nb.cells[chapter_cells:]
                result["problems"] += _widget_problems(client, nb)
            client.set_widgets_metadata()
    except Exception as err:  # noqa: BLE001  (reported per chapter; the next chapter still runs)
        result["problems"].append(f"{type(err).__name__}: {str(err).strip()[-2000:]}")
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    result.setdefault("seconds", time.monotonic() - t0)
    written = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
               and p.suffix != ".ipynb" and "vitlib-results" not in p.parts]
    result["files_written"] = written
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _colab_home(work: Path) -> dict:
    """A fresh home (data cache, Jupyter and IPython folders) with ``google.colab`` loaded at kernel
    start, as Colab's kernel does; offline: any download fails at once."""
    home = work / "home"
    if home.exists():
        shutil.rmtree(home)
    stub = home / "colab-stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Stands in for Colab\'s google.colab in the Colab check."""\n')
    startup = home / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # noqa: F401  (loaded at start, as in Colab)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VITLIB_", "PYTHON", "JUPYTER", "IPYTHON"))}
    env.update(HOME=str(home), IPYTHONDIR=str(home / ".ipython"), PYTHONPATH=str(home / "colab-stub"),
               JUPYTER_DATA_DIR=str(home / ".jupyter-data"), XDG_CACHE_HOME=str(home / ".cache"),
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


def cmd_execute(args) -> None:
    work = Path(args.work).resolve()
    env = _colab_home(work)
    env["VITLIB_MODE"] = args.mode
    if args.smoke:
        env["VITLIB_SMOKE"] = "1"
        env["VITLIB_LEDGER"] = str(work / "ledger")
        env.update(json.loads(args.env or "{}"))
    site = Path(sys.prefix)
    listing = {str(p) for p in site.rglob("*")}
    results = []
    for path in [Path(p).resolve() for p in args.notebooks]:
        (work / "ledger" / f"{path.stem}.jsonl").unlink(missing_ok=True)  # this run's notes alone
        r = _execute_one(path, args.mode, args.probe, env, work / f"executed-{args.mode}", args.verbose)
        status = "ok" if not r["problems"] else "FAILED"
        moved = f", {len(r['moved'])} controls moved in {r.get('explorers', 0)} explorers" if args.probe else ""
        print(f"{path.stem}: {status} in {r['seconds']:.0f} s{moved}", flush=True)
        for p in r["problems"]:
            print(f"  - {p}", flush=True)
        if r["files_written"]:
            print(f"  wrote beside the notebook: {r['files_written'][:8]}")
        results.append(r)
    grown = sorted(p for p in {str(p) for p in site.rglob("*")} - listing if "__pycache__" not in p)
    (work / f"execute-{args.mode}.json").write_text(json.dumps(results, indent=1))
    failed = [r["chapter"] for r in results if r["problems"]]
    if grown:
        print(f"written into the environment (site-packages) while the chapters ran: {grown[:10]}")
        failed.append("files written into the installed environment")
    if failed:
        sys.exit(f"{len(failed)} failed: {failed}")


def _venv_python(work: Path) -> Path:
    python = work / "venv" / "bin" / "python"
    if not (work / "venv.ok").is_file():
        sys.exit(f"no checked environment in {work}: run `{sys.argv[0]} venv --work {work}` first")
    return python


def _notebooks(names: list[str]) -> list[str]:
    return [str(p) for p in (names or sorted(str(p) for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")))]


def cmd_check(args) -> None:
    work = Path(args.work).resolve()
    python = _venv_python(work)
    t0 = time.monotonic()
    run([str(python), __file__, "execute", "--work", str(work), "--mode", "quick", "--probe",
         *_notebooks(args.notebooks)], cwd=tempfile.gettempdir())
    print(f"colab-check: every chapter ran in quick mode and every control moved ({time.monotonic() - t0:.0f} s)")


def cmd_rehearse(args) -> None:
    work = Path(args.work).resolve()
    python = _venv_python(work)
    data = work / "data"
    t0 = time.monotonic()
    md5 = subprocess.run([str(python), "-m", "vitlib.book.fullmode", "cifar10-archive", str(data)],
                         check=True, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
    env = {"VITLIB_DATA": str(data), "VITLIB_TEST_CIFAR10_MD5": md5}
    run([str(python), __file__, "execute", "--work", str(work), "--mode", "full", "--smoke",
         "--env", json.dumps(env), *_notebooks(args.notebooks)], cwd=tempfile.gettempdir())
    out = work / "full-mode.json"
    cmd = [str(python), "-m", "vitlib.book.fullmode", "summarise", str(work / "ledger"), str(out)]
    if args.record:
        cmd += ["--record", str(ROOT / "book" / "results" / "full-mode.json")]
    run(cmd, cwd=tempfile.gettempdir())
    print(f"full-rehearsal: every chapter ran full mode's code at the smoke scale ({time.monotonic() - t0:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("venv", help="a fresh environment pinned to Colab's, with vitlib installed")
    p.add_argument("--work", default=str(ROOT / "_build" / "colab"))
    p.add_argument("--reuse", action="store_true", help="keep an environment this script checked before")
    p.set_defaults(fn=cmd_venv)
    for name, fn, doc in (("check", cmd_check, "every chapter in quick mode, every control moved"),
                          ("rehearse", cmd_rehearse, "every chapter in full mode at the smoke scale")):
        p = sub.add_parser(name, help=doc)
        p.add_argument("--work", default=str(ROOT / "_build" / "colab"))
        p.add_argument("notebooks", nargs="*", help="default: every chapter of book/")
        if name == "rehearse":
            p.add_argument("--record", action="store_true", help="write book/results/full-mode.json")
        p.set_defaults(fn=fn)
    p = sub.add_parser("execute", help="(inside the environment) execute notebooks as Colab would")
    p.add_argument("--work", required=True)
    p.add_argument("--mode", choices=["quick", "full"], required=True)
    p.add_argument("--probe", action="store_true", help="move every live control afterwards")
    p.add_argument("--verbose", action="store_true", help="print each control as it moves")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--env", default="")
    p.add_argument("notebooks", nargs="+")
    p.set_defaults(fn=cmd_execute)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
