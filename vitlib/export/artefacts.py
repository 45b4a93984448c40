"""Artefacts on disk: one file per path, written by :func:`save_artefact` and read back by :func:`load`,
each with its own loader, and the peak memory of a process that serves one (:func:`process_peak_mb`).

=============  ================  ===================================================================
path           file              read back with
=============  ================  ===================================================================
``int8``       ``.safetensors``  :func:`vitlib.export.int8.load_int8` (INT8 weights, scales, config)
``export``     ``.pt2``          ``torch.export.load(...).module()``
``onnx``       ``.onnx``         an ONNX Runtime ``InferenceSession`` (CPU)
``torchscript`` ``.pt``          ``torch.jit.load`` (never ``torch.load``)
=============  ================  ===================================================================

A vitlib training checkpoint (``.safetensors``, :func:`vitlib.train.load_model`) loads too, as the
eager model. ``compile`` saves nothing: a compiled module lives in its process.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from .int8 import INT8_FORMAT, load_int8, save_int8
from .measure import Runner

__all__ = ["SUFFIXES", "check_suffix", "save_artefact", "load", "onnx_session", "import_for_loading",
           "process_peak_mb"]

#: The file suffix of each path that saves an artefact.
SUFFIXES = {"int8": ".safetensors", "export": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}


def check_suffix(path: str, file: str | Path) -> Path:
    """``file`` as a Path, after checking that its suffix is the one ``path`` writes."""
    if path not in SUFFIXES:
        raise ValueError(f"the {path!r} path saves no file; the paths that do are {sorted(SUFFIXES)}")
    file = Path(file)
    if file.suffix != SUFFIXES[path]:
        raise ValueError(f"{path} artefacts are written to {SUFFIXES[path]} files; received {str(file)!r}")
    return file


def save_artefact(path: str, artefact: Any, file: str | Path) -> Path:
    """Write the ``artefact`` that ``path`` built to ``file`` (suffix :data:`SUFFIXES` [path])."""
    file = check_suffix(path, file)
    file.parent.mkdir(parents=True, exist_ok=True)
    if path == "int8":
        save_int8(file, artefact)
    elif path == "export":
        torch.export.save(artefact, str(file))
    elif path == "onnx":
        artefact.save(str(file))
    else:
        with _torchscript_quietly():
            torch.jit.save(artefact, str(file))
    return file


@contextlib.contextmanager
def _torchscript_quietly():
    """A block in which torch.jit's own deprecation warnings are silent: the torchscript path's
    notes already say it is deprecated (:data:`vitlib.export.paths.TORCHSCRIPT_NOTE`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def onnx_session(source, num_threads: int | None = None):
    """An ONNX Runtime CPU session of ``source`` (a file, or a model's serialised bytes) running on
    ``num_threads`` threads (default: as many as torch uses), inter-op parallelism off, and its
    threads not spinning between runs (spinning threads would hold the cores that PyTorch's
    threads need when the two are timed in turn)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(source) if isinstance(source, Path) else source
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def load(file: str | Path, num_threads: int | None = None) -> Runner:
    """Load an artefact (or a vitlib checkpoint) by its suffix and return a :class:`Runner`: call it
    on a batch for logits. ``num_threads`` sets ONNX Runtime's threads."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"no artefact at {file}")
    suffix = file.suffix
    if suffix == ".onnx":
        return Runner("onnx", onnx_session(file, num_threads), session=True)
    if suffix == ".pt2":
        return Runner("export", torch.export.load(str(file)).module())
    if suffix == ".pt":
        with _torchscript_quietly():
            return Runner("torchscript", torch.jit.load(str(file), map_location="cpu").eval())
    if suffix == ".safetensors":
        if _safetensors_format(file) == INT8_FORMAT:
            return Runner("int8", load_int8(file))
        from ..train import load_model

        return Runner("eager", load_model(file))
    raise ValueError(f"cannot tell what {str(file)!r} holds from its suffix; expected one of "
                     f"{sorted(set(SUFFIXES.values()))}")


def import_for_loading(file: str | Path) -> None:
    """Import what :func:`load` needs to load ``file``, without loading it: a process that does
    this first holds those libraries before the model, and :func:`process_peak_mb` counts the
    model alone in its share."""
    file = Path(file)
    if file.suffix == ".onnx":
        import onnxruntime  # noqa: F401
    elif file.suffix == ".safetensors" and _safetensors_format(file) == INT8_FORMAT:
        import torch.ao.nn.quantized.dynamic  # noqa: F401

        with torch.device("meta"):  # load_int8 builds on the meta device: its first tensor there
            torch.randn(1)  # imports torch's symbolic shapes (sympy)
    elif file.suffix == ".safetensors":
        import vitlib.train  # noqa: F401


def _safetensors_format(file: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt", device="cpu") as f:
        return (f.metadata() or {}).get("format")


_PEAK_SCRIPT = """
import json, resource, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from vitlib.export.artefacts import import_for_loading, load

def status(key):  # bytes, from Linux's /proc; None elsewhere
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None

def max_rss():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024

if sys.argv[1] != "-":
    import_for_loading(sys.argv[1])
before = status("VmRSS") or max_rss()  # the libraries loaded, no model yet
runner = load(sys.argv[1]) if sys.argv[1] != "-" else None
x = torch.randn(*json.loads(sys.argv[2]))
reset = False
try:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: restart the peak counter after loading
        f.write("5")
    reset = True
except OSError:
    pass
if runner is not None:
    runner(x)
peak = (status("VmHWM") if reset else None) or max_rss()
print(json.dumps({"peak_bytes": peak, "before_bytes": before, "after_loading": reset}))
"""


def process_peak_mb(file: str | Path | None, shape: tuple[int, ...], num_threads: int | None = None) -> dict:
    """The peak resident memory of a fresh Python process that loads ``file`` (:func:`load`) and runs
    it once on a random batch of ``shape``: the whole process (interpreter, torch, weights,
    activations), which is what a server pays. ``file=None`` measures the process without a model.

    Returns ``{"peak_mb": ..., "before_loading_mb": ..., "after_loading": bool}``. On Linux the peak
    counter restarts once the model is loaded (``/proc/self/clear_refs``), so the figure is the peak
    while serving and loading's temporary copies do not count; elsewhere it is the peak of the
    whole run. ``before_loading_mb`` is the process once its libraries are imported, before the
    model is loaded (its resident memory on Linux, its peak so far elsewhere): the peak minus it
    is the model's share."""
    threads = num_threads or torch.get_num_threads()
    cmd = [sys.executable, "-c", _PEAK_SCRIPT, "-" if file is None else str(file), json.dumps(list(shape)),
           str(threads)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        err = done.stderr.strip()
        last = err.splitlines()[-1] if err else f"exit status {done.returncode}"
        raise RuntimeError(f"measuring the peak memory of a process serving {file} failed: {last}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_mb": result["peak_bytes"] / 2**20, "before_loading_mb": result["before_bytes"] / 2**20,
            "after_loading": result["after_loading"]}
