"""Chapter 5's timed training: training steps of NaViT at several token-dropout rates against a ViT
on the same images padded to the largest size or resized to one size, and against vit-pytorch's
NaViT, interleaved (:func:`navit_train_comparison`, :func:`token_dropout_sweep`,
:func:`throughput_table`); whole training runs at several token-dropout rates over seeds,
interleaved run by run (:func:`train_dropout_seeds`, :func:`wall_speedup`); and the ``navit``
bench suite. The workload and its layouts are :mod:`vitlib.book.studies.navit`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from ...bench import Timing, default_threads, time_interleaved, train_step_fn
from ..claims import Measured
from ...layers import pair
from ...models import NaViT, ViT
from ...models.state import private_rng
from .navit import (NAVIT_CONFIG, NAVIT_FORWARD, expected_tokens, navit_token_counts, navit_workload,
                    packing_padding, pad_images, resize_images)

__all__ = ["navit_train_comparison", "token_dropout_sweep", "throughput_table", "train_dropout_seeds",
           "wall_speedup", "navit_suite"]


def _rates(token_dropout_prob: float | Iterable[float]) -> list[float]:
    rates = [token_dropout_prob] if isinstance(token_dropout_prob, (int, float)) else list(token_dropout_prob)
    bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0]
    if not rates or bad:
        raise ValueError(f"token_dropout_prob must be one or more probabilities in [0, 1); received "
                         f"{token_dropout_prob!r}")
    return [float(r) for r in rates]


def _check_config(config: Mapping, images: list[torch.Tensor], labels: torch.Tensor) -> dict:
    """NAVIT_CONFIG with ``config``'s keys; image size and channels come from the images, token
    dropout from ``token_dropout_prob``, and the labels must fit ``num_classes``."""
    derived = {"image_size": "the images (their largest side)", "channels": "the images",
               "token_dropout_prob": "the token_dropout_prob argument"}
    clash = [k for k in derived if k in config]
    if clash:
        raise ValueError("config must not set " + ", ".join(f"{k} (it comes from {derived[k]})" for k in clash)
                         + f"; received {', '.join(f'{k}={config[k]!r}' for k in clash)}")
    cfg = {**NAVIT_CONFIG, **config}
    if not images or len(labels) != len(images):
        raise ValueError(f"expected one label per image; received {len(images)} images and {len(labels)} labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= cfg["num_classes"]:
        raise ValueError(f"labels must lie in [0, {cfg['num_classes']}) for num_classes={cfg['num_classes']}; "
                         f"received labels from {lo} to {hi}")
    return cfg


def navit_train_comparison(
    images: list[torch.Tensor],
    labels: torch.Tensor,
    *,
    config: Mapping = NAVIT_CONFIG,
    token_dropout_prob: float | Iterable[float] = (0.0,),
    padded_vit: bool = True,
    resize_to=None,
    vit_pytorch: bool = False,
    rounds: int = 3,
    min_run_time: float = 0.5,
    num_threads: int | None = None,
    warmup: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Time training steps (forward, cross-entropy, backward, AdamW) on the same mixed-resolution
    images, interleaved: vitlib's :class:`~vitlib.models.NaViT` once per token-dropout probability
    in ``token_dropout_prob``, and optionally a vitlib :class:`~vitlib.models.ViT` of the same
    width and depth on the images zero-padded to the largest height and width (``"vit padded"``),
    with ``resize_to`` (an int or ``(height, width)``) the same ViT on the images resized to that
    one size (``"vit resized"``, built for it), and vit-pytorch's NaViT (``"vit-pytorch navit"``,
    no token dropout; skipped with a reason if vit-pytorch is missing).

    ``config`` holds the model's keywords (those of :data:`NAVIT_CONFIG` by default); the image
    size and channels come from the images, so ``config`` may not set them, and the labels must
    lie in ``[0, num_classes)``. Each NaViT is called as in training (:data:`NAVIT_FORWARD`):
    packed first-fit decreasing into sequences as long as its longest image after token dropout,
    since attention costs ``L^2`` per sequence of length ``L``. vit-pytorch's NaViT packs greedily
    to the same length as vitlib's at probability 0.

    Returns ``timings`` (per candidate: ``median_s``, ``iqr_s``, ``runs``, ``images_per_s``),
    ``times`` (per candidate, every timed call's seconds, for :meth:`~vitlib.book.claims.Measured.ratio`),
    ``tokens`` (per step: a NaViT's kept image tokens, a ViT's slots and class tokens),
    ``group_max_seq_len`` (per NaViT), ``vit_pytorch_skipped`` (None, or why) and the settings.
    Models and images go to ``device``."""
    rates = _rates(token_dropout_prob)
    cfg = _check_config(config, images, labels)
    device = torch.device(device)
    images = [img.to(device) for img in images]
    labels = labels.to(device)
    threads = num_threads or default_threads()
    patch = cfg["patch_size"]
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    side = max(height, width)  # positions for any orientation up to the largest side
    channels = images[0].shape[0]
    fns, tokens, seq_lens = {}, {}, {}
    for rate in rates:
        name = f"navit (token dropout {rate:g})"
        with private_rng(seed):  # the same weights at every rate; the caller's random state kept
            model = NaViT(image_size=side, channels=channels, token_dropout_prob=rate or None, **cfg).to(device)
        seq_lens[name] = max(navit_token_counts(images, patch, rate))
        tokens[name] = expected_tokens(images, patch, rate)
        fns[name] = train_step_fn(model, images, labels, **NAVIT_FORWARD)
    if padded_vit:
        vit = ViT(image_size=(height, width), channels=channels, **cfg).to(device)
        fns["vit padded"] = train_step_fn(vit, pad_images(images, (height, width)), labels)
        tokens["vit padded"] = len(images) * ((height // patch) * (width // patch) + 1)
    if resize_to is not None:
        rh, rw = pair(resize_to, "resize_to")
        vit = ViT(image_size=(rh, rw), channels=channels, **cfg).to(device)
        fns["vit resized"] = train_step_fn(vit, resize_images(images, (rh, rw)), labels)
        tokens["vit resized"] = len(images) * ((rh // patch) * (rw // patch) + 1)
    skipped = None
    if vit_pytorch:
        try:
            from vit_pytorch.na_vit import NaViT as VPNaViT
        except ImportError as err:
            skipped = f"vit-pytorch is not installed ({err})"
        else:
            vp = VPNaViT(image_size=side, channels=channels, **cfg).to(device)
            counts = navit_token_counts(images, patch)
            fns["vit-pytorch navit"] = train_step_fn(vp, images, labels, group_images=True,
                                                     group_max_seq_len=max(counts))
            seq_lens["vit-pytorch navit"] = max(counts)
            tokens["vit-pytorch navit"] = sum(counts)
    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=threads, warmup=warmup,
                             device=device, progress=f"timing {len(fns)} training steps" if progress else None)
    return {
        "timings": {name: Timing(t, threads, batch=len(images)).summary() for name, t in times.items()},
        "times": {name: list(t) for name, t in times.items()},
        "tokens": tokens,
        "group_max_seq_len": seq_lens,
        "vit_pytorch_skipped": skipped,
        "images": len(images),
        "sizes": sorted({tuple(img.shape[-2:]) for img in images}),
        "config": cfg,
        "threads": threads,
        "rounds": rounds,
        "device": str(device),
    }


def _speed_ratio(times: Mapping[str, Sequence[float]], fast: str, slow: str) -> float | None:
    """Images/s of ``fast`` over images/s of ``slow`` (the same images): the value of
    :meth:`~vitlib.book.claims.Measured.ratio` of their per-call times."""
    if fast not in times or slow not in times:
        return None
    return Measured.ratio(times[slow], times[fast]).value


def token_dropout_sweep(token_dropout_prob: Iterable[float], images: list[torch.Tensor], labels: torch.Tensor,
                        **kwargs):
    """NaViT training-step time at each token-dropout probability, interleaved (see
    :func:`navit_train_comparison`, which ``kwargs`` go to). Returns a DataFrame with
    ``token_dropout_prob``, ``tokens`` (kept per step), ``group_max_seq_len``, ``median_ms``,
    ``iqr_ms``, ``runs``, ``images_per_s`` and ``speedup`` (the first probability's time over
    this one's); ``attrs`` hold each rate's per-call ``times`` and its ``speedups`` over the first
    rate with their spread (:meth:`~vitlib.book.claims.Measured.ratio`)."""
    import pandas as pd

    rates = _rates(token_dropout_prob)
    res = navit_train_comparison(images, labels, token_dropout_prob=rates, padded_vit=False, vit_pytorch=False,
                                 **kwargs)
    rows = []
    for rate in rates:
        name = f"navit (token dropout {rate:g})"
        t = res["timings"][name]
        rows.append({"token_dropout_prob": rate, "tokens": res["tokens"][name],
                     "group_max_seq_len": res["group_max_seq_len"][name], "median_ms": t["median_s"] * 1e3,
                     "iqr_ms": t["iqr_s"] * 1e3, "runs": t["runs"], "images_per_s": t["images_per_s"]})
    df = pd.DataFrame(rows)
    times = {rate: res["times"][f"navit (token dropout {rate:g})"] for rate in rates}
    speedups = {rate: Measured.ratio(times[rates[0]], times[rate]) for rate in rates}
    df["speedup"] = [speedups[rate].value for rate in rates]
    df.attrs.update(threads=res["threads"], rounds=res["rounds"], images=res["images"], config=res["config"],
                    times=times, speedups=speedups)
    return df


#: The names :func:`throughput_table` gives :func:`navit_train_comparison`'s candidates.
THROUGHPUT_NAMES = {"navit (token dropout 0)": "NaViT, packed", "vit padded": "ViT, padded",
                    "vit resized": "ViT, resized", "vit-pytorch navit": "vit-pytorch NaViT, packed"}


def throughput_table(images: list[torch.Tensor], labels: torch.Tensor, *, resize_to=None, vit_pytorch: bool = True,
                     **kwargs):
    """Training steps on the same mixed-resolution images, timed interleaved: vitlib's NaViT packed
    (``"NaViT, packed"``), a ViT on the images padded to the largest size (``"ViT, padded"``, the
    baseline), with ``resize_to`` a ViT on the images resized to that size (``"ViT, resized"``) and,
    when vit-pytorch is installed, its NaViT (``"vit-pytorch NaViT, packed"``).

    A DataFrame like :func:`vitlib.bench.compare`'s, indexed by ``model``: ``median_ms``,
    ``iqr_ms``, ``runs``, ``images_per_s``, ``tokens`` (per step), ``speedup`` (the baseline's median
    over this one's); ``attrs`` hold the per-call ``times`` and ``baseline``, so
    :func:`vitlib.bench.speedup` gives a ratio with its spread, and ``vit_pytorch_skipped``
    (None, or why). ``kwargs`` go to :func:`navit_train_comparison`."""
    import pandas as pd

    res = navit_train_comparison(images, labels, token_dropout_prob=0.0, padded_vit=True, resize_to=resize_to,
                                 vit_pytorch=vit_pytorch, **kwargs)
    rows = []
    for key, t in res["timings"].items():
        rows.append({"model": THROUGHPUT_NAMES[key], "median_ms": t["median_s"] * 1e3, "iqr_ms": t["iqr_s"] * 1e3,
                     "runs": t["runs"], "images_per_s": t["images_per_s"], "tokens": res["tokens"][key]})
    df = pd.DataFrame(rows).set_index("model")
    times = {THROUGHPUT_NAMES[k]: v for k, v in res["times"].items()}
    df["speedup"] = [Measured.ratio(times["ViT, padded"], times[name]).value for name in df.index]
    df.attrs.update(baseline="ViT, padded", times=times,
                    threads=res["threads"], rounds=res["rounds"], images=res["images"], sizes=res["sizes"],
                    device=res["device"], config=res["config"], vit_pytorch_skipped=res["vit_pytorch_skipped"]
                    or (None if vit_pytorch else "not requested"))
    return df


def train_dropout_seeds(recipe: Mapping, token_dropout_prob: Iterable[float], seeds: Sequence[int], *, data,
                        device: torch.device | str = "cpu", model_overrides: Mapping | None = None,
                        **fit_overrides):
    """Train ``recipe`` (a NaViT recipe of :data:`vitlib.train.RECIPES`, which packs as NaViT trains)
    once per token-dropout probability and seed on ``data``, interleaved run by run with the order
    rotated each seed (:func:`vitlib.train.train_conditions`, whose table this is, with the
    conditions named ``"rate 0.1"`` and a ``token_dropout_prob`` column). ``model_overrides`` change
    the model of every run; ``fit_overrides`` its fit."""
    from ...train import train_conditions

    rates = _rates(token_dropout_prob)
    recipes = {f"rate {rate:g}": {**recipe, "model": {**recipe["model"], **(model_overrides or {}),
                                                      "token_dropout_prob": rate or None}} for rate in rates}
    table = train_conditions(recipes, seeds, data=data, device=device, rotate=True, **fit_overrides)
    table.insert(1, "token_dropout_prob", [float(name.split()[1]) for name in table["condition"]])
    return table


def wall_speedup(runs, other: str, base: str):
    """How much faster whole runs of condition ``other`` were than ``base`` (a
    :func:`train_dropout_seeds` table): the ratio ``base / other`` of ``wall_s`` per seed (the two
    runs of a seed ran side by side), as a :class:`~vitlib.book.claims.Measured` whose value is the
    median over seeds and whose spread is the lowest to the highest seed's ratio. Their training
    epochs alone: :func:`vitlib.book.claims.epoch_speedup`."""
    for name in (base, other):
        if name not in set(runs["condition"]):
            raise ValueError(f"no condition {name!r} in the runs; they have {sorted(set(runs['condition']))}")
    by = runs.set_index(["condition", "seed"])["wall_s"]
    seeds = sorted(set(runs["seed"]))
    return Measured.paired_ratio([by[(base, s)] for s in seeds], [by[(other, s)] for s in seeds],
                                 "seeds, whole runs interleaved")


def navit_suite(args) -> dict:
    """NaViT training on mixed resolutions: packed against padded, token dropout, packing quality."""
    images, labels = navit_workload(args.batch, seed=args.seed, num_classes=NAVIT_CONFIG["num_classes"])
    res = navit_train_comparison(images, labels, token_dropout_prob=(0.0, 0.5), padded_vit=True, vit_pytorch=True,
                                 rounds=args.rounds, min_run_time=args.min_run_time, num_threads=args.threads,
                                 seed=args.seed, device=args.device, progress=True)
    t, base = res["timings"], "navit (token dropout 0)"
    padding = packing_padding(navit_token_counts(images, NAVIT_CONFIG["patch_size"]), (None, 256, 512, 2048))
    times = res["times"]
    figures = {"packed_vs_padded": _speed_ratio(times, base, "vit padded"),
               "dropout50_step_speedup": _speed_ratio(times, "navit (token dropout 0.5)", base),
               "vit_pytorch_packed_vs_padded": _speed_ratio(times, "vit-pytorch navit", "vit padded"),
               "padding_fraction_ours": padding[0]["padding_ours"],
               "padding_fraction_greedy": padding[0]["padding_greedy"]}
    print(f"NaViT training on {res['images']} images of sizes {res['sizes']}, {res['threads']} threads, "
          f"median of {args.rounds} interleaved rounds, {args.device}")
    for name, row in t.items():
        print(f"  {name:28s} {row['median_s'] * 1e3:9.1f} ms/step (IQR {row['iqr_s'] * 1e3:.1f}, "
              f"{row['runs']} calls)  {row['images_per_s']:7.1f} images/s  {res['tokens'][name]} tokens")
    for key, value in figures.items():
        print(f"  {key:30s} " + ("-" if value is None else f"{value:.3f}"))
    res = {k: v for k, v in res.items() if k != "times"}  # the JSON keeps the summaries only
    return {**figures, "vit_pytorch_skipped": res["vit_pytorch_skipped"], "packing": padding, **res}
