"""Chapter 5 (NaViT): mixed resolutions packed into sequences, and token dropout.

The workload (random images of several sizes), padding them for a plain ViT, token counts,
packing quality, and training steps timed interleaved: vitlib's NaViT at several token-dropout
rates against a ViT on the images padded to the largest size and against vit-pytorch's NaViT. The
``navit`` bench suite runs them. Token dropout is ``token_dropout_prob`` everywhere, as in
:class:`~vitlib.models.NaViT`.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..bench import Timing, default_threads, register_suite, time_interleaved, train_step_fn
from ..layers import pair
from ..models import NaViT, ViT
from ..models.na_vit import max_kept_tokens, pack_greedy, pack_sequences, padding_fraction
from ..train import RECIPES

__all__ = [
    "NAVIT_SIZES",
    "NAVIT_CONFIG",
    "NAVIT_FORWARD",
    "navit_workload",
    "pad_images",
    "navit_token_counts",
    "expected_tokens",
    "packing_padding",
    "navit_train_comparison",
    "navit_packed_vs_padded",
    "token_dropout_sweep",
    "navit_suite",
]

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


def navit_token_counts(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0) -> list[int]:
    """Tokens per image at ``patch_size``; under token dropout at ``token_dropout_prob``, the most
    an image can keep (:func:`~vitlib.models.na_vit.max_kept_tokens`; it keeps the nominal share
    on average): a bound for the packed sequence length."""
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    return [max_kept_tokens(n, token_dropout_prob) for n in counts]


def expected_tokens(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0) -> float:
    """Tokens a step over ``images`` processes on average under token dropout at
    ``token_dropout_prob`` (each image keeps ``tokens * (1 - p)`` on average, at least one)."""
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    return sum(max(1.0, n * (1.0 - token_dropout_prob)) for n in counts)


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
    and vit-pytorch's NaViT (``"vit-pytorch navit"``, no token dropout; skipped with a reason if
    vit-pytorch is missing).

    ``config`` holds the model's keywords (those of :data:`NAVIT_CONFIG` by default); the image
    size and channels come from the images, so ``config`` may not set them, and the labels must
    lie in ``[0, num_classes)``. Each NaViT is called as in training (:data:`NAVIT_FORWARD`):
    packed first-fit decreasing into sequences as long as its longest image after token dropout,
    since attention costs ``L^2`` per sequence of length ``L``. vit-pytorch's NaViT packs greedily
    to the same length as vitlib's at probability 0.

    Returns ``timings`` (per candidate: ``median_s``, ``iqr_s``, ``runs``, ``images_per_s``),
    ``tokens`` (real tokens per step), ``group_max_seq_len`` (per NaViT), ``vit_pytorch_skipped``
    (None, or why) and the settings. Models and images go to ``device``.
    """
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


def navit_packed_vs_padded(images: list[torch.Tensor], labels: torch.Tensor, *, vit_pytorch: bool = True,
                           **kwargs) -> dict:
    """Training speed of packed NaViT over a ViT trained on the same images padded to the largest
    size (images/s over images/s), for vitlib's NaViT and vit-pytorch's, measured interleaved.

    Returns ``packed_vs_padded``, ``vit_pytorch_packed_vs_padded`` (None with ``vit_pytorch_skipped``
    saying why, when vit-pytorch is missing or not asked for) and :func:`navit_train_comparison`'s
    result under ``comparison``. ``kwargs`` go to :func:`navit_train_comparison`."""
    res = navit_train_comparison(images, labels, token_dropout_prob=0.0, padded_vit=True, vit_pytorch=vit_pytorch,
                                 **kwargs)
    t = res["timings"]
    return {
        "packed_vs_padded": _speed_ratio(t, "navit (token dropout 0)", "vit padded"),
        "vit_pytorch_packed_vs_padded": _speed_ratio(t, "vit-pytorch navit", "vit padded"),
        "vit_pytorch_skipped": res["vit_pytorch_skipped"] or (None if vit_pytorch else "not requested"),
        "comparison": res,
    }


def token_dropout_sweep(token_dropout_prob: Iterable[float], images: list[torch.Tensor], labels: torch.Tensor,
                        **kwargs):
    """NaViT training-step time at each token-dropout probability, interleaved (see
    :func:`navit_train_comparison`, which ``kwargs`` go to). Returns a DataFrame with
    ``token_dropout_prob``, ``tokens`` (kept per step), ``group_max_seq_len``, ``median_ms``,
    ``iqr_ms``, ``runs``, ``images_per_s`` and ``speedup`` (the first probability's time over
    this one's)."""
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
    df.attrs.update(threads=res["threads"], rounds=res["rounds"], images=res["images"], config=res["config"])
    return df


@register_suite("navit")
def navit_suite(args) -> dict:
    """NaViT training on mixed resolutions: packed against padded, token dropout, packing quality."""
    images, labels = navit_workload(args.batch, seed=args.seed, num_classes=NAVIT_CONFIG["num_classes"])
    res = navit_train_comparison(images, labels, token_dropout_prob=(0.0, 0.5), padded_vit=True, vit_pytorch=True,
                                 rounds=args.rounds, min_run_time=args.min_run_time, num_threads=args.threads,
                                 seed=args.seed, device=args.device, progress=True)
    t = res["timings"]
    counts = navit_token_counts(images, NAVIT_CONFIG["patch_size"])
    padding = packing_padding(counts, (None, 256, 512, 2048))
    figures = {
        "packed_vs_padded": _speed_ratio(t, "navit (token dropout 0)", "vit padded"),
        "dropout50_step_speedup": _speed_ratio(t, "navit (token dropout 0.5)", "navit (token dropout 0)"),
        "padding_fraction_ours": padding[0]["padding_ours"],
        "padding_fraction_greedy": padding[0]["padding_greedy"],
        "vit_pytorch_packed_vs_padded": _speed_ratio(t, "vit-pytorch navit", "vit padded"),
        "vit_pytorch_skipped": res["vit_pytorch_skipped"],
        "packing": padding,
        **res,
    }
    print(f"NaViT training on {res['images']} images of sizes {res['sizes']}, {res['threads']} threads, "
          f"median of {args.rounds} interleaved rounds, {args.device}")
    for name, row in t.items():
        print(f"  {name:28s} {row['median_s'] * 1e3:9.1f} ms/step (IQR {row['iqr_s'] * 1e3:.1f}, "
              f"{row['runs']} calls)  {row['images_per_s']:7.1f} images/s  {res['tokens'][name]} tokens")
    for key in ("packed_vs_padded", "dropout50_step_speedup", "vit_pytorch_packed_vs_padded",
                "padding_fraction_ours", "padding_fraction_greedy"):
        value = figures[key]
        print(f"  {key:30s} " + ("-" if value is None else f"{value:.3f}"))
    return figures
