"""Chapter 10 (putting it together): every model of the book under one budget, and the deployment
paths on top; what the measurements say to choose is :mod:`vitlib.book.studies.choices`, and every
chapter's claims in one table :func:`vitlib.book.results.claims_table`.

:func:`same_budget` trains each family with its recipe, the same epochs, the same images;
:func:`latency_table` times the trained models in eager, interleaved, and after each deployment
path (:mod:`vitlib.export`), a path that fails being a row that says why.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ...bench import count_flops, count_parameters, default_threads, inference_fn, time_interleaved, train_step_fn
from ..claims import Measured
from ...data import first_images
from ...smoke import serving_on_cpu

__all__ = ["FAMILIES", "DEFAULT_FAMILIES", "OPTIMISATIONS", "Trained", "same_budget", "latency_table"]

#: The families :func:`same_budget` trains: the baseline ViT, the four architectures of the blog
#: post (chapters 2-5) and, as a reference that is no ViT, chapter 6's ResNet teacher. A
#: DistillableViT is left out: its budget would have to include its teacher's training, and at
#: inference it is the ViT of its size with one more token.
FAMILIES = ("vit", "simple_vit", "levit", "cross_vit", "navit", "resnet")
#: What :func:`same_budget` trains unless told: the transformers the blog post compares.
DEFAULT_FAMILIES = ("vit", "simple_vit", "levit", "cross_vit", "navit")
#: ``"eager"`` and the deployment paths of :mod:`vitlib.export` that :func:`latency_table` runs.
OPTIMISATIONS = ("eager", "int8", "export", "onnx", "torchscript", "compile")


# ---------------------------------------------------------------------------------------------
# every family under one budget ----------------------------------------------------------------


class Trained:
    """What :func:`same_budget` keeps beside its table (``table.attrs["trained"]``): by model
    name, the trained ``models`` (CPU, eval mode), their ``data`` (a DataSplit each), training
    ``histories`` (History frames) and the ``forward_kwargs`` they run with (NaViT's packing).
    pandas deep-copies a table's ``attrs`` with every operation; this is shared instead."""

    def __init__(self, models: dict, data: dict, histories: dict, forward_kwargs: dict) -> None:
        self.models, self.data, self.histories, self.forward_kwargs = models, data, histories, forward_kwargs

    def __deepcopy__(self, memo) -> "Trained":
        return self


def _recipe(family: str, mode: str) -> dict:
    """``family``'s recipe from scratch (no ImageNet start), NaViT's images all at full size."""
    from ...train import recipe_for

    recipe = {k: dict(v) if isinstance(v, dict) else v for k, v in recipe_for(family, mode).items()
              if k != "weights"}
    if recipe["dataset"].get("mixed_scales"):  # mixed resolutions are chapter 5's question
        recipe["dataset"]["mixed_scales"] = (1.0,)
    return recipe


def _steps(trained: Trained, batches: dict, device, rounds: int, min_run_time: float) -> dict[str, list]:
    """One training step of each model (forward, loss, backward, AdamW, on a copy) on its first
    training images, all models timed interleaved (:func:`vitlib.bench.time_interleaved`)."""
    fns = {}
    for name, model in trained.models.items():
        x, y = first_images(trained.data[name].train, batches[name])
        x = [i.to(device) for i in x] if isinstance(x, list) else x.to(device)
        fns[name] = train_step_fn(model.to(device), x, y.to(device), **trained.forward_kwargs[name])
        model.cpu()  # the step runs on its own copy
    return time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, device=device)


