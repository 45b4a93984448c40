"""Chapter 5 (NaViT): mixed resolutions packed into sequences, and token dropout.

The workload (random images of several sizes), padding or resizing them for a plain ViT, token
counts, packing quality and what each batch layout computes (:func:`batch_layouts`), training
steps timed interleaved (vitlib's NaViT at several token-dropout rates against a ViT on the images
padded to the largest size or resized to one size, and against vit-pytorch's NaViT:
:func:`throughput_table`), and whole training runs at several token-dropout rates over seeds,
interleaved run by run (:func:`train_dropout_seeds`, :func:`wall_speedup`). The ``navit`` bench
suite runs the timings. Token dropout is ``token_dropout_prob`` everywhere, as in
:class:`~vitlib.models.NaViT`.
"""
from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..bench import Timing, default_threads, register_suite, time_interleaved, train_step_fn
from ..claims import Measured
from ..layers import pair
from ..models import NaViT, ViT
from ..models.na_vit import (
    check_token_dropout_rounding,
    expected_kept_tokens,
    floor_kept_tokens,
    max_kept_tokens,
    pack_greedy,
    pack_sequences,
    padding_fraction,
)
from ..train import RECIPES

__all__ = ["NAVIT_SIZES", "NAVIT_CONFIG", "NAVIT_FORWARD", "navit_workload", "pad_images", "resize_images",
           "mean_token_size", "batch_layouts", "navit_token_counts", "expected_tokens", "packing_padding",
           "navit_train_comparison", "random_packing", "qk_norm_sharpness", "token_dropout_sweep",
           "throughput_table", "train_dropout_seeds", "wall_speedup", "navit_suite"]

#: Image sizes (height, width) of the NaViT workload: squares and both orientations, 64 to 224 pixels.
NAVIT_SIZES = ((64, 64), (96, 160), (128, 128), (160, 96), (224, 160), (224, 224))
#: The model the NaViT suite trains: ViT-Tiny's width and heads, six layers, 16-pixel patches.
NAVIT_CONFIG = dict(patch_size=16, num_classes=10, dim=192, depth=6, heads=3, dim_head=64, mlp_dim=768)
#: How NaViT is called in training: the recipe's packing into sequences no longer than the longest
#: image (after token dropout), never one sequence for the whole batch.
NAVIT_FORWARD = dict(RECIPES["quick"]["navit"]["fit"]["forward_kwargs"])


def navit_workload(
    num_images: int = 32,
    sizes=NAVIT_SIZES,
    *,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``num_images`` random images, each of a size drawn uniformly from ``sizes`` (ints or
    ``(height, width)`` pairs), and random labels in ``[0, num_classes)``; reproducible from ``seed``."""
    sizes = [pair(s, "size") for s in sizes]
    if not sizes or num_images < 1:
        raise ValueError(f"navit_workload needs at least one size and one image; received sizes={sizes!r}, "
                         f"num_images={num_images!r}")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(sizes), (num_images,), generator=gen).tolist()
    images = [torch.randn(channels, *sizes[i], generator=gen) for i in picks]
    return images, torch.randint(num_classes, (num_images,), generator=gen)


def pad_images(images: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack ``(c, h, w)`` images into one ``(n, c, H, W)`` batch, zero-padded at the bottom and
    right to ``size`` (default: the largest height and width among them)."""
    h = max(img.shape[-2] for img in images) if size is None else size[0]
    w = max(img.shape[-1] for img in images) if size is None else size[1]
    out = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    for i, img in enumerate(images):
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out


def resize_images(images: list[torch.Tensor], size) -> torch.Tensor:
    """Resize ``(c, h, w)`` images (bilinear) to one ``size`` (an int or ``(height, width)``) and
    stack them into an ``(n, c, height, width)`` batch: the fixed-size input of an ordinary ViT."""
    size = pair(size, "size")
    return torch.cat([F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)
                      for img in images])


