"""Where chapters keep what they measured, so that the synthesis chapter can set it side by side.

Each chapter records its verdicts (and any figures it wants to share) with :func:`record`, usually
through :func:`vitlib.book.claims.verdict_table` (``chapter=``), as one JSON file per chapter in
:func:`results_dir`, with the mode, device and provenance (versions, date, commit) of the run.
Running a chapter again replaces its own file.

The book also ships a record (:func:`vitlib.locations.recorded_dir`: ``book/results/`` in the
repository, ``vitlib/recorded/`` in an installed copy), so that a chapter in a fresh runtime
(each Colab notebook gets its own) can show what was measured elsewhere, and where:

* ``chapters/NN_topic.json``: every chapter's results from the last ``make record``
  (:func:`load_recorded`);
* ``gpu-record.json`` (``make gpu-record``) and ``gpu-bench.json`` (``make gpu-bench``): figures
  measured on a GPU (:func:`recorded_gpu_results`).

:func:`claims_table` gathers every claim's verdict from this runtime's results first, then from the
record, and says which is which.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .claims import CLAIMS

__all__ = ["RESULTS_ENV", "CLAIM_CHAPTERS", "results_dir", "record", "load", "load_all", "load_recorded",
           "recorded_gpu_results", "claims_table"]

RESULTS_ENV = "VITLIB_RESULTS"
#: The chapter (notebook stem) that tests each claim.
CLAIM_CHAPTERS: dict[str, str] = {
    "C1": "02_lightweight_models", "C2": "02_lightweight_models", "C3": "02_lightweight_models",
    "C4": "03_levit", "C5": "03_levit", "C6": "03_levit", "C7": "04_crossvit", "C8": "04_crossvit",
    "C9": "05_navit", "C10": "05_navit", "C11": "06_distillation", "C12": "08_deployment",
    "C13": "08_deployment", "C14": "09_scaling_out", "C15": "10_putting_it_together"}
RESULT_COLUMNS = ("id", "claim", "chapter", "measured", "verdict", "device", "mode", "date", "commit", "source")


def results_dir() -> Path:
    """``$VITLIB_RESULTS`` if set; else ``_build/results`` of the source checkout vitlib runs from;
    else (an installed vitlib, as in Colab) ``vitlib-results`` in the working directory."""
    from ..locations import checkout

    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    root = checkout()
    return root / "_build" / "results" if root is not None else Path.cwd() / "vitlib-results"


def record(chapter: str, *, mode: str, device: str, claims: Sequence[Mapping] = (),
           figures: Mapping[str, Any] | None = None, directory: Path | None = None) -> Path:
    """Write (replace) ``chapter``'s results: its claims' rows (``id``, ``measured``, ``verdict``)
    and ``figures`` (anything JSON can hold), with the run's mode, device and provenance."""
    from ..bench.provenance import provenance

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
    from ..locations import recorded_dir

    return load_all(recorded_dir() / "chapters")


def recorded_gpu_results(name: str = "gpu-bench") -> dict | None:
    """Results recorded on a GPU (``make gpu-bench``: ``gpu-bench``; ``make gpu-record``:
    ``gpu-record``) as the book ships them, with their provenance, or None when none have been
    recorded."""
    from ..locations import recorded_dir

    path = recorded_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# every claim, gathered ---------------------------------------------------------------------


def _entry(chapter: str, row: Mapping, prov: Mapping, mode: str | None, source: str) -> dict:
    threads = f", {prov['threads']} threads" if prov.get("threads") and prov.get("device") == "cpu" else ""
    return {"chapter": chapter, "measured": str(row["measured"]), "verdict": str(row["verdict"]),
            "mode": mode, "device": f"{prov.get('device', '?')}: {prov.get('device_name', '?')}{threads}",
            "date": row.get("date", prov.get("date")), "commit": row.get("commit", prov.get("commit")),
            "source": source}


def claims_table(results: Mapping[str, Mapping] | None = None, extra_rows: Sequence[Mapping] = (), *,
                 recorded: Mapping[str, Mapping] | None = None):
    """All fifteen claims in order, one row each: ``id``, ``claim`` (its words), ``chapter`` (the
    notebook that tests it), ``measured``, ``verdict``, ``device``, ``mode``, ``date``, ``commit``
    and ``source``: ``"this runtime"`` or ``"recorded"``.

    Rows come first from ``results``, what chapters recorded in this runtime (chapter -> results,
    default :func:`vitlib.book.results.load_all`), then from ``recorded``, the book's record that ships
    with vitlib (default :func:`vitlib.book.results.load_recorded`): a chapter in a fresh runtime (each
    Colab notebook gets its own) still shows every verdict, and says where it was measured. Within
    each, the claim's own chapter first, else any chapter that recorded it. ``extra_rows`` (``id``,
    ``measured``, ``verdict``, optionally ``device``, ``mode``, ``date`` and ``commit``) are claims
    measured in this run; they replace the rest. A claim found nowhere says "not measured yet: run
    chapter N" and has no figures."""
    import pandas as pd

    from ..bench import provenance

    results = load_all() if results is None else results
    recorded = load_recorded() if recorded is None else recorded
    found: dict[str, dict] = {}
    for source, chapters in (("this runtime", results), ("recorded", recorded)):
        for own in (True, False):  # a claim's own chapter first, then any other that recorded it
            for chapter, data in chapters.items():
                for row in data.get("claims", []):
                    if (CLAIM_CHAPTERS.get(row["id"]) == chapter) == own and row["id"] not in found:
                        found[row["id"]] = _entry(chapter, row, data.get("provenance", {}), data.get("mode"),
                                                  source)
    for row in extra_rows:
        if row.get("id") not in CLAIMS or not {"measured", "verdict"} <= set(row):
            raise ValueError(f"each extra row needs an id among {list(CLAIMS)}, a measured and a verdict; "
                             f"received {dict(row)!r:.200}")
        found[row["id"]] = _entry(CLAIM_CHAPTERS[row["id"]], row, provenance(row.get("device", "cpu")),
                                  row.get("mode"), "this runtime")
    out = []
    for cid, words in CLAIMS.items():
        chapter = CLAIM_CHAPTERS[cid]
        row = found.get(cid) or {"chapter": chapter, "verdict": "not measured yet",
                                 "measured": f"not measured yet: run chapter {int(chapter[:2])} ({chapter})"}
        out.append({"id": cid, "claim": words, **{k: row.get(k) for k in RESULT_COLUMNS[2:]}})
    return pd.DataFrame(out, columns=list(RESULT_COLUMNS))