def same_budget(families: Sequence[str] | None = None, *, epochs: int, seed: int = 0, mode: str = "quick",
                data=None, device: torch.device | str = "cpu", overrides: Mapping[str, Mapping] | None = None,
                step_rounds: int = 2, min_run_time: float = 0.1, progress: bool = False, **fit_overrides):
    """Train each of ``families`` (default :data:`DEFAULT_FAMILIES`) with its ``mode`` recipe
    (:func:`vitlib.train.recipe_for`), the same ``epochs`` and ``seed``, on the same images and
    split (the digits in quick mode), each at its recipe's resolution (LeViT's stem needs twice
    ViT's). ``data`` reuses a loaded DataSplit where a recipe asks for its data set and size;
    ``overrides`` maps a family to model keywords; ``fit_overrides`` go to every run. Runs one
    after another meet a shared machine's slow spells unequally, so with ``step_rounds`` a
    training step of every model (its recipe's batch) is then timed interleaved: with the same
    images, batch and epochs every model takes the same steps, so their ratio is that of training.

    Returns a DataFrame, one row per model: ``model``, ``family``, ``image_px``, ``params``,
    ``flops`` (one image, forward), ``train_s`` (the training epochs, :func:`vitlib.train.fit`'s
    ``train_s``), ``step_ms`` (median interleaved step), ``accuracy`` (final test accuracy, 0-1),
    ``test_size``. ``attrs``: ``trained`` (:class:`Trained`), ``step_times`` and ``epoch_times``
    (each timed step's and epoch's seconds by model), ``epochs``, ``seed``, ``mode``, ``device``."""
    import pandas as pd

    from ...train import load_recipe_data, train_recipe

    families = list(DEFAULT_FAMILIES if families is None else families)
    if not families or len(set(families)) != len(families) or set(families) - set(FAMILIES):
        raise ValueError(f"families must be distinct names among {list(FAMILIES)}; received {families}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; received {epochs!r}")
    overrides = dict(overrides or {})
    if set(overrides) - set(families):
        raise ValueError(f"overrides name families that are not trained: "
                         f"{sorted(set(overrides) - set(families))}; trained: {families}")
    loaded = {} if data is None else {(data.name, data.image_size[0]): data}
    rows, models, splits, histories, kwargs, times, batches = [], {}, {}, {}, {}, {}, {}
    for family in families:
        recipe = _recipe(family, mode)
        spec = recipe["dataset"]
        key = ("list",) * bool(spec.get("mixed_scales")) + (spec["name"], spec["image_size"])  # list: NaViT
        if key not in loaded:
            loaded[key] = load_recipe_data(recipe, seed=seed)
        split = loaded[key]
        model, history, _ = train_recipe(recipe, model_name=family if family == "vit" else None,
                                         model_overrides=overrides.get(family), seed=seed, device=device,
                                         progress=progress, data=split, epochs=epochs, **fit_overrides)
        model, frame = model.cpu().eval(), history.frame()
        name, one = type(model).__name__, first_images(split.test, 1)[0]
        models[name], splits[name], histories[name] = model, split, frame
        kwargs[name] = dict(recipe["fit"].get("forward_kwargs") or {})
        times[name] = [float(t) for t in frame["train_s"]]
        batches[name] = fit_overrides.get("batch_size", recipe["fit"]["batch_size"])
        rows.append({"model": name, "family": family, "image_px": int(split.image_size[0]),
                     "params": count_parameters(model), "flops": count_flops(model, one),
                     "train_s": float(frame["train_s"].sum()), "accuracy": float(frame["test_acc"].iloc[-1]),
                     "test_size": len(split.test)})
    trained = Trained(models, splits, histories, kwargs)
    steps = _steps(trained, batches, torch.device(device), step_rounds, min_run_time) if step_rounds else {}
    table = pd.DataFrame(rows)
    table.insert(6, "step_ms", [Measured.of_values(steps[n]).value * 1e3 if steps else None for n in models])
    table.attrs.update(trained=trained, step_times=steps, epoch_times=times, epochs=epochs, seed=seed,
                       mode=mode, device=str(device), test_size=rows[0]["test_size"])
    return table


# latency, eager and deployed ------------------------------------------------------------------


class _Served(nn.Module):
    """A model called with its forward keywords (NaViT packs its images), as one module that the
    deployment paths can take: ``served(x) == model(x, **forward_kwargs)``."""

    def __init__(self, model: nn.Module, forward_kwargs: Mapping) -> None:
        super().__init__()
        self.model, self.forward_kwargs = model, dict(forward_kwargs)

    @property
    def config(self) -> dict:  # what an INT8 file records (to measure its size)
        return self.model.config

    def forward(self, x):
        return self.model(x, **self.forward_kwargs)

    def example_input(self, batch: int = 1, device=None):
        return self.model.example_input(batch, device=device)


def _paths(optimisations, names: list[str]) -> dict[str, list[str]]:
    chosen = optimisations if isinstance(optimisations, Mapping) else dict.fromkeys(optimisations)
    wanted = {p: list(names if ms is None else ms) for p, ms in chosen.items()}
    if any(p not in OPTIMISATIONS for p in wanted) or "eager" not in wanted:
        raise ValueError(f"optimisations must include 'eager' and name some of {list(OPTIMISATIONS)}; "
                         f"received {list(wanted)}")
    for p, ms in wanted.items():
        if set(ms) - set(names):
            raise ValueError(f"optimisations[{p!r}] names models that are not in the table: "
                             f"{sorted(set(ms) - set(names))}; they are {names}")
    return wanted


