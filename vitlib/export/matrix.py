"""The support matrix: every model of the book against every deployment path, computed, not written.

:func:`support_matrix` runs each path on each model and records what happened: "works" with the
measured figures (speed-up against eager, size on disk, largest logit difference, top-1
agreement), or "fails" with the reason, taken from the exception the path raised. :func:`matrix_table`
renders it as a table of words, one row per model and one column per path.

:func:`book_models` gives the models: in quick mode one per family at the size the chapters train
on the bundled digits (the recipes of :mod:`vitlib.train.recipes`), in full mode every preset of
:mod:`vitlib.models.presets` at its paper's size, and a NaViT of ViT-S/16's size.
"""
from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

from ..models.state import private_rng
from .paths import PATHS, PathError, export

__all__ = ["book_models", "support_matrix", "matrix_table"]


def book_models(mode: str = "quick", *, depth: int | None = None) -> dict[str, Callable[[], nn.Module]]:
    """The book's models by name, each as a function that builds it (random weights), so that a
    matrix holds one model at a time. ``mode`` is ``"quick"`` or ``"full"`` (see the module).

    ``depth`` replaces the ``depth`` of every model that has one (blocks, or blocks a stage): which
    path takes a model depends on the operations it is made of, not on how often they repeat, and a
    shallower model is captured faster."""
    from ..models import MODELS, presets

    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be a positive int or None; received {depth!r}")
    shallow = {} if depth is None else {"depth": depth}
    if mode == "full":
        out: dict[str, Callable[[], nn.Module]] = {}
        for name in presets.names():
            overrides = shallow if "depth" in presets.config(name) else {}
            out[name] = lambda name=name, overrides=overrides: presets.create(name, **overrides)
        navit = {k: v for k, v in presets.config("ViT-S/16").items() if k != "pool"}
        out["NaViT-S/16"] = lambda: MODELS["navit"](**{**navit, **shallow})
        return out
    if mode != "quick":
        raise ValueError(f"mode must be 'quick' or 'full'; received {mode!r}")
    from ..data import load_dataset
    from ..train import recipe_for

    shapes: dict = {}
    out = {}
    for family, cls in MODELS.items():
        recipe = recipe_for(family, "quick")
        spec = recipe["dataset"]
        if spec["name"] not in shapes:  # channels and classes of the data set, loaded once
            data = load_dataset(spec["name"], image_size=spec.get("image_size"))
            shapes[spec["name"]] = (data.channels, data.num_classes)
        channels, classes = shapes[spec["name"]]
        config = {k: v for k, v in recipe["model"].items() if k != "name"}
        config.update(image_size=spec["image_size"], channels=channels, num_classes=classes)
        config.update({k: v for k, v in shallow.items() if k in config})
        out[cls.__name__] = lambda cls=cls, config=config: cls(**config)
    return out


def support_matrix(models: Mapping[str, nn.Module | Callable[[], nn.Module]] | None = None,
                   paths: tuple[str, ...] = PATHS, *, mode: str = "quick", batch: int = 2, seed: int = 0,
                   progress: bool = False, **kwargs):
    """Run every path of ``paths`` on every model and return one row per ``(model, path)`` (a pandas
    DataFrame): ``works`` and, when it works, the figures of :meth:`Exported.row` (``speedup``,
    ``size_mb``, ``max_abs_diff``, ``top1_agreement``, ``build_s``...), else ``reason``.

    ``models`` maps a name to a model or to a function that builds one (default:
    :func:`book_models` of ``mode``); each runs on its own example input of ``batch`` images, drawn
    with ``seed``. ``kwargs`` go to every path function (``rounds``, ``min_run_time``,
    ``num_threads``, ``data``). A path that raises :class:`PathError` fails for that model; any
    other error (a wrong argument) is raised."""
    import pandas as pd

    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ValueError(f"paths must be some of {list(PATHS)}; received {list(paths)}")
    models = book_models(mode) if models is None else models
    cells = [(name, path) for name in models for path in paths]
    if progress:
        from ..progress import progress as tqdm

        cells = tqdm(cells, desc="support matrix", unit="cell")
    rows, built, programs = [], {}, {}
    for name, path in cells:
        if name not in built:
            built.clear()  # one model in memory at a time
            programs.clear()
            with private_rng(seed):  # the same weights and images every run; the caller's random state kept
                model = models[name]
                model = model() if not isinstance(model, nn.Module) else model
                built[name] = (model.eval(), model.example_input(batch))
        model, x = built[name]
        # ONNX converts the program of the export column, where there is one, rather than capture again
        extra = {"program": programs[name]} if path == "onnx" and name in programs else {}
        try:
            result = export(model, path, x, **kwargs, **extra)
        except PathError as err:
            rows.append({"model": name, "path": path, "works": False, "reason": err.why})
            continue
        if path == "export":
            programs[name] = result.artefact
        rows.append({**result.row(), "model": name})
    table = pd.DataFrame(rows)
    table.attrs.update(paths=list(paths), models=list(models), batch=batch)
    return table


def _cell(row) -> str:
    if not row["works"]:
        return f"fails: {row['reason']}"
    saved = row.get("size_mb") is not None and row["size_mb"] == row["size_mb"]  # neither None nor NaN
    size = f", {row['size_mb']:.2f} MB" if saved else ""
    built = f", compiled in {row['build_s']:.0f} s" if row["path"] == "compile" else ""
    spread = f" ({row['speedup_low']:.2f}-{row['speedup_high']:.2f}, {row['calls']:.0f} timings)"
    return f"works: {row['speedup']:.2f}x{spread}{size}{built}, max diff {row['max_abs_diff']:.1e}"


def matrix_table(matrix):
    """A :func:`support_matrix` as words: one row per model, one column per path, each cell
    "works: <speed-up>x, <size> MB, max diff <largest logit difference>" or "fails: <reason>"."""
    cells = matrix.assign(cell=matrix.apply(_cell, axis=1))
    table = cells.pivot(index="model", columns="path", values="cell")
    paths = matrix.attrs.get("paths") or [p for p in PATHS if p in table.columns]
    order = matrix.attrs.get("models") or list(dict.fromkeys(matrix["model"]))
    table = table.reindex(index=order, columns=paths)
    table.columns.name, table.index.name = "path", "model"
    return table