def mean_token_size(images: list[torch.Tensor], patch_size: int) -> tuple[int, int]:
    """The images' own size (height, width) whose token count at ``patch_size`` is nearest their
    mean token count (the larger on a tie): one size to resize every image to for a ViT batch that
    holds about as many tokens as the images do at their own sizes."""
    sizes = sorted({tuple(img.shape[-2:]) for img in images})
    tokens = {s: (s[0] // patch_size) * (s[1] // patch_size) for s in sizes}
    mean = statistics.fmean(tokens[tuple(img.shape[-2:])] for img in images)
    return min(sizes, key=lambda s: (abs(tokens[s] - mean), -tokens[s]))


def batch_layouts(images: list[torch.Tensor], patch_size: int, resize_to=None,
                  max_len: int | None = None) -> list[dict]:
    """What one transformer layer computes on ``images`` in each batch layout, counted from their
    shapes (class tokens and pooling queries left out): ``"ViT, padded"`` (zero-padded to the
    largest height and width), ``"ViT, resized"`` (to ``resize_to``, when given), ``"NaViT,
    packed"`` (first-fit decreasing into sequences of at most ``max_len`` tokens, default the
    longest image) and ``"vit-pytorch, packed in order"`` (its in-order packing, same length).
    One row per layout: ``layout``, ``input`` (the shape in words), ``slots`` (token positions
    the linear layers and MLP compute), ``padding`` (the share of them that hold no image),
    ``scores`` (query-key entries attention computes, per head) and ``own_image`` (the share of
    those between two tokens of one image: the rest are padding or, packed, masked out)."""
    p = patch_size
    grids = [(img.shape[-2] // p, img.shape[-1] // p) for img in images]
    lengths = [h * w for h, w in grids]
    real, own = sum(lengths), sum(n * n for n in lengths)
    n = len(images)
    height, width = max(img.shape[-2] for img in images), max(img.shape[-1] for img in images)
    full = (height // p) * (width // p)
    rows = [{"layout": "ViT, padded", "input": f"{n} x {height}x{width}", "slots": n * full,
             "padding": 1 - real / (n * full), "scores": n * full ** 2, "own_image": own / (n * full ** 2)}]
    if resize_to is not None:
        rh, rw = pair(resize_to, "resize_to")
        t = (rh // p) * (rw // p)
        rows.append({"layout": "ViT, resized", "input": f"{n} x {rh}x{rw}", "slots": n * t, "padding": 0.0,
                     "scores": n * t * t, "own_image": 1.0})
    max_len = max(lengths) if max_len is None else max_len
    for name, packer in (("NaViT, packed", pack_sequences), ("vit-pytorch, packed in order", pack_greedy)):
        groups = packer(lengths, max_len)
        longest = max(sum(lengths[i] for i in g) for g in groups)
        rows.append({"layout": name, "input": f"{len(groups)} sequences x {longest}",
                     "slots": len(groups) * longest, "padding": padding_fraction(lengths, groups),
                     "scores": len(groups) * longest ** 2, "own_image": own / (len(groups) * longest ** 2)})
    return rows


def navit_token_counts(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0,
                       token_dropout_rounding: str = "stochastic") -> list[int]:
    """Tokens per image at ``patch_size``; under token dropout at ``token_dropout_prob``, the most
    an image can keep, rounded as :class:`~vitlib.models.NaViT`'s ``token_dropout_rounding``:
    :func:`~vitlib.models.na_vit.max_kept_tokens` when stochastic (it keeps the nominal share on
    average), :func:`~vitlib.models.na_vit.floor_kept_tokens` (every time) when ``"floor"``. A
    bound for the packed sequence length."""
    check_token_dropout_rounding(token_dropout_rounding)
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    most = floor_kept_tokens if token_dropout_rounding == "floor" else max_kept_tokens
    return [most(n, token_dropout_prob) for n in counts]


def expected_tokens(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0,
                    token_dropout_rounding: str = "stochastic") -> float:
    """Tokens a step over ``images`` processes on average under token dropout at
    ``token_dropout_prob``, rounded as ``token_dropout_rounding``
    (:func:`~vitlib.models.na_vit.expected_kept_tokens`): stochastic rounding keeps exactly
    ``max(1, tokens * (1 - p))`` of an image on average, ``"floor"`` ``max(1, int(tokens * (1 - p)))``."""
    check_token_dropout_rounding(token_dropout_rounding)
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    return sum(expected_kept_tokens(n, token_dropout_prob, token_dropout_rounding) for n in counts)


def packing_padding(lengths: list[int], max_lens: Iterable[int | None] = (None,)) -> list[dict]:
    """Padding fraction of first-fit-decreasing packing (vitlib's NaViT) and of in-order greedy
    packing (vit-pytorch's) for each maximum sequence length (None: the longest length). One
    row per length: ``max_len``, ``sequences_ours``, ``sequences_greedy``, ``padding_ours``,
    ``padding_greedy``."""
    rows = []
    for max_len in max_lens:
        max_len = max(lengths) if max_len is None else max_len
        ours, greedy = pack_sequences(lengths, max_len), pack_greedy(lengths, max_len)
        rows.append({"max_len": max_len, "sequences_ours": len(ours), "sequences_greedy": len(greedy),
                     "padding_ours": padding_fraction(lengths, ours),
                     "padding_greedy": padding_fraction(lengths, greedy)})
    return rows


def random_packing(trials: int = 200, lengths=(16, 40, 60, 64, 96, 140, 196), max_lens=(256, 512), *,
                   images=(8, 64), seed: int = 0):
    """Padding fraction of vitlib's packing and vit-pytorch's on ``trials`` random batches: each
    batch holds between ``images[0]`` and ``images[1]`` images whose token counts are drawn from
    ``lengths``, packed into sequences of at most each of ``max_lens`` tokens. A DataFrame with
    ``trial``, ``max_len``, ``ours`` and ``greedy``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        batch = [int(v) for v in rng.choice(lengths, size=rng.integers(*images))]
        for max_len in max_lens:
            rows.append({"trial": trial, "max_len": max_len,
                         "ours": padding_fraction(batch, pack_sequences(batch, max_len)),
                         "greedy": padding_fraction(batch, pack_greedy(batch, max_len))})
    return pd.DataFrame(rows)


def qk_norm_sharpness(weight_scales=(1, 4, 16), *, dim: int = 32, heads: int = 2, dim_head: int = 16,
                      tokens: int = 16, seed: int = 0) -> list[dict]:
    """What growing weights do to attention, with and without query-key normalisation: one
    attention layer on fixed random tokens, its query-key-value weights multiplied by each of
    ``weight_scales``. Rows: ``qk_norm``, ``scale``, ``largest_weight`` (a query's largest attention
    weight, averaged over queries and heads: ``1 / tokens`` is uniform, 1 all on one token)."""
    from ..layers import Attention

    x = torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))
    rows = []
    for qk_norm in (False, True):
        torch.manual_seed(seed)
        layer = Attention(dim, heads, dim_head, qk_norm=qk_norm).eval()
        weight = layer.to_qkv.weight.detach().clone()
        for scale in weight_scales:
            with torch.no_grad():
                layer.to_qkv.weight.copy_(weight * scale)
                _, attn = layer(x, return_attn=True)
            rows.append({"qk_norm": qk_norm, "scale": scale, "largest_weight": float(attn.amax(-1).mean())})
    return rows


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
    ``times`` (per candidate, every timed call's seconds, for :meth:`~vitlib.claims.Measured.ratio`),
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
        torch.manual_seed(seed)  # the same weights at every rate
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


def _speed_ratio(timings: Mapping[str, dict], fast: str, slow: str) -> float | None:
    """Images/s of ``fast`` over images/s of ``slow`` (the same images): slow median over fast median."""
    if fast not in timings or slow not in timings:
        return None
    return timings[slow]["median_s"] / timings[fast]["median_s"]


def token_dropout_sweep(token_dropout_prob: Iterable[float], images: list[torch.Tensor], labels: torch.Tensor,
                        **kwargs):
    """NaViT training-step time at each token-dropout probability, interleaved (see
    :func:`navit_train_comparison`, which ``kwargs`` go to). Returns a DataFrame with
    ``token_dropout_prob``, ``tokens`` (kept per step), ``group_max_seq_len``, ``median_ms``,
    ``iqr_ms``, ``runs``, ``images_per_s`` and ``speedup`` (the first probability's time over
    this one's); ``attrs`` hold each rate's per-call ``times`` and its ``speedups`` over the first
    rate with their spread (:meth:`~vitlib.claims.Measured.ratio`)."""
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
    df["speedup"] = df["median_ms"].iloc[0] / df["median_ms"]
    times = {rate: res["times"][f"navit (token dropout {rate:g})"] for rate in rates}
    df.attrs.update(threads=res["threads"], rounds=res["rounds"], images=res["images"], config=res["config"],
                    times=times, speedups={rate: Measured.ratio(times[rates[0]], times[rate]) for rate in rates})
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
    df["speedup"] = df.loc["ViT, padded", "median_ms"] / df["median_ms"]
    df.attrs.update(baseline="ViT, padded", times={THROUGHPUT_NAMES[k]: v for k, v in res["times"].items()},
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
    from ..train import train_conditions

    rates = _rates(token_dropout_prob)
    recipes = {f"rate {rate:g}": {**recipe, "model": {**recipe["model"], **(model_overrides or {}),
                                                      "token_dropout_prob": rate or None}} for rate in rates}
    table = train_conditions(recipes, seeds, data=data, device=device, rotate=True, **fit_overrides)
    table.insert(1, "token_dropout_prob", [float(name.split()[1]) for name in table["condition"]])
    return table


def wall_speedup(runs, other: str, base: str):
    """How much faster whole runs of condition ``other`` were than ``base`` (a
    :func:`train_dropout_seeds` table): the ratio ``base / other`` of ``wall_s`` per seed (the two
    runs of a seed ran side by side), as a :class:`~vitlib.claims.Measured` whose value is the
    median over seeds and whose spread is the lowest to the highest seed's ratio. Their training
    epochs alone: :func:`vitlib.claims.epoch_speedup`."""
    for name in (base, other):
        if name not in set(runs["condition"]):
            raise ValueError(f"no condition {name!r} in the runs; they have {sorted(set(runs['condition']))}")
    by = runs.set_index(["condition", "seed"])["wall_s"]
    seeds = sorted(set(runs["seed"]))
    ratios = [by[(base, s)] / by[(other, s)] for s in seeds]
    return Measured(statistics.median(ratios), min(ratios), max(ratios), len(ratios), "x",
                    f"lowest to highest of {len(ratios)} seeds, whole runs interleaved")


@register_suite("navit")
def navit_suite(args) -> dict:
    """NaViT training on mixed resolutions: packed against padded, token dropout, packing quality."""
    images, labels = navit_workload(args.batch, seed=args.seed, num_classes=NAVIT_CONFIG["num_classes"])
    res = navit_train_comparison(images, labels, token_dropout_prob=(0.0, 0.5), padded_vit=True, vit_pytorch=True,
                                 rounds=args.rounds, min_run_time=args.min_run_time, num_threads=args.threads,
                                 seed=args.seed, device=args.device, progress=True)
    t, base = res["timings"], "navit (token dropout 0)"
    padding = packing_padding(navit_token_counts(images, NAVIT_CONFIG["patch_size"]), (None, 256, 512, 2048))
    figures = {"packed_vs_padded": _speed_ratio(t, base, "vit padded"),
               "dropout50_step_speedup": _speed_ratio(t, "navit (token dropout 0.5)", base),
               "vit_pytorch_packed_vs_padded": _speed_ratio(t, "vit-pytorch navit", "vit padded"),
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