def latency_table(models, x=None, optimisations: Sequence[str] | Mapping[str, Sequence[str] | None] = (
                  "eager", "int8", "onnx"), *, baseline: str = "ViT", batch: int = 16, accuracy: bool = True,
                  rounds: int = 3, min_run_time: float = 0.2, num_threads: int | None = None,
                  progress: bool = False):
    """Each model's inference latency in eager and after each deployment path, on the CPU (where
    dynamic INT8 and ONNX Runtime run, so that every ratio compares like with like).

    ``models``: a :func:`same_budget` table (or some of its rows) or a mapping from names to
    models. ``x``: the batch (a tensor, or one per name); default: the first ``batch`` test images
    of each model's data. ``optimisations``: ``"eager"`` and paths of :data:`OPTIMISATIONS`, or a
    mapping from each to the models it runs on (None: all), for paths too slow to build for all.

    Eager: every model timed interleaved (:func:`vitlib.bench.time_interleaved`), its speed-up over
    ``baseline`` from those times. A path: :func:`vitlib.export.export` measures it against the
    same model's eager; its latency is the model's eager median over that speed-up, its speed-up
    over the baseline the two ratios in a row (bounds multiplied), its test accuracy measured with
    ``accuracy`` on a :func:`same_budget` table. A path that fails is a row that says why.

    Columns: ``model``, ``optimisation``, ``works``, ``reason``, ``params``, ``flops``,
    ``train_s``, ``accuracy``, ``batch``, ``ms`` (per batch, median), ``ms_low``, ``ms_high``,
    ``speedup`` (a :class:`~vitlib.book.claims.Measured` over the model's eager) and ``vs_baseline``
    (over the baseline's eager; None without a baseline). ``attrs``: ``baseline``, ``batch``,
    ``threads``, and a :func:`same_budget` table's ``step_times``, ``epoch_times``, ``test_size``,
    ``epochs``."""
    import pandas as pd

    from ...export import PathError, export

    budget = models if isinstance(models, pd.DataFrame) else None
    if budget is not None:
        trained = budget.attrs.get("trained")
        if not isinstance(trained, Trained):
            raise ValueError("latency_table takes a same_budget table (with attrs['trained']) or a mapping "
                             "from names to models; received a DataFrame without trained models")
        info = budget.set_index("model")
        nets, kwargs = {n: trained.models[n] for n in info.index}, trained.forward_kwargs
    elif isinstance(models, Mapping) and models and all(isinstance(m, nn.Module) for m in models.values()):
        nets, kwargs, info, trained = dict(models), {}, None, None
    else:
        raise TypeError(f"models must be a same_budget table or a non-empty mapping of names to models; "
                        f"received {type(models).__name__}")
    names = list(nets)
    wanted = _paths(optimisations, names)
    if x is None and trained is None:
        raise ValueError("latency_table needs x (a batch, or a batch per model) for models given as a "
                         "mapping; received x=None")
    inputs = {n: x[n] if isinstance(x, Mapping) else x if x is not None
              else first_images(trained.data[n].test, batch)[0] for n in names}
    threads = num_threads or default_threads()
    timing = dict(rounds=rounds, min_run_time=min_run_time, num_threads=threads)
    for n in names:
        nets[n] = nets[n].cpu().eval()
    fns = {n: inference_fn(nets[n], inputs[n], **kwargs.get(n, {})) for n in names}
    with serving_on_cpu():  # served on the CPU in every mode
        times = time_interleaved(fns, progress="eager latency" if progress else None, **timing)
    base = baseline if baseline in names else None
    figures = {n: {} if info is None else {"params": int(info.loc[n, "params"]), "flops": int(
        info.loc[n, "flops"]), "train_s": float(info.loc[n, "train_s"])} for n in names}
    rows = []
    for n in names:
        eager = Measured.of_values(times[n])
        rows.append({"model": n, "optimisation": "eager", "works": True, "reason": None, **figures[n],
                     "accuracy": None if info is None else float(info.loc[n, "accuracy"]),
                     "batch": len(inputs[n]), **eager.to_dict(1e3, prefix="ms"), "speedup": Measured.exact(1.0, "x"),
                     "vs_baseline": Measured.ratio(times[base], times[n]) if base else None})
    by_name = {r["model"]: r for r in rows}
    for path, chosen in wanted.items():
        for n in (m for m in names if path != "eager" and m in chosen):
            model = _Served(nets[n], kwargs[n]) if kwargs.get(n) else nets[n]
            data = trained.data[n].test if accuracy and trained is not None else None
            row = {"model": n, "optimisation": path, **figures[n], "batch": len(inputs[n])}
            try:
                result = export(model, path, inputs[n], data=data, **timing)
            except PathError as err:
                rows.append({**row, "works": False, "reason": err.why})
                continue
            s, ms, vs = result.speedup, by_name[n]["ms"], by_name[n]["vs_baseline"]
            rows.append({**row, "works": True, "reason": None, "accuracy": result.accuracy,
                         "ms": ms / s.value, "ms_low": ms / s.high, "ms_high": ms / s.low, "speedup": s,
                         "vs_baseline": vs.chain(s) if base else None})
    table = pd.DataFrame(rows)
    table.attrs.update(baseline=base, batch=batch if x is None else None, threads=threads,
                       optimisations=list(wanted))
    if budget is not None:
        keys = ("step_times", "epoch_times", "test_size", "epochs", "mode")
        table.attrs.update({k: budget.attrs[k] for k in keys})
    return table
