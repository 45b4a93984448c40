"""Where chapters keep what they measured, so that the synthesis chapter can set it side by side.

Each chapter records its verdicts (and any figures it wants to share) with :func:`record`, usually
through :func:`vitlib.claims.verdict_table` (``chapter=``), as one JSON file per chapter in
:func:`results_dir`, with the mode, device and provenance (versions, date, commit) of the run.
Running a chapter again replaces its own file.

The book also ships a record (:func:`vitlib.locations.recorded_dir`: ``book/results/`` in the
repository, ``vitlib/recorded/`` in an installed copy), so that a chapter in a fresh runtime
(each Colab notebook gets its own) can show what was measured elsewhere, and where:

* ``chapters/NN_topic.json``: every chapter's results from the last ``make record``
  (:func:`load_recorded`);
* ``gpu-record.json`` (``make gpu-record``) and ``gpu-bench.json`` (``make gpu-bench``): figures
  measured on a GPU (:func:`recorded_gpu_results`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["RESULTS_ENV", "results_dir", "record", "load", "load_all", "load_recorded", "recorded_gpu_results"]

RESULTS_ENV = "VITLIB_RESULTS"


def results_dir() -> Path:
    """``$VITLIB_RESULTS`` if set; else ``_build/results`` of the source checkout vitlib runs from;
    else (an installed vitlib, as in Colab) ``vitlib-results`` in the working directory."""
    from .locations import checkout

    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    root = checkout()
    return root / "_build" / "results" if root is not None else Path.cwd() / "vitlib-results"


def record(chapter: str, *, mode: str, device: str, claims: Sequence[Mapping] = (),
           figures: Mapping[str, Any] | None = None, directory: Path | None = None) -> Path:
    """Write (replace) ``chapter``'s results: its claims' rows (``id``, ``measured``, ``verdict``)
    and ``figures`` (anything JSON can hold), with the run's mode, device and provenance."""
    from .bench.provenance import provenance

    if not chapter or "/" in chapter:
        raise ValueError(f"chapter must be a file-name stem such as '02_lightweight_models'; received {chapter!r}")
    folder = Path(directory) if directory is not None else results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = {"chapter": chapter, "mode": mode, "provenance": provenance(device),
            "claims": [{k: str(row[k]) for k in ("id", "measured", "verdict")} for row in claims],
            "figures": dict(figures or {})}
    path = folder / f"{chapter}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def load(chapter: str, directory: Path | None = None) -> dict | None:
    """``chapter``'s recorded results, or None when that chapter has not run here yet."""
    path = (Path(directory) if directory is not None else results_dir()) / f"{chapter}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_all(directory: Path | None = None) -> dict[str, dict]:
    """Every chapter's recorded results, by chapter, in chapter order."""
    folder = Path(directory) if directory is not None else results_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def load_recorded() -> dict[str, dict]:
    """Every chapter's results in the book's record (``make record``), by chapter; empty when the
    record holds none."""
    from .locations import recorded_dir

    return load_all(recorded_dir() / "chapters")


def recorded_gpu_results(name: str = "gpu-bench") -> dict | None:
    """Results recorded on a GPU (``make gpu-bench``: ``gpu-bench``; ``make gpu-record``:
    ``gpu-record``) as the book ships them, with their provenance, or None when none have been
    recorded."""
    from .locations import recorded_dir

    path = recorded_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
